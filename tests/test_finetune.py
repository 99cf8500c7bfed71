"""Fine-tuning a shipped predictor's networks on rows of another machine (`jaxlat._finetune`)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

import jaxlat
import profilers
from jaxlat._finetune import fine_tuned, split_weights, trainable_keys

DATA = Path(__file__).parents[1] / "data"


def _planted(pred, df):
    """`df`'s rows labelled as a machine on which conv2d runs large configs up to 3x faster than
    `pred` predicts (a matrix unit), and everything else 1.5x slower: a shape, not one factor."""
    base = pred.predict(df)["latency_ms"].to_numpy(float)
    flops = np.log(df["flops"].to_numpy(float))
    conv = (df["module"] == "conv2d").to_numpy()
    z = (flops - flops[conv].min()) / np.ptp(flops[conv])
    factor = np.where(conv, 1.0 / (1.0 + 2.0 * z), 1.5)
    return df.assign(latency_ms_p10=base * factor)


@pytest.fixture(scope="module")
def setting():
    pred = jaxlat.load_predictor("epyc_torch_1t")
    df = profilers.read_dataset(DATA / "epyc_torch_1t.parquet")
    df = df[df["module"].isin(["conv2d", "linear", "add"])]
    rng = np.random.default_rng(0)
    keep = np.concatenate([rng.permutation(np.flatnonzero(df["module"].to_numpy() == m))[:160]
                           for m in ("conv2d", "linear", "add")])
    df = _planted(pred, df.iloc[np.sort(keep)].reset_index(drop=True))
    train = np.random.default_rng(0).random(len(df)) < 0.7
    return pred, df[train], df[~train]


def _log_err(pred, df):
    p = pred.predict(df)["latency_ms"].to_numpy(float)
    return float(np.mean(np.abs(np.log(p / df["latency_ms_p10"].to_numpy(float)))))


def test_fine_tuning_learns_a_shape_a_factor_cannot(setting):
    pred, train, test = setting
    conv_train, conv_test = train[train["module"] == "conv2d"], test[test["module"] == "conv2d"]
    shift = np.median(np.log(conv_train["latency_ms_p10"] / pred.predict(conv_train)["latency_ms"]))
    scaled = pred.with_type_scales({"conv2d": float(np.exp(shift))})
    tuned = fine_tuned(pred, train, statistic="p10")
    # On held-out conv2d rows the tuned networks follow the size-dependent speed-up.
    assert _log_err(tuned, conv_test) < 0.6 * _log_err(scaled, conv_test)
    # Types without network weights (the roofline of `add`) move by their factor only.
    add = test[test["module"] == "add"]
    ratio = tuned.predict(add)["latency_ms"] / pred.predict(add)["latency_ms"]
    assert np.allclose(ratio, ratio.iloc[0], rtol=1e-4) and 1.3 < ratio.iloc[0] < 1.7
    assert jax.tree.all(jax.tree.map(np.array_equal, tuned.params.regressors["add"], pred.params.regressors["add"]))


def test_fine_tuning_leaves_the_start_as_it_was_and_saves(setting, tmp_path):
    pred, train, _ = setting
    before = jax.tree.map(np.array, pred.params)
    tuned = fine_tuned(pred, train, statistic="p10", steps=20)
    assert jax.tree.all(jax.tree.map(np.array_equal, before, pred.params))
    assert trainable_keys(pred) == ("layernorm", "medn")
    tuned.save(tmp_path / "p")
    again = jaxlat.LatencyPredictor.load(tmp_path / "p")
    np.testing.assert_allclose(again.predict(train)["latency_ms"], tuned.predict(train)["latency_ms"], rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps=0 is not valid: expected an int > 0"),
        ({"steps": 2.5}, "steps=2.5 is not valid"),
        ({"learning_rate": -1.0}, "learning_rate=-1.0 is not valid: expected a number > 0"),
        ({"l2": float("nan")}, "l2=nan is not valid: expected a number >= 0"),
        ({"statistic": "mean"}, "mean"),
    ],
)
def test_bad_arguments_name_themselves(setting, kwargs, message):
    pred, train, _ = setting
    with pytest.raises(ValueError, match=message):
        fine_tuned(pred, train, **kwargs)


def test_bad_frames_are_refused(setting):
    pred, train, _ = setting
    with pytest.raises(ValueError, match=r"expected columns 'module' and 'latency_ms_p10'"):
        fine_tuned(pred, train.drop(columns=["latency_ms_p10"]), statistic="p10")
    with pytest.raises(ValueError, match="every latency must be finite and > 0"):
        fine_tuned(pred, train.assign(latency_ms_p10=0.0), statistic="p10")


def test_only_the_network_weights_move_and_a_far_start_stays_finite():
    # The xeon_amx MEDN fine-tuned on rows of the AMD VM whose latencies lie far from its
    # predictions: when its standardization statistics were trained too, Adam's first steps
    # drove a feature scale through zero and every prediction became NaN (this subset did).
    pred = jaxlat.load_predictor("xeon_amx_torch_1t")
    df = profilers.read_dataset(DATA / "epyc_torch_1t.parquet")
    df = df.sample(frac=1, random_state=0).groupby(["module", "batch_size"]).head(24).reset_index(drop=True)
    train = df[np.random.default_rng(0).random(len(df)) < 0.6]
    tuned = fine_tuned(pred, train, statistic="p10")
    out = tuned.predict(df)["latency_ms"].to_numpy(float)
    assert np.all(np.isfinite(out)) and _log_err(tuned, train) < _log_err(pred, train)
    for key in trainable_keys(pred):
        _, before = split_weights(pred.params.regressors[key])
        _, after = split_weights(tuned.params.regressors[key])
        assert jax.tree.all(jax.tree.map(np.array_equal, before, after)), key
