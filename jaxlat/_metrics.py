"""Accuracy metrics for latency predictions, per module type and overall, in one table."""

from __future__ import annotations

from collections.abc import Sequence

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
    """
    from scipy import stats

    t = np.asarray(y_true_ms, np.float64)
    p = np.asarray(y_pred_ms, np.float64)
    if t.shape != p.shape:
        raise ValueError(f"evaluate: y_true_ms has shape {t.shape} but y_pred_ms has {p.shape}")
    if t.size == 0:
        raise ValueError("evaluate: no rows")
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
