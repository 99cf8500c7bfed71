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

`adapt` first checks the first proxy's rank correlation on the K samples: at or above
`threshold` (default 0.9) it chooses between `reuse` and `affine`; below, between the
corrections; `recompose` is a candidate on both sides where it applies (whole networks, a
predictor as the first proxy, at least 7 samples). The choice is by leave-one-out error on the K samples (log RMSE); the report holds
every candidate's score, the rank correlation and the choice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

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
LearnedMethod = Callable[[Any, np.ndarray], Callable[[Any], np.ndarray]]


class Proxy(NamedTuple):
    """Latency (ms) of items on a proxy device: `fn(items) -> [n]`; `predictor`: the
    `LatencyPredictor` behind it, where there is one (for `recompose`)."""

    name: str
    fn: Callable[[Any], np.ndarray]
    predictor: Any = None


def predictor_proxy(predictor: Any, name: str = "predictor") -> Proxy:
    """A jaxlat predictor as a proxy: whole networks through `predict_models`, module configs
    (a frame) through `predict`."""

    def fn(items):
        if isinstance(items, pd.DataFrame):
            return predictor.predict(items)["latency_ms"].to_numpy(float)
        return predictor.predict_models(list(items))["latency_ms"].to_numpy(float)

    return Proxy(name, fn, predictor)


def item_keys(items: Any, key: str = "name") -> list[str]:
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


def network_features(items: Any) -> np.ndarray:
    """Features of items for the feature-based methods: for records, log of the summed FLOPs,
    parameters, bytes in / out / weight, log1p of the module count per type, of unmapped compute
    operators and of their MB, log batch size; for a module frame, log1p of the analytic costs
    and the module type one-hot."""
    if isinstance(items, pd.DataFrame):
        from profilers import module_types

        costs = np.log1p(items[["flops", "params", "bytes_in", "bytes_out", "bytes_weight"]].to_numpy(float))
        onehot = np.stack([(items["module"] == m).to_numpy(float) for m in module_types()], axis=1)
        return np.concatenate([costs, onehot, np.log(items[["batch_size"]].to_numpy(float))], axis=1)
    from profilers import module_types

    types = module_types()
    rows = []
    for r in items:
        c = {"flops": 0.0, "params": 0.0, "bytes_in": 0.0, "bytes_out": 0.0, "bytes_weight": 0.0}
        per_type = dict.fromkeys(types, 0)
        for m in r.modules:
            k = m.config.costs()
            for f in c:
                c[f] += getattr(k, f)
            per_type[m.config.module] = per_type.get(m.config.module, 0) + 1
        n = r.counts()
        rows.append([np.log1p(c[f]) for f in c] + [np.log1p(per_type[t]) for t in types]
                    + [np.log1p(n["n_unmapped_compute"]), np.log1p(n["unmapped_bytes"] / 1e6), np.log(r.batch_size)])
    return np.asarray(rows, float)


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


@dataclasses.dataclass
class _Fit:
    method: str
    coef: np.ndarray
    alpha: float
    f_mean: np.ndarray
    f_scale: np.ndarray

    def predict_log(self, q: np.ndarray, f_raw: np.ndarray) -> np.ndarray:
        f = (f_raw - self.f_mean) / self.f_scale
        x, _ = _design(self.method, q, f)
        out = x @ self.coef
        return out + q[:, 0] if _DESIGNS[self.method].fixed_slope else out


def _fit(method: str, q: np.ndarray, f_raw: np.ndarray, t: np.ndarray, alpha: float) -> _Fit:
    mean = f_raw.mean(0)
    scale = np.where(f_raw.std(0) > 1e-9, f_raw.std(0), 1.0)
    f = (f_raw - mean) / scale
    x, pen = _design(method, q, f)
    target = t - q[:, 0] if _DESIGNS[method].fixed_slope else t
    if method == "reuse":  # the median ratio: robust to one bad sample
        coef = np.array([np.median(target)])
    else:
        coef = _ridge(x, target, alpha * pen)
    return _Fit(method, coef, alpha, mean, scale)


def _loo_log_errors(method: str, q: np.ndarray, f: np.ndarray, t: np.ndarray, alpha: float) -> np.ndarray:
    errs = np.empty(len(t))
    for i in range(len(t)):
        keep = np.arange(len(t)) != i
        fit = _fit(method, q[keep], f[keep], t[keep], alpha)
        errs[i] = fit.predict_log(q[i:i + 1], f[i:i + 1])[0] - t[i]
    return errs


def _take(items: Any, idx: np.ndarray) -> Any:
    return items.iloc[idx] if isinstance(items, pd.DataFrame) else [items[i] for i in idx]


def _kfold_log_errors(method: LearnedMethod, items: Any, y: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    n = len(y)
    fold = np.random.default_rng(seed).permutation(n) % folds
    errs = np.empty(n)
    for k in range(folds):
        te, tr = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        predict = method(_take(items, tr), y[tr])
        errs[te] = np.log(predict(_take(items, te))) - np.log(y[te])
    return errs


def _can_recompose(proxies: Sequence[Proxy], items: Any, k: int) -> bool:
    return (bool(proxies) and proxies[0].predictor is not None and not isinstance(items, pd.DataFrame)
            and k >= _MIN_RECOMPOSE)


def _recompose(predictor: Any, terms: np.ndarray, latency_ms: np.ndarray, *, leave_out: int | None = None) -> Any:
    """The composition correction fitted on design rows `terms` (`predictor.composition_terms`)
    and measured latencies, without row `leave_out`; terms the networks leave at zero keep the
    predictor's values."""
    from .._composition import fit_composition

    keep = np.arange(len(latency_ms)) != (-1 if leave_out is None else leave_out)
    prior = predictor.composition.coef if predictor.composition is not None else None
    return fit_composition(terms[keep], latency_ms[keep], prior=prior,
                           info={"fitted_by": "jaxlat.transfer.recomposed", "k": int(keep.sum())})


def _loo_recompose(predictor: Any, terms: np.ndarray, y: np.ndarray) -> np.ndarray:
    errs = np.empty(len(y))
    for i in range(len(y)):
        pred = float(_recompose(predictor, terms, y, leave_out=i).apply(terms[i:i + 1])[0])
        errs[i] = np.log(pred) - np.log(y[i]) if np.isfinite(pred) and pred > 0 else 10.0  # a failed fit scores badly
    return errs


def recomposed(predictor: Any, records: Sequence[Any], latency_ms: Sequence[float]) -> Any:
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
    _learned: Callable[[Any], np.ndarray] | None = None
    _predictor: Any = None

    def predict(self, items: Any) -> np.ndarray:
        """Latency (ms) of items on the target device."""
        if self._learned is not None:
            return np.asarray(self._learned(items), float)
        if self._predictor is not None:
            return self._predictor.predict_models(list(items))["latency_ms"].to_numpy(float)
        q = _log_proxies(self._proxies, items)
        return np.exp(self._fit.predict_log(q, network_features(items)))

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

    def predictor(self) -> Any:
        """The adapted `LatencyPredictor` of `recompose` (its composition refitted to the
        target): pure JAX, so NAS can take gradients through it.

        Raises:
          ValueError: another method was chosen (for `reuse` and `affine`, see `log_affine`).
        """
        if self._predictor is None:
            raise ValueError(f"predictor: method {self.method!r} does not give a predictor; only 'recompose' does "
                             "(for 'reuse' and 'affine' apply log_affine() to the proxy's latency)")
        return self._predictor


def _log_proxies(proxies: Sequence[Proxy], items: Any) -> np.ndarray:
    cols = []
    for p in proxies:
        v = np.asarray(p.fn(items), float)
        if np.any(~np.isfinite(v)) or np.any(v <= 0):
            raise ValueError(f"proxy {p.name!r} gave non-positive or non-finite latencies")
        cols.append(np.log(v))
    return np.stack(cols, axis=1) if cols else np.zeros((len(item_keys(items)), 0))


def adapt(
    items: Any,
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
      proxies: one or more; the first is the primary (rank check, reuse, affine, AdaProxy).
      threshold: rank correlation on the K samples at or above which the primary proxy is
        reused (rescaled) or only affinely corrected.
      methods: restrict the candidates (default: by the threshold rule).
      learned: more candidates that learn from the samples (`embedding_method`,
        `finetune_method` of a device-aware MEDN); scored by 5-fold cross-validation (fewer
        folds below 10 samples) and considered only below the threshold.

    Raises:
      ValueError: fewer than 3 samples, items and latencies of different lengths, an item
        twice (by key: a record's name, a frame's config_key), NaN/infinite/non-positive
        latencies (the items named), `threshold` outside [-1, 1], no proxy, unknown methods.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
        raise ValueError(f"threshold={threshold!r} is not valid (--threshold): expected a rank correlation "
                         "in [-1, 1]")
    y = np.asarray(latency_ms, float).reshape(-1)
    keys = item_keys(items)
    if len(keys) != len(y):
        raise ValueError(f"adapt: {len(keys)} items but {len(y)} latencies; expected one latency per item")
    check_latency_table(pd.Series(y, index=keys), name="adapt: the measured samples")
    t = np.log(y)
    if len(t) < 3:
        raise ValueError(f"adapt: {len(t)} samples; at least 3 are needed")
    q = _log_proxies(proxies, items)
    f = network_features(items)
    rho = float(stats.spearmanr(q[:, 0], t).statistic) if proxies else float("nan")
    if methods is None:
        if not proxies:
            methods = ("scratch",)
        elif rho >= threshold:
            methods = ("reuse", "affine")
        else:
            methods = ("affine", "adaproxy", "scratch") + (("multi_proxy",) if len(proxies) > 1 else ())
        if _can_recompose(proxies, items, len(t)):
            methods += ("recompose",)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"methods={bad} not valid: expected some of {', '.join(METHODS)}")
    if not proxies and any(_DESIGNS[m].use_proxies for m in methods if m in _DESIGNS):
        raise ValueError("adapt: these methods need at least one proxy")
    if "recompose" in methods and not _can_recompose(proxies, items, len(t)):
        raise ValueError(f"adapt: 'recompose' needs whole networks, a predictor as the first proxy (predictor_proxy) "
                         f"and at least {_MIN_RECOMPOSE} samples")
    scores = {}
    terms = proxies[0].predictor.composition_terms(items) if "recompose" in methods else None
    for m in methods:
        if m == "recompose":
            e = _loo_recompose(proxies[0].predictor, terms, np.exp(t))
            scores[m] = {"log_rmse": float(np.sqrt(np.mean(e**2))),
                         "acc10": float(np.mean(np.abs(np.exp(e) - 1) <= 0.10)), "alpha": None}
            continue
        alphas = _ALPHAS if m in ("multi_proxy", "adaproxy", "scratch") else (0.0,)
        best = None
        for a in alphas:
            e = _loo_log_errors(m, q, f, t, a)
            rmse = float(np.sqrt(np.mean(e**2)))
            if best is None or rmse < best["log_rmse"]:
                best = {"log_rmse": rmse, "acc10": float(np.mean(np.abs(np.exp(e) - 1) <= 0.10)), "alpha": a}
        scores[m] = best
    y = np.exp(t)
    use_learned = dict(learned or {}) if not (proxies and rho >= threshold) else {}
    for name, method in use_learned.items():
        e = _kfold_log_errors(method, items, y, folds=min(5, max(2, len(t) // 2)))
        scores[name] = {"log_rmse": float(np.sqrt(np.mean(e**2))),
                        "acc10": float(np.mean(np.abs(np.exp(e) - 1) <= 0.10)), "alpha": None}
    # Fewer parameters win ties within 1 %: reuse, affine, then the richer forms, learned last.
    order = {m: i for i, m in enumerate(METHODS + tuple(use_learned))}
    candidates = list(methods) + list(use_learned)
    chosen = min(candidates, key=lambda m: (round(scores[m]["log_rmse"] / 0.01), order[m]))
    report = {"k": int(len(t)), "spearman_primary": rho, "threshold": threshold,
              "reused": chosen == "reuse", "candidates": scores, "chosen": chosen,
              "proxies": [p.name for p in proxies]}
    if chosen in use_learned:
        return Adapted(chosen, report, None, tuple(proxies), use_learned[chosen](items, y))
    if chosen == "recompose":
        pred = proxies[0].predictor
        return Adapted(chosen, report, None, tuple(proxies), _predictor=pred.with_composition(_recompose(pred, terms, y)))
    return Adapted(chosen, report, _fit(chosen, q, f, t, scores[chosen]["alpha"]), tuple(proxies))


def few_shot_curve(
    items: Any,
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
