"""Few-shot adaptation to a new device from K measurements.

The items are whole networks (`profilers.ArchRecord`, e.g. from `profilers.spaces`) or module
configs (a dataset frame). A **proxy** gives each item's latency on another device: a jaxlat
predictor (`predictor_proxy`) or a table of latencies measured there (`table_proxy`, for example
a published latency table over a NAS space). Several proxies may be combined.

    proxies = [table_proxy(edgegpu_table, key="arch"), predictor_proxy(reference_predictor())]
    adapted = adapt(records_k, measured_ms_k, proxies)          # K target measurements
    adapted.method, adapted.report                              # what was used, and why
    adapted.predict(other_records)                              # latency (ms) on the target

Methods, all in log latency (t = log target ms, q_i = log proxy_i ms, f = item features):

- `reuse`: t = c + q_1: the first proxy as is, rescaled (its rank order kept);
- `affine`: t = a + b q_1;
- `multi_proxy`: t = a + sum_i b_i q_i, ridge over several proxies;
- `adaproxy`: t = a + b q_1 + w . f, the AdaProxy form: scale, bias and a per-feature
  reweighting (ridge on w);
- `scratch`: t = a + w . f, no proxy (the baseline a target would have alone);
- `recompose`: whole networks with a predictor as the first proxy (`predictor_proxy`): the
  predictor's module predictions kept, its composition correction (scale of the module sum,
  per-operator overheads; `jaxlat._composition`) fitted again on the K networks. How modules
  compose into a network differs between devices more than the modules' relative costs do;
  `Adapted.predictor()` is then a `LatencyPredictor` again (pure JAX, gradients, NAS).

`adapt` scores every candidate that applies on the same held-out scheme (the same folds of the K
samples: leave-one-out up to 10 samples, 10 folds above) and keeps the lowest log RMSE, the
simpler form on ties within 1 %. Nothing is gated by one proxy, and the result does not depend on
the order of the proxies: the single-proxy forms (`reuse`, `affine`, `adaproxy`) read the
*primary* proxy, the one whose `affine` map has the lowest held-out error on the K samples;
`multi_proxy` is a ridge over every proxy's standardized log latency; `recompose` applies where a
proxy is a predictor (the best such), the items are whole networks and there are at least 7 samples.
The report holds every candidate's score, each proxy's rank correlation, the primary and the choice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Union

import numpy as np
import pandas as pd
from scipy import stats

if TYPE_CHECKING:
    from profilers import ArchRecord

    from .._composition import Composition
    from .._predictor import LatencyPredictor

#: What adaptation reads: whole networks (architecture records) or a frame of module configs.
Items = Union["Sequence[ArchRecord]", pd.DataFrame]

METHODS = ("reuse", "affine", "recompose", "multi_proxy", "adaproxy", "scratch")
#: `recompose` fits the 5 composition terms: fewer samples leave it under-determined.
_MIN_RECOMPOSE = 7
_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)


class MissingItemsError(KeyError, ValueError):
    """A proxy table without a latency for some items (a `KeyError` for lookups, a `ValueError`
    for callers that report bad input)."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence
        return str(self.args[0]) if self.args else ""


def _keys_text(keys: Sequence[Any], limit: int = 5) -> str:
    keys = list(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(repr(k) for k in keys[:limit]) + more


def check_latency_table(table: pd.Series, *, name: str = "table") -> pd.Series:
    """A latency table (item key -> ms) checked: every key once, every latency finite and > 0.

    Raises:
      ValueError: naming the table, the duplicate keys (saying whether their latencies
        conflict) or the keys with NaN, infinite or non-positive latencies.
    """
    t = pd.Series(table, dtype=float)
    dup = t.index[t.index.duplicated(keep=False)]
    if len(dup):
        keys = list(dict.fromkeys(dup))
        conflicting = [k for k in keys if t.loc[[k]].nunique(dropna=False) > 1]
        what = f"with conflicting latencies: {_keys_text(conflicting)}" if conflicting else "(same latencies)"
        raise ValueError(f"{name}: {len(keys)} architecture(s) appear more than once {what}; duplicates "
                         f"{_keys_text(keys)}: expected each architecture once")
    bad = t.index[~np.isfinite(t.to_numpy()) | (t.to_numpy() <= 0)]
    if len(bad):
        raise ValueError(f"{name}: {len(bad)} latencies are NaN, infinite or <= 0 ({_keys_text(bad)}; e.g. "
                         f"{t.loc[bad[0]]!r}): expected finite latencies > 0 ms")
    return t


#: A learned correction: `fit(items, latency_ms) -> predict(items) -> latency_ms`.
LearnedMethod = Callable[[Items, np.ndarray], Callable[[Items], np.ndarray]]


class Proxy(NamedTuple):
    """Latency (ms) of items on a proxy device: `fn(items) -> [n]`; `predictor`: the
    `LatencyPredictor` behind it, where there is one (for `recompose`)."""

    name: str
    fn: Callable[[Items], np.ndarray]
    predictor: LatencyPredictor | None = None


def predictor_proxy(predictor: LatencyPredictor, name: str = "predictor") -> Proxy:
    """A jaxlat predictor as a proxy: whole networks through `predict_models`, module configs
    (a frame) through `predict`."""

    def fn(items):
        if isinstance(items, pd.DataFrame):
            return predictor.predict(items)["latency_ms"].to_numpy(float)
        return predictor.predict_models(list(items))["latency_ms"].to_numpy(float)

    return Proxy(name, fn, predictor)


def item_keys(items: Items, key: str = "name") -> list[str]:
    """Keys of items: a record's `name` or `info[key]` (e.g. `arch`); a frame's `config_key`
    (or the column `key`)."""
    if isinstance(items, pd.DataFrame):
        col = key if key in items.columns else "config_key"
        return [str(k) for k in items[col]]
    return [r.name if key == "name" else str(r.info.get(key, r.name)) for r in items]


def table_proxy(table: pd.Series | Mapping[str, float], *, key: str = "name", name: str = "table") -> Proxy:
    """Latencies measured on another device as a proxy, looked up by item key (see `item_keys`).

    Raises:
      ValueError: the table repeats a key or holds a NaN, infinite or non-positive latency
        (`check_latency_table`).
      MissingItemsError (when called; a `KeyError` and a `ValueError`): items the table does
        not hold, named.
    """
    t = check_latency_table(table, name=f"proxy table {name!r}")

    def fn(items):
        keys = item_keys(items, key)
        missing = [k for k in keys if k not in t.index]
        if missing:
            raise MissingItemsError(
                f"proxy table {name!r} has no latency for {len(missing)} item(s), e.g. {missing[:3]}: "
                f"expected a latency for every sample and every architecture to predict"
            )
        return t.loc[keys].to_numpy(float)

    return Proxy(name, fn)


def network_features(items: Items) -> np.ndarray:
    """Features of items for the feature-based methods: for records, log of the summed FLOPs,
    parameters, bytes in / out / weight, log1p of the module count per type, of unmapped compute
    operators and of their MB, log batch size; for a module frame, log1p of the analytic costs
    and the module type one-hot."""
    if isinstance(items, pd.DataFrame):
        from profilers import module_types

        costs = np.log1p(items[["flops", "params", "bytes_in", "bytes_out", "bytes_weight"]].to_numpy(float))
        onehot = np.stack([(items["module"] == m).to_numpy(float) for m in module_types()], axis=1)
        return np.concatenate([costs, onehot, np.log(items[["batch_size"]].to_numpy(float))], axis=1)
    from profilers import COST_TOTALS, module_cost_totals, module_types

    items = list(items)
    types = module_types()
    totals = module_cost_totals(items)
    cols = [[np.log1p(t[c]) for c in COST_TOTALS] + [np.log1p(t[f"n_{m}"]) for m in types] for t in totals]
    counts = [r.counts() for r in items]
    extra = [[np.log1p(c["n_unmapped_compute"]), np.log1p(c["unmapped_bytes"] / 1e6), np.log(r.batch_size)]
             for c, r in zip(counts, items)]
    return np.concatenate([np.asarray(cols, float).reshape(len(items), -1),
                           np.asarray(extra, float).reshape(len(items), 3)], axis=1)


def _ridge(x: np.ndarray, y: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """Least squares with a per-coefficient L2 penalty (0 for unpenalized columns)."""
    a = x.T @ x + np.diag(penalty)
    return np.linalg.solve(a + 1e-9 * np.eye(len(a)), x.T @ y)


@dataclasses.dataclass(frozen=True)
class _Design:
    """How a method builds its design matrix from (log proxies, standardized features)."""

    use_proxies: int  # 0: none, 1: the first, -1: all
    use_features: bool
    fixed_slope: bool = False  # reuse: slope 1 on the first proxy


_DESIGNS = {
    "reuse": _Design(1, False, fixed_slope=True),
    "affine": _Design(1, False),
    "multi_proxy": _Design(-1, False),
    "adaproxy": _Design(1, True),
    "scratch": _Design(0, True),
}


def _design(method: str, q: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Design matrix and per-column L2 penalty; `q` is `[n, n_proxies]` log proxy latencies with
    the primary first (standardized for `multi_proxy`), `f` standardized features."""
    d = _DESIGNS[method]
    cols = [np.ones((len(q), 1))]
    pen = [0.0]
    if d.use_proxies and not d.fixed_slope:
        qq = q[:, :1] if d.use_proxies == 1 else q
        cols.append(qq)
        pen += [0.0 if d.use_proxies == 1 else 1.0] * qq.shape[1]
    if d.use_features:
        cols.append(f)
        pen += [1.0] * f.shape[1]
    return np.concatenate(cols, axis=1), np.asarray(pen)


def _standardizer(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = a.mean(0)
    sd = a.std(0)
    return mean, np.where(sd > 1e-9, sd, 1.0)


@dataclasses.dataclass
class _Fit:
    method: str
    coef: np.ndarray
    alpha: float
    f_mean: np.ndarray
    f_scale: np.ndarray
    q_mean: np.ndarray
    q_scale: np.ndarray

    def predict_log(self, q: np.ndarray, f_raw: np.ndarray | None) -> np.ndarray:
        if _DESIGNS[self.method].use_proxies == -1:
            q = (q - self.q_mean) / self.q_scale
        f = None if f_raw is None else (f_raw - self.f_mean) / self.f_scale
        x, _ = _design(self.method, q, f if f is not None else np.zeros((len(q), 0)))
        out = x @ self.coef
        return out + q[:, 0] if _DESIGNS[self.method].fixed_slope else out


def _fit(method: str, q: np.ndarray, f_raw: np.ndarray, t: np.ndarray, alpha: float) -> _Fit:
    f_mean, f_scale = _standardizer(f_raw)
    q_mean, q_scale = _standardizer(q)
    qd = (q - q_mean) / q_scale if _DESIGNS[method].use_proxies == -1 else q
    x, pen = _design(method, qd, (f_raw - f_mean) / f_scale)
    target = t - q[:, 0] if _DESIGNS[method].fixed_slope else t
    if method == "reuse":  # the median ratio: robust to one bad sample
        coef = np.array([np.median(target)])
    else:
        coef = _ridge(x, target, alpha * pen)
    return _Fit(method, coef, alpha, f_mean, f_scale, q_mean, q_scale)


def _folds(k: int) -> np.ndarray:
    """The held-out scheme every candidate is scored on: leave-one-out up to 10 samples, else
    10 folds (by position; the K samples are a random draw already)."""
    return np.arange(k) % min(k, 10)


def _cv_log_errors(fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray], t: np.ndarray) -> np.ndarray:
    """Held-out log errors: `fit_predict(train_idx, test_idx) -> predicted log latency`."""
    fold = _folds(len(t))
    errs = np.empty(len(t))
    for k in np.unique(fold):
        te, tr = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        errs[te] = fit_predict(tr, te) - t[te]
    return errs


def _score(errs: np.ndarray, **extra: Any) -> dict[str, Any]:
    errs = np.where(np.isfinite(errs), errs, 10.0)  # a failed fit scores badly
    return {"log_rmse": float(np.sqrt(np.mean(errs**2))), "acc10": float(np.mean(np.abs(np.exp(errs) - 1) <= 0.10)),
            **extra}


def _take(items: Items, idx: np.ndarray) -> Items:
    return items.iloc[idx] if isinstance(items, pd.DataFrame) else [items[i] for i in idx]


def _recompose(predictor: LatencyPredictor, terms: np.ndarray, latency_ms: np.ndarray, *,
               leave_out: int | None = None) -> Composition:
    """The composition correction fitted on design rows `terms` (`predictor.composition_terms`)
    and measured latencies, without row `leave_out`; terms the networks leave at zero keep the
    predictor's values."""
    from .._composition import fit_composition

    keep = np.arange(len(latency_ms)) != (-1 if leave_out is None else leave_out)
    prior = predictor.composition.coef if predictor.composition is not None else None
    return fit_composition(terms[keep], latency_ms[keep], prior=prior,
                           info={"fitted_by": "jaxlat.transfer.recomposed", "k": int(keep.sum())})


def recomposed(predictor: LatencyPredictor, records: Sequence[ArchRecord], latency_ms: Sequence[float]) -> LatencyPredictor:
    """A copy of `predictor` whose composition correction is fitted on `records` measured at
    `latency_ms` on the target (module predictions unchanged): the `recompose` method."""
    comp = _recompose(predictor, predictor.composition_terms(records), np.asarray(latency_ms, float))
    return predictor.with_composition(comp)


@dataclasses.dataclass
class Adapted:
    """A proxy adapted to the target device.

    Attributes:
      method: the chosen method (see the module docstring).
      report: the K samples' rank correlation with the first proxy, the threshold decision, and
        every candidate's leave-one-out log RMSE, ±10 % accuracy and ridge alpha.
    """

    method: str
    report: dict[str, Any]
    _fit: _Fit | None
    _proxies: tuple[Proxy, ...]
    _learned: Callable[[Items], np.ndarray] | None = None
    _predictor: LatencyPredictor | None = None

    def predict(self, items: Items) -> np.ndarray:
        """Latency (ms) of items on the target device."""
        if self._learned is not None:
            return np.asarray(self._learned(items), float)
        if self._predictor is not None:
            return self._predictor.predict_models(list(items))["latency_ms"].to_numpy(float)
        q = _log_proxies(self._proxies, items)
        f = network_features(items) if _DESIGNS[self._fit.method].use_features else None
        return np.exp(self._fit.predict_log(q, f))

    def log_affine(self) -> tuple[float, float]:
        """`(a, b)` with target ms = exp(a) * proxy ms ** b, for `reuse` and `affine` (the forms
        that map the proxy's latency alone); apply it to a JAX latency to keep gradients, e.g.
        `lambda p, w: jnp.exp(a) * lat(p, w) ** b` in a NAS penalty.

        Raises:
          ValueError: the chosen method also reads item features or several proxies.
        """
        if self.method == "reuse":
            return float(self._fit.coef[0]), 1.0
        if self.method == "affine":
            return float(self._fit.coef[0]), float(self._fit.coef[1])
        raise ValueError(f"log_affine: method {self.method!r} is not a map of the proxy latency alone; "
                         "only 'reuse' and 'affine' are (adapt(..., methods=('reuse', 'affine')))")

    def predictor(self) -> LatencyPredictor:
        """The adapted `LatencyPredictor` of `recompose` (its composition refitted to the
        target): pure JAX, so NAS can take gradients through it.

        Raises:
          ValueError: another method was chosen (for `reuse` and `affine`, see `log_affine`).
        """
        if self._predictor is None:
            raise ValueError(f"predictor: method {self.method!r} does not give a predictor; only 'recompose' does "
                             "(for 'reuse' and 'affine' apply log_affine() to the proxy's latency)")
        return self._predictor


def _log_proxies(proxies: Sequence[Proxy], items: Items) -> np.ndarray:
    cols = []
    for p in proxies:
        v = np.asarray(p.fn(items), float)
        if np.any(~np.isfinite(v)) or np.any(v <= 0):
            raise ValueError(f"proxy {p.name!r} gave non-positive or non-finite latencies")
        cols.append(np.log(v))
    return np.stack(cols, axis=1) if cols else np.zeros((len(item_keys(items)), 0))


def _check_inputs(items: Items, proxies: Sequence[Proxy]) -> None:
    if isinstance(proxies, Proxy) or not isinstance(proxies, Sequence) or isinstance(proxies, str):
        raise ValueError(f"proxies must be a list of Proxy (e.g. [table_proxy(t)]), got {type(proxies).__name__}; "  # noqa: TRY004
                         "wrap a single proxy in a list")
    wrong = [p for p in proxies if not isinstance(p, Proxy)]
    if wrong:
        raise ValueError(f"proxies: {type(wrong[0]).__name__} is not a Proxy; build one with table_proxy or "
                         "predictor_proxy")
    names = [p.name for p in proxies]
    if len(set(names)) < len(names):
        raise ValueError(f"proxies: names must differ, got {names}")
    if not isinstance(items, pd.DataFrame):
        bad = [x for x in items if not hasattr(x, "modules")]
        if bad:
            raise ValueError(f"items: {type(bad[0]).__name__} {str(bad[0])[:60]!r} is not an architecture record; "
                             "pass profilers.ArchRecord items (e.g. profilers.spaces.NB201.record(arch)) or a frame "
                             "of module configs")


def adapt(
    items: Items,
    latency_ms: Sequence[float],
    proxies: Sequence[Proxy],
    *,
    threshold: float = 0.9,
    methods: Sequence[str] | None = None,
    learned: Mapping[str, LearnedMethod] | None = None,
) -> Adapted:
    """Adapt `proxies` to a target from K measured items (see the module docstring).

    Args:
      items: K architecture records, or a frame of K module configs.
      latency_ms: their measured latencies on the target.
      proxies: a list of one or more; their order does not matter.
      threshold: a rank correlation reported against (`report["primary_rank_ok"]`); it does
        not restrict the candidates.
      methods: restrict the candidates (default: every method that applies).
      learned: more candidates that learn from the samples (`embedding_method`,
        `finetune_method` of a device-aware MEDN), scored on the same folds.

    Raises:
      ValueError: fewer than 3 samples, items and latencies of different lengths, an item
        twice (by key: a record's name, a frame's config_key), NaN/infinite/non-positive
        latencies (the items named), `threshold` outside [-1, 1], a single proxy or strings
        where a list of proxies or records is expected, unknown methods.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
        raise ValueError(f"threshold={threshold!r} is not valid (--threshold): expected a rank correlation "
                         "in [-1, 1]")
    _check_inputs(items, proxies)
    y = np.asarray(latency_ms, float).reshape(-1)
    keys = item_keys(items)
    if len(keys) != len(y):
        raise ValueError(f"adapt: {len(keys)} items but {len(y)} latencies; expected one latency per item")
    check_latency_table(pd.Series(y, index=keys), name="adapt: the measured samples")
    t = np.log(y)
    if len(t) < 3:
        raise ValueError(f"adapt: {len(t)} samples; at least 3 are needed")
    # Order-free: proxies sorted by name, the primary chosen by held-out error below.
    proxies = sorted(proxies, key=lambda p: p.name)
    q_all = _log_proxies(proxies, items)
    rhos = {p.name: float(stats.spearmanr(q_all[:, i], t).statistic) for i, p in enumerate(proxies)}
    affine = {}
    for i, p in enumerate(proxies):
        qi = q_all[:, [i]]
        affine[p.name] = _score(_cv_log_errors(
            lambda tr, te, qi=qi: _fit("affine", qi[tr], np.zeros((len(tr), 0)), t[tr], 0.0).predict_log(qi[te], None), t))
    primary = min(range(len(proxies)), key=lambda i: (affine[proxies[i].name]["log_rmse"], proxies[i].name)) \
        if proxies else None
    if primary is not None:  # the primary first: the single-proxy forms read column 0
        order = [primary] + [i for i in range(len(proxies)) if i != primary]
        proxies, q = [proxies[i] for i in order], q_all[:, order]
    else:
        q = q_all
    predictors = [i for i, p in enumerate(proxies) if p.predictor is not None]
    can_recompose = bool(predictors) and not isinstance(items, pd.DataFrame) and len(t) >= _MIN_RECOMPOSE
    if methods is None:
        methods = ("scratch",) if not proxies else ("reuse", "affine", "adaproxy", "scratch") + (
            ("multi_proxy",) if len(proxies) > 1 else ())
        if can_recompose:
            methods += ("recompose",)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"methods={bad} not valid: expected some of {', '.join(METHODS)}")
    if not proxies and any(_DESIGNS[m].use_proxies for m in methods if m in _DESIGNS):
        raise ValueError("adapt: these methods need at least one proxy")
    if "recompose" in methods and not can_recompose:
        raise ValueError(f"adapt: 'recompose' needs whole networks, a predictor as a proxy (predictor_proxy) "
                         f"and at least {_MIN_RECOMPOSE} samples")
    needs_features = any(_DESIGNS[m].use_features for m in methods if m in _DESIGNS)
    f = network_features(items) if needs_features else np.zeros((len(t), 0))
    scores: dict[str, dict[str, Any]] = {}
    recomposer = None
    if "recompose" in methods:  # the predictor proxy whose modules rank the samples best
        recomposer = proxies[max(predictors, key=lambda i: (rhos[proxies[i].name], proxies[i].name))].predictor
        terms = recomposer.composition_terms(items)

        def recompose_cv(tr, te):
            pred = _recompose(recomposer, terms[tr], y[tr]).apply(terms[te])
            return np.log(np.where(pred > 0, pred, np.nan))

        scores["recompose"] = _score(_cv_log_errors(recompose_cv, t), alpha=None)
    for m in (m for m in methods if m != "recompose"):
        alphas = _ALPHAS if m in ("multi_proxy", "adaproxy", "scratch") else (0.0,)
        best = None
        for a in alphas:
            e = _cv_log_errors(lambda tr, te, m=m, a=a: _fit(m, q[tr], f[tr], t[tr], a).predict_log(
                q[te], f[te] if needs_features else None), t)
            sc = _score(e, alpha=a)
            if best is None or sc["log_rmse"] < best["log_rmse"]:
                best = sc
        scores[m] = best
    learned = dict(learned or {})
    for name, method in learned.items():
        scores[name] = _score(_cv_log_errors(
            lambda tr, te, method=method: np.log(method(_take(items, tr), y[tr])(_take(items, te))), t), alpha=None)
    # Fewer parameters win ties within 1 %: reuse, affine, then the richer forms, learned last.
    rank = {m: i for i, m in enumerate(METHODS + tuple(learned))}
    candidates = list(methods) + list(learned)
    chosen = min(candidates, key=lambda m: (round(scores[m]["log_rmse"] / 0.01), rank[m]))
    primary_name = proxies[0].name if proxies else None
    report = {"k": len(t), "primary": primary_name, "spearman": rhos,
              "spearman_primary": rhos.get(primary_name, float("nan")), "threshold": threshold,
              "primary_rank_ok": bool(proxies) and rhos[primary_name] >= threshold,
              "reused": chosen == "reuse", "candidates": scores, "chosen": chosen,
              "proxies": [p.name for p in proxies], "folds": int(min(len(t), 10))}
    if chosen in learned:
        return Adapted(chosen, report, None, tuple(proxies), learned[chosen](items, y))
    if chosen == "recompose":
        return Adapted(chosen, report, None, tuple(proxies),
                       _predictor=recomposer.with_composition(_recompose(recomposer, terms, y)))
    return Adapted(chosen, report, _fit(chosen, q, f, t, scores[chosen]["alpha"]), tuple(proxies))


def few_shot_curve(
    items: Items,
    latency_ms: Sequence[float],
    proxies: Sequence[Proxy],
    *,
    ks: Sequence[int] = (5, 10, 20, 50),
    repeats: int = 20,
    seed: int = 0,
    threshold: float = 0.9,
) -> pd.DataFrame:
    """Spearman rho and ±10 % accuracy against K on a target: for each K and repeat, adapt on a
    random K of the items and score the predictions of all the others; the same K samples also
    train `scratch` alone (the baseline).

    Returns:
      One row per (k, repeat, approach): `approach` (`adapted` or `scratch`), `method`,
      `spearman`, `acc10`, `mape`.
    """
    y = np.asarray(latency_ms, float)
    n = len(y)
    is_frame = isinstance(items, pd.DataFrame)

    def take(idx):
        return items.iloc[idx] if is_frame else [items[i] for i in idx]

    rng = np.random.default_rng(seed)
    rows = []
    for k in ks:
        if k >= n:
            continue
        for rep in range(repeats):
            idx = rng.permutation(n)
            tr, te = idx[:k], idx[k:]
            for approach in ("adapted", "scratch"):
                a = adapt(take(tr), y[tr], proxies, threshold=threshold,
                          methods=("scratch",) if approach == "scratch" else None)
                p = a.predict(take(te))
                rel = p / y[te] - 1
                rows.append({"k": k, "repeat": rep, "approach": approach, "method": a.method,
                             "spearman": float(stats.spearmanr(p, y[te]).statistic),
                             "acc10": float(np.mean(np.abs(rel) <= 0.10)), "mape": float(np.mean(np.abs(rel)))})
    return pd.DataFrame(rows)
