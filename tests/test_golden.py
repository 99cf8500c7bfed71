"""The shipped predictors predict what they predicted when `tests/data/shipped_golden.npz` was
written (`tests/make_golden.py`): refactors of the prediction path must not move a number."""

import numpy as np
import pytest

from jaxlat import LatencyPredictor
from tests.make_golden import CASES, OUT, ROOT, sample_records, sample_rows


@pytest.fixture(scope="module")
def golden():
    with np.load(OUT) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", sorted(CASES))
def test_shipped_predictions_are_unchanged(name, golden):
    data, recs = CASES[name]
    pred = LatencyPredictor.load(ROOT / "jaxlat" / "predictors" / name)
    rows = pred.predict(sample_rows(data))[["latency_ms", "lo_ms", "hi_ms"]].to_numpy(np.float64)
    np.testing.assert_allclose(rows, golden[f"{name}/modules"], rtol=1e-5, atol=0)
    models = pred.predict_models(sample_records(recs))
    got = models[["latency_ms", "lo_ms", "hi_ms", "plain_sum_ms"]].to_numpy(np.float64)
    np.testing.assert_allclose(got, golden[f"{name}/models"], rtol=1e-5, atol=0)
