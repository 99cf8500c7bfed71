"""CUDA measurement (opt-in: runs only where an NVIDIA GPU is present; CI has none)."""

import pytest
import torch

import profilers
from profilers import TimerConfig, make_config, read_dataset, run_profile

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]


def test_cuda_timing_with_events_matches_synchronized_wall_clock():
    from profilers._torch_backend import time_torch_module
    from profilers._timer import wall_clock_block_timer

    cfg = make_config("conv2d", cin=128, cout=128, h=56, w=56, batch_size=16)
    events = time_torch_module(cfg, device="cuda", config=TimerConfig(min_run_time_s=0.2))
    wall = time_torch_module(
        cfg,
        device="cuda",
        config=TimerConfig(min_run_time_s=0.2),
        block_timer=wall_clock_block_timer(sync=torch.cuda.synchronize),
    )
    assert events.stats.median_ms == pytest.approx(wall.stats.median_ms, rel=0.15)


def test_cuda_run_writes_the_same_schema_with_gpu_fingerprint(tmp_path):
    cfgs = profilers.expand([make_config("conv2d", batch_size=8), make_config("mhsa", batch_size=8)], utilization=[0.0, 0.5])
    out = tmp_path / "cuda.parquet"
    s = run_profile(cfgs, out, device="cuda", timer=TimerConfig(min_run_time_s=0.2), progress=False)
    assert s.failed == 0
    df = read_dataset(out)
    fp = df.attrs["jaxlat"][0]["fingerprint"]
    assert fp["gpu_name"] and fp["gpu_memory_gib"] > 1
    busy = df[df["utilization"] == 0.5]["utilization_achieved"]
    assert (busy > 0.2).all() and (busy < 0.8).all()
