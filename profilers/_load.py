"""CPU load generator: duty-cycled busy worker processes that hold a requested utilization.

Each worker consumes `target * period_s` of CPU time in every period and sleeps for the rest,
on its own process (so the GIL does not serialize it with the measurement). The workers count
the CPU time they really consumed, so the achieved utilization (CPU time of the load over wall
time, per worker) is recorded beside the requested one; on a contended machine it comes out
below the request rather than being assumed.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from types import TracebackType


def _spin(target, busy, index, stop, period_s, started, parent_pid) -> None:  # a worker process
    with started.get_lock():
        started.value += 1
    # A parent killed without cleanup (SIGKILL, a crash) must not leave load running behind it:
    # an orphan spinner silently loads every later measurement on the machine.
    while not stop.is_set() and os.getppid() == parent_pid:
        start, cpu0 = time.perf_counter(), time.thread_time()
        u = target.value
        if u <= 0:
            time.sleep(period_s)
            continue
        # Spin until this period's share of CPU time is consumed (CPU time, not wall time:
        # when the worker is preempted, the wall clock runs on without load being applied).
        want = u * period_s
        while time.thread_time() - cpu0 < want and time.perf_counter() - start < period_s:
            pass
        spun = time.thread_time() - cpu0
        with busy.get_lock():
            busy[index] += spun
        rest = period_s - (time.perf_counter() - start)
        if rest > 0:
            time.sleep(rest)


class CpuLoad:
    """Holds a background CPU utilization with `n_workers` duty-cycled processes.

    Use as a context manager; `set(u)` changes the target (0 stops the spinning),
    `reset()` starts a measurement window and `achieved()` returns the mean busy fraction of
    the workers since then (1.0 means every worker spun all the time).

    Args:
      n_workers: worker processes; default one per logical CPU, so that the load competes
        with the measurement on every core as other applications would.
      period_s: duty-cycle period; short enough that a millisecond-scale measurement sees
        the load, long enough for the scheduler.
    """

    def __init__(self, n_workers: int | None = None, *, period_s: float = 0.01):
        self.n_workers = n_workers if n_workers is not None else (os.cpu_count() or 1)
        if self.n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {self.n_workers}")
        self.period_s = period_s
        self._procs: list = []
        self._since = time.perf_counter()
        self._base = 0.0

    def __enter__(self) -> CpuLoad:
        ctx = mp.get_context("spawn")
        self._target = ctx.Value("d", 0.0, lock=False)
        self._busy = ctx.Array("d", self.n_workers)
        self._stop = ctx.Event()
        started = ctx.Value("i", 0)
        self._procs = [
            ctx.Process(
                target=_spin,
                args=(self._target, self._busy, i, self._stop, self.period_s, started, os.getpid()),
                daemon=True,
                name=f"jaxlat-load-{i}",
            )
            for i in range(self.n_workers)
        ]
        for p in self._procs:
            p.start()
        # Spawned processes take a moment to start; a window opened before they spin would
        # record a utilization that was never applied.
        deadline = time.monotonic() + 30
        while started.value < self.n_workers:
            if time.monotonic() > deadline or not all(p.is_alive() for p in self._procs):
                self.close()
                raise RuntimeError(f"CpuLoad: only {started.value} of {self.n_workers} load workers started")
            time.sleep(0.005)
        self.reset()
        return self

    def __exit__(self, et: type | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if not self._procs:
            return
        self._stop.set()
        for p in self._procs:
            p.join(timeout=2)
            if p.is_alive():
                p.kill()
        self._procs = []

    def set(self, target: float) -> None:
        if not 0.0 <= target <= 1.0:
            raise ValueError(f"utilization={target} is not valid: expected a number in [0, 1]")
        if not self._procs:
            raise RuntimeError("CpuLoad.set called outside its `with` block")
        self._target.value = float(target)

    def _total_busy(self) -> float:
        with self._busy.get_lock():
            return float(sum(self._busy[:]))

    def reset(self) -> None:
        self._since = time.perf_counter()
        self._base = self._total_busy()

    def achieved(self) -> float:
        wall = time.perf_counter() - self._since
        if wall <= 0:
            return 0.0
        return min(1.0, (self._total_busy() - self._base) / (wall * self.n_workers))
