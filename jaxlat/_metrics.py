"""Accuracy metrics for latency predictions, per module type and overall, in one table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Relative-error bounds of the "within ±x%" accuracies (nn-Meter's headline metric is ±10%).
ACCURACY_BOUNDS = (0.05, 0.10, 0.20)


def evaluate(
    y_true_ms: np.ndarray,
    y_pred_ms: np.ndarray,
    *,
    lo_ms: np.ndarray | None = None,
    hi_ms: np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics of predicted against measured latencies (both in ms, same shape `[n]`).

    Returns:
      `acc5`, `acc10`, `acc20` (share within ±5/10/20 %), `mape`, `rmspe` (relative, as
      fractions), `rmse_ms`, `r2` (on raw latency), `spearman`, `kendall`, `n`, and
      `coverage` (share of measurements inside `[lo_ms, hi_ms]`) when an interval is given.
      A metric that is undefined for the rows (`r2` when all measurements are equal, rank
      correlations of one row) is NaN; `metrics_for_json` writes it as null.

    Raises:
      ValueError: shapes differ, no rows, or a measurement or prediction that is NaN,
        infinite or <= 0 (how many, and the first row), so that no metric is silently NaN.
    """
    from scipy import stats

    t = np.asarray(y_true_ms, np.float64)
    p = np.asarray(y_pred_ms, np.float64)
    if t.shape != p.shape:
        raise ValueError(f"evaluate: y_true_ms has shape {t.shape} but y_pred_ms has {p.shape}")
    if t.size == 0:
        raise ValueError("evaluate: no rows to score")
    for name, a in (("y_true_ms (measured)", t), ("y_pred_ms (predicted)", p)):
        bad = ~np.isfinite(a) | (a <= 0)
        if bad.any():
            i = int(np.argmax(bad.reshape(-1)))
            raise ValueError(f"evaluate: {int(bad.sum())} of {a.size} {name} latencies are NaN, infinite or <= 0 "
                             f"(first at row {i}: {a.reshape(-1)[i]!r}); expected finite latencies > 0 ms")
    rel = p / t - 1.0
    out = {f"acc{round(b * 100)}": float(np.mean(np.abs(rel) <= b)) for b in ACCURACY_BOUNDS}
    ss_res = float(np.sum((p - t) ** 2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    out.update(
        mape=float(np.mean(np.abs(rel))),
        rmspe=float(np.sqrt(np.mean(rel**2))),
        rmse_ms=float(np.sqrt(np.mean((p - t) ** 2))),
        r2=1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        spearman=float(stats.spearmanr(t, p).statistic) if t.size > 1 else float("nan"),
        kendall=float(stats.kendalltau(t, p).statistic) if t.size > 1 else float("nan"),
        n=int(t.size),
    )
    if lo_ms is not None and hi_ms is not None:
        out["coverage"] = float(np.mean((np.asarray(lo_ms) <= t) & (t <= np.asarray(hi_ms))))
    return out


def evaluate_table(
    modules: Sequence[str],
    y_true_ms: np.ndarray,
    y_pred_ms: np.ndarray,
    *,
    lo_ms: np.ndarray | None = None,
    hi_ms: np.ndarray | None = None,
):
    """`evaluate` per module type and over all rows, as a pandas DataFrame indexed by module."""
    import pandas as pd

    modules = np.asarray(modules, dtype=object)
    if len(modules) == 0:
        raise ValueError("evaluate_table: no rows to score (are the data's module types ones the predictor has?)")
    if len(modules) != len(np.asarray(y_true_ms)):
        raise ValueError(f"evaluate_table: {len(modules)} module names for {len(np.asarray(y_true_ms))} rows")
    rows = {}
    for m in sorted(set(modules)) + ["all"]:
        sel = np.ones(len(modules), bool) if m == "all" else modules == m
        rows[m] = evaluate(
            np.asarray(y_true_ms)[sel],
            np.asarray(y_pred_ms)[sel],
            lo_ms=None if lo_ms is None else np.asarray(lo_ms)[sel],
            hi_ms=None if hi_ms is None else np.asarray(hi_ms)[sel],
        )
    return pd.DataFrame.from_dict(rows, orient="index")


def metrics_for_json(table: Any) -> dict[str, Any]:
    """An `evaluate_table` frame (or an `evaluate` dict) as plain JSON values: NaN and
    infinities (undefined metrics) become None, so `json.dumps` writes `null`, not the
    invalid `NaN`.

    Examples:
      >>> import json
      >>> json.dumps(metrics_for_json({"r2": float("nan"), "n": 1}))
      '{"r2": null, "n": 1}'
    """
    obj = table.to_dict(orient="index") if hasattr(table, "to_dict") and not isinstance(table, Mapping) else table

    def plain(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return plain(obj)
