"""The MLP and MEDN training recipe: conformal intervals, widening and the roofline prior
outside the training range, and old configurations rebuilding the old recipe."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxlat
import profilers
from jaxlat import encode_columns, predict_batch
from jaxlat._predict import combine
from jaxlat.regressors import medn_regressor, medn_task_view, mlp_regressor, regressor_entry
from jaxlat.regressors._recipe import (
    DEFAULT,
    LEGACY,
    Z80,
    Recipe,
    as_recipe,
    beyond_edge,
    check_edge,
    conformal_quantile,
    edge_rows,
    edge_thresholds,
    encode,
    encode_host,
    fit_encoding,
    pad_encodings,
    widening_scale,
    widening_scales,
)
from jaxlat.regressors._roofline import roofline_log_ms_host

from .helpers import synthetic_arrays, synthetic_latency_ms

TRAIN = jaxlat.TrainConfig(epochs=120, batch_size=64, learning_rate=3e-3, patience=0)


def _bumped(module: str, n: int, seed: int, noise: float = 0.0):
    """The synthetic roofline law times a concave bump in log FLOPs: inside the sampled range
    the latency falls again at the largest sizes, so a correction extrapolated beyond it, and
    not held, would make the latency fall with size."""
    _, x, y, names = synthetic_arrays(module, n, seed=seed)
    lf = x[:, names.index("log1p_flops")]
    y = y - 0.5 * (lf - 14.0) ** 2 / 6.0 + np.random.default_rng(seed).normal(0, noise, n)
    return x, y.astype(np.float32), names


def _matmul_rows(scale: np.ndarray) -> np.ndarray:
    n = len(scale)
    cols = {"m": 1024 * scale, "k": 1024 * scale, "n": 1024 * scale, "batch_size": np.ones(n, int)}
    return np.asarray(encode_columns("matmul", cols), np.float32)


def test_conformal_quantile_is_the_finite_sample_quantile():
    s = np.arange(1, 100)  # 99 scores: ceil(100 * 0.8) = 80th smallest
    assert conformal_quantile(s) == 80
    assert conformal_quantile(np.array([3.0, 1.0])) == 3.0  # too few rows: the largest
    with pytest.raises(ValueError, match="no scores"):
        conformal_quantile(np.array([]))


@pytest.fixture(scope="module")
def noisy_fits():
    """Recipe-2 MLP and MEDN on noisy synthetic data: 400 training, 400 validation and 2000
    test rows of two module types."""
    data = {m: (_bumped(m, 400, 0, 0.1), _bumped(m, 400, 1, 0.1), _bumped(m, 2000, 2, 0.1)) for m in ("matmul", "linear")}
    mlp = mlp_regressor((32, 32), train=TRAIN)
    mlps = {m: mlp.fit(jax.random.key(0), tr[0], tr[1], names=tr[2], x_val=va[0], y_val=va[1]) for m, (tr, va, _) in data.items()}
    medn = medn_regressor(encoder=(32, 32), latent=16, decoder=(16,), train=TRAIN)
    mp = medn.fit(jax.random.key(0), {m: d[0][:2] for m, d in data.items()}, val={m: d[1][:2] for m, d in data.items()})
    return data, (mlp, mlps), (medn, mp)


@pytest.fixture(scope="module")
def first_order_fits(noisy_fits):
    """The same fits with the first-order widening (`edge=()`): no edge fit."""
    data = noisy_fits[0]
    tr, va, _ = data["matmul"]
    mlp = mlp_regressor((32, 32), train=TRAIN, recipe={"edge": ()}).fit(
        jax.random.key(0), tr[0], tr[1], names=tr[2], x_val=va[0], y_val=va[1])
    medn = medn_regressor(encoder=(32, 32), latent=16, decoder=(16,), train=TRAIN, recipe={"edge": ()})
    mp = medn.fit(jax.random.key(0), {m: d[0][:2] for m, d in data.items()}, val={m: d[1][:2] for m, d in data.items()})
    return mlp, mp


@pytest.fixture(scope="module")
def clipped_fits(noisy_fits):
    """The same fits with inputs clipped to the training range (`clip=True`)."""
    data = noisy_fits[0]
    mlp = mlp_regressor((32, 32), train=TRAIN, recipe={"clip": True})
    tr, va, _ = data["matmul"]
    mlps = {"matmul": mlp.fit(jax.random.key(0), tr[0], tr[1], names=tr[2], x_val=va[0], y_val=va[1])}
    medn = medn_regressor(encoder=(32, 32), latent=16, decoder=(16,), train=TRAIN, recipe={"clip": True})
    mp = medn.fit(jax.random.key(0), {m: d[0][:2] for m, d in data.items()}, val={m: d[1][:2] for m, d in data.items()})
    return data, (mlp, mlps), (medn, mp)


def _coverage(out, y):
    z = 1.2815515655446004
    return float(np.mean(np.abs(y - out[:, 0]) <= z * np.exp(out[:, 1])))


@pytest.mark.parametrize("module", ["matmul", "linear"])
def test_conformal_intervals_cover_80_percent_of_new_rows(noisy_fits, module):
    data, (mlp, mlps), (medn, mp) = noisy_fits
    x, y, _ = data[module][2]
    assert 0.72 <= _coverage(predict_batch(mlp, mlps[module], x), y) <= 0.88
    reg, p = medn_task_view(medn, mp, module)
    assert 0.72 <= _coverage(predict_batch(reg, p, x), y) <= 0.88


def _beyond(reg, params):
    """Predictions for matmuls 2 to 32 times the largest training size in every dimension."""
    scale = 2.0 ** np.arange(1, 6)
    x = _matmul_rows(scale)
    return x, predict_batch(reg, params, x)


def test_clipped_beyond_the_range_the_prior_carries_the_growth_and_intervals_widen(clipped_fits):
    data, (mlp, mlps), (medn, mp) = clipped_fits
    t = mp["tasks"].index("matmul")
    views = ((mlp, mlps["matmul"], mlps["matmul"]["prior"]),
             (*medn_task_view(medn, mp, "matmul"), {k: v[t] for k, v in mp["prior"].items()}))
    for reg, p, prior in views:
        x, out = _beyond(reg, p)
        assert np.all(np.diff(out[:, 0]) > 0), out[:, 0]  # monotone in size (and FLOPs)
        # The correction is held at the boundary: the predictions grow exactly as the prior.
        np.testing.assert_allclose(np.diff(out[:, 0]), np.diff(roofline_log_ms_host(prior, x)), rtol=1e-3, atol=1e-4)
        # The interval widens with the distance from the training range.
        assert np.all(np.diff(out[:, 1]) > 0), out[:, 1]
        inside = predict_batch(reg, p, data["matmul"][0][0][:50])
        assert out[0, 1] > np.median(inside[:, 1])


def test_saved_configurations_rebuild_recipe_1_and_bare_ones_the_default():
    old_mlp = regressor_entry("mlp").build({"activation": "relu", "hidden": [256, 256, 256]})
    assert "recipe" not in old_mlp.config
    old_medn = regressor_entry("medn").build({"decoder": [64], "embed_dim": 16, "encoder": [256, 256, 256], "latent": 128})
    assert "recipe" not in old_medn.config
    for name in ("mlp", "medn"):
        new = regressor_entry(name).build({})
        assert new.config["recipe"] == DEFAULT.as_config()
        again = regressor_entry(name).build(dict(new.config))  # as a predictor saved now reloads it
        assert again.config == new.config and again.predict == new.predict
    # Recipe 1 fits the parameters it always had, and a recipe-2 fit adds its parts.
    _, x, y, names = synthetic_arrays("linear", 60, seed=0)
    small = jaxlat.TrainConfig(epochs=3, batch_size=32)
    legacy = regressor_entry("mlp").build({"activation": "relu", "hidden": [8], "train": small})
    assert set(legacy.fit(jax.random.key(0), x, y, names=names)) == {"x_mean", "x_scale", "y_mean", "y_scale", "layers", "log_sigma"}
    new = regressor_entry("mlp").build({"hidden": [8], "train": small, "recipe": {}})
    assert {"prior", "range_min", "range_max", "kappa"} <= set(new.fit(jax.random.key(0), x, y, names=names))


def test_recipe_settings_are_checked():
    assert as_recipe({"prior": False}) == Recipe(prior=False)
    assert Recipe.from_config(None) == LEGACY
    with pytest.raises(ValueError, match=r"recipe: \['bogus'\] are not valid"):
        as_recipe({"bogus": 1})
    with pytest.raises(ValueError, match="loss='l1' is not valid"):
        Recipe(loss="l1")
    with pytest.raises(ValueError, match="recipe=3 is not valid"):
        mlp_regressor(recipe=3)
    with pytest.raises(ValueError, match="edge='log_m' is not valid"):
        Recipe(edge="log_m")
    with pytest.raises(ValueError, match="edge_frac=0.6 is not valid"):
        Recipe(edge_frac=0.6)
    with pytest.raises(ValueError, match=r"bins=-1 is not valid: expected an integer >= 0"):
        Recipe(bins=-1)
    with pytest.raises(ValueError, match=r"bins=2.5 is not valid"):
        as_recipe({"bins": 2.5})
    assert Recipe(version=1).bins == 0 and LEGACY.bins == 0
    with pytest.raises(ValueError, match=r"step_width=0 is not valid: expected an integer >= 1"):
        Recipe(step_width=0)
    # A recipe saved before `bins` existed had no encoding, and reads back without one.
    assert Recipe.from_config(DEFAULT.as_config() | {"bins": 8}).bins == 8
    assert Recipe.from_config({k: v for k, v in DEFAULT.as_config().items() if k != "bins"}).bins == 0
    assert as_recipe({"prior": False}).bins == DEFAULT.bins
    # A recipe saved before `edge` existed reads back with no edge fit (and its own `clip`).
    saved = {"version": 2, "prior": True, "clip": True, "loss": "huber", "huber_delta": 1.0, "conformal": True}
    assert Recipe.from_config(saved) == Recipe(clip=True, edge=(), bins=0)
    assert DEFAULT.edge == "all" and as_recipe({"prior": False}).edge == "all"
    assert Recipe.from_config({k: v for k, v in DEFAULT.as_config().items() if k != "edge"}).edge == ()
    assert Recipe.from_config(Recipe(edge=["log_m"]).as_config()).edge == ("log_m",)
    assert Recipe.from_config(Recipe(edge="all").as_config()).edge == "all"
    with pytest.raises(ValueError, match=r"edge='al' is not valid: expected a sequence of feature names or 'all'"):
        Recipe(edge="al")


def test_by_default_inputs_are_not_clipped_and_the_range_widens_the_interval(noisy_fits):
    _, (mlp, mlps), _ = noisy_fits
    p = mlps["matmul"]
    assert "range_min" in p and "x_min" not in p
    _, out = _beyond(mlp, p)
    assert np.all(np.diff(out[:, 1]) > 0), out[:, 1]
    assert out[0, 1] > float(p["log_sigma"])


def test_edge_rows_and_scale():
    x = np.stack([np.arange(200.0), np.zeros(200)], axis=1)
    mask = edge_rows(x, ("a", "b"), ("a",), 0.1)
    assert mask.sum() == 20 and mask[-20:].all()
    assert edge_rows(x, ("a", "b"), ("c",), 0.1) is None  # not a feature of this type
    assert edge_rows(x[:60], ("a", "b"), ("a",), 0.1) is None  # too few rows
    with pytest.raises(ValueError, match=r"recipe edge: \['c'\] are not features of matmul: expected some of a, b"):
        check_edge(("c",), {"matmul": ("a", "b")})
    # Edge rows may narrow the first-order widening; validation rows only widen it.
    resid, sigma, spread = np.full(40, 0.5), np.full(40, 0.1), np.full(40, 4.0)
    assert widening_scale(resid, sigma, spread, narrow=True) < 0.2
    assert widening_scale(resid, sigma, spread) == 1.0
    assert widening_scale(resid[:5], sigma[:5], spread[:5], narrow=True) is None


def test_edge_all_calibrates_each_direction_on_its_own_rows():
    """`edge="all"`: rows out along every feature with 3 or more values (not flags); each
    feature's factor from the rows it widens most, the rest from all rows together."""
    rng = np.random.default_rng(0)
    x = np.stack([rng.integers(0, 8, 400), rng.normal(size=400), rng.integers(0, 2, 400)], axis=1).astype(float)
    mask = edge_rows(x, ("a", "b", "flag"), "all", 0.1)
    assert mask[x[:, 0] == 7].all() and mask[x[:, 1] >= np.quantile(x[:, 1], 0.9)].all()
    assert not mask[(x[:, 0] < 7) & (x[:, 1] < np.quantile(x[:, 1], 0.9))].any()  # the flag is not an edge
    check_edge("all", {"matmul": ("a", "b")})
    # A grid feature whose largest level holds a third of the rows is no edge under "all"
    # (it would take that third out of the first fit); named, it is.
    x3 = np.concatenate([x, np.arange(400)[:, None] % 3], axis=1)
    assert set(edge_thresholds(x3, ("a", "b", "flag", "k"), "all", 0.1)) == {0, 1}
    assert set(edge_thresholds(x3, ("a", "b", "flag", "k"), ("k",), 0.1)) == {3}
    assert (beyond_edge(x3, {3: 2.0}) == (x3[:, 3] == 2)).all()
    # 40 rows out along feature 0 need half its first-order widening, 40 along feature 1
    # twice it; feature 2 widens no row most and takes the factor of all 80 rows.
    n = 40
    contrib = np.zeros((2 * n, 3))
    contrib[:n, 0], contrib[n:, 1] = 1.0, 1.0
    contrib[:, 2] = 0.01
    sigma = np.full(2 * n, 1e-3)
    resid = np.r_[np.full(n, 0.5), np.full(n, 2.0)] * Z80 * np.linalg.norm(contrib, axis=1)
    scales = widening_scales(resid, sigma, contrib)
    np.testing.assert_allclose(scales[:2], [0.5, 2.0], rtol=1e-3)
    assert scales[2] == pytest.approx(widening_scale(resid, sigma, np.linalg.norm(contrib, axis=1), narrow=True))
    assert widening_scales(resid[:5], sigma[:5], contrib[:5]) is None  # too few rows outside


@pytest.mark.parametrize("kind", ["mlp", "medn"])
def test_by_default_each_feature_widening_is_calibrated_on_its_own(noisy_fits, first_order_fits, kind):
    """By default (`edge="all"`) the final network is the one fitted without an edge fit;
    the widening slopes change by a factor per feature, not all by one."""
    _, (_, mlps), (_, mp) = noisy_fits
    fo_mlp, fo_medn = first_order_fits
    if kind == "mlp":
        before, after = fo_mlp, mlps["matmul"]
    else:
        t = mp["tasks"].index("matmul")
        before, after = {"kappa": fo_medn["kappa"][t], "layers": fo_medn["model"]}, {"kappa": mp["kappa"][t], "layers": mp["model"]}
    jax.tree.map(np.testing.assert_array_equal, before["layers"], after["layers"])
    k0 = np.asarray(before["kappa"], np.float64)
    ratio = np.asarray(after["kappa"], np.float64)[k0 > 0] / k0[k0 > 0]
    assert np.isfinite(ratio).all() and (ratio > 0).all()
    assert ratio.max() / ratio.min() > 1.01, ratio


def test_the_edge_fit_validates_on_rows_inside_its_own_range(noisy_fits):
    """The first fit's validation rows are those below the edge thresholds; with none left it
    fits without validation rows and sets its interval on its own training rows."""
    tr = noisy_fits[0]["matmul"][0]
    edge = edge_rows(tr[0], tr[2], "all", 0.1)
    reg = mlp_regressor((16,), train=jaxlat.TrainConfig(epochs=5, batch_size=64))
    p = reg.fit(jax.random.key(0), tr[0], tr[1], names=tr[2], x_val=tr[0][edge], y_val=tr[1][edge])
    assert np.isfinite(p["kappa"]).all() and (p["kappa"] >= 0).all()


@pytest.mark.parametrize("kind", ["mlp", "medn"])
def test_an_edge_fit_rescales_the_widening_of_the_same_network(noisy_fits, first_order_fits, kind):
    """With named `edge` features, the final network is the one fitted without an edge fit
    (same key); only its widening slopes change, all by one factor: the one that covers the
    rows a first fit left out."""
    data = noisy_fits[0]
    mlp_fo, mp = first_order_fits
    names = data["matmul"][0][2]
    if kind == "mlp":
        tr, va, _ = data["matmul"]
        reg = mlp_regressor((32, 32), train=TRAIN, recipe={"edge": ("log_m",)})
        p = reg.fit(jax.random.key(0), tr[0], tr[1], names=names, x_val=va[0], y_val=va[1])
        before, after = mlp_fo, p
    else:
        reg = medn_regressor(encoder=(32, 32), latent=16, decoder=(16,), train=TRAIN, recipe={"edge": ("log_m",)})
        p = reg.fit(jax.random.key(0), {m: d[0][:2] for m, d in data.items()}, val={m: d[1][:2] for m, d in data.items()})
        t = p["tasks"].index("matmul")
        before, after = {"kappa": mp["kappa"][t], "layers": mp["model"]}, {"kappa": p["kappa"][t], "layers": p["model"]}
        with pytest.raises(ValueError, match=r"recipe edge: \['log_q'\] are not features"):
            medn_regressor(encoder=(8,), latent=4, decoder=(4,), train=TRAIN, recipe={"edge": ("log_q",)}).fit(
                jax.random.key(0), {m: d[0][:2] for m, d in data.items()})
    jax.tree.map(np.testing.assert_array_equal, before["layers"], after["layers"])
    ratio = np.asarray(after["kappa"], np.float64) / np.asarray(before["kappa"], np.float64)
    ratio = ratio[np.isfinite(ratio) & (np.asarray(before["kappa"]) > 0)]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)
    assert not np.isclose(ratio[0], 1.0, rtol=0.01), ratio[0]


def test_an_ensemble_predicts_the_mean_of_its_members(noisy_fits):
    """`members=2`: the first member is the single network of the same key, the prediction
    is the members' mean, and the ensemble saves and reloads through the registry."""
    data, (_, mlps), _ = noisy_fits
    tr, va, te = data["matmul"]
    reg = mlp_regressor((32, 32), train=TRAIN, members=2)
    p = reg.fit(jax.random.key(0), tr[0], tr[1], names=tr[2], x_val=va[0], y_val=va[1])
    assert p["layers"][0]["w"].shape[0] == 2
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(lambda a: a[0], p["layers"]), mlps["matmul"]["layers"])
    members = [predict_batch(reg, {**p, "layers": jax.tree.map(lambda a, i=i: a[i], p["layers"])}, te[0][:200])
               for i in range(2)]
    both = predict_batch(reg, p, te[0][:200])
    np.testing.assert_allclose(both[:, 0], (members[0][:, 0] + members[1][:, 0]) / 2, rtol=1e-5, atol=1e-5)
    assert not np.allclose(members[0][:, 0], members[1][:, 0], atol=1e-3)  # two different networks
    # The interval is set for the mean on the validation rows, which also chose each member's
    # best epoch: slightly optimistic (0.717 on this draw), never the members' own widths.
    assert 0.68 <= _coverage(predict_batch(reg, p, te[0]), te[1]) <= 0.88
    again = regressor_entry("mlp").build(dict(reg.config))
    assert again.config["members"] == 2
    np.testing.assert_allclose(predict_batch(again, p, te[0][:200]), both, rtol=1e-6)
    with pytest.raises(ValueError, match="members=0 is not valid"):
        mlp_regressor(members=0)
    with pytest.raises(ValueError, match="members=2 is not valid with recipe 1"):
        mlp_regressor(members=2, recipe=LEGACY)


def test_a_medn_ensemble_predicts_the_mean_of_its_members(noisy_fits):
    data, _, (_, mp) = noisy_fits
    reg = medn_regressor(encoder=(32, 32), latent=16, decoder=(16,), train=TRAIN, members=2)
    p = reg.fit(jax.random.key(0), {m: d[0][:2] for m, d in data.items()}, val={m: d[1][:2] for m, d in data.items()})
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(lambda a: a[0], p["model"]), mp["model"])
    view, vp = medn_task_view(reg, p, "matmul")
    x = data["matmul"][2][0][:200]
    members = [predict_batch(view, {**vp, "model": jax.tree.map(lambda a, i=i: a[i], vp["model"])}, x) for i in range(2)]
    np.testing.assert_allclose(predict_batch(view, vp, x)[:, 0], (members[0][:, 0] + members[1][:, 0]) / 2,
                               rtol=1e-5, atol=1e-5)
    assert regressor_entry("medn").build(dict(reg.config)).config["members"] == 2
    with pytest.raises(ValueError, match="members=1.5 is not valid"):
        medn_regressor(members=1.5)


def test_weight_averaging_returns_the_moving_average_of_the_steps():
    """`TrainConfig.ema_decay`: without validation rows the fit returns the average of its
    iterates once it has run three time constants, the iterate before that; with them,
    whichever of the two validates better."""
    from jaxlat._train import averaged_enough, fit_with_adamw

    def loss(params, batch, aux):
        return jnp.mean((params["w"] - batch[0]) ** 2)

    x = (np.full((64, 1), 3.0, np.float32),)
    start = {"w": jnp.zeros((1,), jnp.float32)}
    # 40 epochs of 8 steps at a small rate: the iterates still climb from 0 toward 3 at the end.
    plain = jaxlat.TrainConfig(epochs=40, batch_size=8, learning_rate=0.005, patience=0, ema_decay=None)
    averaged = dataclasses.replace(plain, ema_decay=0.97)  # a time constant of 33 steps
    assert averaged_enough(320, 0.97) and not averaged_enough(40, 0.97)
    key = jax.random.PRNGKey(0)
    last = float(fit_with_adamw(loss, start, x, key=key, config=plain)["w"][0])
    ema = float(fit_with_adamw(loss, start, x, key=key, config=averaged)["w"][0])
    assert 0.0 < ema < last < 3.0  # the average lags the iterates
    # A fit shorter than three time constants returns its iterate, not an average of its start.
    short, short_avg = (dataclasses.replace(c, epochs=5) for c in (plain, averaged))
    np.testing.assert_allclose(fit_with_adamw(loss, start, x, key=key, config=short_avg)["w"],
                               fit_with_adamw(loss, start, x, key=key, config=short)["w"])
    # With validation rows the iterate, closer to the optimum here, validates better and is kept.
    kept = fit_with_adamw(loss, start, x, key=key, config=averaged, val=x)
    np.testing.assert_allclose(float(kept["w"][0]), last, rtol=1e-6)
    assert jaxlat.TrainConfig().ema_decay == 0.999  # on by default
    with pytest.raises(ValueError, match=r"ema_decay=1.0 is not valid: expected a number in \(0, 1\)"):
        jaxlat.TrainConfig(ema_decay=1.0)


def test_the_encoding_is_piecewise_linear_with_open_ends():
    rng = np.random.default_rng(0)
    x = np.stack([rng.integers(0, 40, 800) / 4.0, rng.integers(0, 2, 800), np.full(800, 3.0), rng.uniform(0, 1, 800)],
                 axis=1)
    enc = fit_encoding(x, 4)
    assert set(enc["col"].tolist()) == {0}  # a flag, a constant and a continuous feature are not encoded
    assert len(enc["col"]) == 4 and enc["first"].tolist() == [1, 0, 0, 0] and enc["last"].tolist() == [0, 0, 0, 1]
    edges = np.r_[enc["lo"], enc["lo"][-1] + enc["width"][-1]]
    np.testing.assert_allclose(edges, np.quantile(x[:, 0], [0, 0.25, 0.5, 0.75, 1.0]), rtol=1e-5)
    rows = np.array([[edges[0] - 1.0, 0, 3, 0], [edges[2], 0, 3, 0], [0.5 * (edges[2] + edges[3]), 0, 3, 0],
                     [edges[4] + 2.0, 0, 3, 0]], np.float32)
    out = encode_host(enc, rows)
    np.testing.assert_allclose(out[1], [1, 1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(out[2], [1, 1, 0.5, 0], atol=1e-5)
    assert out[0, 0] < 0 and np.all(out[0, 1:] == 0)  # below the range: the first bin goes on
    assert out[3, 3] > 1 and np.all(out[3, :3] == 1)  # above it: the last bin goes on
    np.testing.assert_allclose(np.asarray(jax.jit(lambda r: encode(enc, r))(jnp.asarray(rows))), out, rtol=1e-6)
    g = jax.grad(lambda v: encode(enc, jnp.array([v, 0.0, 3.0, 0.0])).sum())(jnp.float32(5.0))
    assert np.isfinite(g) and g > 0
    # Too few rows for MIN_BINS bins: no encoding; a type without one is padded with masked bins.
    assert fit_encoding(x[:399], 32) is None and len(fit_encoding(x[:400], 32)["col"]) == 4
    padded = pad_encodings([enc, None])
    assert padded["col"].shape == (2, 4) and padded["mask"][1].sum() == 0
    assert np.all(encode_host({k: v[1] for k, v in padded.items()}, rows) == 0)
    assert pad_encodings([None, None]) is None


def _step_part(params, x):
    """What the step network adds to the standardized log latency of one config `x`."""
    from jaxlat.regressors._mlp import _step_input, apply_mlp

    prior = jnp.asarray(roofline_log_ms_host(params["prior"], np.asarray(x)[None])[0], jnp.float32)
    return apply_mlp(params["steps"]["layers"], _step_input(params["steps"], x, prior))[0]


def _tiled(n: int, seed: int):
    """Convolutions with channels on a grid of 16 (as samplers and NAS spaces draw them), at
    the synthetic law times the waste of padding both channel counts to tiles of 64: a
    staircase, level by level, that a kernel's tiling puts into latency."""
    rng = np.random.default_rng(seed)
    cols = {"cin": rng.integers(1, 33, n) * 16, "cout": rng.integers(1, 33, n) * 16, "h": rng.choice([7, 14, 28, 56], n),
            "kernel": rng.choice([1, 3, 5], n), "batch_size": rng.choice([1, 8], n)}
    cols["w"] = cols["h"]
    cfgs = [profilers.make_config("conv2d", **{k: int(v[i]) for k, v in cols.items()}) for i in range(n)]
    pad = sum(np.log(np.ceil(cols[c] / 64) * 64 / cols[c]) for c in ("cin", "cout"))
    x = np.asarray(encode_columns("conv2d", cols), np.float32)
    return x, (np.log(synthetic_latency_ms(cfgs)) + pad).astype(np.float32), jaxlat.feature_schema("conv2d").names


def test_the_step_network_draws_steps_between_levels_and_holds_beyond_the_range():
    tr, va, te = (_tiled(n, s) for n, s in ((1600, 0), (400, 1), (1000, 2)))
    acc = {}
    for bins in (0, 32):
        mlp = mlp_regressor((64, 64), train=TRAIN, recipe={"bins": bins})
        p = mlp.fit(jax.random.key(0), tr[0], tr[1], names=tr[2], x_val=va[0], y_val=va[1])
        assert ("steps" in p) == (bins > 0)
        out = predict_batch(mlp, p, te[0])
        acc[bins] = float(np.mean(np.abs(np.exp(out[:, 0] - te[1]) - 1) <= 0.1))
    assert acc[32] > acc[0] + 0.05, acc
    # Beyond the training range the step network holds its value at the boundary: what it
    # adds for channels 2x and 4x the largest measured is what it adds at the largest.
    edge = te[0][np.argmax(te[0][:, tr[2].index("log_cout")])]
    far = [edge.copy() for _ in range(3)]
    for i, k in enumerate((1, 2, 4)):
        far[i][tr[2].index("log_cout")] += np.log(k)
    vals = [float(_step_part(p, r)) for r in far]
    np.testing.assert_allclose(vals[1:], vals[0], rtol=1e-5, atol=1e-6)


def test_a_predictor_with_the_encoding_saves_fine_tunes_and_differentiates(tmp_path):
    from .helpers import synthetic_rows

    frame = pd.DataFrame(synthetic_rows(["conv2d", "linear"], 500, 0) + synthetic_rows(["add"], 60, 1))
    small = jaxlat.TrainConfig(epochs=10, batch_size=64, learning_rate=3e-3)
    for regressor in ("medn", "mlp"):
        pred = jaxlat.train_predictor(frame, regressor=regressor, train=small)
        head = pred.heads["conv2d"]
        params = combine(pred.params.regressors[head.key], head.static)  # floats and index arrays
        assert "encoding" in params["steps"]
        if regressor == "medn":  # one MEDN: "add" has 60 rows, too few for bins, and its bins are masked
            t = sorted(pred.models).index("add")  # MEDN's tasks are the sorted module types
            assert params["steps"]["encoding"]["mask"][t].sum() == 0
            # ... and the step network adds nothing to it.
            m = pred.models["add"]
            rows = jaxlat.encode_frame(frame[frame["module"] == "add"], "add")
            bare = {k: v for k, v in m.params.items() if k != "steps"}
            np.testing.assert_array_equal(predict_batch(m.regressor, m.params, rows), predict_batch(m.regressor, bare, rows))
        out = pred.predict(frame)
        pred.save(tmp_path / regressor)
        again = jaxlat.LatencyPredictor.load(tmp_path / regressor).predict(frame)
        np.testing.assert_array_equal(again["latency_ms"].to_numpy(), out["latency_ms"].to_numpy())
        f = pred.latency_fn("conv2d")
        base = dict(profilers.make_config("conv2d", cin=32, cout=64, h=28, w=28, kernel=3).values)
        g = jax.grad(lambda c, f=f, base=base: f({**base, "cout": c}).sum())(jnp.float32(64.0))
        assert np.isfinite(g) and g > 0
        tuned = jaxlat.fine_tuned(pred, frame[frame["module"] == "conv2d"].head(40), steps=5)
        assert np.all(np.isfinite(tuned.predict(frame)["latency_ms"].to_numpy()))
