"""The one pure prediction function: gradients with respect to a predictor's parameters, vmap
over records, NaN handling, the regressor registry."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlat import LatencyPredictor, PredictorParams, model_latency, stack_batches
from jaxlat.regressors import register_regressor, regressor_entry, regressor_names, ridge_regressor
from profilers import load_records
from tests.make_golden import ROOT


@pytest.fixture(scope="module")
def predictor():
    return LatencyPredictor.load(ROOT / "jaxlat" / "predictors" / "cpu_torch_1t")


@pytest.fixture(scope="module")
def records():
    return load_records(ROOT / "data" / "cpu_generated_models.jsonl")[:4]


def test_params_are_one_pytree_of_float_arrays_with_the_shared_network_once(predictor):
    params = predictor.params
    assert isinstance(params, PredictorParams)
    leaves = jax.tree.leaves(params)
    assert leaves and all(jnp.issubdtype(x.dtype, jnp.floating) for x in leaves)
    shared = [m for m, tm in predictor.models.items() if tm.shared]
    assert shared and "medn" in params.regressors and not set(shared) & set(params.regressors)
    assert params.composition.shape == (6,)


def test_grad_of_a_whole_model_wrt_the_parameters_matches_finite_differences(predictor, records):
    batch, _ = predictor.model_batch(records[:2])
    f = jax.jit(lambda p: predictor.apply(p, batch).latency_ms[:2].sum())
    params = predictor.params
    g = jax.grad(f)(params)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(g))
    # The composition's scale multiplies the module sum: its derivative is that sum, exactly.
    sums = np.asarray(predictor.apply(params, batch).sum_ms)[:2, 0].sum()
    np.testing.assert_allclose(float(g.composition[0]), sums, rtol=1e-4)
    # A random direction through every leaf: the directional derivative against a central difference.
    keys = iter(jax.random.split(jax.random.key(0), len(jax.tree.leaves(params))))
    v = jax.tree.map(lambda x: jax.random.normal(next(keys), x.shape, x.dtype) * (1e-2 * (jnp.abs(x) + 1e-2)), params)
    eps = 0.01  # small enough that few ReLU units change side, large against float32 rounding
    plus = jax.tree.map(lambda x, d: x + eps * d, params, v)
    minus = jax.tree.map(lambda x, d: x - eps * d, params, v)
    fd = (float(f(plus)) - float(f(minus))) / (2 * eps)
    analytic = sum(float(jnp.vdot(a, b)) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(v)))
    assert analytic == pytest.approx(fd, rel=1e-2)
    assert abs(fd) > 1e-3 * float(f(params))  # the check is not vacuous


def test_vmap_over_records_equals_a_loop_and_the_batched_call(predictor, records):
    singles = [predictor.model_batch([r])[0] for r in records]
    widths = {m: len(predictor.models[m].feature_names) for m in predictor.models}
    stacked = stack_batches(singles, widths)
    fn = jax.vmap(functools.partial(model_latency, predictor.heads), in_axes=(None, 0))
    vmapped = np.asarray(fn(predictor.params, stacked).latency_ms)[:, 0]
    loop = [float(predictor.apply(predictor.params, b).latency_ms[0]) for b in singles]
    np.testing.assert_allclose(vmapped, loop, rtol=1e-5)
    np.testing.assert_allclose(vmapped, predictor.predict_models(records)["latency_ms"], rtol=1e-5)


def test_a_nan_module_prediction_is_an_error_never_a_silent_zero(predictor, records):
    params = predictor.params
    bad = params._replace(regressors={**params.regressors, "medn": jax.tree.map(lambda x: x * np.nan, params.regressors["medn"])})
    broken = predictor.with_params(bad)
    out = broken.apply(bad, broken.model_batch(records[:1])[0])
    assert np.isnan(float(out.latency_ms[0])) and float(out.n_nonfinite[0]) > 0
    with pytest.raises(ValueError, match=records[0].name):
        broken.predict_models(records[:1])


def test_non_finite_features_are_refused_with_the_field_named(predictor):
    import pandas as pd

    row = {"module": "linear", "in_features": np.nan, "out_features": 64, "tokens": 1, "bias": True,
           "batch_size": 1, "dtype": "fp32", "threads": 1, "utilization": 0.0}
    with pytest.raises(ValueError, match="in_features"):
        predictor.predict(pd.DataFrame([row]))


def test_with_params_round_trips_and_moves_predictions(predictor, records, tmp_path):
    same = predictor.with_params(predictor.params)
    np.testing.assert_allclose(same.predict_models(records)["latency_ms"],
                               predictor.predict_models(records)["latency_ms"], rtol=1e-6)
    doubled = predictor.with_params(predictor.params._replace(composition=predictor.params.composition * 2))
    np.testing.assert_allclose(doubled.predict_models(records)["latency_ms"],
                               2 * predictor.predict_models(records)["latency_ms"], rtol=1e-5)
    loaded = LatencyPredictor.load(doubled.save(tmp_path / "p"))
    np.testing.assert_allclose(loaded.predict_models(records)["latency_ms"],
                               doubled.predict_models(records)["latency_ms"], rtol=1e-6)


def test_the_compiled_whole_model_path_compiles_once_per_padded_shape(predictor, records):
    predictor.predict_models(records[:3])
    n = predictor._model_fn._cache_size()
    predictor.predict_models(records[1:4])  # the same padded shapes: no new program
    assert predictor._model_fn._cache_size() == n


def test_the_registry_lists_every_regressor_and_takes_a_users_one():
    assert {"medn", "mlp", "ridge", "poly2", "poly3", "roofline"} <= set(regressor_names())
    assert regressor_entry("medn").multi_task and not regressor_entry("ridge").multi_task
    with pytest.raises(ValueError, match="expected one of .*ridge"):
        regressor_entry("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_regressor("ridge", lambda c: ridge_regressor())
    entry = register_regressor("ridge_strong_test", lambda c: ridge_regressor(alpha=10.0), replace=True)
    assert entry.build({}).config["alpha"] == 10.0 and "ridge_strong_test" in regressor_names()
