"""From dataset frames to training arrays: per module type, features and log latency."""

from __future__ import annotations

import hashlib

import numpy as np

from profilers import get_spec

from ._features import encode_frame

#: Run settings that do not make a config different for splitting: the same module config at
#: another utilization or thread count lands in the same split, so a test row never has a
#: near-twin in training.
_SPLIT_IGNORES = ("utilization", "threads")


#: The latency statistic a predictor learns, by name: `(dataset column, key of an architecture
#: record's "measured")`. The median is the default. On a machine whose speed wanders (a shared
#: host whose other tenants come and go), the 10th percentile of samples pooled over rounds spread
#: in time is the repeatable one: it is the latency of the machine's undisturbed state, which a
#: single timing window catches only some of the time (`jaxlat-profile torch --rounds`).
STATISTICS = {"median": ("latency_ms_median", "latency_ms"), "p10": ("latency_ms_p10", "p10_ms")}


def statistic_column(statistic: str) -> str:
    """The dataset column of `statistic` (see `STATISTICS`).

    Raises:
      ValueError: an unknown statistic (the message lists the known ones).
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic={statistic!r} is not valid: expected one of {', '.join(STATISTICS)}")
    return STATISTICS[statistic][0]


def measured_ms(record, statistic: str = "median") -> float:
    """The end-to-end latency (ms) of a profiled architecture record, as `statistic`.

    Raises:
      ValueError: the record was not measured, or its measurement lacks the statistic.
    """
    statistic_column(statistic)
    key = STATISTICS[statistic][1]
    if not record.measured:
        raise ValueError(f"{record.name}: the record was not measured end to end")
    if record.measured.get(key) is None:
        raise ValueError(f"{record.name}: its measurement has no {key!r} (statistic={statistic!r}); re-profile it")
    return float(record.measured[key])


def target(df, column: str = "latency_ms_median") -> np.ndarray:
    """Natural log of a latency column in ms (default: the median).

    Raises:
      ValueError: the column is missing, or holds NaN, infinite or non-positive latencies
        (how many, and the first row's `config_key`).
    """
    if column not in df.columns:
        raise ValueError(f"target: the frame has no column {column!r}; expected a latency column such as "
                         + ", ".join(c for c, _ in STATISTICS.values()))
    y = df[column].to_numpy(np.float64, na_value=np.nan)
    bad = ~np.isfinite(y) | (y <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        where = f"config_key {df['config_key'].iloc[i]!r}" if "config_key" in df.columns else f"row {df.index[i]!r}"
        raise ValueError(f"target: {int(bad.sum())} rows have a NaN, infinite or non-positive {column} "
                         f"(first {where}: {y[i]!r}); expected latencies > 0 ms")
    return np.log(y).astype(np.float32)


def type_arrays(df, module: str, column: str = "latency_ms_median") -> tuple[np.ndarray, np.ndarray]:
    """`(x [n, f], y [n])` for the rows of `df` of one module type; `y` is the log of `column`.

    Raises:
      ValueError: an invalid config or latency in those rows (see `encode_frame`, `target`).
    """
    sub = df[df["module"] == module]
    return encode_frame(sub, module), target(sub, column)


def check_count(value, *, name: str, minimum: int = 1):
    """`value` if it is an int >= `minimum` (None passes: "the default"), else `ValueError`
    naming the argument, the value and the allowed range; for counts given on a command line
    (`--epochs`, `--n`) where 0 must not silently mean the default.

    Examples:
      >>> check_count(5, name="--epochs")
      5
      >>> check_count(0, name="--epochs")
      Traceback (most recent call last):
      ...
      ValueError: --epochs=0 is not valid: expected an int >= 1
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r} is not valid: expected an int >= {minimum}")
    return int(value)


def config_groups(df) -> np.ndarray:
    """A group id per row: the module config without utilization and thread count."""
    ids = np.empty(len(df), dtype=object)
    for module in df["module"].unique():
        sel = (df["module"] == module).to_numpy()
        names = [f.name for f in get_spec(module).all_fields if f.name not in _SPLIT_IGNORES]
        text = df.loc[sel, names].astype(str).agg("|".join, axis=1)
        ids[sel] = (module + "|" + text).to_numpy()
    return ids


def split_by_config(df, *, test_frac: float = 0.2, seed: int = 0):
    """Split rows into train and test by config group (see `config_groups`), seeded."""
    if not 0 < test_frac < 1:
        raise ValueError(f"test_frac={test_frac} is not valid: expected a number in (0, 1)")
    groups = config_groups(df)
    # A hash of the group and the seed decides: stable under row order and across files.
    u = np.array([int(hashlib.sha1(f"{seed}|{g}".encode()).hexdigest()[:8], 16) / 2**32 for g in groups])
    test = u < test_frac
    return df[~test].reset_index(drop=True), df[test].reset_index(drop=True)
