"""Device descriptor: a measured fingerprint of what the hardware can do, stored with every
dataset so that a predictor can take devices as input and compare them.

    d = measure_descriptor("torch", threads=(1, 2))
    d["peak_gflops"]["fp32"]["1"], d["bandwidth_gbs"]["1"], d["caches_kib"]

- peak FLOP/s per dtype and thread count: the best of a few timed square matrix products (torch
  on a torch device; numpy's BLAS on a TFLite target, which has no torch);
- memory bandwidth: a large array copy (bytes read plus written per second);
- cache sizes from sysfs, core counts, backend and library versions.

Micro-benchmarks are kept short (about 2 s in all); a descriptor is a coarse fingerprint, not a
benchmark report.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Version of the descriptor's layout (stored with it).
DESCRIPTOR_VERSION = 1


def cache_sizes_kib() -> dict[str, int]:
    """Cache sizes of CPU 0 from sysfs (`L1d`, `L1i`, `L2`, `L3`), KiB; empty where unreadable."""
    out: dict[str, int] = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(base.glob("index*")):
        try:
            level = (idx / "level").read_text().strip()
            kind = (idx / "type").read_text().strip()
            size = (idx / "size").read_text().strip()
        except OSError:
            continue
        name = f"L{level}" + ({"Data": "d", "Instruction": "i"}.get(kind, ""))
        mult = {"K": 1, "M": 1024, "G": 1024 * 1024}.get(size[-1:], None)
        out[name] = int(size[:-1]) * mult if mult else int(size) // 1024
    return out


def _best_seconds(fn: Callable[[], Any], *, repeats: int = 5, min_time_s: float = 0.05) -> float:
    """Best time of one call of `fn` over `repeats` blocks (each at least `min_time_s`)."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_time_s:
                break
        best = min(best, dt / n)
    return best


def _torch_probe(threads: int, dtypes: Sequence[str], n: int, copy_mib: int) -> tuple[dict[str, float], float]:
    import torch

    from ._torch_backend import TORCH_DTYPES, torch_threads

    gflops = {}
    with torch_threads(threads), torch.inference_mode():
        for name in dtypes:
            a = torch.randn(n, n, dtype=TORCH_DTYPES[name])
            b = torch.randn(n, n, dtype=TORCH_DTYPES[name])
            try:
                t = _best_seconds(lambda: torch.mm(a, b))
            except RuntimeError:  # a dtype without CPU kernels on this build
                continue
            gflops[name] = 2 * n**3 / t / 1e9
        src = torch.empty(copy_mib * 2**18, dtype=torch.float32)
        dst = torch.empty_like(src)
        t = _best_seconds(lambda: dst.copy_(src), repeats=3)
    return gflops, 2 * src.numel() * 4 / t / 1e9


def _numpy_probe(threads: int, n: int, copy_mib: int) -> tuple[dict[str, float], float]:
    # numpy's BLAS reads its thread count at start-up; a target-side descriptor reports the
    # process's own setting (threadpoolctl is used where installed).
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - depends on the environment
        threadpool_limits = None
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    src = np.empty(copy_mib * 2**18, np.float32)
    dst = np.empty_like(src)
    if threadpool_limits is not None:
        with threadpool_limits(threads):
            t = _best_seconds(lambda: a @ b)
    else:
        t = _best_seconds(lambda: a @ b)
    tc = _best_seconds(lambda: np.copyto(dst, src), repeats=3)
    return {"fp32": 2 * n**3 / t / 1e9}, 2 * src.size * 4 / tc / 1e9


def measure_descriptor(
    backend: str = "torch",
    *,
    threads: Sequence[int] | None = None,
    dtypes: Sequence[str] = ("fp32", "bf16", "fp16"),
    matmul_size: int = 512,
    copy_mib: int = 64,
) -> dict[str, Any]:
    """Measure the descriptor of this CPU for `backend` (`torch` or `tflite`).

    Args:
      backend: `torch` times torch kernels; `tflite` numpy's (the target has no torch).
      threads: thread counts to probe (default: 1 and all logical cores).
      dtypes: torch dtypes for the matmul peak (numpy: fp32 only).
      matmul_size: side of the square matrices.
      copy_mib: size of the copied array (well beyond the last-level cache).
    """
    if backend not in ("torch", "tflite"):
        raise ValueError(f"backend={backend!r} is not valid: expected torch or tflite")
    threads = sorted({1, os.cpu_count() or 1} if threads is None else set(threads))
    peak: dict[str, dict[str, float]] = {}
    bandwidth: dict[str, float] = {}
    libraries: dict[str, str] = {"numpy": np.__version__}
    for t in threads:
        if backend == "torch":
            import torch

            g, bw = _torch_probe(t, dtypes, matmul_size, copy_mib)
            libraries["torch"] = torch.__version__
        else:
            g, bw = _numpy_probe(t, matmul_size, copy_mib)
        for name, v in g.items():
            peak.setdefault(name, {})[str(t)] = round(v, 2)
        bandwidth[str(t)] = round(bw, 2)
    return {
        "version": DESCRIPTOR_VERSION,
        "backend": backend,
        "peak_gflops": peak,
        "bandwidth_gbs": bandwidth,
        "caches_kib": cache_sizes_kib(),
        "cpu_logical_cores": os.cpu_count(),
        "machine": platform.machine(),
        "libraries": libraries,
        "matmul_size": matmul_size,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def descriptor_features(d: dict[str, Any], *, threads: int = 1) -> dict[str, float]:
    """Numbers a predictor can read from a descriptor, at a thread count: log peak fp32 GFLOP/s,
    log bandwidth GB/s, log L2 and L3 KiB, log cores (0 where unknown)."""
    def pick(table: dict[str, float]) -> float:
        if not table:
            return 0.0
        keys = sorted(table, key=lambda k: abs(int(k) - threads))
        return float(table[keys[0]])

    caches = d.get("caches_kib", {})
    return {
        "log_peak_gflops": float(np.log(max(pick(d.get("peak_gflops", {}).get("fp32", {})), 1e-3))),
        "log_bandwidth_gbs": float(np.log(max(pick(d.get("bandwidth_gbs", {})), 1e-3))),
        "log_l2_kib": float(np.log1p(caches.get("L2", 0))),
        "log_l3_kib": float(np.log1p(caches.get("L3", 0))),
        "log_cores": float(np.log(max(d.get("cpu_logical_cores") or 1, 1))),
    }
