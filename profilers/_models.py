"""Whole models: capture the architecture record and time the model end to end with the
same timing rules as single modules (warm-up, sized blocks, repeats, utilization load).

    record = profile_torch_model(model, (x,), name="resnet18", threads=1)
    record.measured["latency_ms"]

Measuring runs in this process: callers set the measurement environment (malloc thresholds,
`MEASUREMENT_ENV`) before the interpreter starts; the CLI re-executes itself to do so.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ._arch import ArchRecord, append_record, capture_torch, load_records
from ._device import device_id, host_fingerprint
from ._timer import TimerConfig, time_function

#: Timing of whole models: longer warm-up and fewer, longer blocks than single modules.
MODEL_TIMER = TimerConfig(warmup_s=0.3, min_warmup_calls=2, min_run_time_s=1.0, min_repeats=7, max_run_time_s=20.0)


@functools.cache
def _fingerprint() -> dict[str, Any]:
    """The host's fingerprint, read once per process (every model record carries it)."""
    return host_fingerprint()


def load_factory(spec: str) -> Callable[..., Any]:
    """'package.module:function' -> the function.

    Raises:
      ValueError: a malformed spec, a module that does not import or a missing attribute.
    """
    if ":" not in spec:
        raise ValueError(f"--model={spec!r} is not valid: expected 'package.module:factory'")
    mod_name, attr = spec.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(f"--model={spec!r}: cannot import {mod_name!r} ({e})") from None
    fn = mod
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ValueError(f"--model={spec!r}: {mod_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ValueError(f"--model={spec!r}: {attr!r} is not callable")
    return fn


def time_torch_model(
    model: Any,
    inputs: Sequence[Any],
    *,
    threads: int = 1,
    utilization: float = 0.0,
    timer: TimerConfig = MODEL_TIMER,
    load_workers: int | None = None,
) -> dict[str, Any]:
    """Time `model(*inputs)` on the CPU in inference mode; returns the `measured` mapping of an
    architecture record (median and spread in ms, settings, device)."""
    import torch

    from ._load import CpuLoad
    from ._torch_backend import flush_denormals, torch_threads

    if not 0.0 <= utilization <= 1.0:
        raise ValueError(f"utilization={utilization} is not valid: expected a number in [0, 1]")
    model = model.eval()
    load_cm = CpuLoad(load_workers) if utilization > 0 else contextlib.nullcontext()
    with torch_threads(threads), torch.inference_mode(), flush_denormals(), load_cm as load:
        if load is not None:
            load.set(utilization)
            load.reset()
        timing = time_function(lambda: model(*inputs), config=timer)
        achieved = load.achieved() if load is not None else None
    st = timing.stats
    fp = _fingerprint()
    return {
        "latency_ms": st.median_ms,
        "p10_ms": st.p10_ms,
        "p90_ms": st.p90_ms,
        "iqr_ms": st.iqr_ms,
        "cov": st.cov,
        "n_repeats": st.n_repeats,
        "number_per_run": timing.number_per_run,
        "samples_ms": list(timing.samples_ms),
        "backend": "torch",
        "device": "cpu",
        "threads": threads,
        "utilization": utilization,
        "utilization_achieved": achieved,
        "device_id": device_id(fp, backend="torch", device="cpu"),
        "fingerprint": fp,
        "libraries": {"torch": torch.__version__},
        "flush_denormals": True,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def profile_torch_model(
    model: Any,
    inputs: Sequence[Any],
    *,
    name: str,
    threads: int = 1,
    utilization: float = 0.0,
    timer: TimerConfig = MODEL_TIMER,
    measure: bool = True,
    info: dict[str, Any] | None = None,
) -> ArchRecord:
    """Capture `model`'s architecture record and (unless `measure=False`) time it end to end."""
    record = capture_torch(model, inputs, name=name, threads=threads, utilization=utilization, info=info)
    if not measure:
        return record
    return record.with_measured(time_torch_model(model, inputs, threads=threads, utilization=utilization, timer=timer))


Job = tuple[str, Callable[[], tuple[Any, tuple[Any, ...], dict[str, Any]]]]


def profile_many(
    out: str | Path,
    jobs: Sequence[Job],
    *,
    threads: int = 1,
    utilization: float = 0.0,
    timer: TimerConfig = MODEL_TIMER,
    progress: bool = True,
    measure: bool = True,
    rounds: int = 1,
    chunk_size: int = 6,
) -> list[ArchRecord]:
    """Capture (and time) models into the `.jsonl` file `out`, one record per job.

    Each job is `(record name, build)` with `build() -> (model, inputs, info)`. Records already
    in `out` (by name) are kept and skipped, so an interrupted run resumes; records are
    appended and fsynced as soon as they are measured.

    `rounds > 1` measures a chunk of `chunk_size` models round-robin, `rounds` times, each
    round with `1/rounds` of the timing budget, and pools the samples: on a shared machine a
    slow spell of a few seconds then moves one round of one model, not its median. The
    per-round medians are kept in `measured["round_medians_ms"]`.
    """
    import dataclasses
    import sys

    out = Path(out)
    if out.suffix != ".jsonl":
        raise ValueError(f"--out={str(out)!r} is not valid: several models are written to a .jsonl file")
    if rounds < 1:
        raise ValueError(f"rounds={rounds} is not valid: expected at least 1")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {r.name for r in load_records(out)} if out.exists() else set()
    todo = [(n, b) for n, b in jobs if n not in done]
    per_round = dataclasses.replace(
        timer, min_run_time_s=timer.min_run_time_s / rounds, min_repeats=max(3, -(-timer.min_repeats // rounds)),
        max_run_time_s=timer.max_run_time_s / rounds)
    records: list[ArchRecord] = []
    t0 = time.perf_counter()
    for start in range(0, len(todo), chunk_size if rounds > 1 else 1):
        chunk = todo[start:start + (chunk_size if rounds > 1 else 1)]
        built = [(name, *build()) for name, build in chunk]
        recs = [capture_torch(m, x, name=name, threads=threads, utilization=utilization, info=info)
                for name, m, x, info in built]
        if measure:
            runs: list[list[dict[str, Any]]] = [[] for _ in built]
            for _ in range(rounds):
                for i, (_, m, x, _) in enumerate(built):
                    runs[i].append(time_torch_model(m, x, threads=threads, utilization=utilization, timer=per_round))
            recs = [r.with_measured(_pool(ms)) for r, ms in zip(recs, runs)]
        for r in recs:
            append_record(out, r)
        records += recs
        del built
        if progress and measure:
            el = time.perf_counter() - t0
            n = len(records)
            print(f"[{n}/{len(todo)}] " + ", ".join(f"{r.name} {r.measured['latency_ms']:.3f} ms" for r in recs)
                  + f"; {el:.0f} s elapsed, ETA {el / n * (len(todo) - n):.0f} s", file=sys.stderr)
    return records


def _pool(measured: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One `measured` mapping from several rounds: statistics of the pooled samples."""
    from ._timer import summarize

    if len(measured) == 1:
        return measured[0]
    samples = [s for m in measured for s in m["samples_ms"]]
    st = summarize(samples)
    achieved = [m["utilization_achieved"] for m in measured if m["utilization_achieved"] is not None]
    return {
        **measured[-1],
        "latency_ms": st.median_ms, "p10_ms": st.p10_ms, "p90_ms": st.p90_ms, "iqr_ms": st.iqr_ms, "cov": st.cov,
        "n_repeats": st.n_repeats, "samples_ms": samples,
        "rounds": len(measured), "round_medians_ms": [m["latency_ms"] for m in measured],
        "utilization_achieved": sum(achieved) / len(achieved) if achieved else None,
        "measured_at": measured[0]["measured_at"],
    }


def generated_jobs(seeds: Iterable[int], batch_sizes: Sequence[int], threads: int = 1, utilization: float = 0.0) -> list[Job]:
    """Jobs for `profile_many`: generated networks (`profilers._netgen`) per seed and batch."""
    from ._netgen import generated_network

    return [(f"gen{s}_b{b}_t{threads}_u{utilization:g}", lambda s=s, b=b: generated_network(s, batch_size=b))
            for s in seeds for b in batch_sizes]


def zoo_jobs(names: Sequence[str], batch_sizes: Sequence[int]) -> list[Job]:
    """Jobs for `profile_many`: real architectures of `profilers.zoo` per name and batch."""
    from . import zoo

    bad = [n for n in names if n not in zoo.ZOO]
    if bad:
        raise ValueError(f"model={bad} not valid: expected names from {', '.join(zoo.ZOO)}")

    def build(n: str, b: int):
        model, inputs = zoo.build(n, batch_size=b)
        return model, inputs, {"zoo": n, "batch_size": b}

    return [(f"{n}_b{b}", lambda n=n, b=b: build(n, b)) for n in names for b in batch_sizes]
