"""A NAS penalty's latency on the machine a predictor was calibrated to (jaxlat.nas)."""

import dataclasses

import jax
import numpy as np
import pytest

import jaxlat
from jaxlat.nas import calibrated_latency_fn, expected_latency_fn, log_affine_latency_fn, one_hot
from jaxlat.transfer import calibrate, spanning_archs
from profilers.spaces import MobileArch

from .helpers import TINY_SPACE

TINY = TINY_SPACE


@pytest.fixture(scope="module")
def predictor():
    return jaxlat.load_predictor("cpu_torch_1t")


@pytest.fixture(scope="module")
def base(predictor):
    return expected_latency_fn(predictor, TINY)


def _calibration(predictor, scale, power, **kwargs):
    records = [TINY.record(a, name=f"c{i}") for i, a in enumerate(spanning_archs(TINY, 8, seed=0))]
    ms = scale * predictor.predict_models(records)["latency_ms"].to_numpy() ** power
    measured = [
        dataclasses.replace(r, measured={"latency_ms": float(m)}) for r, m in zip(records, ms, strict=True)
    ]
    return calibrate(predictor, measured, **kwargs)


def _point():
    probs = np.full((len(TINY.layers()), len(TINY.ops)), 1.0 / len(TINY.ops), np.float32)
    return probs, np.ones(len(TINY.stages), np.float32)


def test_log_affine_latency_keeps_the_gradient(base):
    probs, widths = _point()
    lat = log_affine_latency_fn(base, np.log(2.0), 1.0)
    assert float(lat(probs, widths)) == pytest.approx(2.0 * float(base(probs, widths)), rel=1e-5)
    g, g_base = jax.grad(lat)(probs, widths), jax.grad(base)(probs, widths)
    np.testing.assert_allclose(np.asarray(g), 2.0 * np.asarray(g_base), rtol=1e-4, atol=1e-7)


def test_a_log_affine_calibration_maps_the_expected_latency(predictor, base):
    cal = _calibration(predictor, 1.5, 0.95, methods=("affine",))
    a, b = cal.log_affine
    lat = calibrated_latency_fn(predictor, TINY, cal, latency_ms=base)
    probs, widths = _point()
    assert float(lat(probs, widths)) == pytest.approx(np.exp(a) * float(base(probs, widths)) ** b, rel=1e-5)
    assert calibrated_latency_fn(predictor, TINY, None, latency_ms=base) is base
    # At a one-hot point (widths on the channel grid) the relaxed latency is the network's: calibrated alike.
    arch = MobileArch(spanning_archs(TINY, 3, seed=1)[1].ops, (1.0, 1.0))
    hot = float(lat(one_hot(TINY, arch), np.asarray(arch.widths, np.float32)))
    assert hot == pytest.approx(float(cal.predict([TINY.record(arch)])[0]), rel=1e-3)


def test_a_recomposed_calibration_is_the_refitted_predictors_latency(predictor):
    cal = _calibration(predictor, 1.4, 1.0, force="recompose")
    lat = calibrated_latency_fn(predictor, TINY, cal)
    probs, widths = _point()
    direct = expected_latency_fn(cal.predictor(), TINY)
    assert float(lat(probs, widths)) == pytest.approx(float(direct(probs, widths)), rel=1e-6)
    assert np.all(np.isfinite(np.asarray(jax.grad(lat)(probs, widths))))


def test_a_correction_that_reads_features_cannot_be_a_jax_latency(predictor, base):
    cal = _calibration(predictor, 1.2, 1.1, methods=("adaproxy",))
    assert cal.method == "adaproxy"
    with pytest.raises(ValueError, match="'adaproxy' is not a map of the predicted latency"):
        calibrated_latency_fn(predictor, TINY, cal, latency_ms=base)
