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


def target(df) -> np.ndarray:
    """Natural log of the median latency in ms."""
    return np.log(df["latency_ms_median"].to_numpy(np.float64)).astype(np.float32)


def type_arrays(df, module: str) -> tuple[np.ndarray, np.ndarray]:
    """`(x [n, f], y [n])` for the rows of `df` of one module type."""
    sub = df[df["module"] == module]
    return encode_frame(sub, module), target(sub)


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
