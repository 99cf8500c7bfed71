"""Mass prediction: millions of configs in bounded memory, and the single-query path.

Rows go through in fixed-size chunks (the last one padded), so the predict function is
compiled once per chunk shape and never again on later calls; each chunk is laid out across
all local JAX devices with `jax.sharding`. Computation in float32 or bfloat16.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

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


@functools.cache
def _caller_thread_device() -> jax.Device | None:
    """The device of a second CPU client whose executables run on the calling thread (JAX's
    own client, with its default async dispatch, hands every call of more than ~1,000 flops to
    a worker thread); None where this JAX does not offer one."""
    try:
        from jax._src.lib import _jax  # no public API creates a client

        return _jax.get_tfrt_cpu_client(asynchronous=False, num_devices=1).local_devices()[0]
    except (ImportError, AttributeError, TypeError, RuntimeError) as e:
        _no_caller_thread(e, stacklevel=5)  # past this function, query, and its caller
        return None


def _no_caller_thread(error: Exception, *, stacklevel: int = 4) -> None:
    warnings.warn(f"single_query: no caller-thread CPU executable with this JAX ({type(error).__name__}: {error}); "
                  "network queries go through JAX's dispatch", RuntimeWarning, stacklevel=stacklevel)


def single_query(predict: PredictFn, params: Any):
    """A compiled one-config function `x [f] -> (mu, log_sigma)` for adaptive algorithms that
    ask one configuration at a time.

    The parameters are closed over (compiled in as constants with JAX's default settings), and
    the function is compiled ahead of time for the first query's shape and its executable
    called directly: a call converts one small array, runs the executable and reads two
    numbers back, with no tracing-cache lookup. A query of another shape compiles once more.

    On CPU a network's executable is placed on the device of a second CPU client, one that
    runs each call on the calling thread; the call still takes JAX's own path. JAX's default
    client, with its asynchronous dispatch, runs a call inline only when XLA's cost estimate
    is under 1,000 flops (a ridge query is; one row through a 3x256 MLP is about 300,000), so
    every network query would be handed to a worker thread and back, which takes longer than
    the query's arithmetic (`benchmarks/results/throughput.md` has both). A cheap query, one
    whose cost XLA does not estimate, and any query in a process with async dispatch off or
    on another backend stay on JAX's default device. No public JAX API creates that client:
    where this JAX lacks it or cannot compile for it, a `RuntimeWarning` says so and queries
    stay on the default device. The returned function's `path` attribute names where the
    latest shape compiled runs (`"caller thread"` or `"jax dispatch"`; None before the first
    query) and `device` the device.
    """
    params = jax.tree.map(jnp.asarray, params)
    compiled: dict[tuple[int, ...], Any] = {}

    def one(v: jax.Array) -> jax.Array:
        return predict(params, v)

    def query(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        exe = compiled.get(x.shape)
        if exe is None:
            spec = jax.ShapeDtypeStruct(x.shape, jnp.float32)
            lowered = jax.jit(one).lower(spec)
            device = _caller_thread_device() if _dispatched(lowered) else None
            if device is not None:  # the same function, its executable on the caller-thread client
                on = SingleDeviceSharding(device)
                try:
                    exe = jax.jit(one, in_shardings=on, out_shardings=on).lower(spec).compile()
                except (ValueError, TypeError, RuntimeError) as e:  # e.g. arrays committed to another device
                    _no_caller_thread(e, stacklevel=3)
            query.path = "jax dispatch" if exe is None else "caller thread"
            compiled[x.shape] = exe = exe or lowered.compile()
            query.device = next(iter(exe.input_shardings[0][0].device_set))  # where it really runs
        return np.asarray(exe(x))

    query.path = query.device = None  # set by the first query
    return query


def _dispatched(lowered: Any) -> bool:
    """Whether JAX would hand a call of `lowered` to a worker thread: on CPU with async dispatch
    on, when XLA's cost estimate is 1,000 flops or more (its client's own threshold; read
    before optimization); False where there is no estimate."""
    if jax.default_backend() != "cpu" or not jax.config.read("jax_cpu_enable_async_dispatch"):
        return False
    cost = lowered.cost_analysis()
    cost = (cost[0] if cost else None) if isinstance(cost, list | tuple) else cost
    return bool(cost) and float(cost.get("flops", 0.0)) >= _INLINE_FLOPS


_INLINE_FLOPS = 1000.0
