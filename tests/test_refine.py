"""Closed-loop target refinement (jaxlat.nas.refine_to_target)."""

import numpy as np
import pytest

import jaxlat
from jaxlat.nas import fit_to_target, refine_to_target, scaled_latency_fn

from .helpers import TINY_SPACE

SPACE = TINY_SPACE


@pytest.fixture(scope="module")
def predicted_ms():
    pred = jaxlat.load_predictor("cpu_torch_1t")

    def fn(records):
        return pred.predict_models(records)["latency_ms"].to_numpy()

    return fn


def test_scaled_latency(predicted_ms):
    rec = [SPACE.record(SPACE.random_arch(0))]
    assert float(scaled_latency_fn(predicted_ms, 1.25)(rec)[0]) == pytest.approx(
        1.25 * float(predicted_ms(rec)[0])
    )


def test_one_step_corrects_a_machine_slower_than_predicted(predicted_ms):
    """The machine runs 1.3 x the prediction; the fit under the prediction misses the target by
    that much, one measured step brings it back within the fit's tolerance."""
    searched = SPACE.random_arch(3)
    probs = np.full((len(SPACE.layers()), len(SPACE.ops)), 0.1 / (len(SPACE.ops) - 1))
    probs[np.arange(len(SPACE.layers())), [SPACE.ops.index(o) for o in searched.ops]] = 0.9
    target = 0.8 * float(predicted_ms([SPACE.record(searched)])[0])

    def machine(arch):
        return 1.3 * float(predicted_ms([SPACE.record(arch)])[0])

    fitted, ms = fit_to_target(SPACE, probs, searched, predicted_ms, target)
    assert machine(fitted) / target > 1.2
    step = refine_to_target(
        SPACE, probs, searched, predicted_ms, target, measured_ms=machine(fitted), predicted_ms=ms
    )
    assert step.local_scale == pytest.approx(1.3, rel=1e-6)
    assert step.predicted_ms == pytest.approx(float(step.latency_ms([SPACE.record(step.arch)])[0]))
    assert abs(machine(step.arch) / target - 1) <= 0.1
    # A second step from there keeps the cumulative scale.
    again = refine_to_target(
        SPACE,
        probs,
        searched,
        predicted_ms,
        target,
        measured_ms=machine(step.arch),
        predicted_ms=step.predicted_ms,
        local_scale=step.local_scale,
    )
    assert again.local_scale == pytest.approx(1.3, rel=1e-6)


def test_non_positive_latencies_are_rejected(predicted_ms):
    a = SPACE.random_arch(0)
    probs = np.full((len(SPACE.layers()), len(SPACE.ops)), 1.0 / len(SPACE.ops))
    with pytest.raises(ValueError, match="must be > 0"):
        refine_to_target(SPACE, probs, a, predicted_ms, 1.0, measured_ms=0.0, predicted_ms=1.0)
