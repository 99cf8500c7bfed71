"""Mass prediction: millions of configs in bounded memory, and the single-query path.

Rows go through in fixed-size chunks (the last one padded), so the predict function is
compiled once per chunk shape and never again on later calls; each chunk is laid out across
all local JAX devices with `jax.sharding`. Computation in float32 or bfloat16.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._base import CHUNK_ROWS, PredictFn, pad_rows
from ._features import encode_columns

DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16}


@functools.cache
def _mesh() -> Mesh:
    return Mesh(np.asarray(jax.local_devices()), ("rows",))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _run(predict: PredictFn, dtype_name: str, params: Any, x: jax.Array) -> jax.Array:
    """`predict` over rows in `dtype`, compiled once per (function, dtype, shapes)."""
    dtype = DTYPES[dtype_name]
    params = jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, params)
    return jax.vmap(predict, in_axes=(None, 0))(params, x.astype(dtype)).astype(jnp.float32)


def _chunk_rows(chunk_size: int) -> int:
    n_dev = len(jax.local_devices())
    return max(n_dev, (chunk_size // n_dev) * n_dev)


def predict_chunks(
    predict: PredictFn,
    params: Any,
    features: Iterable[np.ndarray],
    *,
    chunk_size: int = CHUNK_ROWS,
    dtype: str = "fp32",
) -> Iterator[np.ndarray]:
    """Predict feature chunks (`[n_i, f]` arrays of any sizes); yields `[n_i, 2]` per input.

    Inputs are re-cut into chunks of `chunk_size` rows (a multiple of the device count) and the
    last partial chunk is zero-padded, so one compiled program serves every call.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not valid: expected one of {', '.join(DTYPES)}")
    rows = _chunk_rows(chunk_size)
    sharding = NamedSharding(_mesh(), PartitionSpec("rows"))
    params = jax.device_put(params, NamedSharding(_mesh(), PartitionSpec()))
    for x in features:
        x = np.asarray(x, np.float32)
        n = len(x)
        parts = []
        for start in range(0, n, rows):
            block = x[start : start + rows]
            out = _run(predict, dtype, params, jax.device_put(pad_rows(block, rows), sharding))
            parts.append(np.asarray(out)[: len(block)])
        yield np.concatenate(parts) if parts else np.zeros((0, 2), np.float32)


def predict_latency_ms(
    predict: PredictFn,
    params: Any,
    module: str,
    column_chunks: Iterable[Mapping[str, Any]],
    *,
    chunk_size: int = CHUNK_ROWS,
    dtype: str = "fp32",
) -> np.ndarray:
    """Median latency (ms) of configs given as chunks of columns (e.g. from a generator).

    Memory stays bounded by one chunk of features plus the output (4 bytes per row).
    """
    feats = (np.asarray(encode_columns(module, cols), np.float32) for cols in column_chunks)
    outs = [np.exp(o[:, 0]) for o in predict_chunks(predict, params, feats, chunk_size=chunk_size, dtype=dtype)]
    return np.concatenate(outs) if outs else np.zeros(0, np.float32)


def single_query(predict: PredictFn, params: Any):
    """A compiled one-config function `x [f] -> (mu, log_sigma)` for adaptive algorithms that
    ask one configuration at a time.

    The parameters are compiled in as constants, and the function is compiled ahead of time
    for the first query's shape (`jax.jit(...).lower(...).compile()`) and its executable called
    directly: a call converts one small array, runs the executable and reads two numbers
    back, with no tracing-cache lookup. A query of another shape compiles once more.

    On CPU, most of a small network's query time is JAX handing the call to a worker thread
    and back: XLA's CPU client runs a computation inline only when its cost estimate is under
    1,000 flops (a ridge query is; one row through a 3x256 MLP is about 300,000), so every
    network query is dispatched asynchronously. A process that asks one config at a time
    runs faster with that off:
    `jax.config.update("jax_cpu_enable_async_dispatch", False)` before its first JAX call
    (process-wide; `benchmarks/results/throughput.md` has both).
    """
    params = jax.tree.map(jnp.asarray, params)
    fn = jax.jit(lambda x: predict(params, x))
    compiled: dict[tuple[int, ...], Any] = {}

    def query(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        exe = compiled.get(x.shape)
        if exe is None:
            exe = compiled[x.shape] = fn.lower(jax.ShapeDtypeStruct(x.shape, jnp.float32)).compile()
        return np.asarray(exe(x))

    return query
