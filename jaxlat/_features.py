"""Features: a module config (or columns of configs) to a named feature vector.

Per module type, in a fixed, named order (`FeatureSchema.names`):

- the type's numeric fields: `log(x)` for scale-free sizes (fields the catalogue samples
  log-uniformly), the raw value otherwise (kernel, stride);
- booleans as 0/1, categorical fields one-hot over their choices (`activation=relu`, ...);
- the common inputs: `log(batch_size)`, `log(threads)`, `utilization`, dtype one-hot;
- the analytic costs, `log1p` (FLOPs, params, bytes in/out/weight, arithmetic intensity).

Features are not standardized here: each regressor standardizes with statistics it stores in
its own parameters. The target is the natural log of the median latency in milliseconds: what
matters is relative error.

One encoder, `encode_columns`, serves numpy (datasets, mass prediction) and JAX (`xp=jnp`, for
gradients with respect to continuous config values such as channel widths).

Configs from outside (dataset frames, frames to predict) are checked first (`check_columns`,
`encode_columns(..., strict=True)`, `encode_frame`): a missing required field, a value outside
the catalogue's ranges or rules, or a NaN is an error naming the field, the value and what is
allowed, never a silent default or a NaN feature.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from profilers import DTYPES, get_spec

#: Bumped when the features of any module type change; stored with every trained model.
#: Version 2: the dtype one-hot gained `dtype=fp16w` and `dtype=int8` (TFLite precisions).
FEATURE_SCHEMA_VERSION = 2
_COST_FEATURES = ("flops", "params", "bytes_in", "bytes_out", "bytes_weight", "arith_intensity")


@dataclasses.dataclass(frozen=True)
class FeatureSchema:
    """The named features of one module type."""

    module: str
    names: tuple[str, ...]
    version: int = FEATURE_SCHEMA_VERSION

    @property
    def size(self) -> int:
        return len(self.names)

    def as_dict(self) -> dict[str, Any]:
        return {"module": self.module, "names": list(self.names), "version": self.version}


def _field_features(field) -> list[str]:
    if field.kind is str:
        return [f"{field.name}={c}" for c in field.choices]
    if field.kind is bool:
        return [field.name]
    return [f"log_{field.name}" if field.log else field.name]


@functools.cache
def feature_schema(module: str) -> FeatureSchema:
    """The feature schema of a registered module type."""
    spec = get_spec(module)
    names: list[str] = []
    for f in spec.fields:
        names += _field_features(f)
    names += ["log_batch_size", "log_threads", "utilization"] + [f"dtype={d}" for d in DTYPES]
    names += [f"log1p_{c}" for c in _COST_FEATURES]
    return FeatureSchema(spec.name, tuple(names))


def check_columns(module: str, columns: Mapping[str, Any], *, source: str = "columns",
                  labels: Any = None) -> dict[str, np.ndarray]:
    """Check configs of one module type given as columns (host values) and fill the defaults
    the catalogue declares: `profilers.get_spec(module).check_columns` (see
    `profilers._catalogue.validate_config_columns`).

    Every required field must be a column with a value in every row; every value of the
    field's kind, finite, inside its range or choices; cross-field rules (groups dividing the
    channels, heads dividing the embedding) true in every row. Omitted optional fields (stride,
    groups, bias, the common inputs) take their catalogue defaults, logged on the `profilers`
    logger. Columns that are not fields of the type are ignored.

    Args:
      module: the module type.
      columns: field name -> scalar or 1-D column (numpy, pandas, lists).
      source: what the columns are, for messages (e.g. `"predict"`, a file name).
      labels: one label per row for messages (e.g. a frame's index); default the position.

    Returns:
      Every field of the type as a 1-D numpy column, all of one length: pass it on to
      `encode_columns`.

    Raises:
      ValueError: naming `source`, the module type, the field, the first bad value and its
        row, and what is allowed.

    Examples:
      >>> cols = check_columns("linear", {"in_features": [64], "out_features": [10]})
      >>> cols["tokens"].tolist(), cols["bias"].tolist()
      ([1], [True])
      >>> check_columns("conv2d", {"cin": [3], "cout": [8], "h": [32], "w": [32], "kernel": [4]})
      Traceback (most recent call last):
      ...
      ValueError: columns: conv2d.kernel=4 is not valid at row 0: expected one of 1, 3, 5, 7
    """
    return get_spec(module).check_columns(columns, source=source, labels=labels)


def outside_training_range(x: Any, feature_min: Any, feature_max: Any, *, rel_tol: float = 1e-4) -> np.ndarray:
    """Per row of features `x [n, f]`, whether any feature lies outside `[feature_min,
    feature_max]` (with a tolerance of `rel_tol` times the range, at least `rel_tol`) or is not
    finite: a NaN or infinite feature is never inside a training range, although every
    comparison with NaN is false.

    Returns:
      Bool array `[n]`.

    Examples:
      >>> outside_training_range(np.array([[0.5], [2.0], [np.nan]]), np.array([0.0]), np.array([1.0])).tolist()
      [False, True, True]
    """
    x = np.asarray(x, np.float64)
    lo, hi = np.asarray(feature_min, np.float64), np.asarray(feature_max, np.float64)
    tol = rel_tol * np.maximum(1.0, np.abs(hi - lo))
    with np.errstate(invalid="ignore"):
        outside = (x < lo - tol) | (x > hi + tol)
    return (outside | ~np.isfinite(x)).any(axis=-1)


def encode_columns(module: str, columns: Mapping[str, Any], *, xp: Any = np, strict: bool = False) -> Any:
    """Encode configs of one module type given as columns; returns `[n, n_features]`.

    Args:
      module: the module type.
      columns: field name -> values (scalars or 1-D arrays; numpy, pandas or JAX). Missing
        fields take their defaults (unless `strict`). Categorical fields must be host values
        (strings).
      xp: the array namespace, `numpy` (default) or `jax.numpy` (differentiable in the
        numeric fields).
      strict: check the columns first (`check_columns`: required fields present, values
        valid and finite); for configs from outside. Needs host values, not JAX tracers.

    Returns:
      Float array `[n, n_features]` (`[n_features]`... as a row of a 2-D array when all inputs
      are scalars, n = 1), float32.

    Raises:
      ValueError: columns of different lengths; with `strict`, an invalid or missing field.
    """
    if strict:
        columns = check_columns(module, columns, source=f"encode_columns({module})")
    spec = get_spec(module)
    v: dict[str, Any] = {}
    for f in spec.all_fields:
        val = columns[f.name] if f.name in columns else f.default
        if f.kind is str:
            v[f.name] = np.asarray(val, dtype=object) if not isinstance(val, str) else val
        elif hasattr(val, "to_numpy"):
            v[f.name] = xp.asarray(val.to_numpy(dtype=np.float64))
        else:
            v[f.name] = xp.asarray(val, dtype=xp.float32 if xp is not np else np.float64)
    costs = spec.costs(v).as_dict()
    cols = []
    for f in spec.fields:
        val = v[f.name]
        if f.kind is str:
            cols += [xp.asarray(np.asarray(val == c, dtype=np.float32)) for c in f.choices]
        elif f.kind is bool:
            cols.append(val)
        else:
            cols.append(xp.log(val) if f.log else val)
    cols += [xp.log(v["batch_size"]), xp.log(v["threads"]), v["utilization"]]
    cols += [xp.asarray(np.asarray(v["dtype"] == d, dtype=np.float32)) for d in DTYPES]
    cols += [xp.log1p(xp.asarray(costs[c])) for c in _COST_FEATURES]
    sizes = {int(np.size(c)) for c in cols if np.ndim(c) > 0}
    if len(sizes) > 1:
        raise ValueError(f"encode_columns({module}): columns have different lengths {sorted(sizes)}")
    n = sizes.pop() if sizes else 1
    cols = [xp.broadcast_to(xp.reshape(xp.asarray(c, dtype=xp.float32), (-1,)), (n,)) for c in cols]
    return xp.stack(cols, axis=-1)


def encode_frame(df, module: str, *, source: str = "frame") -> np.ndarray:
    """Encode the rows of `df` (a dataset frame filtered to one module type), checked first
    (`check_columns`, rows labelled by `config_key` where there is one).

    Raises:
      ValueError: a missing required field or an invalid value, named with `source`.
    """
    spec = get_spec(module)
    labels = df["config_key"].to_numpy() if "config_key" in df.columns else df.index.to_numpy()
    columns = check_columns(module, {f.name: df[f.name] for f in spec.all_fields if f.name in df.columns},
                            source=source, labels=labels)
    for f in spec.all_fields:
        if f.kind is not str:
            columns[f.name] = columns[f.name].astype(np.float64)
    return np.asarray(encode_columns(module, columns), dtype=np.float32)
