import subprocess
import sys
import textwrap

import jax
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxlat
import profilers
from jaxlat import ArtifactError, LatencyPredictor, TrainConfig, evaluate, train_predictor
from jaxlat._predictor import PREDICTOR_FORMAT_VERSION

from .helpers import synthetic_rows

MODULES = ["linear", "conv2d", "add"]


def _frame(n_per: int, seed: int) -> pd.DataFrame:
    return pd.DataFrame(synthetic_rows(MODULES, n_per, seed))


@pytest.fixture(scope="module")
def frames():
    return _frame(120, 0), _frame(30, 100)


@pytest.fixture(scope="module")
def predictors(frames):
    train, _ = frames
    small = TrainConfig(epochs=80, batch_size=64, learning_rate=3e-3)
    return {
        "medn": train_predictor(train, regressor="medn", train=small),
        "mixed": train_predictor(train, regressor={"linear": "ridge", "conv2d": "mlp", "add": "roofline"}, train=small),
    }


@pytest.mark.parametrize("kind", ["medn", "mixed"])
def test_predicts_frames_and_configs_and_saves_losslessly(kind, predictors, frames, tmp_path):
    pred = predictors[kind]
    _, test = frames
    out = pred.predict(test)
    assert list(out.columns) == ["module", "latency_ms", "lo_ms", "hi_ms", "extrapolated"]
    assert (out["lo_ms"] < out["latency_ms"]).all() and (out["latency_ms"] < out["hi_ms"]).all()
    m = evaluate(test["latency_ms_median"].to_numpy(), out["latency_ms"].to_numpy())
    assert m["spearman"] > 0.9
    cfgs = [profilers.config_from_row(r) for r in test.head(5).to_dict("records")]
    np.testing.assert_allclose(pred.predict(cfgs)["latency_ms"].to_numpy(), out["latency_ms"].head(5).to_numpy(), rtol=1e-6)
    pred.save(tmp_path / "p")
    again = LatencyPredictor.load(tmp_path / "p").predict(test)
    np.testing.assert_array_equal(again["latency_ms"].to_numpy(), out["latency_ms"].to_numpy())
    np.testing.assert_array_equal(again["hi_ms"].to_numpy(), out["hi_ms"].to_numpy())


def test_extrapolation_is_flagged(predictors):
    pred = predictors["medn"]
    inside = profilers.make_config("add", channels=64, h=16, w=16)
    outside = profilers.make_config("add", channels=8000, h=300, w=300)
    flags = pred.predict([inside, outside])["extrapolated"].tolist()
    assert flags == [False, True]


def test_unknown_module_is_an_error_not_a_silent_zero(predictors):
    with pytest.raises(ValueError, match="module='mhsa' has no model in this predictor; it predicts: add, conv2d, linear"):
        predictors["medn"].predict([profilers.make_config("mhsa")])


def test_broken_artifacts_give_clear_errors(predictors, tmp_path):
    d = predictors["mixed"].save(tmp_path / "p")
    npz = d / "conv2d.npz"
    npz.write_bytes(npz.read_bytes()[:-100])  # truncated
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        LatencyPredictor.load(d)
    d2 = predictors["mixed"].save(tmp_path / "q")
    text = (d2 / "predictor.json").read_text()
    current = f'"format_version": {PREDICTOR_FORMAT_VERSION}'
    assert current in text
    (d2 / "predictor.json").write_text(text.replace(current, '"format_version": 7'))
    with pytest.raises(ArtifactError, match="format_version=7 is unknown"):
        LatencyPredictor.load(d2)
    (d2 / "predictor.json").write_text(text[: len(text) // 2])
    with pytest.raises(ArtifactError, match="not valid JSON"):
        LatencyPredictor.load(d2)
    with pytest.raises(ArtifactError, match="no predictor.json"):
        LatencyPredictor.load(tmp_path / "nothing")


@settings(max_examples=15, deadline=None)
@given(module=st.sampled_from(MODULES), seed=st.integers(0, 10**6), batch=st.sampled_from([1, 7, 256]),
       threads=st.sampled_from([1, 4, 64]), utilization=st.floats(0, 1), wide=st.booleans())
def test_predictions_are_finite_and_positive_over_the_valid_space(predictors, module, seed, batch, threads, utilization, wide):
    spec = profilers.get_spec(module)
    # wide: sample over each field's whole valid range, far outside the training data.
    ranges = {f.name: profilers.Interval(f.low, min(f.high, 4096)) for f in spec.fields
              if f.kind is int and f.choices is None and f.name != "groups" and wide}
    cfgs = profilers.sample_configs(module, 3, seed=seed, ranges=ranges)
    cfgs = [c.replace(batch_size=batch, threads=threads, utilization=utilization) for c in cfgs]
    for pred in predictors.values():
        out = pred.predict(cfgs)
        assert np.isfinite(out["latency_ms"]).all() and (out["latency_ms"] > 0).all()
        assert np.isfinite(out["hi_ms"]).all()


def test_mass_prediction_equals_batch_prediction_and_compiles_once(predictors, frames):
    m = predictors["medn"].models["conv2d"]
    x = jaxlat.encode_frame(frames[1][frames[1]["module"] == "conv2d"], "conv2d")
    want = jaxlat.predict_batch(m.regressor, m.params, x)
    big = np.concatenate([x] * 7)
    got = np.concatenate(list(jaxlat.predict_chunks(m.regressor.predict, m.params, [big[:50], big[50:]], chunk_size=64)))
    np.testing.assert_allclose(got, np.concatenate([want] * 7), rtol=1e-5, atol=1e-5)
    from jaxlat._mass import _run as fn

    n = fn._cache_size()
    list(jaxlat.predict_chunks(m.regressor.predict, m.params, [big[:13]], chunk_size=64))
    assert fn._cache_size() == n
    bf16 = np.concatenate(list(jaxlat.predict_chunks(m.regressor.predict, m.params, [x], chunk_size=64, dtype="bf16")))
    np.testing.assert_allclose(bf16[:, 0], want[:, 0], atol=0.1)
    q = jaxlat.single_query(m.regressor.predict, m.params)
    for i in range(3):
        np.testing.assert_allclose(q(x[i]), want[i], rtol=1e-5, atol=1e-5)
    if jax.default_backend() == "cpu":  # a network's query runs on the calling thread with this JAX
        assert q.path == "caller thread"
        assert q.device.client is not jax.devices()[0].client  # the second, synchronous client's device


def test_single_query_without_a_caller_thread_client_warns_and_keeps_jax_dispatch(predictors, frames, monkeypatch):
    from jax._src.lib import _jax

    from jaxlat._mass import _caller_thread_device

    def refused(**kwargs):
        raise RuntimeError("no such client")

    m = predictors["medn"].models["conv2d"]
    x = jaxlat.encode_frame(frames[1][frames[1]["module"] == "conv2d"], "conv2d")
    _caller_thread_device.cache_clear()
    monkeypatch.setattr(_jax, "get_tfrt_cpu_client", refused)
    try:
        q = jaxlat.single_query(m.regressor.predict, m.params)
        with pytest.warns(RuntimeWarning, match="no caller-thread CPU executable"):
            out = q(x[0])
        assert q.path == "jax dispatch" and q.device == jax.devices()[0]
        np.testing.assert_allclose(out, jaxlat.predict_batch(m.regressor, m.params, x[:1])[0], rtol=1e-5, atol=1e-5)
    finally:
        monkeypatch.undo()
        _caller_thread_device.cache_clear()


def test_single_query_of_a_cheap_model_keeps_jax_dispatch():
    from jaxlat.regressors import ridge_regressor

    x = np.random.default_rng(0).normal(size=(50, 5)).astype(np.float32)
    reg = ridge_regressor()
    params = reg.fit(jax.random.key(0), x, x @ np.arange(5, dtype=np.float32), names=tuple("abcde"))
    q = jaxlat.single_query(reg.predict, params)
    assert q.path is None
    np.testing.assert_allclose(q(x[0]), jaxlat.predict_batch(reg, params, x[:1])[0], rtol=1e-5, atol=1e-5)
    assert q.path == "jax dispatch"  # under XLA's 1,000 flops: JAX already runs it inline


def test_mass_prediction_shards_over_four_host_devices(tmp_path):
    code = textwrap.dedent(
        """
        import jax, numpy as np, jaxlat
        from jaxlat.regressors import ridge_regressor
        assert len(jax.local_devices()) == 4, jax.local_devices()
        x = np.random.default_rng(0).normal(size=(1000, 5)).astype(np.float32)
        y = (x @ np.arange(5) + 1).astype(np.float32)
        reg = ridge_regressor()
        p = reg.fit(jax.random.key(0), x, y, names=tuple('abcde'))
        out = np.concatenate(list(jaxlat.predict_chunks(reg.predict, p, [x], chunk_size=256)))
        np.testing.assert_allclose(out, jaxlat.predict_batch(reg, p, x), rtol=1e-5, atol=1e-5)
        print('ok', len(jax.local_devices()))
        """
    )
    env = {**__import__("os").environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "ok 4"


def test_metrics_on_known_values():
    t = np.array([1.0, 2.0, 4.0, 8.0])
    p = np.array([1.04, 2.3, 4.0, 6.0])
    m = evaluate(t, p, lo_ms=p * 0.9, hi_ms=p * 1.1)
    assert m["acc5"] == 0.5 and m["acc10"] == 0.5 and m["acc20"] == 0.75
    assert m["mape"] == pytest.approx((0.04 + 0.15 + 0 + 0.25) / 4)
    assert m["spearman"] == 1.0 and m["coverage"] == 0.5 and m["n"] == 4
    with pytest.raises(ValueError, match="shape"):
        evaluate(t, p[:2])
    table = jaxlat.evaluate_table(["a", "a", "b", "b"], t, p)
    assert list(table.index) == ["a", "b", "all"] and table.loc["all", "n"] == 4


def test_a_predictor_trained_on_version_1_features_loads_and_flags_new_dtypes(frames, tmp_path):
    # Version-1 features lack the dtype one-hots of the TFLite precisions; a model trained on
    # them reads its own columns of today's encoding.
    import jax

    from jaxlat._predictor import TypeModel
    from jaxlat.regressors import poly_ridge_regressor

    train, test = frames
    names = jaxlat.feature_schema("conv2d").names
    v1 = [i for i, n in enumerate(names) if n not in ("dtype=fp16w", "dtype=int8")]
    sub = train[train["module"] == "conv2d"]
    x = jaxlat.encode_frame(sub, "conv2d")[:, v1]
    y = np.log(sub["latency_ms_median"].to_numpy()).astype(np.float32)
    reg = poly_ridge_regressor(1)
    params = reg.fit(jax.random.key(0), x, y, names=tuple(names[i] for i in v1))
    model = TypeModel("conv2d", reg, params, tuple(names[i] for i in v1), x.min(0), x.max(0))
    LatencyPredictor({"conv2d": model}, device={}, feature_version=1).save(tmp_path / "v1")
    assert '"feature_schema_version": 1' in (tmp_path / "v1" / "predictor.json").read_text()
    pred = LatencyPredictor.load(tmp_path / "v1")
    t = test[test["module"] == "conv2d"]
    want = np.exp(jaxlat.predict_batch(reg, params, jaxlat.encode_frame(t, "conv2d")[:, v1])[:, 0])
    np.testing.assert_allclose(pred.predict(t)["latency_ms"].to_numpy(), want, rtol=1e-6)
    cfg = profilers.config_from_row(t.iloc[0].to_dict())
    flags = pred.predict([cfg, cfg.replace(dtype="int8")])["extrapolated"].tolist()
    assert flags == [False, True]
    pred.save(tmp_path / "again")  # keeps its feature version
    assert LatencyPredictor.load(tmp_path / "again").feature_version == 1


def test_version_2_artifact_reads_copies_at_its_single_byte_rate():
    """The shipped Intel predictor was saved before copies had their own rate: it must predict
    as it did, every unmapped byte at `ms_per_mb`."""
    import json
    from pathlib import Path

    from jaxlat._shipped import reference_predictor

    manifest = json.loads((Path(jaxlat.__file__).parent / "predictors/cpu_torch_1t/predictor.json").read_text())
    assert manifest["format_version"] == 2 and "ms_per_copy_mb" not in manifest["composition"]["coef"]
    coef = reference_predictor("cpu_torch_1t").composition.coef
    assert coef["ms_per_copy_mb"] == coef["ms_per_mb"] > 0
