"""Whole-model latency: the sum of module predictions plus a learned composition correction.

A model's latency is not the sum of its modules measured alone: operators the catalogue does not
cover (reshapes that copy, softmax, concatenation, embedding lookups), per-operator framework
overhead and cache effects between consecutive operators all add or remove time. The
correction is linear in interpretable terms, fitted on end-to-end measurements of generated
networks (`jaxlat-profile generated`):

    latency_ms = scale * sum(module predictions)
               + per_module_ms * n_modules
               + per_unmapped_ms * n_unmapped_compute + per_view_ms * n_unmapped_view
               + ms_per_mb * arithmetic_MB + ms_per_copy_mb * copy_MB

where `copy_MB` are the bytes the unmapped copies move (padding, concatenation, layout copies,
gathers: `profilers.COPY_OPS`) and `arithmetic_MB` those of the other unmapped compute
operators (softmax, elementwise arithmetic, ...): per byte, a copy costs a fraction of an
exponential. Every term but `per_module_ms` is non-negative, fitted by bounded least squares on
relative error. Its residual spread on the fitting networks widens the model's interval.

A correction saved before the copy term existed (no `ms_per_copy_mb`) charged all unmapped
bytes at `ms_per_mb`; it is read with `ms_per_copy_mb = ms_per_mb`, so it predicts as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._predict import COUNT_TERMS, compose

TERMS = ("scale", "per_module_ms", "per_unmapped_ms", "per_view_ms", "ms_per_mb", "ms_per_copy_mb")
#: The plain sum: what a predictor without a fitted correction uses.
IDENTITY = {"scale": 1.0, "per_module_ms": 0.0, "per_unmapped_ms": 0.0, "per_view_ms": 0.0, "ms_per_mb": 0.0,
            "ms_per_copy_mb": 0.0}


@dataclasses.dataclass(frozen=True)
class Composition:
    """A fitted correction: `coef` per term, `log_sigma` (residual spread of log latency on the
    fitting networks) and what it was fitted on."""

    coef: Mapping[str, float]
    log_sigma: float = 0.0
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: 80th percentile of |log(predicted / measured)| on the fitting networks: the half-width
    #: of the 80 % interval of a whole-model prediction, at least 0.01 (None: derived from
    #: module intervals).
    log_q80: float | None = None

    @property
    def coef_array(self) -> np.ndarray:
        """`[6]` coefficients in `TERMS` order: the composition's part of `PredictorParams`."""
        return np.array([self.coef[t] for t in TERMS], np.float32)

    def apply(self, terms: np.ndarray) -> np.ndarray:
        """Corrected latency (ms) from the `[n, 6]` design rows of `design_rows`, by the one
        whole-model formula (`jaxlat._predict.compose`), on the host in float64."""
        terms = np.asarray(terms, np.float64)
        return np.asarray(compose(self.coef_array.astype(np.float64), terms[:, 0], terms[:, 1:]), np.float64)

    def as_json(self) -> dict[str, Any]:
        return {"coef": dict(self.coef), "log_sigma": self.log_sigma, "log_q80": self.log_q80, "info": dict(self.info)}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Composition:
        coef = dict(obj.get("coef", {}))
        if "ms_per_copy_mb" not in coef and "ms_per_mb" in coef:  # saved before copies had their own rate
            coef["ms_per_copy_mb"] = coef["ms_per_mb"]
        missing = [t for t in TERMS if t not in coef]
        if missing:
            raise ValueError(f"composition: missing coefficients {missing}")
        q = obj.get("log_q80")
        return cls({t: float(coef[t]) for t in TERMS}, float(obj.get("log_sigma", 0.0)), obj.get("info", {}),
                   None if q is None else float(q))


def count_rows(counts: Sequence[Mapping[str, float]]) -> np.ndarray:
    """`[n, 5]` composition counts (`jaxlat._predict.COUNT_TERMS`) of records, from their
    `ArchRecord.counts()` (without `unmapped_copy_bytes`, no copies)."""
    c = {k: np.array([float(x[k]) for x in counts]) for k in
         ("n_modules", "n_unmapped_compute", "n_unmapped_view", "unmapped_bytes")}
    copy_b = np.array([float(x.get("unmapped_copy_bytes", 0)) for x in counts])
    out = np.stack([c["n_modules"], c["n_unmapped_compute"], c["n_unmapped_view"],
                    (c["unmapped_bytes"] - copy_b) / 1e6, copy_b / 1e6], axis=1).reshape(len(counts), len(COUNT_TERMS))
    return out


def design_rows(sum_ms: np.ndarray, counts: Sequence[Mapping[str, float]]) -> np.ndarray:
    """`[n, 6]` design matrix (columns in `TERMS` order): the module sum and the composition
    counts of each record (`ArchRecord.counts()`; without `unmapped_copy_bytes`, no copies)."""
    return np.concatenate([np.asarray(sum_ms, np.float64).reshape(-1, 1), count_rows(counts)], axis=1)


def fit_composition(terms: np.ndarray, measured_ms: np.ndarray, *, info: Mapping[str, Any] | None = None,
                    prior: Mapping[str, float] | None = None) -> Composition:
    """Fit the correction on design rows and measured end-to-end latencies (ms).

    Minimizes relative squared error; `scale` and the per-unmapped terms are kept >= 0,
    `per_module_ms` may be negative (isolated modules can carry more call overhead than the
    same operators inside a model). A term that is zero in every row (e.g. no unmapped
    operators in the networks) cannot be fitted: it keeps its value in `prior` (default 0).

    Raises:
      ValueError: fewer than 6 networks, or non-positive latencies.
    """
    from scipy.optimize import lsq_linear

    x = np.asarray(terms, np.float64)
    y = np.asarray(measured_ms, np.float64)
    if len(y) < 6:
        raise ValueError(f"fit_composition: need at least 6 measured networks, got {len(y)}")
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("fit_composition: measured latencies must be finite and positive")
    w = 1.0 / y
    fixed = np.array([float((prior or {}).get(t, 0.0)) for t in TERMS])
    free = np.any(x != 0, axis=0)
    lo = np.array([0.0 if t != "per_module_ms" else -np.inf for t in TERMS])[free]
    rest = x[:, ~free] @ fixed[~free]
    res = lsq_linear(x[:, free] * w[:, None], (y - rest) * w, bounds=(lo, np.full(int(free.sum()), np.inf)), method="bvls")
    values = fixed.copy()
    values[free] = res.x
    coef = {t: float(v) for t, v in zip(TERMS, values)}
    comp = Composition(coef, 0.0, {})
    pred = np.maximum(comp.apply(x), 1e-6)
    log_res = np.log(pred / y)
    rel = pred / y - 1
    fit_info = {
        "n_networks": len(y),
        "fit_acc10": float(np.mean(np.abs(rel) <= 0.10)),
        "fit_median_abs_rel_err": float(np.median(np.abs(rel))),
        **dict(info or {}),
    }
    return Composition(coef, float(np.sqrt(np.mean(log_res**2))), fit_info, max(0.01, float(np.quantile(np.abs(log_res), 0.8))))
