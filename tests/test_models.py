"""Whole-model profiling: end-to-end timing, resumable record files, the CLI commands."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from profilers import TimerConfig, load_record, load_records
from profilers._models import load_factory, profile_many, profile_torch_model

FAST = TimerConfig(warmup_s=0.02, min_run_time_s=0.05, min_repeats=3)


def small_cnn(width: int = 8) -> nn.Module:
    """Factory used by the CLI test (`tests.test_models:small_cnn`)."""
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, 4))


def test_profile_measures_end_to_end_and_records_settings():
    rec = profile_torch_model(small_cnn(), (torch.randn(2, 3, 16, 16),), name="cnn", threads=1, timer=FAST)
    m = rec.measured
    assert m["latency_ms"] > 0 and m["p10_ms"] <= m["latency_ms"] <= m["p90_ms"]
    assert m["n_repeats"] >= 3 and len(m["samples_ms"]) == m["n_repeats"]
    assert m["threads"] == 1 and m["backend"] == "torch" and len(m["device_id"]) == 12
    assert [c.module for c in rec.configs()] == ["conv2d", "activation", "global_pool2d", "linear"]


def test_profile_many_resumes_without_measuring_again(tmp_path):
    out = tmp_path / "m.jsonl"
    calls = []

    def job(name, width):
        def build():
            calls.append(name)
            return small_cnn(width), (torch.randn(1, 3, 8, 8),), {"width": width}
        return name, build

    profile_many(out, [job("a", 4), job("b", 8)], timer=FAST, progress=False)
    first = load_records(out)
    profile_many(out, [job("a", 4), job("b", 8), job("c", 16)], timer=FAST, progress=False)
    recs = load_records(out)
    assert calls == ["a", "b", "c"]
    assert [r.name for r in recs] == ["a", "b", "c"] and recs[0].measured == first[0].measured
    with pytest.raises(ValueError, match="jsonl"):
        profile_many(tmp_path / "m.json", [job("d", 4)], timer=FAST)


def test_load_factory_errors_name_the_problem():
    assert load_factory("tests.test_models:small_cnn") is small_cnn
    for spec, msg in [("nocolon", "expected 'package.module:factory'"), ("no_such_mod_x:f", "cannot import"),
                      ("tests.test_models:nope", "has no attribute")]:
        with pytest.raises(ValueError, match=msg):
            load_factory(spec)


def test_cli_torch_model_and_zoo(tmp_path):
    out = tmp_path / "cnn.jsonl"
    cmd = [sys.executable, "-m", "profilers._cli", "torch-model", "--model", "tests.test_models:small_cnn",
           "--kwargs", '{"width": 4}', "--input-shape", "1,3,16,16", "--batch", "1,2", "--min-run-time", "0.05",
           "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    recs = load_records(out)
    assert [x.name for x in recs] == ["small_cnn_b1", "small_cnn_b2"] and all(x.measured for x in recs)
    assert recs[1].configs()[0]["batch_size"] == 2
    rounds = tmp_path / "rounds.json"
    r = subprocess.run(cmd[:-6] + ["--rounds", "2", "--round-gap", "0.1", "--out", str(rounds)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert load_record(rounds).measured["rounds"] == 2
    one = tmp_path / "one.json"
    r = subprocess.run(cmd[:-6] + ["--no-measure", "--out", str(one)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert load_record(one).measured is None
    bad = subprocess.run(cmd[:-6] + ["--batch", "1,2", "--out", str(one)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and ".jsonl" in bad.stderr
    z = subprocess.run([sys.executable, "-m", "profilers._cli", "zoo", "--model", "distilbert", "--no-measure",
                        "--out", str(tmp_path / "z.jsonl")], capture_output=True, text=True, timeout=300)
    assert z.returncode == 0, z.stderr
    assert {u["op"] for u in json.loads((tmp_path / "z.jsonl").read_text())["unmapped"]} >= {"embedding"}


def test_rounds_pool_samples_and_keep_round_medians(tmp_path):
    jobs = [(n, lambda n=n: (small_cnn(4), (torch.randn(1, 3, 8, 8),), {})) for n in ("a", "b", "c")]
    recs = profile_many(tmp_path / "r.jsonl", jobs, timer=FAST, progress=False, rounds=3, chunk_size=2)
    for r in recs:
        m = r.measured
        assert m["rounds"] == 3 and len(m["round_medians_ms"]) == 3
        assert len(m["samples_ms"]) == m["n_repeats"] >= 9
        assert min(m["round_medians_ms"]) <= m["latency_ms"] <= max(m["round_medians_ms"])
    assert [r.name for r in load_records(tmp_path / "r.jsonl")] == ["a", "b", "c"]


def test_one_model_in_rounds_spaced_in_time():
    import time

    t0 = time.monotonic()
    rec = profile_torch_model(small_cnn(4), (torch.randn(1, 3, 8, 8),), name="cnn", timer=FAST, rounds=3,
                              round_gap_s=0.2)
    m = rec.measured
    assert time.monotonic() - t0 >= 0.4  # two gaps between three rounds
    assert m["rounds"] == 3 and len(m["round_medians_ms"]) == 3 and len(m["samples_ms"]) == m["n_repeats"] >= 9
    assert m["p10_ms"] <= m["latency_ms"] <= m["p90_ms"]
    with pytest.raises(ValueError, match="rounds=0 is not valid"):
        profile_torch_model(small_cnn(4), (torch.randn(1, 3, 8, 8),), name="cnn", timer=FAST, rounds=0)
    with pytest.raises(ValueError, match="round_gap_s=-1 is not valid"):
        profile_torch_model(small_cnn(4), (torch.randn(1, 3, 8, 8),), name="cnn", timer=FAST, rounds=2, round_gap_s=-1)
