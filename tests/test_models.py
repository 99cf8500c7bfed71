"""Whole-model profiling: end-to-end timing, resumable record files, the CLI commands."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from profilers import TimerConfig, load_record, load_records
from profilers._models import (
    build_model,
    factory_kwargs,
    generated_jobs,
    load_factory,
    profile_many,
    profile_torch_model,
    zoo_jobs,
)

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


def test_build_model_names_factories_that_do_not_build_a_module():
    assert isinstance(build_model("tests.test_models:small_cnn", {"width": 4}), nn.Module)
    for spec, kwargs, msg in [
        ("os:system", None, r"--model='os:system': calling the factory with no arguments failed: TypeError"),
        ("builtins:dict", None, r"the factory returned a builtins.dict, not a torch.nn.Module"),
        ("builtins:len", {"x": 1}, r"calling the factory with \{'x': 1\} failed: TypeError"),
        ("tests.test_models:small_cnn", {"width": -1}, r"small_cnn.*failed: RuntimeError"),
    ]:
        with pytest.raises(ValueError, match=msg):
            build_model(spec, kwargs)
    assert factory_kwargs(None) == {} and factory_kwargs('{"width": 4}') == {"width": 4}
    for text, msg in [("[1]", "is a JSON list: expected an object"), ("{oops", "is not valid JSON"),
                      ("3", "is a JSON int")]:
        with pytest.raises(ValueError, match=f"--kwargs=.*{msg}"):
            factory_kwargs(text)


def test_a_factory_under_an_installed_namespace_package_is_found_in_the_working_directory(tmp_path, monkeypatch):
    """Some distributions install a bare `tests` directory into site-packages, a namespace
    package: `tests.my_models` in the working directory must still be found by a console script,
    whose sys.path lacks the working directory."""
    site, work = tmp_path / "site", tmp_path / "work"
    (site / "nsjaxlat").mkdir(parents=True)  # no __init__.py: a namespace package
    (work / "nsjaxlat").mkdir(parents=True)
    (work / "nsjaxlat" / "__init__.py").write_text("")
    (work / "nsjaxlat" / "my_models.py").write_text("def f():\n    return 42\n")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.chdir(work)
    try:
        assert load_factory("nsjaxlat.my_models:f")() == 42
        # A module that the factory's module itself fails to import is reported as it is.
        (work / "nsjaxlat" / "broken.py").write_text("import no_such_dependency_xyz\n")
        with pytest.raises(ValueError, match="cannot import 'nsjaxlat.broken'.*no_such_dependency_xyz"):
            load_factory("nsjaxlat.broken:f")
    finally:
        for name in [m for m in sys.modules if m == "nsjaxlat" or m.startswith("nsjaxlat.")]:
            del sys.modules[name]


def test_whole_model_settings_and_outputs_are_checked_before_any_work(tmp_path):
    x = (torch.randn(1, 3, 8, 8),)
    for kw, msg in [({"threads": 0}, r"threads=0 is not valid \(--threads\)"),
                    ({"utilization": 1.5}, r"utilization=1.5 is not valid \(--utilization\)")]:
        with pytest.raises(ValueError, match=msg):
            profile_torch_model(small_cnn(4), x, name="cnn", timer=FAST, **kw)
        with pytest.raises(ValueError, match=msg):
            profile_many(tmp_path / "m.jsonl", [("a", lambda: (small_cnn(4), x, {}))], timer=FAST, **kw)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"--out=.*afile/m.jsonl' is not valid: .*afile is a file, not a directory"):
        profile_many(tmp_path / "afile" / "m.jsonl", [], timer=FAST)
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(ValueError, match=r"is a directory: expected a .jsonl records file"):
        profile_many(tmp_path / "d.jsonl", [], timer=FAST)
    with pytest.raises(ValueError, match=r"batch size 0 is not valid \(--batch\)"):
        zoo_jobs(["resnet18"], [1, 0])
    with pytest.raises(ValueError, match=r"batch size 0 is not valid \(--batch\)"):
        generated_jobs(range(2), [0])
    with pytest.raises(ValueError, match=r"0 seeds; expected at least one network \(--n >= 1\)"):
        generated_jobs(range(0), [1])
