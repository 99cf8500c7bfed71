"""The training recipe shared by the MLP and MEDN: what they learn, and how their intervals
are set.

Recipe 1 (what every predictor saved before recipes were recorded used): the network maps
standardized features to standardized log latency by squared error; the interval is the RMS
validation residual (MLP) or a learned spread (MEDN).

Recipe 2 (the default for new fits), each part switchable for ablations:

- `prior`: a roofline cost prior per module type (`fit_roofline`: three non-negative
  coefficients on the training rows). The network reads the log prior as one more input and
  learns the log latency *over* it, so where the network knows nothing the prior remains.
- `clip`: the network's standardized inputs are clipped to the training rows' range, so that
  beyond it the learned correction is held at its value on the boundary and the prior
  carries the growth with size (monotone in FLOPs and bytes, as the physics is). Off by
  default for new fits (saved recipes record their `clip`): on a validation split
  that mirrors extrapolation (fitted below 512 channels, scored at 512) the unclipped
  network was the more accurate (`docs/results.md`); the range then only widens the
  interval.
- `loss`: `"huber"` on the standardized target (quadratic within `huber_delta` standard
  deviations, linear beyond) or `"mse"`.
- `conformal`: split-conformal 80 % intervals from validation residuals, and widening outside
  the training range: the interval's log spread becomes
  `0.5 * log(sigma_in**2 + sum_j (kappa_j * e_j)**2)`, where `e_j` is how far standardized
  feature `j` lies beyond the training min/max and `kappa_j` the RMS sensitivity of the
  learned correction to that feature on validation rows: freezing the correction at the
  boundary errs by about that slope times the distance. Where enough validation rows lie
  well outside the fitted range, they scale `kappa` up so that 80 % of them are covered too.
- `bins`: a step network beside the first. A smooth network on log-scaled sizes hardly draws
  the steps that kernel and tile choices put into latency level by level. With `bins`, each
  feature measured on a grid of sizes (3 to `MAX_LEVELS` distinct training values: channels,
  spatial sizes, kernel, batch) is also read through a piecewise-linear encoding (Gorishniy,
  Rubachev and Babenko 2022): the feature's training quantiles cut it into up to `bins`
  bins, and bin `k`'s input is how far the value has crossed that bin (0 below it, 1 above,
  linear within). A second network reads the features, the log prior and that encoding,
  clipped to the training range, and learns what the first left over on the training rows
  (early-stopped on the validation rows' remainder); the prediction is their sum. Beyond the
  range the step network holds its value at the boundary and the first network extrapolates
  as it did alone: one network reading the encoding directly was as accurate inside the
  range and far worse outside it (`docs/results.md`, "Piecewise-linear encoding and a step
  network"). Each encoded feature gets at most `bins` bins and at most one per
  `ROWS_PER_BIN` of its type's training rows; a type allowed fewer than `MIN_BINS` gets no
  encoding, and no step network (in MEDN, the step network's output is 0 for it): on a few
  hundred rows the bins only fit noise. Flags,
  one-hot columns and continuous features (costs) are not encoded. The step network is
  `step_width` (128) wide, whatever the first network's width: a one-config query reads
  every weight, so its time grows with their bytes (the V100 figures for 128 and 256 are in
  `docs/results.md`). About twice the training time where it applies.
- `edge`: calibrates how fast the interval widens outside the training range on rows that
  really lie outside a fit. A first fit (without the step network, early-stopped on the
  validation rows inside its own range) leaves out the training rows in the top `edge_frac`
  of any edge feature; its widening on those rows sets the final fit's. By default (`"all"`)
  the edge features are every feature with at least 3 distinct training values whose largest
  level holds at most `2 * edge_frac` of the rows, and each left-out row counts for the
  feature that widens it most, so that each feature's slope gets its own factor
  (`widening_scales`): rows out along one feature need not tell how wrong the network goes
  along another. With named features (e.g. `("log_cin", "log_cout")`, the direction a user
  will extrapolate in) one factor scales all slopes. With `()` the first-order `kappa`
  stands, which covered more than asked out of range (0.93-0.94 on the V100 extrapolation
  split; `"all"`: 0.79 MLP, 0.82 MEDN, the depthwise type alone 0.71-0.72,
  `docs/results.md`, where design variants moved a type's coverage by up to 0.07). A type
  with too few rows to leave some out is fitted once. One more fit on about 60 % of the rows.

References:
  Lei, G'Sell, Rinaldo, Tibshirani, Wasserman, "Distribution-Free Predictive Inference for
  Regression", JASA 2018 (split conformal).
  Gorishniy, Rubachev, Babenko, "On Embeddings for Numerical Features in Tabular Deep
  Learning", NeurIPS 2022 (piecewise-linear encoding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

#: z-value of a two-sided 80 % Gaussian interval (`mu ± Z80 * sigma`).
Z80 = 1.2815515655446004
#: Coverage the conformal intervals are set to.
COVERAGE = 0.8
#: Fewest validation rows outside the fitted range that rescale the widening.
MIN_OUTSIDE_ROWS = 20
#: Standardized distance beyond the training range below which a row counts as inside
#: (float32 rounding of rows on the boundary).
OUTSIDE_TOL = 1e-4
#: Floor of the log spread (a relative error of 1e-4): intervals never collapse to a point.
MIN_LOG_SIGMA = float(np.log(1e-4))
#: Training rows of a type per bin of each encoded feature, at least.
ROWS_PER_BIN = 100
#: Fewest bins of the piecewise-linear encoding; a type with fewer gets none.
MIN_BINS = 4
#: Most distinct training values of a feature the encoding reads (a feature on a grid of
#: sizes); features with more (costs, continuous sizes) stay smooth.
MAX_LEVELS = 64
#: `Recipe.edge` value for every feature with at least 3 distinct training values, each
#: feature's widening calibrated on its own (`widening_scales`).
EDGE_ALL = "all"
_LOSSES = ("mse", "huber")


def is_edge_all(edge) -> bool:
    """Whether a `Recipe.edge` value is `EDGE_ALL`."""
    return isinstance(edge, str) and edge == EDGE_ALL


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a network regressor learns and sets its interval (see the module docstring).

    Attributes:
      version: 1 (the recipe of predictors saved before this field existed) or 2.
      prior: learn the log latency over a roofline prior, read as an input too.
      clip: clip standardized inputs to the training range (the correction stops growing);
        without it, the range still widens the interval (with `conformal`).
      loss: `"mse"` or `"huber"` on the standardized target.
      huber_delta: where the Huber loss turns linear, in standard deviations of the target.
      conformal: conformal 80 % intervals, widening outside the training range.
      edge: `"all"` (every feature with 3 or more distinct values, each calibrated on its
        own), or feature names (`jaxlat.feature_schema(module).names`) along which the
        widening is calibrated on rows a first fit leaves out (with `conformal`; `()`: no
        first fit, first-order widening). A module type with none of them, or too few rows,
        is fitted once; MEDN raises `ValueError` for a name that no type has. A recipe saved
        before this field existed reads as `()`.
      edge_frac: the share of each `edge` feature's largest values that first fit leaves out.
      bins: most bins of the piecewise-linear encoding of each gridded feature that the step
        network reads (0: no step network); fewer where a type's training rows are few
        (`ROWS_PER_BIN`, `MIN_BINS`). A recipe saved before this field existed reads as 0;
        recipe 1 has none.
      step_width: the step network's hidden width (its layers as many as the first network's;
        MEDN's latent code at most this wide).
    """

    version: int = 2
    prior: bool = True
    clip: bool = False
    loss: str = "huber"
    huber_delta: float = 1.0
    conformal: bool = True
    edge: tuple[str, ...] | str = EDGE_ALL
    edge_frac: float = 0.1
    bins: int = 32
    step_width: int = 128

    def __post_init__(self):
        if self.version not in (1, 2):
            raise ValueError(f"version={self.version} is not valid: expected 1 or 2")
        if self.loss not in _LOSSES:
            raise ValueError(f"loss={self.loss!r} is not valid: expected one of {', '.join(_LOSSES)}")
        if not self.huber_delta > 0:
            raise ValueError(f"huber_delta={self.huber_delta} is not valid: expected a positive number")
        if not is_edge_all(self.edge):
            if isinstance(self.edge, str) or not all(isinstance(n, str) for n in self.edge):
                raise ValueError(f"edge={self.edge!r} is not valid: expected a sequence of feature names "
                                 f"or {EDGE_ALL!r}")
            object.__setattr__(self, "edge", tuple(self.edge))
        if not 0 < self.edge_frac < 0.5:
            raise ValueError(f"edge_frac={self.edge_frac} is not valid: expected a number in (0, 0.5)")
        if isinstance(self.bins, bool) or not isinstance(self.bins, (int, np.integer)) or self.bins < 0:
            raise ValueError(f"bins={self.bins!r} is not valid: expected an integer >= 0 (0: no encoding)")
        object.__setattr__(self, "bins", 0 if self.version == 1 else int(self.bins))  # recipe 1 has none
        if isinstance(self.step_width, bool) or not isinstance(self.step_width, (int, np.integer)) or self.step_width < 1:
            raise ValueError(f"step_width={self.step_width!r} is not valid: expected an integer >= 1")
        object.__setattr__(self, "step_width", int(self.step_width))

    def as_config(self) -> dict[str, Any]:
        """The JSON-able settings saved with a predictor."""
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, c: Mapping[str, Any] | None) -> Recipe:
        """The recipe a saved configuration describes (`None`: recipe 1, the one predictors
        saved without a `recipe` entry were trained with); fields added since take their
        defaults (a saved recipe records every field it had, `clip` among them), except
        `bins` and `edge`, which read as 0 and `()` in a recipe saved before they existed."""
        return LEGACY if c is None else as_recipe(c)


def as_recipe(recipe: Recipe | Mapping[str, Any]) -> Recipe:
    """A `Recipe`, or one from a mapping of its fields (the rest default: `{"prior": False}`
    is the default recipe without its prior). A mapping with `version` but without `bins` is
    a recipe saved before `bins` existed (a saved recipe records every field it has): its
    `bins` is 0, as that fit had no encoding; likewise one without `edge` had no edge fit."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, Mapping):
        bad = set(recipe) - {f.name for f in dataclasses.fields(Recipe)}
        if bad:
            raise ValueError(f"recipe: {sorted(bad)} are not valid: expected fields of Recipe "
                             f"({', '.join(f.name for f in dataclasses.fields(Recipe))})")
        saved = "version" in recipe  # what a saved recipe lacks, its fit did not have
        before = {k: v for k, v in (("bins", 0), ("edge", ())) if saved and k not in recipe}
        return Recipe(**recipe, **before)
    raise ValueError(f"recipe={recipe!r} is not valid: expected a Recipe or a mapping of its fields")


#: Recipe 1: squared error, no prior, no clipping, RMS-residual (MLP) or learned (MEDN) spread.
LEGACY = Recipe(version=1, prior=False, clip=False, loss="mse", conformal=False, bins=0)
#: Recipe 2 as new fits use it.
DEFAULT = Recipe()


def regression_loss(pred: jax.Array, target: jax.Array, loss: str, delta: float) -> jax.Array:
    """Mean loss of standardized predictions. The Huber loss is doubled so that it equals
    the squared error within `delta` (optax's form is `0.5 * x**2` there)."""
    if loss == "huber":
        return 2.0 * jnp.mean(optax.losses.huber_loss(pred, target, delta=delta))
    return jnp.mean((pred - target) ** 2)


def excess(z: jax.Array, z_lo: jax.Array, z_hi: jax.Array) -> jax.Array:
    """How far each standardized feature lies beyond `[z_lo, z_hi]` (0 inside)."""
    return jnp.maximum(z - z_hi, 0.0) + jnp.maximum(z_lo - z, 0.0)


def widened_log_sigma(log_sigma: jax.Array, kappa: jax.Array, e: jax.Array) -> jax.Array:
    """`0.5 * log(exp(2 log_sigma) + sum((kappa * e)**2))`: the in-range spread, grown by the
    first-order error of holding the correction at the boundary. Smooth at `e = 0`."""
    return 0.5 * jnp.log(jnp.exp(2.0 * log_sigma) + jnp.sum((kappa * e) ** 2))


def conformal_quantile(scores: np.ndarray, coverage: float = COVERAGE) -> float:
    """The split-conformal quantile of nonconformity `scores`: the `ceil((n + 1) * coverage)`-th
    smallest (the largest score when n is small)."""
    s = np.sort(np.asarray(scores, np.float64))
    if len(s) == 0:
        raise ValueError("conformal_quantile: no scores")
    k = min(len(s), int(np.ceil((len(s) + 1) * coverage)))
    return float(s[k - 1])


def conformal_shift(abs_resid: np.ndarray, base_sigma: np.ndarray) -> float:
    """Log factor on `base_sigma` such that `|r| <= Z80 * sigma` on the conformal share of rows."""
    q = conformal_quantile(np.asarray(abs_resid, np.float64) / np.maximum(base_sigma, 1e-12))
    return float(np.log(max(q / Z80, 1e-12)))


def widening_scale(abs_resid: np.ndarray, sigma_in: np.ndarray, spread: np.ndarray, *,
                    narrow: bool = False) -> float | None:
    """The factor on `kappa` from rows outside the fitted range: for each the smallest `c`
    with `|r| <= Z80 * sqrt(sigma_in**2 + (c * spread)**2)`, then their conformal quantile.

    With `narrow=False` (validation rows, which lie near the range if at all) only rows well
    outside (`spread >= sigma_in`) count, and the factor is at least 1: they only widen the
    first-order estimate; with fewer than `MIN_OUTSIDE_ROWS` such rows, 1. With
    `narrow=True` (the edge rows a first fit left out) every row outside counts and the
    quantile stands as it is (at least 1e-3), or None with too few rows."""
    spread, sigma_in = np.asarray(spread, np.float64), np.asarray(sigma_in, np.float64)
    out = (spread > OUTSIDE_TOL) & (True if narrow else spread >= sigma_in)
    if out.sum() < MIN_OUTSIDE_ROWS:
        return None if narrow else 1.0
    need = np.maximum((np.asarray(abs_resid)[out] / Z80) ** 2 - sigma_in[out] ** 2, 0.0)
    c = conformal_quantile(np.sqrt(need) / spread[out])
    return max(c, 1e-3) if narrow else max(1.0, c)


def widening_scales(abs_resid: np.ndarray, sigma_in: np.ndarray, contrib: np.ndarray) -> np.ndarray | None:
    """Per-feature factors on `kappa` from the rows a first fit left out (`EDGE_ALL`).

    `contrib [n, f]` is each row's first-order widening per feature (`kappa_j * e_j` of the
    first fit). Each row is counted for the feature that widens it most, and each feature's
    factor is `widening_scale(..., narrow=True)` over its rows; a feature with too few rows
    (`MIN_OUTSIDE_ROWS`) takes the factor of all rows together. None with too few rows
    outside at all."""
    contrib = np.abs(np.asarray(contrib, np.float64))
    abs_resid, sigma_in = np.asarray(abs_resid, np.float64), np.asarray(sigma_in, np.float64)
    spread = np.linalg.norm(contrib, axis=1)
    overall = widening_scale(abs_resid, sigma_in, spread, narrow=True)
    if overall is None:
        return None
    scales = np.full(contrib.shape[1], overall)
    dominant = contrib.argmax(axis=1)
    for j in range(contrib.shape[1]):
        rows = dominant == j
        c = widening_scale(abs_resid[rows], sigma_in[rows], spread[rows], narrow=True) if rows.any() else None
        if c is not None:
            scales[j] = c
    return scales


def edge_thresholds(x: np.ndarray, names, edge, frac: float) -> dict[int, float]:
    """Column -> the value from which a row of `x [n, f]` counts as an edge row: the top `frac`
    of each `edge` feature (ties at the threshold included). With `EDGE_ALL`, every feature
    with at least 3 distinct values (not flags or one-hot columns) whose ties keep the share
    at most `2 * frac`: a grid feature whose largest level holds a quarter of the rows (a
    kernel size, a batch size) would take that quarter out of the first fit; its rows count
    for the other features instead."""
    x = np.asarray(x, np.float64)
    if is_edge_all(edge):
        cols = [j for j in range(min(len(names), x.shape[1])) if len(np.unique(x[:, j])) >= 3]
    else:
        cols = [list(names).index(n) for n in edge if n in names]
    out = {}
    for j in cols:
        t = float(np.quantile(x[:, j], 1.0 - frac))
        if not is_edge_all(edge) or np.mean(x[:, j] >= t) <= 2 * frac:
            out[j] = t
    return out


def beyond_edge(x: np.ndarray, thresholds: Mapping[int, float]) -> np.ndarray:
    """Mask of the rows of `x [n, f]` at or above any of `thresholds` (`edge_thresholds`)."""
    x = np.asarray(x, np.float64)
    mask = np.zeros(len(x), bool)
    for j, t in thresholds.items():
        mask |= x[:, j] >= t
    return mask


def edge_rows(x: np.ndarray, names, edge, frac: float) -> np.ndarray | None:
    """Mask of the edge rows of `x [n, f]` (`edge_thresholds`), or None where none of the
    `edge` features is in `names` or too few rows lie on either side to fit without them and
    calibrate on them."""
    thresholds = edge_thresholds(x, names, edge, frac)
    if not thresholds:
        return None
    mask = beyond_edge(x, thresholds)
    if int(mask.sum()) < MIN_OUTSIDE_ROWS or int((~mask).sum()) < 4 * MIN_OUTSIDE_ROWS:
        return None
    return mask


def check_edge(edge, names_per_type: Mapping[str, Any]) -> None:
    """`ValueError` when an `edge` feature is a feature of none of the module types."""
    if is_edge_all(edge):
        return
    known = {n for names in names_per_type.values() for n in names}
    bad = [n for n in edge if n not in known]
    if bad:
        raise ValueError(f"recipe edge: {bad} are not features of "
                         f"{', '.join(sorted(names_per_type))}: expected some of {', '.join(sorted(known))}")


def standardized_bounds(x_min, x_max, x_mean, x_scale):
    """The training range in standardized units."""
    return (x_min - x_mean) / x_scale, (x_max - x_mean) / x_scale


def fit_encoding(x: np.ndarray, bins: int) -> dict[str, np.ndarray] | None:
    """The piecewise-linear encoding of rows `x [n, f]` (see `Recipe.bins`): for every bin
    its feature column `col`, lower edge `lo`, `width`, and whether it is its feature's
    `first` or `last` bin (1 or 0), each `[n_bins]`; `mask` is 1 (a MEDN pads the bins of
    its types to one count with 0). The flags are integers: a predictor keeps them with its
    index arrays, out of what fine-tuning trains. None where the rows support fewer than `MIN_BINS`
    bins or no feature has between three and `MAX_LEVELS` distinct values."""
    x = np.asarray(x, np.float64)
    bins = min(int(bins), len(x) // ROWS_PER_BIN)
    if bins < MIN_BINS:
        return None
    cols, los, widths, first, last = [], [], [], [], []
    for j in range(x.shape[1]):
        if not 2 < np.unique(x[:, j]).size <= MAX_LEVELS:
            continue
        edges = np.unique(np.quantile(x[:, j], np.linspace(0.0, 1.0, bins + 1)))
        if edges.size < 3:
            continue
        k = edges.size - 1
        cols += [j] * k
        los += list(edges[:-1])
        widths += list(np.diff(edges))
        first += [1] + [0] * (k - 1)
        last += [0] * (k - 1) + [1]
    if not cols:
        return None
    i32 = lambda a: np.asarray(a, np.int32)
    return {"col": i32(cols), "lo": np.asarray(los, np.float32), "width": np.asarray(widths, np.float32),
            "first": i32(first), "last": i32(last), "mask": np.ones(len(cols), np.int32)}


def encode(enc: Mapping[str, Any], x, xp=jnp):
    """The piecewise-linear encoding `[..., n_bins]` of features `x [..., f]`: per bin
    `(x - lo) / width`, clipped to [0, 1] except below the first bin and above the last, times
    `mask`. Piecewise linear in `x`, so gradients flow. `xp` is the array module (`jnp`, or
    `np` for rows on the host)."""
    edge, width = enc["lo"], enc["width"]
    if xp is jnp:  # the bins are structure: fine-tuning a predictor does not move them
        edge, width = jax.lax.stop_gradient(edge), jax.lax.stop_gradient(width)
    t = (x[..., enc["col"]] - edge) / width
    lo = xp.where(xp.asarray(enc["first"]) > 0, -xp.inf, 0.0)
    hi = xp.where(xp.asarray(enc["last"]) > 0, xp.inf, 1.0)
    return xp.clip(t, lo, hi) * enc["mask"]


def encode_host(enc: Mapping[str, Any], x: np.ndarray) -> np.ndarray:
    """`encode` of rows `x [n, f]` on the host (float32)."""
    return encode(enc, np.asarray(x, np.float32), np).astype(np.float32)


def pad_encodings(encs: list[dict[str, np.ndarray] | None]) -> dict[str, np.ndarray] | None:
    """Several types' encodings stacked `[n_types, n_bins]`, padded with masked bins (None
    for a type without one); None where no type has one."""
    n = max((len(e["col"]) for e in encs if e is not None), default=0)
    if n == 0:
        return None
    out = {k: np.zeros((len(encs), n), np.int32) for k in ("col", "first", "last", "mask")}
    out["lo"], out["width"] = np.zeros((len(encs), n), np.float32), np.ones((len(encs), n), np.float32)
    for t, e in enumerate(encs):
        if e is not None:
            for k, a in out.items():
                a[t, : len(e[k])] = e[k]
    return out
