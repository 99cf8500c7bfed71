"""Timing: warm-up, block sizing, repeats and robust statistics.

The timer calls a function in blocks of `number_per_run` calls so that the clock's own
overhead is negligible (as `torch.utils.benchmark.Timer.blocked_autorange` does), and
records one sample per block: the mean time of one call in that block, in milliseconds.

How a block is timed is a seam, `BlockTimer`: wall clock on a CPU, CUDA events on a GPU,
and a seeded fake in unit tests.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

#: IQR/median above which a measurement is flagged as noisy (torch.utils.benchmark uses 0.1).
IQR_WARN_THRESHOLD = 0.1


class BlockTimer(Protocol):
    """Times one block of calls.

    Args:
      fn: the zero-argument function to call.
      number: how many times to call it back to back.

    Returns:
      The block's elapsed time in seconds, after the device has finished the work.
    """

    def __call__(self, fn: Callable[[], object], number: int) -> float: ...


def wall_clock_block_timer(
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] | None = None,
) -> BlockTimer:
    """A block timer on a wall clock; `sync` waits for the device before each clock read."""

    def time_block(fn: Callable[[], object], number: int) -> float:
        if sync is not None:
            sync()
        start = clock()
        for _ in range(number):
            fn()
        if sync is not None:
            sync()
        return clock() - start

    return time_block


@dataclasses.dataclass(frozen=True, slots=True)
class TimerConfig:
    """How long and how often to measure.

    Attributes:
      warmup_s: at least this long calling the function before timing (caches, allocator,
        lazy initialization, oneDNN primitive creation).
      min_warmup_calls: and at least this many calls.
      min_block_s: smallest duration of one timed block; `number_per_run` grows until a
        block lasts this long, so the clock's overhead stays far below 0.1%.
      min_run_time_s: keep timing blocks until this much time is spent...
      min_repeats: ...and at least this many blocks were timed.
      max_repeats: stop after this many blocks.
      max_run_time_s: stop timing after this long, whatever the counts (slow modules).
    """

    warmup_s: float = 0.05
    min_warmup_calls: int = 3
    min_block_s: float = 0.002
    min_run_time_s: float = 0.2
    min_repeats: int = 10
    max_repeats: int = 1000
    max_run_time_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("warmup_s", "min_block_s", "min_run_time_s", "max_run_time_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and v != float("inf")):
                raise ValueError(f"TimerConfig.{name}{_flag(name)} must be >= 0 and finite, got {v!r}")
        for name in ("min_warmup_calls", "min_repeats", "max_repeats"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"TimerConfig.{name}{_flag(name)} must be an int, got {v!r}")
        if self.min_repeats < 1 or self.max_repeats < self.min_repeats:
            raise ValueError(
                f"TimerConfig: need 1 <= min_repeats <= max_repeats (--min-repeats), got {self.min_repeats}, "
                f"{self.max_repeats}"
            )


def _flag(name: str) -> str:
    """The command-line option that sets a `TimerConfig` field, for messages."""
    flags = {"min_run_time_s": "--min-run-time", "min_repeats": "--min-repeats"}
    return f" ({flags[name]})" if name in flags else ""


@dataclasses.dataclass(frozen=True, slots=True)
class LatencyStats:
    """Robust statistics of per-call latency samples, in milliseconds."""

    median_ms: float
    mean_ms: float
    std_ms: float
    p10_ms: float
    p90_ms: float
    iqr_ms: float
    cov: float  # std / mean, dimensionless
    n_repeats: int

    @property
    def noisy(self) -> bool:
        """IQR/median above `IQR_WARN_THRESHOLD`."""
        return self.median_ms > 0 and self.iqr_ms / self.median_ms > IQR_WARN_THRESHOLD


def summarize(samples_ms: Sequence[float]) -> LatencyStats:
    """Statistics of per-call latency samples (one sample per timed block).

    Raises:
      ValueError: no samples, or a sample that is not finite.
    """
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("summarize: samples_ms is empty")
    if not np.all(np.isfinite(x)):
        raise ValueError("summarize: samples_ms holds NaN or inf")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    p10, p25, p50, p75, p90 = (float(v) for v in np.percentile(x, [10, 25, 50, 75, 90]))
    return LatencyStats(
        median_ms=p50,
        mean_ms=mean,
        std_ms=std,
        p10_ms=p10,
        p90_ms=p90,
        iqr_ms=p75 - p25,
        cov=std / mean if mean > 0 else math.inf,
        n_repeats=int(x.size),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Timing:
    """Raw result of timing one function: per-call samples and the block size."""

    samples_ms: tuple[float, ...]
    number_per_run: int

    @property
    def stats(self) -> LatencyStats:
        return summarize(self.samples_ms)


def time_function(
    fn: Callable[[], object],
    *,
    block_timer: BlockTimer | None = None,
    config: TimerConfig = TimerConfig(),
) -> Timing:
    """Warm up, size the block, then time blocks of calls of `fn`.

    Args:
      fn: zero-argument function; each call is one inference of the module.
      block_timer: how a block is timed; default wall clock, no device sync.
      config: durations and counts.

    Returns:
      `Timing` with one per-call sample (ms) per block.
    """
    time_block = block_timer or wall_clock_block_timer()
    # Warm-up; doubles as the first estimate of one call's duration.
    calls, spent = 0, 0.0
    while calls < config.min_warmup_calls or spent < config.warmup_s:
        number = max(1, calls)
        spent += time_block(fn, number)
        calls += number
        if spent > config.max_run_time_s:
            break
    per_call = spent / max(calls, 1)
    number = max(1, math.ceil(config.min_block_s / per_call)) if per_call > 0 else 1
    # Refine once: the first estimate includes warm-up effects.
    block = time_block(fn, number)
    if block < config.min_block_s and block > 0:
        number = max(number, math.ceil(number * config.min_block_s / block))
    samples: list[float] = []
    total = 0.0
    while len(samples) < config.max_repeats:
        t = time_block(fn, number)
        samples.append(1e3 * t / number)
        total += t
        if len(samples) >= config.min_repeats and total >= config.min_run_time_s:
            break
        if total >= config.max_run_time_s:
            break
    return Timing(tuple(samples), number)


def warn_if_noisy(stats: LatencyStats, what: str) -> None:
    if stats.noisy:
        warnings.warn(
            f"{what}: IQR/median = {stats.iqr_ms / stats.median_ms:.2f} "
            f"(over {IQR_WARN_THRESHOLD}); the measurement is noisy",
            RuntimeWarning,
            stacklevel=2,
        )
