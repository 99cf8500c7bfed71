"""Design tables calibrated to a machine.

`DesignSpace.evaluate` predicts every design with the predictors as trained. Where a backend's
predictor was trained on another machine, a calibration (`jaxlat.transfer.calibrate`, a
log-affine map of the predicted latency) moves that backend's rows onto this machine before the
SLOs are applied: the median and the p90 go through the same map, and the throughput follows
the median.
"""

from __future__ import annotations

import pandas as pd

from ..transfer._calibration import log_affine_ms

#: The latency columns of a design table that a calibration maps.
LATENCY_COLUMNS = ("median_ms", "p90_ms")


def calibrate_table(
    table: pd.DataFrame, log_affine: tuple[float, float], *, backend: str, precision: str | None = None
) -> pd.DataFrame:
    """A copy of a design table with one backend's latencies mapped by a calibration.

    Args:
      table: from `DesignSpace.evaluate` (columns `backend`, `precision`, `batch_size`,
        `median_ms`, `p90_ms`, `throughput_per_s`).
      log_affine: `(a, b)`: ms = exp(a) * predicted ms ** b (`Calibration.log_affine`).
      backend: the rows to map (the backend whose predictor was calibrated).
      precision: only rows of this precision too (None: every precision of the backend).

    Returns:
      The new table; rows of other backends unchanged.

    Raises:
      ValueError: a latency column is missing, or no row matches.

    Examples:
      >>> import numpy as np
      >>> t = pd.DataFrame({"backend": ["torch", "tflite"], "precision": ["fp32", "fp32"],
      ...                   "batch_size": [1, 1], "median_ms": [2.0, 2.0], "p90_ms": [4.0, 4.0],
      ...                   "throughput_per_s": [500.0, 500.0]})
      >>> calibrate_table(t, (np.log(2.0), 1.0), backend="torch")["median_ms"].tolist()
      [4.0, 2.0]
    """
    missing = [c for c in LATENCY_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"calibrate_table: the table has no column {missing} (expected a DesignSpace.evaluate table)"
        )
    rows = (table["backend"] == backend).to_numpy()
    if precision is not None:
        rows = rows & (table["precision"] == precision).to_numpy()
    if not rows.any():
        raise ValueError(
            f"calibrate_table: no row of backend={backend!r}"
            + (f", precision={precision!r}" if precision is not None else "")
        )
    out = table.copy()
    for col in LATENCY_COLUMNS:
        out.loc[rows, col] = log_affine_ms(out.loc[rows, col].to_numpy(), *log_affine)
    if "throughput_per_s" in out:
        out.loc[rows, "throughput_per_s"] = out.loc[rows, "batch_size"] * 1e3 / out.loc[rows, "median_ms"]
    return out
