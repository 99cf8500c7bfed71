"""Auto-selection, the composition correction, whole-model prediction and the artifact."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import profilers
from jaxlat import ArtifactError, Budgets, LatencyPredictor, TrainConfig, select_regressors, train_predictor
from jaxlat._composition import TERMS, Composition, design_rows, fit_composition

from .helpers import synthetic_rows

MODULES = ["conv2d", "linear", "add"]
SMALL = TrainConfig(epochs=60, batch_size=64, learning_rate=3e-3)


def _frame(n_per: int, seed: int) -> pd.DataFrame:
    return pd.DataFrame(synthetic_rows(MODULES, n_per, seed))


@pytest.fixture(scope="module")
def frame():
    return _frame(90, 0)


@pytest.fixture(scope="module")
def selection(frame):
    return select_regressors(frame, candidates=("medn", "ridge", "roofline"), folds=2, train=SMALL, progress=False)


def test_selection_scores_every_candidate_and_reports_against_medn(selection):
    t = selection.table
    assert len(t) == 9 and set(t["module"]) == set(MODULES)
    assert (t["query_us"] > 0).all() and (t["bytes"] > 0).all()
    for m in MODULES:  # accuracy mode: the most accurate candidate per type
        rows = t[t["module"] == m]
        assert rows.loc[rows["acc10"].idxmax(), "acc10"] == rows[rows["regressor"] == selection.choice[m]]["acc10"].iloc[0]
    assert set(selection.overall) == {"selected", "medn_all"}
    assert selection.overall["selected"]["acc10"] >= selection.overall["medn_all"]["acc10"] - 1e-9
    assert "overall selected" in selection.format()


def test_time_and_space_modes_and_budgets(frame):
    kw = dict(candidates=("medn", "ridge", "roofline"), folds=2, train=SMALL, progress=False)
    space = select_regressors(frame, mode="space", tolerance=1.0, **kw)
    # with an accuracy slack of 100 %, space mode takes the smallest model of each type
    for m in MODULES:
        rows = space.table[space.table["module"] == m]
        assert space.choice[m] == rows.sort_values("bytes").iloc[0]["regressor"]
    small = select_regressors(frame, budgets=Budgets(max_bytes=10_000), **kw)
    assert "medn" not in small.choice.values()
    with pytest.raises(ValueError, match="no candidate meets the budgets"):
        select_regressors(frame, budgets=Budgets(max_query_us=1e-3), **kw)
    with pytest.raises(ValueError, match="mode='fast' is not valid"):
        select_regressors(frame, mode="fast")
    with pytest.raises(ValueError, match="candidates=\\['forest'\\] not valid"):
        select_regressors(frame, candidates=("forest",))


def test_composition_fit_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    n = 40
    sums = rng.uniform(1, 100, n)
    counts = []
    for _ in range(n):
        total = int(rng.integers(0, 5e7))
        counts.append({"n_modules": int(rng.integers(20, 200)), "n_unmapped_compute": int(rng.integers(0, 50)),
                       "n_unmapped_view": int(rng.integers(0, 100)), "unmapped_bytes": total,
                       "unmapped_copy_bytes": int(rng.integers(0, total + 1))})
    x = design_rows(sums, counts)
    assert x.shape == (n, len(TERMS))
    np.testing.assert_allclose(x[:, 4] + x[:, 5], [c["unmapped_bytes"] / 1e6 for c in counts])
    true = np.array([1.1, 0.004, 0.02, 0.001, 0.15, 0.03])
    comp = fit_composition(x, x @ true)
    np.testing.assert_allclose([comp.coef[t] for t in TERMS], true, rtol=1e-6, atol=1e-9)
    assert comp.log_sigma < 1e-6 and comp.info["fit_acc10"] == 1.0
    with pytest.raises(ValueError, match="at least 6"):
        fit_composition(x[:3], (x @ true)[:3])


def test_composition_saved_before_the_copy_rate_predicts_as_before():
    """A correction without `ms_per_copy_mb` charged every unmapped byte at `ms_per_mb`."""
    old = {"coef": {"scale": 1.05, "per_module_ms": 0.01, "per_unmapped_ms": 0.005, "per_view_ms": 0.0,
                    "ms_per_mb": 0.25}, "log_sigma": 0.1}
    comp = Composition.from_json(old)
    assert comp.coef["ms_per_copy_mb"] == 0.25
    counts = [{"n_modules": 10, "n_unmapped_compute": 3, "n_unmapped_view": 1, "unmapped_bytes": 4e6,
               "unmapped_copy_bytes": 3e6}]
    assert comp.apply(design_rows(np.array([20.0]), counts))[0] == pytest.approx(1.05 * 20 + 0.1 + 0.015 + 0.25 * 4)
    with pytest.raises(ValueError, match="missing coefficients"):
        Composition.from_json({"coef": {"scale": 1.0}})


@pytest.fixture(scope="module")
def records():
    """Small real graphs captured from torch models, with a synthetic 'measured' latency."""
    import torch

    from profilers import capture_torch
    from profilers._netgen import generated_network

    recs = []
    for seed in range(8):
        model, x, _ = generated_network(seed)
        if seed % 4 == 0:  # keep the CNNs small
            x = (torch.nn.functional.interpolate(x[0], size=64),)
        r = capture_torch(model, x, name=f"g{seed}")
        recs.append(r)
    return recs


def _with_law(recs, pred):
    """'Measured' = 1.2 x predicted sum + 0.01 ms per module: a law the correction can learn."""
    out = []
    plain = pred.predict_models(recs)["plain_sum_ms"].to_numpy()
    for r, p in zip(recs, plain):
        out.append(r.with_measured({"latency_ms": 1.2 * p + 0.01 * r.counts()["n_modules"]}))
    return out


@pytest.fixture(scope="module")
def full_frame():
    return _full_frame()


def test_whole_model_prediction_with_correction_saves_and_loads(full_frame, records, tmp_path):
    pred = train_predictor(full_frame, regressor="ridge")
    measured = _with_law(records, pred)
    with pytest.warns(DeprecationWarning, match="in place"):
        comp = pred.fit_composition(measured)  # the deprecated in-place form still works
    assert pred.composition is comp
    assert comp.coef["scale"] == pytest.approx(1.2, rel=1e-3) and comp.coef["per_module_ms"] == pytest.approx(0.01, rel=1e-2)
    out = pred.predict_models(measured)
    np.testing.assert_allclose(out["latency_ms"], out["measured_ms"], rtol=1e-3)
    assert (out["lo_ms"] < out["latency_ms"]).all() and (out["hi_ms"] > out["latency_ms"]).all()
    bd = pred.breakdown(measured[0])
    assert len(bd) == len(measured[0].modules) and bd["share"].sum() == pytest.approx(1.0)
    d = pred.save(tmp_path / "p")
    back = LatencyPredictor.load(d)
    pd.testing.assert_frame_equal(back.predict_models(measured), out)
    manifest = json.loads((d / "predictor.json").read_text())
    manifest["composition"]["coef"].pop("scale")
    (d / "predictor.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="missing coefficients"):
        LatencyPredictor.load(d)


def _full_frame():
    return pd.DataFrame(_full_rows())


def _full_rows():
    # built-in types only (a plugin type registered by another test is not in the file's reader)
    return synthetic_rows([str(t) for t in profilers.ModuleType], 40, spread=0.01)


def test_version_1_artifact_loads_as_plain_sum(full_frame, records, tmp_path):
    pred = train_predictor(full_frame, regressor="ridge")
    d = pred.save(tmp_path / "v1")
    m = json.loads((d / "predictor.json").read_text())
    m["format_version"] = 1
    (d / "predictor.json").write_text(json.dumps(m))
    old = LatencyPredictor.load(d)
    assert old.composition is None
    out = old.predict_models(records[:2])
    np.testing.assert_allclose(out["latency_ms"], out["plain_sum_ms"])


def test_latency_fn_is_pure_jax_and_its_gradient_matches_finite_differences(frame):
    pred = train_predictor(frame, regressor="medn", train=SMALL)
    f = pred.latency_fn("conv2d")
    base = dict(profilers.make_config("conv2d", cin=32, cout=64, h=28, w=28, kernel=3).values)
    cfg = pd.DataFrame([{"module": "conv2d", **base}])
    np.testing.assert_allclose(np.asarray(f(base))[0], pred.predict(cfg)["latency_ms"].iloc[0], rtol=1e-5)

    def lat(cout):
        return jax.jit(lambda c: f({**base, "cout": c}).sum())(cout)

    g = jax.grad(lambda c: f({**base, "cout": c}).sum())(jnp.float32(64.0))
    eps = 0.5
    fd = (lat(jnp.float32(64.0 + eps)) - lat(jnp.float32(64.0 - eps))) / (2 * eps)
    assert np.isfinite(g) and g == pytest.approx(float(fd), rel=0.05, abs=1e-6)
    many = f({**base, "cout": jnp.array([16.0, 64.0, 256.0])})
    assert many.shape == (3,) and bool(jnp.all(many > 0))


def test_cli_train_with_selection_and_predict_a_record(full_frame, records, tmp_path):
    data = tmp_path / "d.parquet"
    profilers.write_dataset(data, _full_rows(), {"device_id": "synthetic", "backend": "torch", "device": "cpu"})
    recs = tmp_path / "r.jsonl"
    from profilers._arch import append_record

    pred = train_predictor(full_frame, regressor="ridge")
    for r in _with_law(records, pred):
        append_record(recs, r)
    out = tmp_path / "pred"
    cmd = [sys.executable, "-m", "jaxlat._cli", "train", "--data", str(data), "--select", "time", "--folds", "2",
           "--candidates", "ridge,roofline", "--require-differentiable", "--archs", str(recs), "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "composition fitted on 8 networks" in r.stdout and "overall selected" in r.stderr
    sel = json.loads((out / "predictor.json").read_text())["selection"]
    assert sel["mode"] == "time" and sel["budgets"]["require_differentiable"] is True
    p = subprocess.run([sys.executable, "-m", "jaxlat._cli", "predict", "--predictor", str(out), "--arch", str(recs),
                        "--breakdown", "3"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("80% interval") == 8 and "measured" in p.stdout
    bad = subprocess.run([sys.executable, "-m", "jaxlat._cli", "train", "--data", str(data), "--max-bytes", "10",
                          "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "need --select" in bad.stderr


def test_a_predictor_learns_the_statistic_it_is_given_and_keeps_it(full_frame, records, tmp_path):
    """Rows whose 10th percentile is half their median: a p10 predictor predicts half as much,
    fits its composition on the records' `p10_ms`, and keeps the statistic through save/load."""
    low = full_frame.assign(latency_ms_p10=full_frame["latency_ms_median"] / 2)
    med = train_predictor(low, regressor="ridge")
    p10 = train_predictor(low, regressor="ridge", statistic="p10")
    assert (med.statistic, p10.statistic) == ("median", "p10")
    cfgs = [profilers.config_from_row(r) for r in low.head(20).to_dict("records")]
    ratio = p10.predict(cfgs)["latency_ms"].to_numpy() / med.predict(cfgs)["latency_ms"].to_numpy()
    np.testing.assert_allclose(ratio, 0.5, rtol=0.02)
    plain = p10.predict_models(records)["plain_sum_ms"].to_numpy()
    measured = [r.with_measured({"latency_ms": 5 * p, "p10_ms": 1.2 * p}) for r, p in zip(records, plain)]
    fitted = p10.with_fitted_composition(measured)
    assert p10.composition is None  # left as it was
    assert fitted.composition.coef["scale"] == pytest.approx(1.2, rel=1e-3)
    assert fitted.fitted_composition(measured).coef == fitted.composition.coef
    out = fitted.predict_models(measured)
    np.testing.assert_allclose(out["measured_ms"], 1.2 * plain)
    back = LatencyPredictor.load(p10.save(tmp_path / "p"))
    assert back.statistic == "p10"
    median_only = [r.with_measured({"latency_ms": 1.0}) for r in records]
    # The design rows need no measurement (few-shot recompose passes its latencies apart).
    np.testing.assert_allclose(back.composition_terms(median_only)[:, 0], plain, rtol=1e-6)
    with pytest.raises(ValueError, match="has no 'p10_ms'"):
        back.fitted_composition(median_only)
    with pytest.raises(ValueError, match="statistic='p90' is not valid: expected one of median, p10"):
        train_predictor(low, regressor="ridge", statistic="p90")
