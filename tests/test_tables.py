"""Design tables calibrated to a machine (jaxlat.optimize.calibrate_table)."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

import jaxlat
from jaxlat.optimize import SLO, DesignSpace, Variant, calibrate_table, choose
from profilers.spaces import NB201


@pytest.fixture(scope="module")
def table():
    pred = jaxlat.load_predictor("cpu_torch_1t")
    small = dataclasses.replace(NB201, cells=1)
    variants = [
        Variant(f"v{i}", {1: small.record(small.random_arch(i))}, {"fp32": 0.9 - 0.01 * i}) for i in range(3)
    ]
    # The same predictor stands in for a second backend: only the torch rows are calibrated.
    return DesignSpace(variants, {("torch", "fp32"): pred, ("other", "fp32"): pred}).evaluate([0.0, 0.5])


def test_one_backends_latencies_go_through_the_map(table):
    a, b = np.log(2.0), 0.9
    out = calibrate_table(table, (a, b), backend="torch")
    torch_rows = (table["backend"] == "torch").to_numpy()
    for col in ("median_ms", "p90_ms"):
        np.testing.assert_allclose(
            out.loc[torch_rows, col], np.exp(a) * table.loc[torch_rows, col] ** b, rtol=1e-12
        )
        np.testing.assert_array_equal(out.loc[~torch_rows, col], table.loc[~torch_rows, col])
    np.testing.assert_allclose(
        out["throughput_per_s"], 1e3 * out["batch_size"] / out["median_ms"], rtol=1e-12
    )
    assert table["median_ms"].equals(table["median_ms"])  # the input is left as it was
    pd.testing.assert_frame_equal(calibrate_table(table, (0.0, 1.0), backend="torch"), table)
    # A slower machine: a tight SLO that the uncalibrated torch rows met is met by fewer.
    slo = SLO(max_p90_ms=float(table["p90_ms"].max()))
    slow = calibrate_table(table, (np.log(3.0), 1.0), backend="torch")
    assert slo.feasible(slow).sum() < slo.feasible(table).sum()
    assert choose(slow, slo, utilization=0.0)["backend"] == "other"


def test_bad_tables_and_selections_are_rejected(table):
    with pytest.raises(ValueError, match="no row of backend='tflite'"):
        calibrate_table(table, (0.0, 1.0), backend="tflite")
    with pytest.raises(ValueError, match="no row of backend='torch', precision='int8'"):
        calibrate_table(table, (0.0, 1.0), backend="torch", precision="int8")
    with pytest.raises(ValueError, match="has no column"):
        calibrate_table(table.drop(columns=["p90_ms"]), (0.0, 1.0), backend="torch")
