"""The reference predictor shipped in the package, and `jaxlat predict` right after install."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from jaxlat._shipped import reference_names, reference_path, reference_predictor
from profilers import capture_torch


def test_reference_predictor_is_shipped_documented_and_predicts_a_model(tmp_path):
    assert "cpu_torch_1t" in reference_names()
    readme = (reference_path() / "README.md").read_text()
    assert "Intel" in readme and "1 thread" in readme
    pred = reference_predictor()
    assert pred.composition is not None and pred.selection is not None
    assert pred.device["backend"] == "torch"
    model = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 64, 3, 1, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    rec = capture_torch(model, torch.randn(1, 3, 64, 64), name="small")
    row = pred.predict_model(rec)
    assert 0 < row["lo_ms"] < row["latency_ms"] < row["hi_ms"] and np.isnan(row["measured_ms"])
    rec.save(tmp_path / "small.json")
    r = subprocess.run([sys.executable, "-m", "jaxlat._cli", "predict", "--arch", str(tmp_path / "small.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("small: ") and "80% interval" in r.stdout


def test_unknown_reference_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="cpu_torch_1t"):
        reference_path("tpu_v9")


def test_load_predictor_takes_a_directory_or_a_shipped_name(tmp_path):
    from jaxlat._shipped import load_predictor

    assert load_predictor("cpu_torch_1t").device == reference_predictor().device
    assert load_predictor(reference_path()).device == reference_predictor().device
    with pytest.raises(ValueError, match="neither a predictor directory nor a shipped predictor.*cpu_torch_1t"):
        load_predictor(tmp_path / "missing")


#: Each shipped predictor and the CPU model string it was measured on.
SHIPPED_CPU = {
    "cpu_torch_1t": "Intel(R) Xeon(R) Processor @ 2.50GHz",
    "epyc_torch_1t": "AMD EPYC",
    "xeon_amx_torch_1t": "Intel(R) Xeon(R) Processor",
}


def test_every_shipped_predictor_is_listed_with_its_cpu():
    assert set(reference_names()) == set(SHIPPED_CPU)


@pytest.mark.parametrize("name, cpu", sorted(SHIPPED_CPU.items()))
def test_each_shipped_predictor_states_its_device_and_matches_its_metadata(name, cpu):
    readme = (reference_path(name) / "README.md").read_text()
    assert cpu in readme and "1 thread" in readme
    pred = reference_predictor(name)
    assert pred.device["fingerprint"]["cpu_model"] == cpu
    assert pred.composition is not None and pred.selection is not None


def test_the_default_predictor_is_the_one_of_this_cpu_model():
    from jaxlat._shipped import DEFAULT_REFERENCE, matching_reference
    from profilers import host_fingerprint

    assert matching_reference("AMD EPYC") == "epyc_torch_1t"
    assert matching_reference("Intel(R) Xeon(R) Processor @ 2.50GHz") == "cpu_torch_1t"
    assert matching_reference("Intel(R) Xeon(R) Processor") == "xeon_amx_torch_1t"  # the model string exactly
    assert matching_reference("Apple M4") == DEFAULT_REFERENCE
    here = matching_reference()
    assert here == DEFAULT_REFERENCE or reference_predictor(here).device["fingerprint"]["cpu_model"] == \
        host_fingerprint()["cpu_model"]


def test_public_one_step_prediction_equals_capture_then_predict():
    import jaxlat

    names = [p.name for p in jaxlat.list_predictors()]
    assert names == list(reference_names()) and {"cpu_torch_1t", "epyc_torch_1t"} <= set(names)
    pred = jaxlat.load_predictor("cpu_torch_1t")
    model = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    x = torch.randn(2, 3, 32, 32)
    got = jaxlat.predict_torch(model, x, predictor=pred, name="tiny", threads=1)
    want = pred.predict_model(capture_torch(model, x, name="tiny"))
    assert got["name"] == "tiny" and got["latency_ms"] == want["latency_ms"] and got["n_modules"] == 4
    by_name = jaxlat.predict_torch(model, x, predictor="cpu_torch_1t")
    assert by_name["latency_ms"] == pytest.approx(want["latency_ms"])
