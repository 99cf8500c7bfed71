"""Input validation on the jaxlat side: config columns, features, targets, metrics, transfer
tables. Every bad input is a ValueError naming what is wrong, never a NaN passed on."""

import json
import logging
import re

import numpy as np
import pandas as pd
import pytest

import profilers
from jaxlat._data import check_count, target, type_arrays
from jaxlat._features import check_columns, encode_columns, encode_frame, outside_training_range
from jaxlat._metrics import evaluate, evaluate_table, metrics_for_json
from jaxlat.transfer import adapt, table_proxy

_CONV = {"cin": [32, 64], "cout": [64, 64], "h": [56, 28], "w": [56, 28], "kernel": [3, 1]}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"cin": None}, "conv2d needs the field 'cin' (input channels: int in [1, 16384]) and there is no such"),
        ({"cin": [32, np.nan]}, "conv2d needs the field 'cin'"),
        ({"cin": [32, -1]}, "predict: conv2d.cin=-1 is out of range at row 1: expected int in [1, 16384]"),
        ({"kernel": [3, 4]}, "predict: conv2d.kernel=4 is not valid at row 1: expected one of 1, 3, 5, 7"),
        ({"groups": [7, 1]}, "predict: conv2d: groups must divide cin and cout (got cin=32, cout=64"),
        ({"cin": [32.5, 64]}, "conv2d.cin=32.5 is not an integer at row 0"),
        ({"h": [np.inf, 28]}, "conv2d.h=inf is not finite at row 0"),
        ({"dtype": ["fp32", "fp8"]}, "conv2d.dtype='fp8' is not valid at row 1: expected one of 'fp32'"),
        ({"utilization": [0.0, 1.5]}, "conv2d.utilization=1.5 is out of range at row 1: expected float in [0.0, 1.0]"),
        ({"cin": [32, 64, 96]}, "conv2d columns have different lengths"),
    ],
)
def test_config_columns_from_outside_are_checked(change, message):
    cols = {**_CONV, **change}
    cols = {k: v for k, v in cols.items() if v is not None}
    with pytest.raises(ValueError, match=re.escape(message)):
        check_columns("conv2d", cols, source="predict")
    with pytest.raises(ValueError, match=re.escape(message.replace("predict: ", ""))):
        encode_columns("conv2d", cols, strict=True)


def test_optional_fields_take_stated_defaults_and_the_lenient_encoder_is_unchanged(caplog):
    with caplog.at_level(logging.INFO, logger="profilers"):
        cols = check_columns("conv2d", _CONV, source="predict")
    assert cols["stride"].tolist() == [1, 1] and cols["groups"].tolist() == [1, 1]
    assert "catalogue defaults for the omitted fields stride=1, groups=1, bias=True" in caplog.text
    strict = encode_columns("conv2d", _CONV, strict=True)
    np.testing.assert_array_equal(strict, encode_columns("conv2d", _CONV))
    assert np.isfinite(strict).all()


def test_encode_columns_still_traces_with_jax():
    import jax
    import jax.numpy as jnp

    def total(cout):
        return encode_columns("conv2d", {**{k: v[0] for k, v in _CONV.items()}, "cout": cout}, xp=jnp).sum()

    g = jax.grad(total)(64.0)
    assert np.isfinite(float(g))


def test_nan_features_count_as_outside_the_training_range():
    x = np.array([[0.5, 0.5], [0.5, np.nan], [0.5, np.inf], [2.0, 0.5]])
    got = outside_training_range(x, np.zeros(2), np.ones(2))
    assert got.tolist() == [False, True, True, True]


def _frame(**overrides):
    cfgs = profilers.sample_configs("add", 4, seed=0)
    rows = [profilers.measurement_row(c, samples_ms=[1.0, 1.1], number_per_run=1, backend="torch", device="cpu",
                                      device_id="d") for c in cfgs]
    df = pd.DataFrame(rows)
    for k, v in overrides.items():
        df[k] = v
    return df


def test_training_frames_are_checked_before_they_become_arrays():
    x, y = type_arrays(_frame(), "add")
    assert np.isfinite(x).all() and np.isfinite(y).all()
    with pytest.raises(ValueError, match=r"add.channels=-4 is out of range at row '[0-9a-f]{16}'"):
        encode_frame(_frame(channels=[-4, 8, 8, 8]), "add")
    with pytest.raises(ValueError, match="add needs the field 'channels'"):
        encode_frame(_frame().drop(columns=["channels"]), "add")
    with pytest.raises(ValueError, match="4 rows have a NaN, infinite or non-positive latency_ms_median"):
        target(_frame(latency_ms_median=-1.0))
    with pytest.raises(ValueError, match="the frame has no column 'latency_ms_p10'"):
        target(_frame().drop(columns=["latency_ms_p10"]), "latency_ms_p10")


def test_metrics_refuse_nan_and_write_undefined_ones_as_null():
    with pytest.raises(ValueError, match=r"1 of 3 y_pred_ms \(predicted\) latencies are NaN"):
        evaluate(np.array([1.0, 2.0, 3.0]), np.array([1.0, np.nan, 3.0]))
    with pytest.raises(ValueError, match=r"1 of 3 y_true_ms \(measured\) latencies are NaN, infinite or <= 0"):
        evaluate(np.array([1.0, -2.0, 3.0]), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="no rows to score"):
        evaluate_table([], np.array([]), np.array([]))
    table = evaluate_table(["add"], np.array([2.0]), np.array([2.1]))
    text = json.dumps(metrics_for_json(table))
    assert "NaN" not in text and '"r2": null' in text


def test_counts_from_the_command_line_are_checked():
    assert check_count(None, name="--epochs") is None
    with pytest.raises(ValueError, match=re.escape("--epochs=0 is not valid: expected an int >= 1")):
        check_count(0, name="--epochs")
    with pytest.raises(ValueError, match="--n=True is not valid"):
        check_count(True, name="--n")


def _records(keys):
    return [profilers.ArchRecord(k, ((1, 3, 8, 8),), (profilers.ArchModule(
        profilers.make_config("add", channels=8 + i, h=8, w=8), "add"),)) for i, k in enumerate(keys)]


def test_transfer_tables_with_duplicates_nan_or_missing_items_are_refused():
    keys = [f"a{i}" for i in range(6)]
    proxy = pd.Series(np.arange(1.0, 7.0), index=keys)
    y = np.arange(1.0, 7.0) * 2
    with pytest.raises(ValueError, match=r"2 architecture\(s\) appear more than once with conflicting latencies"):
        adapt(_records(keys + ["a0", "a1"]), np.concatenate([y, [5.0, 9.0]]), [table_proxy(proxy)])
    with pytest.raises(ValueError, match=r"appear more than once \(same latencies\)"):
        adapt(_records(keys + ["a0"]), np.concatenate([y, [2.0]]), [table_proxy(proxy)])
    with pytest.raises(ValueError, match=r"1 latencies are NaN, infinite or <= 0 \('a2'"):
        adapt(_records(keys), np.where(np.arange(6) == 2, np.nan, y), [table_proxy(proxy)])
    with pytest.raises(ValueError, match="6 items but 5 latencies"):
        adapt(_records(keys), y[:5], [table_proxy(proxy)])
    for bad in (5, 1.01, -2, float("nan")):
        with pytest.raises(ValueError, match=r"threshold=.* is not valid \(--threshold\): expected a rank correlation"):
            adapt(_records(keys), y, [table_proxy(proxy)], threshold=bad)
    with pytest.raises(ValueError, match=r"proxy table 'p': 1 architecture\(s\) appear more than once"):
        table_proxy(pd.concat([proxy, proxy.iloc[:1] * 3]), name="p")
    with pytest.raises(ValueError, match="proxy table 'p': 1 latencies are NaN"):
        table_proxy(proxy.where(proxy != 3.0), name="p")
    with pytest.raises(ValueError, match=r"proxy table 'short' has no latency for 2 item\(s\)"):
        adapt(_records(keys), y, [table_proxy(proxy.iloc[:4], name="short")])
    assert adapt(_records(keys), y, [table_proxy(proxy)]).method in ("reuse", "affine")


def test_artifact_outputs_are_checked_before_the_work(tmp_path):
    from jaxlat._io import ArtifactError, check_output_dir

    f = tmp_path / "model"
    f.write_text("x")
    with pytest.raises(ArtifactError, match=f"--out {f}: is an existing file; expected a directory"):
        check_output_dir(f)
    with pytest.raises(ArtifactError, match=f"--out {f}/sub: cannot write here"):
        check_output_dir(f / "sub")
    assert check_output_dir(tmp_path / "new" / "p").is_dir()
