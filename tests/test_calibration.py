"""Calibration of a predictor to a machine from measured whole networks (jaxlat.transfer)."""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlat
import profilers
from jaxlat.transfer import LIGHT_OPS, Calibration, calibrate, log_affine_ms, spanning_archs
from profilers.spaces import NB201, MobileArch, mobile_space

RESULTS = Path(__file__).parent.parent / "benchmarks" / "results"


@pytest.fixture(scope="module")
def predictor():
    return jaxlat.load_predictor("cpu_torch_1t")


def _measured(records, latency_ms, p10_ratio=0.9):
    """Records with planted end-to-end measurements (median `latency_ms`, p10 a fixed ratio below)."""
    return [
        dataclasses.replace(r, measured={"latency_ms": float(m), "p10_ms": float(m) * p10_ratio})
        for r, m in zip(records, latency_ms, strict=True)
    ]


def test_log_affine_ms_is_one_formula_for_numpy_and_jax():
    ms = np.array([0.5, 1.0, 4.0])
    host = log_affine_ms(ms, 0.3, 0.8)
    assert host.dtype == np.float64
    np.testing.assert_allclose(host, np.exp(0.3) * ms**0.8, rtol=1e-12)
    traced = jax.jit(lambda x: log_affine_ms(x, 0.3, 0.8))(jnp.asarray(ms, jnp.float32))
    assert isinstance(traced, jax.Array)
    np.testing.assert_allclose(np.asarray(traced), host, rtol=1e-6)
    g = jax.grad(lambda x: log_affine_ms(x, 0.3, 0.8))(jnp.float32(2.0))
    assert float(g) == pytest.approx(np.exp(0.3) * 0.8 * 2.0 ** (0.8 - 1), rel=1e-5)


def test_calibrate_recovers_a_planted_log_affine_map(predictor):
    archs = spanning_archs(NB201, 10, seed=3)
    records = [NB201.record(a, name=f"n{i}") for i, a in enumerate(archs)]
    base = predictor.predict_models(records)["latency_ms"].to_numpy()
    a, b = np.log(1.7), 0.9
    cal = calibrate(predictor, _measured(records, np.exp(a) * base**b), methods=("affine",))
    assert isinstance(cal, Calibration) and cal.method == "affine" and not cal.forced
    assert cal.k == 10 and cal.statistic == "median" and cal.spearman == pytest.approx(1.0)
    assert cal.log_affine == pytest.approx((a, b), rel=1e-6)
    assert cal.composition is None
    np.testing.assert_allclose(cal.predict(records), np.exp(a) * base**b, rtol=1e-6)
    np.testing.assert_allclose(cal.predicted_ms, base, rtol=1e-12)
    summary = cal.as_json()
    assert list(summary) == [
        "k",
        "statistic",
        "method",
        "forced",
        "log_affine",
        "composition",
        "spearman",
        "report",
        "measured_ms",
        "predicted_ms",
    ]
    assert summary["report"]["chosen"] == "affine" and json.dumps(summary)
    assert cal.describe().startswith(
        "calibration on 10 measured networks: affine (by held-out error), target ms = 1.700"
    )
    with pytest.raises(ValueError, match="only 'recompose' does"):
        cal.predictor()


def test_the_statistic_chooses_what_a_measured_latency_is(predictor):
    records = [NB201.record(a) for a in spanning_archs(NB201, 6, seed=4)]
    ms = 2.0 * predictor.predict_models(records)["latency_ms"].to_numpy()
    median = calibrate(predictor, _measured(records, ms), methods=("reuse",))
    p10 = calibrate(predictor, _measured(records, ms, p10_ratio=0.5), statistic="p10", methods=("reuse",))
    assert median.log_affine[0] == pytest.approx(np.log(2.0), rel=1e-6)
    assert p10.log_affine[0] == pytest.approx(np.log(1.0), abs=1e-6) and p10.statistic == "p10"
    with pytest.raises(ValueError, match="was not measured"):
        calibrate(predictor, records)
    with pytest.raises(ValueError, match="statistic='p50' is not valid"):
        calibrate(predictor, _measured(records, ms), statistic="p50")


def test_a_forced_method_is_used_and_every_candidate_reported(predictor):
    records = [NB201.record(a) for a in spanning_archs(NB201, 8, seed=5)]
    base = predictor.predict_models(records)["latency_ms"].to_numpy()
    cal = calibrate(predictor, _measured(records, 1.3 * base), methods=("reuse", "affine"), force="recompose")
    assert cal.method == "recompose" and cal.forced and cal.report["chosen"] == "recompose"
    assert set(cal.report["candidates"]) == {"reuse", "affine", "recompose"}
    assert cal.log_affine is None and cal.composition["scale"] > 1.0
    assert cal.predictor().composition.coef == cal.composition
    assert "(forced), composition refitted: scale" in cal.describe()


def test_calibrate_reproduces_the_committed_nas_deploy_calibration():
    """The NAS benchmark's deploy calibration (benchmarks/results/nas_archs.json), computed again
    from its committed records with the same settings: the same predictions, measurements and
    refitted composition. (The candidates' held-out scores are `adapt`'s to define, and its
    folds have changed since; the forced method's fit has not.)"""
    committed = json.loads((RESULTS / "nas_archs.json").read_text())["deploy_calibration"]
    records = profilers.load_records(RESULTS / "nas_calibration_records.jsonl")
    cal = calibrate(
        jaxlat.load_predictor("epyc_torch_1t"),
        records,
        methods=("reuse", "affine", "recompose", "adaproxy"),
        statistic="p10",
        force="recompose",
    ).as_json()
    assert cal["method"] == committed["method"] and cal["measured_ms"] == committed["measured_ms"]
    np.testing.assert_allclose(cal["predicted_ms"], committed["predicted_ms"], rtol=1e-5)
    assert cal["spearman"] == pytest.approx(committed["spearman"])
    for k, v in committed["composition"].items():
        assert cal["composition"][k] == pytest.approx(v, rel=1e-4, abs=1e-9)
    assert set(cal["report"]["candidates"]) == set(committed["report"]["candidates"])


def test_spanning_archs_run_from_light_to_heavy():
    space = mobile_space(resolution=64)
    archs = spanning_archs(space, 12, seed=0)
    assert len(archs) == 12 and all(isinstance(a, MobileArch) for a in archs)
    light = [np.mean([op in LIGHT_OPS for op in a.ops]) for a in archs]
    assert np.mean(light[:4]) > 0.5 > np.mean(light[-4:])
    assert archs == spanning_archs(space, 12, seed=0) and archs != spanning_archs(space, 12, seed=1)
    lo, hi = space.width_range
    assert all(lo <= w <= hi for a in archs for w in a.widths)
    corners = spanning_archs(space, 8, seed=0, corner_widths=True)
    assert [set(corners[i].widths) for i in (1, 3, 5, 7)] == [{hi}, {lo}, {hi}, {lo}]
    nb = spanning_archs(NB201, 5, seed=0)
    assert [NB201.check(a) for a in nb] == nb
