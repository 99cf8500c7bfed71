"""Real profiling runs on this machine's CPU (small ones), through the worker subprocess."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import profilers
from profilers import TimerConfig, make_config, read_dataset, run_profile, sample_configs

FAST = TimerConfig(warmup_s=0.005, min_run_time_s=0.01, min_repeats=5)


def test_real_run_measures_every_module_type(tmp_path):
    cfgs = [make_config(m, batch_size=1) for m in profilers.ModuleType]
    out = tmp_path / "cpu.parquet"
    summary = run_profile(cfgs, out, timer=FAST, progress=False, run_info={"sampler": "test"})
    assert summary.measured == len(cfgs) and summary.failed == 0
    df = read_dataset(out)
    assert set(df["module"]) == set(profilers.ModuleType)
    assert (df["latency_ms_median"] > 0).all() and (df["n_repeats"] >= 5).all()
    assert (df["latency_ms_p10"] <= df["latency_ms_median"]).all()
    assert (df["latency_ms_median"] <= df["latency_ms_p90"]).all()
    meta = df.attrs["jaxlat"][0]
    assert meta["libraries"]["torch"].startswith("2.")
    assert meta["fingerprint"]["cpu_logical_cores"] == os.cpu_count()
    assert meta["runs"][0]["sampler"] == "test"
    assert meta["runs"][0]["retest"]["n"] == 1  # by default a tenth of the configs is measured again
    assert "measured" in summary.format()


def test_a_run_measures_a_sample_again_and_records_its_test_retest_agreement(tmp_path, capsys):
    cfgs = [make_config("add", channels=c) for c in (8, 16, 32, 64)]
    out = tmp_path / "retest.parquet"
    timer = TimerConfig(warmup_s=0.005, min_run_time_s=0.03, min_repeats=6)
    run_profile(cfgs, out, timer=timer, progress=False, retest=3, run_info={"sampler": "test"})
    (entry,) = profilers.retest_summary(out)
    assert entry["n"] == 3 and 0.0 <= entry["median_acc10"] <= entry["median_acc20"] <= 1.0
    assert 0.5 < entry["median_ratio"] < 2.0  # the same configs, minutes apart at most
    assert 0 <= entry["median_acc10"] <= entry["median_acc20"] <= 1 and "p10_acc10_drift_removed" in entry
    meta = read_dataset(out).attrs["jaxlat"][0]
    assert meta["runs"][0]["sampler"] == "test" and len(meta["runs"][0]["retest"]["pairs"]) == 3
    keys = set(read_dataset(out)["config_key"])
    assert {p["config_key"] for p in meta["runs"][0]["retest"]["pairs"]} <= keys and len(keys) == 4
    with pytest.raises(ValueError, match="retest=-1 is not valid"):
        run_profile(cfgs, tmp_path / "b.parquet", retest=-1, progress=False)
    # `jaxlat evaluate` reads an accuracy on these labels against their recorded ceiling.
    import json

    from jaxlat._cli import main as jaxlat_main

    def evaluate(data, *extra):
        return jaxlat_main(["evaluate", "--predictor", "cpu_torch_1t", "--data", str(data),
                            "--plot", str(tmp_path / "e.png"), *extra])

    assert evaluate(out, "--json") == 0
    retest = json.loads(capsys.readouterr().out)["retest"]
    assert retest == {"statistic": "median", "n": 3, "runs": 1, "acc10": pytest.approx(entry["median_acc10"]),
                      "acc20": pytest.approx(entry["median_acc20"])}
    assert evaluate(out) == 0
    assert "test-retest of the labels (median, 3 configs measured again by the run(s)" in capsys.readouterr().out
    assert profilers.retest_ceiling([out, out], "p10")["n"] == 6  # pooled over files and runs
    with pytest.raises(ValueError, match="statistic=.p90. is not valid: expected median or p10"):
        profilers.retest_ceiling(out, "p90")
    run_profile(cfgs[:1], tmp_path / "none.parquet", timer=timer, progress=False, retest=0)
    assert evaluate(tmp_path / "none.parquet") == 0
    assert "test-retest: not recorded in the data" in capsys.readouterr().out


def test_failing_and_hanging_configs_become_failed_rows_and_the_run_goes_on(tmp_path, plugin_path):
    import jaxlat_test_plugin  # noqa: F401  (registers test_scale)

    cfgs = [
        make_config("test_scale", size=64, behaviour="ok"),
        make_config("test_scale", size=64, behaviour="raise"),
        make_config("test_scale", size=64, behaviour="hang"),
        make_config("test_scale", size=128, behaviour="ok"),
    ]
    out = tmp_path / "f.parquet"
    summary = run_profile(cfgs, out, timer=FAST, timeout_s=8, progress=False, plugins=["jaxlat_test_plugin"])
    assert (summary.measured, summary.failed) == (2, 2)
    df = read_dataset(out, include_failed=True).set_index("config_key")
    assert df.loc[cfgs[1].key, "status"] == "failed"
    assert "deliberate failure from the test plugin" in df.loc[cfgs[1].key, "error"]
    assert "timeout" in df.loc[cfgs[2].key, "error"]
    assert df.loc[cfgs[3].key, "status"] == "ok"  # measured by a fresh worker after the kill
    # A second run skips everything, a retry measures the failed ones again.
    again = run_profile(cfgs, out, timer=FAST, timeout_s=8, progress=False, plugins=["jaxlat_test_plugin"])
    assert again.skipped == 4 and again.measured == again.failed == 0


def test_cpu_load_reaches_the_requested_utilization():
    from profilers._load import CpuLoad

    with CpuLoad(2) as load:
        for target in (0.0, 0.5):
            load.set(target)
            time.sleep(0.05)
            load.reset()
            time.sleep(0.6)
            assert target * 0.3 <= load.achieved() <= target + 0.1
    with CpuLoad(1) as load, pytest.raises(ValueError, match=r"utilization=1.5 is not valid: expected a number in \[0, 1\]"):
        load.set(1.5)


def test_utilization_is_recorded_beside_the_request(tmp_path):
    cfgs = profilers.expand([make_config("conv2d", cin=32, cout=32, h=28, w=28)], utilization=[0.0, 0.5])
    out = tmp_path / "u.parquet"
    run_profile(cfgs, out, timer=TimerConfig(min_run_time_s=0.3), progress=False, load_workers=2)
    df = read_dataset(out).set_index("utilization")
    assert df.loc[0.0, "utilization_achieved"] == 0.0
    # CPU time the load really got: near 0.5 on an idle machine, less when others compete
    # (a broken generator gives 0; a wall-clock-counting one gives more than 0.6 under load).
    assert 0.15 <= df.loc[0.5, "utilization_achieved"] <= 0.6


@pytest.mark.parametrize("protocol", ["single", "spread"])
def test_sigkill_mid_run_then_resume_measures_every_config_exactly_once(tmp_path, protocol):
    out = tmp_path / "r.parquet"
    cmd = [
        sys.executable, "-m", "profilers._cli", "torch", "--module", "add,activation", "--n", "12",
        "--min-run-time", "0.01", "--min-repeats", "3", "--out", str(out), "--no-progress", "--protocol", protocol,
    ]
    journal = tmp_path / "r.parquet.journal.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its worker, mid-run
    proc.wait()
    before = profilers._dataset._read_journal(journal)
    # single: rows; spread: each config's finished rounds (rows come when its last round is done)
    assert 3 <= len(before) < 24 * (1 if protocol == "single" else 5), "the run must be killed mid-way"
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    df = read_dataset(out, include_failed=True)
    assert len(df) == 24 and df["config_key"].is_unique and (df["status"] == "ok").all()
    if protocol == "spread":
        assert (df["n_repeats"] >= 5).all()  # five rounds pooled, those before the kill among them
        assert not journal.exists()
        return
    # What was measured before the kill is kept, not measured again.
    kept = df.set_index("config_key").loc[[r["config_key"] for r in before], "measured_at"]
    assert list(kept) == [r["measured_at"] for r in before]
    assert not journal.exists()
    assert len(df.attrs["jaxlat"][0]["runs"]) >= 1
    assert isinstance(df, pd.DataFrame)


def test_sampled_configs_run_through_the_cli_with_a_summary(tmp_path):
    out = tmp_path / "c.parquet"
    res = subprocess.run(
        [sys.executable, "-m", "profilers._cli", "torch", "--module", "linear", "--n", "3", "--range", "tokens=1",
         "--threads", "1,2", "--min-run-time", "0.01", "--retest", "2", "--out", str(out), "--no-progress"],
        check=True, capture_output=True, text=True,
    )
    assert "6 measured, 0 failed" in res.stdout
    df = read_dataset(out)
    assert sorted(df["threads"].unique()) == [1, 2] and (df["tokens"] == 1).all()
    assert [e["n"] for e in profilers.retest_summary(out)] == [2]  # --retest 2: two configs measured again
    assert len(sample_configs("linear", 3, method="lhs", seed=0, ranges={"tokens": 1})) == 3


def test_rounds_pool_samples_measured_seconds_apart(tmp_path):
    cfgs = [make_config("add", channels=c) for c in (8, 16, 32)]
    out = tmp_path / "rounds.parquet"
    timer = TimerConfig(warmup_s=0.005, min_run_time_s=0.03, min_repeats=6)
    s = run_profile(cfgs, out, timer=timer, progress=False, rounds=3, chunk_size=2)
    assert s.measured == 3
    df = read_dataset(out)
    assert (df["n_repeats"] >= 6).all()  # 3 rounds of at least 2 blocks each
    assert not (tmp_path / "rounds.parquet.journal.jsonl").exists()
    with pytest.raises(ValueError, match="rounds=0 is not valid"):
        run_profile(cfgs, out, rounds=0)
    with pytest.raises(ValueError, match="chunk_size=0 is not valid: expected an int >= 1"):
        run_profile(cfgs, out, rounds=3, chunk_size=0)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # zombies have exited
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_load_workers_exit_when_their_parent_is_killed(tmp_path):
    """A SIGKILLed runner must not leave spinning load processes behind (they would load
    every later measurement on the machine)."""
    code = (
        "import os, sys, time\n"
        "from profilers._load import CpuLoad\n"
        "if __name__ == '__main__':\n"
        "    load = CpuLoad(2).__enter__()\n"
        "    load.set(0.5)\n"
        "    print(' '.join(str(p.pid) for p in load._procs), flush=True)\n"
        "    time.sleep(60)\n"
    )
    script = tmp_path / "parent.py"
    script.write_text(code)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    proc.kill()
    proc.wait()
    proc.stdout.close()
    deadline = time.monotonic() + 5
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in pids if _running(p)]
    assert not alive, f"load workers {alive} outlived their parent"


def test_two_runs_writing_one_out_at_once_keep_every_row(tmp_path):
    out = tmp_path / "c.parquet"

    def cmd(module):
        return [sys.executable, "-m", "profilers._cli", "torch", "--module", module, "--n", "3",
                "--min-run-time", "0.01", "--min-repeats", "3", "--out", str(out), "--no-progress"]

    procs = [subprocess.Popen(cmd(m), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for m in ("matmul", "add")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    df = read_dataset(out)
    assert sorted(df["module"].value_counts().items()) == [("add", 3), ("matmul", 3)]
    assert len(df.attrs["jaxlat"][0]["runs"]) == 2


def test_bad_run_arguments_fail_before_any_measurement(tmp_path):
    cfgs = [make_config("add", channels=8, h=4, w=4)]
    with pytest.raises(ValueError, match="nothing to measure"):
        run_profile([], tmp_path / "a.parquet", progress=False)
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"timeout_s=.* is not valid \(--timeout\): expected seconds > 0"):
            run_profile(cfgs, tmp_path / "a.parquet", timeout_s=bad, progress=False)
    parent = tmp_path / "file"
    parent.write_text("x")
    with pytest.raises(profilers.DatasetError, match=f"{parent}/a.parquet: cannot write a dataset here"):
        run_profile(cfgs, parent / "a.parquet", progress=False)
    assert not (tmp_path / "a.parquet").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU message")
def test_an_unavailable_device_is_a_value_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="the torch worker on device='cuda' did not start: .*is device 'cuda' visible"):
        run_profile([make_config("add", channels=8, h=4, w=4)], tmp_path / "g.parquet", device="cuda",
                    progress=False, describe=False)


def test_retest_agreement_separates_the_machines_drift_from_each_configs_noise():
    first = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # The machine ran 25 % slower the second time, and one config moved on its own too.
    second = first * 1.25 * np.array([1.0, 1.0, 1.0, 1.0, 1.5])
    a = profilers.retest_agreement(first, second)
    assert a["acc10"] == 0.0 and a["acc20"] == 0.0
    assert a["ratio"] == pytest.approx(1.25)
    assert a["acc10_drift_removed"] == pytest.approx(0.8)
    same = profilers.retest_agreement(first, first * np.array([1.05, 0.95, 1.0, 1.15, 0.85]))
    assert same["acc10"] == pytest.approx(0.6) and same["acc20"] == 1.0 and same["ratio"] == 1.0
    with pytest.raises(ValueError, match="equally long"):
        profilers.retest_agreement(first, first[:3])
    with pytest.raises(ValueError, match="finite and > 0"):
        profilers.retest_agreement(first, -first)
