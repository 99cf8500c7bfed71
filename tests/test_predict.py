"""The one pure prediction function: gradients with respect to a predictor's parameters, vmap
over records, NaN handling, the regressor registry."""

import functools
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlat
from jaxlat import (
    ArtifactError,
    LatencyPredictor,
    PredictorParams,
    compose,
    model_latency,
    module_outputs,
    module_sum,
    stack_batches,
)
from jaxlat._predict import model_latency_jit
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
    n = model_latency_jit._cache_size()
    predictor.predict_models(records[1:4])  # the same padded shapes: no new program
    assert model_latency_jit._cache_size() == n
    # Another predictor with the same regressors (a fresh load, a copy with other values) reuses it.
    again = LatencyPredictor.load(ROOT / "jaxlat" / "predictors" / "cpu_torch_1t")
    scaled = again.with_params(again.params._replace(composition=again.params.composition * 2))
    np.testing.assert_allclose(scaled.predict_models(records[:3])["latency_ms"].to_numpy(),
                               2 * again.predict_models(records[:3])["latency_ms"].to_numpy(), rtol=1e-5)
    assert model_latency_jit._cache_size() == n


def test_the_pure_functions_match_their_shape_annotations(predictor, records):
    """`model_latency`, `module_outputs`, `module_sum` and `compose` checked against their
    jaxtyping annotations at run time (beartype): the shapes the docs state are the shapes they
    take and give, and a wrong shape is refused naming the argument."""
    from beartype import beartype
    from jaxtyping import TypeCheckError, jaxtyped

    checked = {f.__name__: jaxtyped(typechecker=beartype)(f) for f in (module_sum, compose, module_outputs)}
    batch = jax.tree.map(jnp.asarray, predictor.model_batch(records[:2], pad=False)[0])  # host arrays -> jax.Array
    outs = checked["module_outputs"](predictor.heads, predictor.params, batch.features)
    assert all(o.shape == (len(batch.features[m]), 2) for m, o in outs.items())
    m = next(iter(outs))
    sums = checked["module_sum"](jnp.exp(outs[m][:, 0]), batch.weight[m], batch.owner[m], 2)
    assert sums.shape == (2,)
    total = checked["compose"](predictor.params.composition, sums, batch.counts)
    assert total.shape == (2,)
    pred = jaxtyped(typechecker=beartype)(model_latency)(predictor.heads, predictor.params, batch)
    assert pred.latency_ms.shape == (2,) and pred.sum_ms.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(pred.latency_ms), predictor.predict_models(records[:2])["latency_ms"], rtol=1e-5)
    with pytest.raises(TypeCheckError, match="counts"):
        checked["compose"](predictor.params.composition, sums, batch.counts[:, :4])
    with pytest.raises(TypeCheckError, match="weight"):
        checked["module_sum"](jnp.exp(outs[m][:, 0]), batch.weight[m][:-1, None], batch.owner[m], 2)


def test_the_registry_lists_every_regressor_and_takes_a_users_one():
    assert {"medn", "mlp", "ridge", "poly2", "poly3", "roofline"} <= set(regressor_names())
    assert regressor_entry("medn").multi_task and not regressor_entry("ridge").multi_task
    with pytest.raises(ValueError, match="expected one of .*ridge"):
        regressor_entry("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_regressor("ridge", lambda c: ridge_regressor())
    entry = register_regressor("ridge_strong_test", lambda c: ridge_regressor(alpha=10.0), replace=True)
    assert entry.build({}).config["alpha"] == 10.0 and "ridge_strong_test" in regressor_names()


def test_type_scales_multiply_one_types_modules_and_reach_whole_models(predictor, records, tmp_path):
    import json

    import pandas as pd

    rows = pd.concat([r.frame() for r in records[:2]], ignore_index=True).drop(columns=["op", "approx"])
    module = rows["module"].value_counts().index[0]
    base = predictor.predict(rows)
    scaled = predictor.with_type_scales({module: 2.0})
    assert predictor.type_scales[module] == 1.0 and scaled.type_scales[module] == pytest.approx(2.0)
    out = scaled.predict(rows)
    mine = (rows["module"] == module).to_numpy()
    for col in ("latency_ms", "lo_ms", "hi_ms"):
        np.testing.assert_allclose(out[col][mine], 2 * base[col][mine], rtol=1e-5)
        np.testing.assert_allclose(out[col][~mine], base[col][~mine], rtol=1e-6)
    # Whole models: the plain sum grows by that type's share.
    owner = np.repeat(np.arange(2), [len(r.frame()) for r in records[:2]])
    type_sum = np.bincount(owner[mine], weights=base["latency_ms"].to_numpy()[mine], minlength=2)
    plain = predictor.predict_models(records[:2])["plain_sum_ms"].to_numpy()
    np.testing.assert_allclose(scaled.predict_models(records[:2])["plain_sum_ms"], plain + type_sum, rtol=1e-4)
    # The factor is a parameter: d(latency)/d(log_scale[module]) = composition scale * that type's sum.
    batch, _ = predictor.model_batch(records[:2])
    g = jax.grad(lambda p: predictor.apply(p, batch).latency_ms[:2].sum())(predictor.params)
    expected = float(predictor.params.composition[0]) * type_sum.sum()
    assert float(g.log_scale[module]) == pytest.approx(expected, rel=1e-3)
    # Saved as format 4 (an older jaxlat refuses it), read back with the factor.
    d = scaled.save(tmp_path / "scaled")
    manifest = json.loads((d / "predictor.json").read_text())
    assert manifest["format_version"] == 4 and manifest["log_scale"] == {module: pytest.approx(np.log(2.0))}
    np.testing.assert_allclose(LatencyPredictor.load(d).predict(rows)["latency_ms"], out["latency_ms"], rtol=1e-6)
    assert json.loads((predictor.save(tmp_path / "plain") / "predictor.json").read_text())["format_version"] == 3
    manifest["log_scale"] = {"no_such_type": 0.1}
    (d / "predictor.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="no_such_type"):
        LatencyPredictor.load(d)
    # The regressor-level paths (batch, mass prediction, single query) carry the factor too.
    reg, params = scaled.regressor_view(module)
    x = scaled._encode(module, rows[mine])
    np.testing.assert_allclose(np.exp(jaxlat.predict_batch(reg, params, x)[:, 0]), out["latency_ms"][mine], rtol=1e-5)
    (chunk,) = jaxlat.predict_chunks(reg.predict, params, [x])
    np.testing.assert_allclose(np.exp(chunk[:, 0]), out["latency_ms"][mine], rtol=1e-5)
    np.testing.assert_allclose(np.exp(jaxlat.single_query(reg.predict, params)(x[0])[0]), out["latency_ms"][mine].iloc[0],
                               rtol=1e-5)
    with pytest.raises(ValueError, match=r"scales\['conv2d'\]=0 is not valid: expected a finite number > 0"):
        predictor.with_type_scales({"conv2d": 0})
    with pytest.raises(ValueError, match="module='nope' has no model"):
        predictor.with_type_scales({"nope": 1.5})



@pytest.fixture(scope="module")
def split(predictor):
    """Module queries from `cpu_torch_1t`, whole models composed by `epyc_torch_1t` (both learned
    the statistic given here, so that they may be joined)."""
    other = LatencyPredictor.load(ROOT / "jaxlat" / "predictors" / "epyc_torch_1t")
    other.statistic = predictor.statistic
    return predictor.with_whole_models(other), other


def test_a_split_predictor_answers_modules_and_whole_models_from_its_two_parts(predictor, split, records, tmp_path):
    pred, whole = split
    assert pred.is_split and pred.whole_models is whole and not predictor.is_split
    frame = records[0].frame().drop(columns=["op", "approx"])
    mine = pred.predict(frame)["latency_ms"].to_numpy()
    np.testing.assert_allclose(mine, predictor.predict(frame)["latency_ms"].to_numpy())
    assert not np.allclose(mine, whole.predict(frame)["latency_ms"].to_numpy(), rtol=0.01)  # the parts differ
    models = pred.predict_models(records)
    np.testing.assert_allclose(models["latency_ms"], whole.predict_models(records)["latency_ms"])
    assert not np.allclose(models["latency_ms"], predictor.predict_models(records)["latency_ms"], rtol=0.01)
    np.testing.assert_allclose(pred.breakdown(records[0])["latency_ms"], whole.breakdown(records[0])["latency_ms"])
    assert pred.composition == whole.composition
    np.testing.assert_allclose(pred.composition_terms(records), whole.composition_terms(records))
    # Saved as format 5, with the second predictor in its subdirectory; loaded, it predicts the same.
    pred.save(tmp_path / "split")
    manifest = json.loads((tmp_path / "split" / "predictor.json").read_text())
    assert manifest["format_version"] == 5 and manifest["whole_models"]["dir"] == "whole_models"
    back = LatencyPredictor.load(tmp_path / "split")
    assert back.is_split
    # Listed once, as a split predictor (its second part is not a predictor of its own there).
    (info,) = jaxlat.list_predictors(tmp_path, calibrated=False)[len(jaxlat.list_predictors(calibrated=False)):]
    assert info.path == tmp_path / "split" and info.split and info.whole_models
    np.testing.assert_allclose(back.predict(frame)["latency_ms"], mine, rtol=1e-6)
    np.testing.assert_allclose(back.predict_models(records)["latency_ms"], models["latency_ms"], rtol=1e-6)
    # The two parts belong together: another whole-model predictor, or none, is refused.
    other = tmp_path / "split" / "whole_models" / "predictor.json"
    other.write_text(other.read_text().replace('"created_at"', '"note": "edited", "created_at"'))
    with pytest.raises(ArtifactError, match="checksum mismatch; it is not the whole-model predictor saved"):
        LatencyPredictor.load(tmp_path / "split")
    shutil.rmtree(tmp_path / "split" / "whole_models")
    with pytest.raises(ArtifactError, match="its whole-model predictor .* is missing"):
        LatencyPredictor.load(tmp_path / "split")
    bad = {**manifest, "whole_models": {"dir": "..", "sha256": "0"}}
    (tmp_path / "split" / "predictor.json").write_text(json.dumps(bad))
    with pytest.raises(ArtifactError, match=r"whole_models=\{'dir': '\.\.'.*is not valid"):
        LatencyPredictor.load(tmp_path / "split")
    # A predictor that is not split, saved over a split one's directory, leaves no second part.
    pred.save(tmp_path / "over")
    predictor.save(tmp_path / "over")
    assert not (tmp_path / "over" / "whole_models").exists() and not LatencyPredictor.load(tmp_path / "over").is_split


def test_transforms_of_a_split_predictor_reach_the_right_part(predictor, split, records):
    pred, whole = split
    frame = records[0].frame().drop(columns=["op", "approx"])
    conv = (frame["module"] == "conv2d").to_numpy()
    assert conv.any()
    # A type's factor scales it in both parts: module queries and whole models follow.
    scaled = pred.with_type_scales({"conv2d": 2.0})
    np.testing.assert_allclose(scaled.predict(frame)["latency_ms"][conv], 2 * pred.predict(frame)["latency_ms"][conv],
                               rtol=1e-5)
    np.testing.assert_allclose(scaled.whole_models.type_scales["conv2d"], 2.0, rtol=1e-6)
    np.testing.assert_allclose(scaled.predict_models(records)["latency_ms"],
                               whole.with_type_scales({"conv2d": 2.0}).predict_models(records)["latency_ms"], rtol=1e-5)
    assert np.all(scaled.predict_models(records)["latency_ms"] > pred.predict_models(records)["latency_ms"])
    # `params`, `apply` and `with_params` are the module part's, composition included.
    params = pred.params
    np.testing.assert_array_equal(np.asarray(params.composition), np.asarray(predictor.params.composition))
    batch, _ = predictor.model_batch(records)
    np.testing.assert_allclose(np.asarray(pred.apply(params, batch).latency_ms),
                               np.asarray(predictor.apply(predictor.params, batch).latency_ms), rtol=1e-6)
    again = pred.with_params(params)
    assert again.is_split and again.whole_models is whole
    np.testing.assert_allclose(again._composition.coef_array, predictor.composition.coef_array, rtol=1e-6)
    # A composition goes to the whole-model part; the module part's own stays as it was.
    eight = load_records(ROOT / "data" / "cpu_generated_models.jsonl")[:8]
    comp = whole.fitted_composition(eight)
    again = pred.with_composition(comp)
    assert again.composition == comp and again.whole_models.composition == comp and again.is_split
    assert again._composition == pred._composition
    assert pred.with_fitted_composition(eight).composition == comp
    # Joined back with nothing: whole models from its own modules again.
    alone = pred.with_whole_models(None)
    np.testing.assert_allclose(alone.predict_models(records)["latency_ms"],
                               predictor.predict_models(records)["latency_ms"])
    # The NAS latency composes with the whole-model part.
    from jaxlat.nas import expected_latency_fn

    from .helpers import TINY_SPACE

    probs = jnp.full((3, len(TINY_SPACE.ops)), 1.0 / len(TINY_SPACE.ops))
    assert float(expected_latency_fn(pred, TINY_SPACE)(probs)) == pytest.approx(
        float(expected_latency_fn(whole, TINY_SPACE)(probs)), rel=1e-6)


def test_the_parts_of_a_split_predictor_must_fit_together(predictor, split):
    pred, _ = split
    with pytest.raises(ValueError, match="that predictor is split itself"):
        predictor.with_whole_models(pred)
    other = LatencyPredictor.load(ROOT / "jaxlat" / "predictors" / "epyc_torch_1t")
    other.statistic = "p10" if predictor.statistic == "median" else "median"
    with pytest.raises(ValueError, match="both parts must learn the same statistic"):
        predictor.with_whole_models(other)
    with pytest.raises(ValueError, match="whole_models=str is not valid: expected a LatencyPredictor or None"):
        predictor.with_whole_models("epyc_torch_1t")
