import numpy as np
import pytest

from profilers import TimerConfig, summarize, time_function, wall_clock_block_timer
from profilers._timer import IQR_WARN_THRESHOLD


class FakeBlockTimer:
    """Seeded fake: each call costs `per_call_s` times lognormal noise; no real time passes."""

    def __init__(self, per_call_s: float, sigma: float = 0.0, seed: int = 0):
        self.per_call_s, self.sigma = per_call_s, sigma
        self.rng = np.random.default_rng(seed)
        self.blocks: list[int] = []
        self.calls = 0

    def __call__(self, fn, number):
        self.blocks.append(number)
        self.calls += number
        return number * self.per_call_s * float(self.rng.lognormal(0.0, self.sigma))


def test_summarize_matches_numpy():
    x = np.random.default_rng(0).lognormal(0, 0.2, 101)
    s = summarize(x)
    assert s.median_ms == pytest.approx(np.median(x))
    assert s.mean_ms == pytest.approx(x.mean())
    assert s.std_ms == pytest.approx(x.std(ddof=1))
    assert s.p10_ms == pytest.approx(np.percentile(x, 10)) and s.p90_ms == pytest.approx(np.percentile(x, 90))
    assert s.cov == pytest.approx(x.std(ddof=1) / x.mean())
    assert s.n_repeats == 101


def test_summarize_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="empty"):
        summarize([])
    with pytest.raises(ValueError, match="NaN or inf"):
        summarize([1.0, float("nan")])


def test_noisy_flag_uses_iqr_over_median():
    assert not summarize([1.0] * 10).noisy
    assert summarize([1.0, 1.0, 2.0, 2.0] * 3).noisy
    assert IQR_WARN_THRESHOLD == 0.1


def test_block_size_makes_blocks_at_least_min_block_long():
    fake = FakeBlockTimer(per_call_s=10e-6)
    cfg = TimerConfig(min_block_s=0.002, min_run_time_s=0.05, min_repeats=10)
    t = time_function(lambda: None, block_timer=fake, config=cfg)
    assert t.number_per_run == 200
    assert all(s == pytest.approx(0.01) for s in t.samples_ms)  # ms per call
    assert len(t.samples_ms) == 25  # 25 blocks of 2 ms = 50 ms


def test_slow_function_gets_one_call_per_block_and_min_repeats():
    fake = FakeBlockTimer(per_call_s=0.5)
    cfg = TimerConfig(min_repeats=10, max_run_time_s=100)
    t = time_function(lambda: None, block_timer=fake, config=cfg)
    assert t.number_per_run == 1 and len(t.samples_ms) == 10


def test_max_run_time_caps_very_slow_functions():
    fake = FakeBlockTimer(per_call_s=2.0)
    t = time_function(lambda: None, block_timer=fake, config=TimerConfig(max_run_time_s=5.0))
    assert len(t.samples_ms) == 3  # 3 blocks of 2 s pass 5 s


def test_statistics_of_noisy_fake_recover_the_true_median():
    fake = FakeBlockTimer(per_call_s=1e-3, sigma=0.1, seed=1)
    t = time_function(lambda: None, block_timer=fake, config=TimerConfig(min_repeats=200, min_run_time_s=0))
    assert t.stats.median_ms == pytest.approx(1.0, rel=0.03)
    assert 0.07 < t.stats.cov < 0.13


def test_warmup_runs_the_function_before_timing():
    calls = []
    wall = wall_clock_block_timer()
    t = time_function(lambda: calls.append(1), block_timer=wall, config=TimerConfig(min_run_time_s=0.01, min_repeats=3))
    assert len(calls) > sum([t.number_per_run] * len(t.samples_ms))


def test_invalid_timer_config():
    with pytest.raises(ValueError, match="min_repeats <= max_repeats"):
        TimerConfig(min_repeats=5, max_repeats=2)
    with pytest.raises(ValueError, match="warmup_s must be >= 0"):
        TimerConfig(warmup_s=-1)
