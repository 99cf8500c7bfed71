"""Gradient-based NAS: the relaxed latency through the predictor, penalties, the search driver."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import profilers
from jaxlat._shipped import reference_predictor
from jaxlat.nas import (
    SearchConfig,
    digits_data,
    expected_latency_fn,
    fbnet_penalty,
    init_supernet,
    no_penalty,
    one_hot,
    proxyless_penalty,
    search,
    tfnas_penalty,
)
from jaxlat.nas._search import _STEPS, ArchParams, _adam, make_steps
from profilers.spaces import FBNET, NB201, MobileArch

from .helpers import TINY_SPACE

#: A small space: 3 layers in 2 stages, 3 candidates, searchable widths.
TINY = TINY_SPACE


@pytest.fixture(scope="module")
def predictor():
    return reference_predictor()


@pytest.fixture(scope="module")
def tiny_latency(predictor):
    """One expected-latency function for the module, so that its searches share compiled steps."""
    return expected_latency_fn(predictor, TINY)


#: The tests' search settings (one shape for every step: the steps compile once per penalty form).
CFG = SearchConfig(epochs=2, warmup_epochs=1, batch_size=32, train_resolution=16)


@pytest.mark.parametrize("space", [TINY, NB201, FBNET], ids=lambda s: s.name)
def test_space_records_equal_what_capture_torch_sees(space):
    for seed in range(2):
        arch = space.random_arch(seed)
        rec = space.record(arch)
        cap = profilers.capture_torch(space.torch_model(arch), torch.randn(*space.input_shape()), name="x")
        assert [(m.op, m.config.key) for m in rec.modules] == [(m.op, m.config.key) for m in cap.modules]
        assert sorted(map(tuple, (vars(u).values() for u in rec.unmapped))) == sorted(
            map(tuple, (vars(u).values() for u in cap.unmapped)))


def test_published_encodings():
    text = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    arch = NB201.parse(text)
    assert NB201.encode(arch) == text and len(NB201.all_archs()) == 5**6
    with pytest.raises(ValueError, match="is not a NAS-Bench-201 cell"):
        NB201.parse("|nor_conv_3x3~0|+|conv_9x9~0|none~1|+|none~0|none~1|none~2|")
    fb = FBNET.arch_from_indices([8] * 22)
    assert len(FBNET.layers()) == 22 and fb.ops == ("skip",) * 22
    # Skips that change shape are 1x1 projections (conv, BN, ReLU); the rest are identities.
    assert sum(m.config.module == "conv2d" for m in FBNET.record(fb).modules) == 1 + 6 + 1
    with pytest.raises(ValueError, match="op indices must lie in 0..8"):
        FBNET.arch_from_indices([9] * 22)


@pytest.mark.parametrize("space", [TINY, NB201], ids=lambda s: s.name)
def test_relaxed_latency_at_one_hot_equals_the_derived_record(predictor, space):
    f = jax.jit(expected_latency_fn(predictor, space))
    arch = space.random_arch(3)
    widths = None
    if isinstance(arch, MobileArch):  # widths whose channels are whole multiples of 8
        arch = MobileArch(arch.ops, tuple(round(c * w / 8) * 8 / c for c, w in zip(space.base_channels[1:], arch.widths)))
        widths = jnp.asarray(arch.widths)
    got = float(f(one_hot(space, arch), widths))
    want = predictor.predict_model(space.record(arch))["latency_ms"]
    assert got == pytest.approx(want, rel=1e-5)


def test_latency_gradients_match_finite_differences(predictor):
    f = expected_latency_fn(predictor, TINY)

    @jax.jit
    def lat(logits, widths):
        return f(jax.nn.softmax(logits, axis=-1), widths)

    logits = jax.random.normal(jax.random.key(0), (3, 3))
    widths = jnp.array([0.9, 1.1])
    g_logits, g_widths = jax.grad(lat, argnums=(0, 1))(logits, widths)
    assert np.abs(np.asarray(g_widths)).min() > 0  # width has a real gradient

    def matches(grad, f0, f_plus, f_minus, eps):
        # The regressors are ReLU networks: piecewise linear, so the gradient is the slope of
        # the piece the point lies on; a kink inside one of the two one-sided intervals spoils
        # only that side's difference.
        sides = ((f_plus - f0) / eps, (f0 - f_minus) / eps)
        return any(abs(float(grad) - float(s)) <= 3e-2 * abs(float(grad)) + 1e-4 for s in sides), (float(grad), sides)

    eps, f0 = 1e-3, lat(logits, widths)
    for (i, j) in [(0, 0), (1, 1), (2, 2), (1, 0)]:
        d = jnp.zeros_like(logits).at[i, j].set(eps)
        ok, info = matches(g_logits[i, j], f0, lat(logits + d, widths), lat(logits - d, widths), eps)
        assert ok, info
    for s in range(2):
        d = jnp.zeros_like(widths).at[s].set(eps)
        ok, info = matches(g_widths[s], f0, lat(logits, widths + d), lat(logits, widths - d), eps)
        assert ok, info
    # Wider is slower, more expansion is slower than a skip.
    assert (np.asarray(g_widths) > 0).all()


def test_penalties():
    ce, lat = jnp.asarray(0.5), jnp.asarray(4.0)
    assert float(proxyless_penalty(0.1)(ce, lat)) == pytest.approx(0.9)
    assert float(tfnas_penalty(2.0, 5.0)(ce, lat)) == pytest.approx(0.5 + 2.0 * 0.2)
    assert float(fbnet_penalty(0.2, 0.6)(ce, lat)) == pytest.approx(0.5 * 0.2 * np.log(4000.0) ** 0.6, rel=1e-5)
    assert float(no_penalty()(ce, lat)) == 0.5
    both = proxyless_penalty(0.1) + tfnas_penalty(2.0, 5.0)
    assert float(both(ce, lat)) == pytest.approx(0.5 + 0.4 + 0.4)
    # Settings given at call time (as a jitted step passes them) replace the factory's.
    assert float(both(ce, lat, {"proxyless.lam": 0.2, "tfnas.lam": 1.0, "tfnas.target_ms": 2.0})) == pytest.approx(
        0.5 + 0.8 + 1.0)
    assert (proxyless_penalty(0.1) + tfnas_penalty(1, 1)).fn is both.fn  # one form: one compiled step
    with pytest.raises(ValueError, match="two penalties named 'proxyless'"):
        proxyless_penalty(0.1) + proxyless_penalty(0.2)
    with pytest.raises(ValueError, match="lam=-1 must be >= 0"):
        proxyless_penalty(-1)


def _steps(latency_ms, penalty):
    from flax import nnx

    model = init_supernet(TINY, 0)
    _, params = nnx.split(model)
    wopt, aopt = _adam(CFG.weight_lr), _adam(CFG.arch_lr)
    arch = ArchParams(jax.random.normal(jax.random.key(1), (3, 3)), jnp.zeros((2,)))
    w_step, a_step = make_steps(TINY, model, penalty, latency_ms, CFG, wopt, aopt)
    return params, arch, wopt.init(params), aopt.init(arch), w_step, a_step


def test_lambda_zero_is_plain_accuracy_training(tiny_latency):
    data = digits_data(CFG.train_resolution)
    x, y = data.x_arch[:CFG.batch_size], data.y_arch[:CFG.batch_size]
    out = {}
    for name, pen in {"zero": proxyless_penalty(0.0), "none": no_penalty(), "strong": proxyless_penalty(1.0)}.items():
        params, arch, ws, as_, w_step, a_step = _steps(tiny_latency, pen)
        key = jax.random.key(2)
        for _ in range(3):
            arch, as_, m = a_step(params, arch, as_, x, y, key, 1.0)
        out[name] = arch
    np.testing.assert_allclose(out["zero"].logits, out["none"].logits, rtol=0, atol=1e-7)
    np.testing.assert_allclose(out["zero"].width_u, out["none"].width_u, rtol=0, atol=1e-7)
    assert np.abs(np.asarray(out["strong"].logits - out["none"].logits)).max() > 1e-2  # the penalty does act


def test_penalty_settings_do_not_recompile_the_steps(tiny_latency):
    data = digits_data(CFG.train_resolution)
    x, y = data.x_arch[:CFG.batch_size], data.y_arch[:CFG.batch_size]
    before = len(_STEPS.entries)
    archs = []
    for pen in (tfnas_penalty(1.0, 2.0), tfnas_penalty(3.0, 0.5)):
        params, arch, _, as_, _, a_step = _steps(tiny_latency, pen)
        archs.append(a_step(params, arch, as_, x, y, jax.random.key(0), 1.0)[0])
    arch_steps = [v for k, _, v in _STEPS.entries if k[0] == "arch" and tfnas_penalty(1, 1).fn in k]
    assert len(arch_steps) == 1 and arch_steps[0]._cache_size() == 1  # one compile for both settings
    assert len(_STEPS.entries) <= before + 2
    # ...and the settings still act: a tighter target moves the logits differently.
    assert np.abs(np.asarray(archs[0].logits - archs[1].logits)).max() > 1e-3


def test_search_runs_and_a_strong_penalty_finds_a_faster_architecture(predictor, tiny_latency):
    cfg = dataclasses.replace(CFG, epochs=4)  # the epochs are not part of the compiled steps
    free = search(TINY, predictor, no_penalty(), config=cfg, latency_ms=tiny_latency, progress=False)
    tight = search(TINY, predictor, proxyless_penalty(5.0), config=cfg, latency_ms=tiny_latency, progress=False)
    assert tight.predicted_latency_ms < free.predicted_latency_ms
    for r in (free, tight):
        assert len(r.history) == 4 and 0.0 <= r.supernet_accuracy <= 1.0
        assert r.arch.ops and all(op in TINY.ops for op in r.arch.ops)
        TINY.check(r.arch)
        assert r.predicted_latency_ms == pytest.approx(predictor.predict_model(TINY.record(r.arch))["latency_ms"])


def test_fit_widths_moves_the_predicted_latency_to_the_target(predictor):
    from jaxlat.nas import fit_widths

    arch = MobileArch(("k5_e3", "k3_e1", "k5_e3"), (1.0, 1.0))

    def ms(records):
        return predictor.predict_models(records)["latency_ms"].to_numpy()

    start = float(ms([TINY.record(arch)])[0])
    for target in (start * 0.8, start * 1.25):
        fitted, got = fit_widths(TINY, arch, ms, target)
        assert fitted.ops == arch.ops and abs(np.log(got / target)) < abs(np.log(start / target))
        assert got == pytest.approx(float(ms([TINY.record(fitted)])[0]))
        TINY.check(fitted)
    with pytest.raises(ValueError, match="target_ms=0 must be > 0"):
        fit_widths(TINY, arch, ms, 0)


def test_fit_to_target_changes_the_most_probable_ops_when_widths_cannot_reach_the_target(predictor):
    from jaxlat.nas import fit_to_target, fit_widths

    def ms(records):
        return predictor.predict_models(records)["latency_ms"].to_numpy()

    arch = MobileArch(("k3_e1", "skip", "skip"), (1.0, 1.0))
    # Layer 1 nearly chose k5_e3; layer 2 was sure of skip.
    probs = np.array([[0.9, 0.05, 0.05], [0.02, 0.49, 0.49], [0.02, 0.03, 0.95]])
    _, widths_only = fit_widths(TINY, arch, ms, 1.0)
    target = 2.0 * widths_only  # beyond what widths alone reach
    one, got_one = fit_to_target(TINY, probs, arch, ms, target, max_moves=1)
    assert one.ops[0] == "k3_e1" and one.ops[1] != "skip" and one.ops[2] == "skip"  # the near-tie goes first
    fitted, got = fit_to_target(TINY, probs, arch, ms, target)
    TINY.check(fitted)
    assert got == pytest.approx(float(ms([TINY.record(fitted)])[0]))
    assert abs(np.log(got / target)) <= abs(np.log(got_one / target)) < abs(np.log(widths_only / target))
    # Reachable by widths alone within the tolerance: the ops stay.
    near = float(ms([TINY.record(arch)])[0]) * 1.01
    fitted, got = fit_to_target(TINY, probs, arch, ms, near)
    assert fitted.ops == arch.ops and abs(got / near - 1) <= 0.03
    with pytest.raises(ValueError, match="probs has shape"):
        fit_to_target(TINY, probs[:2], arch, ms, near)
