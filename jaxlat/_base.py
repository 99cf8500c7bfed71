"""The regressor protocol: a named pair of pure functions, built by a factory.

`fit(key, x, y, *, names, x_val, y_val) -> params` learns from encoded features `x [n, f]` and
targets `y [n]` (natural log of the median latency in ms); `predict(params, x [f]) -> [2]`
returns `(mu, log_sigma)` of log latency for ONE config. Batch with `jax.vmap`, compile with
`jax.jit`, differentiate with `jax.grad`: never a second code path.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np
from jaxtyping import Array, Float

Params = Any  # a PyTree of arrays (nested dicts), saved with jaxlat._io
LogLatency = Float[Array, ""]


class FitFn(Protocol):
    """Learns a regressor's parameters.

    Args:
      key: PRNG key (initialization, shuffling).
      x: encoded features `[n, n_features]`, not standardized.
      y: natural log of the median latency in ms, `[n]`.
      names: the feature names (some regressors use named features, e.g. roofline).
      x_val, y_val: a validation split (early stopping, regularization, interval width), or None.

    Returns:
      params: a PyTree of arrays.
    """

    def __call__(self, key: jax.Array, x: np.ndarray, y: np.ndarray, *, names: tuple[str, ...],
                 x_val: np.ndarray | None = None, y_val: np.ndarray | None = None) -> Params: ...


class PredictFn(Protocol):
    """Predicts one config.

    Args:
      params: from `fit`.
      x: encoded features of one config, `[n_features]`.

    Returns:
      `[2]`: mean and log standard deviation of the log latency (ms).
    """

    def __call__(self, params: Params, x: Float[Array, " n_features"]) -> Float[Array, 2]: ...


class Regressor(NamedTuple):
    """A regressor: its name, pure `fit` and `predict`, and what it supports.

    Attributes:
      name: registry name, e.g. `"mlp"`.
      fit: see `FitFn`.
      predict: see `PredictFn`; pure JAX when `jittable`; otherwise host code that also takes
        a batch `[n, n_features]`.
      differentiable: `jax.grad` of `predict` with respect to `x` is meaningful.
      jittable: `predict` traces under `jax.jit` / `jax.vmap` (False for tree ensembles).
      config: the factory's arguments, enough to rebuild the regressor for loading.
    """

    name: str
    fit: FitFn
    predict: PredictFn
    differentiable: bool = True
    jittable: bool = True
    config: Mapping[str, Any] = {}


def standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of each feature column; constant columns get scale 1."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean.astype(np.float32), np.where(scale > 1e-8, scale, 1.0).astype(np.float32)


def residual_log_sigma(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Log of the RMS residual: the homoscedastic interval width of point regressors."""
    rms = float(np.sqrt(np.mean((np.asarray(y_true) - np.asarray(y_pred)) ** 2)))
    return np.asarray(np.log(max(rms, 1e-4)), np.float32)


def params_nbytes(params: Params) -> int:
    """Size of a regressor's parameters in bytes (array leaves; what a saved artifact holds)."""
    return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(params) if not isinstance(x, str)))


def residual_rows(x, y, x_val, y_val):
    """The rows that calibrate the interval width: the validation split if it has rows,
    else the training rows."""
    if x_val is not None and len(x_val) > 0:
        return x_val, y_val
    return x, y


#: Rows per compiled call of the jitted paths (`predict_batch`, `_mass.predict_chunks`).
CHUNK_ROWS = 65536


def pad_rows(block: np.ndarray, rows: int) -> np.ndarray:
    """`block` (`[m, f]`, m <= rows) with zero rows appended up to `rows`: fixed shapes, so a
    compiled function is reused; the caller drops the padded rows' outputs."""
    m = len(block)
    return block if m == rows else np.concatenate([block, np.zeros((rows - m,) + block.shape[1:], block.dtype)])


def predict_batch(regressor: Regressor, params: Params, x: np.ndarray) -> np.ndarray:
    """`[n, 2]` predictions of one regressor for `[n, f]` features: the batched, compiled
    `predict`, or the numpy path for trees.

    The jitted path runs chunks of `rows` = the next power of two of n (at least 8, at most
    `CHUNK_ROWS`), the last one zero-padded: batches of varying size share a few compiled
    shapes instead of compiling one per size."""
    if not regressor.jittable:  # tree ensembles predict on host, on the whole batch at once
        return np.asarray(regressor.predict(params, np.asarray(x, np.float32)))
    x = np.asarray(x, np.float32)
    n = len(x)
    rows = min(CHUNK_ROWS, max(8, 1 << max(0, n - 1).bit_length()))
    parts = [np.asarray(batched_predict(regressor.predict, params, pad_rows(x[s:s + rows], rows)))[:len(x[s:s + rows])]
             for s in range(0, n, rows)]
    return np.concatenate(parts) if parts else np.zeros((0, 2), np.float32)


@functools.partial(jax.jit, static_argnums=0)
def batched_predict(predict: PredictFn, params: Params, x: Float[Array, "n n_features"]) -> Float[Array, "n 2"]:
    """`predict` over rows, compiled once per (function, shapes): data and parameters are
    arguments, never constants."""
    return jax.vmap(predict, in_axes=(None, 0))(params, x)
