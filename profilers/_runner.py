"""Profiling runs: configs in, one dataset file out, resumable and safe to leave for hours.

The runner (this process, no framework imported) owns the dataset writer, the CPU load
generator and the progress bar; a worker subprocess (`profilers._worker`) builds and times
each module. A config that raises, hangs past `timeout_s` or kills the worker becomes a
failed row with its error, and the run goes on with a fresh worker.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._catalogue import ModuleConfig
from ._dataset import DatasetWriter, check_output_path, measurement_row
from ._device import device_id, host_fingerprint, measurement_env
from ._timer import TimerConfig

BACKENDS = ("torch", "tflite")


class WorkerError(RuntimeError):
    """The worker process could not start or died."""


class WorkerStartError(WorkerError, ValueError):
    """The first worker of a run could not start: the backend, device or plugins asked for are
    not available here (e.g. `device="cuda"` without a GPU). A `ValueError`, since the
    arguments are what must change."""


class _Worker:
    """One measurement subprocess speaking the JSON-lines protocol."""

    def __init__(self, backend: str, device: str, extra_args: Sequence[str] = (), *, describe: bool = False):
        self.backend, self.device = backend, device
        self._log = tempfile.TemporaryFile(mode="w+b")
        cmd = [sys.executable, "-m", "profilers._worker", "--backend", backend, "--device", device, *extra_args]
        if describe:  # the device descriptor's micro-benchmarks (a few seconds), first worker only
            cmd.append("--describe")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=measurement_env(),
            text=True,
            bufsize=1,
        )
        reply = self._read(timeout_s=300)
        if reply is None or reply.get("hello") is None:
            err = (reply or {}).get("error") or self.stderr_tail()
            self.kill()
            hint = "" if device == "cpu" else f"; is device {device!r} visible to {backend} on this machine?"
            raise WorkerStartError(f"the {backend} worker on device={device!r} did not start: {err}{hint}")
        self.hello: dict[str, Any] = reply["hello"]

    def _read(self, timeout_s: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            raise TimeoutError
        line = self.proc.stdout.readline()
        if not line:
            return None
        return json.loads(line)

    def request(self, task: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one task; return the reply, or raise TimeoutError / WorkerError."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(task) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(self._death()) from None
        reply = self._read(timeout_s)
        if reply is None:
            raise WorkerError(self._death())
        return reply

    def _death(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return f"worker died (exit code {code}): {self.stderr_tail()}"

    def stderr_tail(self, n_chars: int = 600) -> str:
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - n_chars))
        return self._log.read().decode(errors="replace").strip().replace("\n", " | ")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._release()

    def close(self) -> None:
        """Ask the worker to finish (end of its input), kill it if it does not."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
                self.proc.wait()
        self._release()

    def _release(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None and not f.closed:
                try:
                    f.close()
                except BrokenPipeError:
                    pass
        self._log.close()


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a profiling run did; `format()` gives the text the CLI prints."""

    path: str
    total: int
    measured: int
    failed: int
    skipped: int
    elapsed_s: float
    per_module: Mapping[str, Mapping[str, float]]
    interrupted: bool = False

    @property
    def configs_per_minute(self) -> float:
        done = self.measured + self.failed
        return 60.0 * done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def format(self) -> str:
        lines = [
            f"{self.path}: {self.measured} measured, {self.failed} failed, {self.skipped} already done "
            f"(of {self.total}) in {self.elapsed_s:.0f} s, {self.configs_per_minute:.1f} configs/min"
            + ("  [interrupted: re-run the same command to resume]" if self.interrupted else "")
        ]
        if self.per_module:
            lines.append(f"{'module':<14} {'ok':>6} {'failed':>6} {'median ms':>10} {'median CoV':>10}")
            for m, s in self.per_module.items():
                lines.append(
                    f"{m:<14} {int(s['ok']):>6} {int(s['failed']):>6} "
                    f"{s['median_latency_ms']:>10.4g} {s['median_cov']:>10.3f}"
                )
        return "\n".join(lines)


def _per_module(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for m in sorted({r["module"] for r in rows}):
        mine = [r for r in rows if r["module"] == m]
        ok = [r for r in mine if r["status"] == "ok"]
        out[m] = {
            "ok": len(ok),
            "failed": len(mine) - len(ok),
            "median_latency_ms": statistics.median(r["latency_ms_median"] for r in ok) if ok else float("nan"),
            "median_cov": statistics.median(r["latency_cov"] for r in ok) if ok else float("nan"),
        }
    return out


def _round_timer(timer: TimerConfig, rounds: int) -> TimerConfig:
    """Each round's share of the timing budget."""
    return dataclasses.replace(
        timer,
        min_run_time_s=timer.min_run_time_s / rounds,
        max_run_time_s=timer.max_run_time_s / rounds,
        min_repeats=max(1, -(-timer.min_repeats // rounds)),
        max_repeats=max(1, -(-timer.max_repeats // rounds)),
    )


def _chunks(configs: Sequence[ModuleConfig], size: int) -> list[list[ModuleConfig]]:
    """Consecutive chunks of at most `size`, never mixing utilization levels."""
    out: list[list[ModuleConfig]] = []
    for cfg in configs:
        if out and len(out[-1]) < size and out[-1][0]["utilization"] == cfg["utilization"]:
            out[-1].append(cfg)
        else:
            out.append([cfg])
    return out


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="cfg", dynamic_ncols=True, smoothing=0.05)


def retest_agreement(first_ms: Sequence[float], second_ms: Sequence[float]) -> dict[str, float]:
    """How well a second measurement of the same configs repeats the first: the share within
    ±10 % and ±20 % (`acc10`, `acc20`), the median ratio second / first (`ratio`: the machine's
    drift, common to every config), and the ±10 % share once that drift is divided out
    (`acc10_drift_removed`: each config's own noise; the gap to `acc10` is the machine's
    speed moving between the two).

    Raises:
      ValueError: the two differ in length, are empty, or hold a latency that is not > 0.
    """
    import numpy as np

    a, b = np.asarray(first_ms, np.float64), np.asarray(second_ms, np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"retest_agreement: expected two equally long, non-empty lists of latencies, got {a.shape}, {b.shape}")
    if not (np.all(a > 0) and np.all(b > 0) and np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("retest_agreement: latencies must be finite and > 0")
    ratio = b / a
    common = float(np.median(ratio))
    return {
        "acc10": float(np.mean(np.abs(ratio - 1) <= 0.10)),
        "acc20": float(np.mean(np.abs(ratio - 1) <= 0.20)),
        "ratio": common,
        "acc10_drift_removed": float(np.mean(np.abs(ratio / common - 1) <= 0.10)),
    }


#: Longest pause between two rounds of the retest sample.
MAX_RETEST_ROUND_GAP_S = 60.0


def _retest(configs: Sequence[ModuleConfig], writer: DatasetWriter, measure_once, rounds: int,
            load: Any, round_gap_s: float = 0.0) -> dict[str, Any]:
    """Measure `configs` again (their rounds round-robin, as in the run, each round starting
    `round_gap_s` after the previous one, as a chunk's rounds did in the run, at most
    `MAX_RETEST_ROUND_GAP_S`) and compare the pooled median and 10th percentile with the rows
    just written."""
    import numpy as np

    rows = {r["config_key"]: r for r in writer.rows()}
    pooled: dict[str, list[float]] = {c.key: [] for c in configs}
    level = None
    gap_s = min(max(round_gap_s, 0.0), MAX_RETEST_ROUND_GAP_S)
    for r in range(rounds):
        started = time.monotonic()
        if r:
            time.sleep(max(0.0, gap_s - (started - previous)))
            started = time.monotonic()
        previous = started
        for cfg in configs:
            if load is not None:
                if cfg["utilization"] != level:
                    load.set(cfg["utilization"])
                    time.sleep(3 * load.period_s)  # as in the run: let the load settle
                    level = cfg["utilization"]
                load.reset()
            reply, error = measure_once(cfg)
            if error is None:
                pooled[cfg.key] += reply["samples_ms"]
    pairs = []
    for cfg in configs:
        s = np.asarray(pooled[cfg.key], float)
        if len(s):
            old = rows[cfg.key]
            pairs.append((cfg.key, float(old["latency_ms_median"]), float(np.median(s)),
                          float(old["latency_ms_p10"]), float(np.percentile(s, 10))))
    if not pairs:
        return {"n": 0}
    med = retest_agreement([p[1] for p in pairs], [p[2] for p in pairs])
    p10 = retest_agreement([p[3] for p in pairs], [p[4] for p in pairs])
    return {
        "n": len(pairs),
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **{f"median_{k}": v for k, v in med.items() if k != "ratio"},
        **{f"p10_{k}": v for k, v in p10.items() if k != "ratio"},
        "median_ratio": med["ratio"],
        "pairs": [{"config_key": k, "median_ms": [a, b], "p10_ms": [c, d]} for k, a, b, c, d in pairs],
    }


def retest_summary(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The test-retest entries of a dataset's runs (`run_profile(retest=...)`), newest last: per
    run, how many configs were measured again and the share whose median (and 10th percentile)
    repeated within ±10 % and ±20 %, the median ratio second / first (`median_ratio`: the
    machine's drift, common to all configs) and the ±10 % shares with that drift removed
    (`*_acc10_drift_removed`; absent from entries written before they were recorded). See
    `retest_agreement`."""
    from ._dataset import read_metadata

    return [{k: v for k, v in r["retest"].items() if k != "pairs"} | {"run_id": r.get("run_id")}
            for r in read_metadata(path).get("runs", []) if isinstance(r, dict) and r.get("retest")]


def retest_ceiling(paths: str | os.PathLike | Sequence[str | os.PathLike], statistic: str = "median"
                   ) -> dict[str, Any] | None:
    """The labels' test-retest agreement recorded by the runs that wrote `paths`
    (`retest_summary`), pooled over runs by their counts, for one statistic (`median` or
    `p10`): the ceiling an accuracy on those labels is read against.

    Returns:
      `{"statistic", "n", "runs", "acc10", "acc20"}`, or None where no run recorded one.

    Raises:
      ValueError: an unknown statistic.
    """
    import numpy as np

    if statistic not in ("median", "p10"):
        raise ValueError(f"statistic={statistic!r} is not valid: expected median or p10")
    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    entries = [e for p in files for e in retest_summary(p) if e.get("n") and f"{statistic}_acc10" in e]
    if not entries:
        return None
    n = np.array([e["n"] for e in entries], float)
    pooled = {f"acc{k}": float(np.average([e[f"{statistic}_acc{k}"] for e in entries], weights=n)) for k in (10, 20)}
    return {"statistic": statistic, "n": int(n.sum()), "runs": len(entries), **pooled}


def run_profile(
    configs: Sequence[ModuleConfig],
    out: str | os.PathLike,
    *,
    backend: str = "torch",
    device: str = "cpu",
    timer: TimerConfig = TimerConfig(),
    timeout_s: float = 120.0,
    load_workers: int | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    run_info: Mapping[str, Any] | None = None,
    plugins: Sequence[str] = (),
    worker_args: Sequence[str] = (),
    on_row: Callable[[dict[str, Any]], None] | None = None,
    rounds: int = 1,
    chunk_size: int = 8,
    describe: bool = True,
    retest: int | None = None,
) -> RunSummary:
    """Measure every config and write the dataset `out`, skipping configs already there.

    Args:
      configs: what to measure (each carries threads, dtype and utilization).
      out: the Parquet file; re-running with the same `out` resumes.
      backend: `"torch"` (or `"tflite"`, through its own backend module).
      device: `"cpu"` or `"cuda"` / `"cuda:N"` (torch).
      timer: warm-up and repeat settings.
      timeout_s: a config that takes longer is killed and recorded as failed.
      load_workers: CPU load generator processes (default: one per logical CPU).
      retry_failed: measure configs again that failed in an earlier run.
      progress: show a progress bar (done, failed, ETA) on stderr.
      run_info: recorded in the file's metadata (sampler, seed, command).
      plugins: modules the worker imports first, registering user module types and their
        builders (the runner's own process must have imported them too).
      worker_args: extra arguments for the worker process (backend options).
      on_row: called with each new row (for callers that stream results).
      rounds: measure each config this many times, seconds apart, and pool the samples
        (each round gets `1/rounds` of the timing budget). On a shared machine, a passing
        disturbance then moves one round, and the pooled median barely.
      chunk_size: configs measured round-robin together when `rounds > 1`; each finished
        round is journaled, so an interruption loses at most one round of one config.
      describe: measure the device descriptor (`profilers._descriptor`: matmul peak, copy
        bandwidth, caches; a few seconds, CPU only) into the metadata.
      retest: configs of this run measured again at its end, in the same protocol (with
        `rounds`, each round starting as long after the previous one as in the run), to record
        the labels' test-retest agreement in the run's metadata entry (`runs[i]["retest"]`,
        see `retest_summary`): the ceiling any prediction of these labels is read against.
        Default: a tenth of the configs measured, at most 30 (none below 10 configs).

    Returns:
      A `RunSummary`; the rows are in `out`.

    Raises:
      ValueError: no configs, `timeout_s` not > 0, an unknown backend or device, `out` not
        writable (`DatasetError`), the worker cannot start (`WorkerStartError`: the device or
        backend is not available), or `out` holds measurements of another device or timer.
    """
    configs = list(configs)
    if not configs:
        raise ValueError("configs: nothing to measure (0 configs); expected at least one (--n >= 1)")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not (
        math.isfinite(timeout_s) and timeout_s > 0
    ):
        raise ValueError(f"timeout_s={timeout_s!r} is not valid (--timeout): expected seconds > 0, finite")
    if rounds < 1:
        raise ValueError(f"rounds={rounds} is not valid: expected an int >= 1")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} is not valid: expected an int >= 1")
    if retest is not None and (isinstance(retest, bool) or not isinstance(retest, int) or retest < 0):
        raise ValueError(f"retest={retest!r} is not valid (--retest): expected an int >= 0 (or None: a tenth)")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not valid: expected one of {', '.join(BACKENDS)}")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device={device!r} is not valid: expected 'cpu', 'cuda' or 'cuda:N'")
    if backend == "tflite" and device != "cpu":
        raise ValueError(f"device={device!r} is not valid for backend 'tflite': expected 'cpu'")
    if load_workers is not None and load_workers < 1:
        raise ValueError(f"load_workers={load_workers} is not valid: expected an int >= 1 (or None: one per CPU)")
    check_output_path(out)  # before the worker: a bad --out fails now, not after minutes
    t0 = time.monotonic()
    worker_args = [a for p in plugins for a in ("--plugin", p)] + list(worker_args)
    worker = _Worker(backend, device, worker_args, describe=describe)
    fingerprint = {**host_fingerprint(),
                   **{k: v for k, v in worker.hello.items() if k not in ("libraries", "descriptor")}}
    dev_id = device_id(fingerprint, backend=backend, device=device)
    meta = {
        "backend": backend,
        "device": device,
        "device_id": dev_id,
        "fingerprint": fingerprint,
        "libraries": worker.hello.get("libraries", {}),
        "descriptor": worker.hello.get("descriptor"),
        "timer": dataclasses.asdict(timer),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs": [{**(run_info or {}), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "n_configs": len(configs)}],
    }
    unique = list({c.key: c for c in configs}.values())
    load = None
    bar = None
    measured = failed = skipped = 0
    interrupted = False
    try:
        writer = DatasetWriter(out, meta)
    except Exception:
        worker.kill()
        raise
    try:
        done = writer.done_keys(include_failed=not retry_failed)
        todo = [c for c in unique if c.key not in done]
        # Group by utilization so the load level changes rarely; keep the draw order inside.
        todo.sort(key=lambda c: c["utilization"])
        skipped = len(unique) - len(todo)
        if device == "cpu" and any(c["utilization"] > 0 for c in todo):
            from ._load import CpuLoad

            load = CpuLoad(load_workers).__enter__()
        bar = _progress(len(todo), progress)
        level = None
        round_timer = dataclasses.asdict(_round_timer(timer, rounds))

        def measure_once(cfg: ModuleConfig) -> tuple[dict[str, Any] | None, str | None]:
            nonlocal worker
            try:
                if worker is None:
                    worker = _Worker(backend, device, worker_args)
                reply = worker.request({"config": cfg.as_dict(), "timer": round_timer}, timeout_s)
                return (reply, None) if reply.get("ok") else (None, reply.get("error", "unknown error"))
            except TimeoutError:
                error = f"timeout: no result within {timeout_s:g} s"
            except WorkerError as e:
                error = str(e)
            if worker is not None:
                worker.kill()
            worker = None
            return None, error

        round_s: list[float] = []  # how long each round of a chunk took: its rounds' spacing
        credited: collections.Counter[str] = collections.Counter()  # progress shown per round
        for chunk in _chunks(todo, chunk_size if rounds > 1 else 1):
            u = chunk[0]["utilization"]
            if load is not None and u != level:
                load.set(u)
                time.sleep(3 * load.period_s)  # let the workers reach the new duty cycle
                level = u
            pooled = {c.key: writer.partials(c.key) for c in chunk}
            errors: dict[str, str] = {}
            # Round-robin over the chunk: each config's rounds lie seconds apart, so a passing
            # disturbance (another process, a frequency change) touches one round, not all.
            for r in range(rounds):
                round_started, timed = time.monotonic(), False
                for cfg in chunk:
                    if cfg.key in errors or r in pooled[cfg.key]:
                        continue
                    if load is not None:
                        load.reset()
                    reply, error = measure_once(cfg)
                    timed = True
                    achieved = load.achieved() if load is not None else (reply or {}).get("utilization_achieved")
                    if achieved is None and device == "cpu":
                        achieved = 0.0
                    if error is not None:
                        errors[cfg.key] = error
                        continue
                    rec = {"samples_ms": reply["samples_ms"], "number_per_run": reply["number_per_run"],
                           "utilization_achieved": achieved, "backend_columns": reply.get("backend_columns")}
                    pooled[cfg.key][r] = rec
                    if rounds > 1:
                        writer.append_partial(cfg.key, r, rec)
                        bar.update(1 / rounds)  # a whole-run chunk writes its rows at its end
                        credited[cfg.key] += 1 / rounds
                if timed:  # a round resumed from the journal took no time: not a spacing
                    round_s.append(time.monotonic() - round_started)
            for cfg in chunk:
                recs = list(pooled[cfg.key].values())
                error = errors.get(cfg.key)
                ach = [x["utilization_achieved"] for x in recs if x["utilization_achieved"] is not None]
                row = measurement_row(
                    cfg,
                    samples_ms=None if error else [v for x in recs for v in x["samples_ms"]],
                    number_per_run=None if error else recs[0]["number_per_run"],
                    backend=backend,
                    device=device,
                    device_id=dev_id,
                    utilization_achieved=sum(ach) / len(ach) if ach else (0.0 if device == "cpu" else None),
                    error=error,
                    backend_columns=recs[0].get("backend_columns") if recs and not error else None,
                )
                writer.append(row)
                if on_row is not None:
                    on_row(row)
                if error:
                    failed += 1
                else:
                    measured += 1
                bar.update(1 - credited.pop(cfg.key, 0.0))
                bar.set_postfix(module=cfg.module, failed=failed, refresh=False)
        n_retest = min(30, measured // 10) if retest is None else retest
        fresh = [c for c in todo if c.key in writer.done_keys(include_failed=False)]
        if n_retest and fresh:
            import numpy as np

            picked = [fresh[i] for i in np.random.default_rng(len(fresh)).permutation(len(fresh))[:n_retest]]
            gap_s = statistics.median(round_s) if rounds > 1 and round_s else 0.0
            writer.annotate_run({"retest": _retest(picked, writer, measure_once, rounds, load, gap_s)})
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
        if load is not None:
            load.close()
        if worker is not None:
            worker.close()
        writer.close()
    rows = writer.rows()
    wanted = {c.key for c in unique}
    summary = RunSummary(
        path=str(out),
        total=len(unique),
        measured=measured,
        failed=failed,
        skipped=skipped,
        elapsed_s=time.monotonic() - t0,
        per_module=_per_module([r for r in rows if r["config_key"] in wanted]),
        interrupted=interrupted,
    )
    return summary
