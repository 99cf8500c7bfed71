"""Whole models: capture the architecture record and time the model end to end with the
same timing rules as single modules (warm-up, sized blocks, repeats, utilization load).

    record = profile_torch_model(model, (x,), name="resnet18", threads=1)
    record.measured["latency_ms"]

Measuring runs in this process: callers set the measurement environment (malloc thresholds,
`MEASUREMENT_ENV`) before the interpreter starts; the CLI re-executes itself to do so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import json
import logging
import numbers
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ._arch import ArchRecord, append_record, capture_torch, load_records
from ._device import device_id, host_fingerprint
from ._timer import TimerConfig, Timing, time_function

#: Timing of whole models: longer warm-up and fewer, longer blocks than single modules.
_log = logging.getLogger(__name__)

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
    imported = set(sys.modules)
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        # A console script's sys.path lacks the working directory (`python -m` has it): a
        # factory in the user's own files is looked up there too. The missing module may be
        # `mod_name` or one of its packages: `tests.models` when some distribution installed a
        # bare `tests` directory, a namespace package that the failed import has just bound
        # to `tests` and that would hide the working directory's `tests` package: such
        # namespace packages on `mod_name`'s path are forgotten first (nothing else is, so no
        # extension module is imported twice). A module that `mod_name` itself imports is the
        # user's missing dependency, reported as it is.
        here = os.getcwd()
        ours = e.name is not None and (mod_name == e.name or mod_name.startswith(e.name + "."))
        if not ours or here in sys.path:
            raise ValueError(f"--model={spec!r}: cannot import {mod_name!r} ({e})") from None
        for name in set(sys.modules) - imported:
            on_path = mod_name.startswith(name + ".")
            if on_path and getattr(sys.modules[name], "__file__", None) is None:  # a namespace package
                del sys.modules[name]
        sys.path.append(here)
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e2:
            raise ValueError(f"--model={spec!r}: cannot import {mod_name!r} ({e2})") from None
    except ImportError as e:
        raise ValueError(f"--model={spec!r}: cannot import {mod_name!r} ({e})") from None
    fn = mod
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ValueError(f"--model={spec!r}: {mod_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ValueError(f"--model={spec!r}: {attr!r} is not callable")  # noqa: TRY004
    return fn


def factory_kwargs(text: str | None) -> dict[str, Any]:
    """The `--kwargs` of a factory: a JSON object (None: no keyword arguments).

    Raises:
      ValueError: not valid JSON, or JSON that is not an object.
    """
    if text is None:
        return {}
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--kwargs={text!r} is not valid JSON ({e}): expected an object, e.g. "
                         "'{\"width\": 8}'") from None
    if not isinstance(kwargs, dict):
        what = f"--kwargs={text!r} is a JSON {type(kwargs).__name__}"
        raise ValueError(f"{what}: expected an object of keyword arguments, e.g. '{{\"width\": 8}}'")  # noqa: TRY004
    return kwargs


def build_model(spec: str, kwargs: Mapping[str, Any] | None = None) -> Any:
    """`spec`'s factory ('package.module:function', see `load_factory`) called with `kwargs`:
    the `torch.nn.Module` it returns.

    The factory is the user's code: whatever it raises, and a result that is not a module
    (`os:system`, `builtins:dict`), is a `ValueError` naming the factory.
    """
    import torch

    factory = load_factory(spec)
    kwargs = dict(kwargs or {})
    try:
        model = factory(**kwargs)
    except Exception as e:  # the user's factory: any error; the cause stays chained for --debug
        lines = str(e).strip().splitlines()
        raise ValueError(f"--model={spec!r}: calling the factory with {kwargs or 'no arguments'} failed: "
                         f"{type(e).__name__}: {lines[0] if lines else ''}") from e
    if not isinstance(model, torch.nn.Module):
        got = f"{type(model).__module__}.{type(model).__qualname__}"
        raise ValueError(f"--model={spec!r}: the factory returned a {got}, not a torch.nn.Module")  # noqa: TRY004
    return model


def _check_settings(threads: Any, utilization: Any) -> None:
    """The run settings of whole-model timing, checked before anything is built or timed."""
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"threads={threads!r} is not valid (--threads): expected an int >= 1")
    if isinstance(utilization, bool) or not isinstance(utilization, numbers.Real) or not 0 <= utilization <= 1:
        raise ValueError(f"utilization={utilization!r} is not valid (--utilization): expected a number in [0, 1]")


def _check_batch_sizes(batch_sizes: Sequence[int]) -> None:
    if not batch_sizes:
        raise ValueError("batch sizes: none given (--batch); expected at least one int >= 1")
    bad = [b for b in batch_sizes if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1]
    if bad:
        raise ValueError(f"batch size {bad[0]!r} is not valid (--batch): expected an int >= 1")


@contextlib.contextmanager
def _held_utilization(utilization: float, load_workers: int | None) -> Iterator[Callable[[], float | None]]:
    """Hold a background CPU utilization inside the block; yields a function returning the
    utilization achieved so far (None when idle)."""
    from ._load import CpuLoad

    if not 0.0 <= utilization <= 1.0:
        raise ValueError(f"utilization={utilization} is not valid: expected a number in [0, 1]")
    if utilization == 0:
        yield lambda: None
        return
    with CpuLoad(load_workers) as load:
        load.set(utilization)
        load.reset()
        yield load.achieved


def _measured(timing: Timing, *, backend: str, threads: int, utilization: float, achieved: float | None,
              fingerprint: dict[str, Any], libraries: dict[str, str], **extra: Any) -> dict[str, Any]:
    """The `measured` mapping of an architecture record."""
    st = timing.stats
    return {
        "latency_ms": st.median_ms,
        "p10_ms": st.p10_ms,
        "p90_ms": st.p90_ms,
        "iqr_ms": st.iqr_ms,
        "cov": st.cov,
        "n_repeats": st.n_repeats,
        "number_per_run": timing.number_per_run,
        "samples_ms": list(timing.samples_ms),
        "backend": backend,
        "device": "cpu",
        "threads": threads,
        "utilization": utilization,
        "utilization_achieved": achieved,
        "device_id": device_id(fingerprint, backend=backend, device="cpu"),
        "fingerprint": fingerprint,
        "libraries": libraries,
        **extra,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


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

    from ._torch_backend import flush_denormals, torch_threads

    model = model.eval()
    with torch_threads(threads), torch.inference_mode(), flush_denormals(), \
            _held_utilization(utilization, load_workers) as achieved:
        timing = time_function(lambda: model(*inputs), config=timer)
        got = achieved()
    return _measured(timing, backend="torch", threads=threads, utilization=utilization, achieved=got,
                     fingerprint=_fingerprint(), libraries={"torch": torch.__version__}, flush_denormals=True)


def time_tflite_file(
    path: str | Path,
    *,
    threads: int = 1,
    utilization: float = 0.0,
    delegate: str = "xnnpack",
    timer: TimerConfig = MODEL_TIMER,
    load_workers: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Time a `.tflite` model with the LiteRT interpreter (needs only ai-edge-litert); returns the
    `measured` mapping of an architecture record (`backend` tflite, with the delegate)."""
    from ._quiet import filtered_stderr
    from ._tflite_backend import litert_version, time_tflite_model

    with _held_utilization(utilization, load_workers) as achieved:
        with filtered_stderr():  # LiteRT's native "INFO: Created TensorFlow Lite XNNPACK delegate" line
            timing = time_tflite_model(path, threads=threads, delegate=delegate, config=timer)
        got = achieved()
    fp = {**_fingerprint(), "delegate": delegate}
    return _measured(timing, backend="tflite", threads=threads, utilization=utilization, achieved=got,
                     fingerprint=fp, libraries={"ai-edge-litert": litert_version()}, delegate=delegate,
                     **(extra or {}))


class Runtime(Protocol):
    """How `profile_many` runs a built model: `prepare` once, then `time` once per round."""

    name: str

    def prepare(self, name: str, model: Any, inputs: Sequence[Any]) -> Any: ...

    def time(self, prepared: Any, *, threads: int, utilization: float, timer: TimerConfig) -> dict[str, Any]: ...


class TorchRuntime:
    """Models run in torch, in this process."""

    name = "torch"

    def prepare(self, name: str, model: Any, inputs: Sequence[Any]) -> Any:
        return model, inputs

    def time(self, prepared: Any, *, threads: int, utilization: float, timer: TimerConfig) -> dict[str, Any]:
        return time_torch_model(*prepared, threads=threads, utilization=utilization, timer=timer)


@dataclasses.dataclass
class TFLiteRuntime:
    """Models converted to `.tflite` (cached by name and dtype in `models_dir`) and run with the
    LiteRT interpreter.

    Attributes:
      models_dir: where converted models are kept; a model already there is reused.
      delegate: `xnnpack` or `none`.
      dtype: `fp32`, `fp16w` or `int8` (the record's module configs take this dtype).
    """

    models_dir: Path
    delegate: str = "xnnpack"
    dtype: str = "fp32"
    name: str = "tflite"

    def prepare(self, name: str, model: Any, inputs: Sequence[Any]) -> Any:
        from ._tflite_backend import graph_ops
        from ._tflite_export import convert_model

        path = Path(self.models_dir) / f"{name}_{self.dtype}.tflite"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            model_bytes = convert_model(model, inputs, dtype=self.dtype)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.write_bytes(model_bytes)
            os.replace(tmp, path)
        ops = graph_ops(path.read_bytes())
        return path, {"dtype": self.dtype, "n_graph_ops": len(ops), "model_file": path.name}

    def time(self, prepared: Any, *, threads: int, utilization: float, timer: TimerConfig) -> dict[str, Any]:
        path, extra = prepared
        return time_tflite_file(path, threads=threads, utilization=utilization, delegate=self.delegate, timer=timer,
                                extra=extra)


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
    runtime: Runtime | None = None,
    rounds: int = 1,
    round_gap_s: float = 5.0,
) -> ArchRecord:
    """Capture `model`'s architecture record and (unless `measure=False`) time it end to end
    with `runtime` (default torch; `TFLiteRuntime` converts it to `.tflite` first).

    `rounds > 1` times it `rounds` times, `round_gap_s` seconds apart, each round with
    `1/rounds` of the timing budget, and pools the samples (as `profile_many` does): on a
    machine whose speed wanders, the pooled `p10_ms` is then the undisturbed latency whenever
    one round caught it.
    """
    _check_settings(threads, utilization)
    if rounds < 1:
        raise ValueError(f"rounds={rounds} is not valid: expected at least 1")
    if round_gap_s < 0:
        raise ValueError(f"round_gap_s={round_gap_s} is not valid: expected a number >= 0")
    runtime = runtime if runtime is not None else TorchRuntime()
    record = capture_torch(model, inputs, name=name, threads=threads, utilization=utilization, info=info)
    if runtime.name == "tflite":
        record = record.with_settings(dtype=runtime.dtype)
    if not measure:
        return record
    prepared = runtime.prepare(name, model, inputs)
    runs = []
    for r in range(rounds):
        if r:
            time.sleep(round_gap_s)
        runs.append(runtime.time(prepared, threads=threads, utilization=utilization, timer=_per_round(timer, rounds)))
    return record.with_measured(_pool(runs))


def _per_round(timer: TimerConfig, rounds: int) -> TimerConfig:
    """Each round's share of a model's timing budget (at least 3 timed blocks a round)."""
    return dataclasses.replace(
        timer, min_run_time_s=timer.min_run_time_s / rounds, min_repeats=max(3, -(-timer.min_repeats // rounds)),
        max_run_time_s=timer.max_run_time_s / rounds)


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
    runtime: Runtime | None = None,
) -> list[ArchRecord]:
    """Capture (and time) models into the `.jsonl` file `out`, one record per job.

    Each job is `(record name, build)` with `build() -> (model, inputs, info)`. Records already
    in `out` (by name) are kept and skipped, so an interrupted run resumes; records are
    appended and fsynced as soon as they are measured.

    `rounds > 1` measures a chunk of `chunk_size` models round-robin, `rounds` times, each
    round with `1/rounds` of the timing budget, and pools the samples: on a shared machine a
    slow spell of a few seconds then moves one round of one model, not its median. The
    per-round medians are kept in `measured["round_medians_ms"]`.

    `runtime` runs the models: `TorchRuntime()` (default) or `TFLiteRuntime(models_dir, ...)`,
    which converts each model to `.tflite` first; the record is captured from torch either way
    (with the runtime's dtype for TFLite).
    """
    runtime = runtime if runtime is not None else TorchRuntime()
    out = Path(out)
    if out.suffix != ".jsonl":
        raise ValueError(f"--out={str(out)!r} is not valid: several models are written to a .jsonl file")
    if rounds < 1:
        raise ValueError(f"rounds={rounds} is not valid: expected at least 1")
    _check_settings(threads, utilization)
    _make_parent(out)
    done = {r.name for r in load_records(out)} if out.exists() else set()
    todo = [(n, b) for n, b in jobs if n not in done]
    per_round = _per_round(timer, rounds)
    records: list[ArchRecord] = []
    t0 = time.perf_counter()
    for start in range(0, len(todo), chunk_size if rounds > 1 else 1):
        chunk = todo[start:start + (chunk_size if rounds > 1 else 1)]
        built = [(name, *build()) for name, build in chunk]
        recs = [capture_torch(m, x, name=name, threads=threads, utilization=utilization, info=info)
                for name, m, x, info in built]
        if runtime.name == "tflite":
            recs = [r.with_settings(dtype=runtime.dtype) for r in recs]
        if measure:
            prepared = [runtime.prepare(name, m, x) for name, m, x, _ in built]
            runs: list[list[dict[str, Any]]] = [[] for _ in built]
            for _ in range(rounds):
                for i, p in enumerate(prepared):
                    runs[i].append(runtime.time(p, threads=threads, utilization=utilization, timer=per_round))
            recs = [r.with_measured(_pool(ms)) for r, ms in zip(recs, runs)]
        for r in recs:
            append_record(out, r)
        records += recs
        del built
        if progress and measure:
            el = time.perf_counter() - t0
            n = len(records)
            _log.info("[%d/%d] %s; %.0f s elapsed, ETA %.0f s", n, len(todo),
                      ", ".join(f"{r.name} {r.measured['latency_ms']:.3f} ms" for r in recs), el,
                      el / n * (len(todo) - n))
    return records


def _make_parent(out: Path) -> None:
    """The directory of the records file `out`, created; a path that cannot hold it (a file on
    the way, a read-only place) is a `ValueError` naming `--out` and the reason."""
    if out.is_dir():
        raise ValueError(f"--out={str(out)!r} is a directory: expected a .jsonl records file")
    for p in out.parents:
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"--out={str(out)!r} is not valid: {p} is a file, not a directory")
            break
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out={str(out)!r}: cannot write a records file here ({e.strerror or e})") from None


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


def generated_jobs(seeds: Iterable[int], batch_sizes: Sequence[int], threads: int = 1, utilization: float = 0.0,
                   *, family: str | None = None, explicit_padding: bool = False) -> list[Job]:
    """Jobs for `profile_many`: generated networks (`profilers._netgen`) per seed and batch,
    named `gen{seed}[_{family}][_pad]_b{batch}_t{threads}_u{utilization}`."""
    from ._netgen import check_family, generated_network

    if family is not None:
        check_family(family)  # now, not when the first job builds
    seeds = list(seeds)
    if not seeds:
        raise ValueError("generated networks: 0 seeds; expected at least one network (--n >= 1)")
    _check_batch_sizes(batch_sizes)
    tag = (f"_{family}" if family else "") + ("_pad" if explicit_padding else "")
    return [(f"gen{s}{tag}_b{b}_t{threads}_u{utilization:g}",
             lambda s=s, b=b: generated_network(s, batch_size=b, family=family, explicit_padding=explicit_padding))
            for s in seeds for b in batch_sizes]


def zoo_jobs(names: Sequence[str], batch_sizes: Sequence[int]) -> list[Job]:
    """Jobs for `profile_many`: real architectures of `profilers.zoo` per name and batch."""
    from . import zoo

    bad = [n for n in names if n not in zoo.ZOO]
    if bad:
        raise ValueError(f"model={bad} not valid: expected names from {', '.join(zoo.ZOO)}")
    _check_batch_sizes(batch_sizes)

    def build(n: str, b: int):
        model, inputs = zoo.build(n, batch_size=b)
        return model, inputs, {"zoo": n, "batch_size": b}

    return [(f"{n}_b{b}", lambda n=n, b=b: build(n, b)) for n in names for b in batch_sizes]
