"""The search driver: alternate weight and architecture steps on a small real data set, with the
latency penalty computed by the predictor in pure JAX.

    result = search(space, predictor, proxyless_penalty(0.05), config=SearchConfig(epochs=30))
    result.arch                      # the derived architecture (argmax ops, rounded widths)
    space.record(result.arch)        # its architecture record; space.torch_model(result.arch) to measure

One epoch: for each batch of the weight split, a weight step (cross-entropy on Gumbel-softmax
samples of the architecture), then, after `warmup_epochs`, an architecture step on a batch of
the architecture split (the penalty of cross-entropy and expected latency). The Gumbel
temperature falls geometrically from `tau_start` to `tau_end`. The derived architecture takes
each layer's most likely op and rounds each stage's channels to the space's multiple.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from profilers.spaces import MobileArch, MobileSpace, Nb201Arch, Nb201Space

from ._latency import expected_latency_fn, one_hot, op_names
from ._penalties import Penalty
from ._supernet import MobileSupernet, channel_masks, init_supernet

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .._predictor import LatencyPredictor


class Data(NamedTuple):
    """Images NHWC float32 and integer labels, in three splits."""

    x_weights: np.ndarray
    y_weights: np.ndarray
    x_arch: np.ndarray
    y_arch: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits_data(resolution: int = 8, *, seed: int = 0, split: tuple[float, float] = (0.5, 0.25)) -> Data:
    """scikit-learn's handwritten digits (1,797 8x8 images, shipped inside the package: no
    download), scaled to [0, 1], upsampled to `resolution` (nearest), repeated to 3 channels,
    shuffled and split into weight, architecture and test sets."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("digits_data needs scikit-learn: pip install 'jaxlat[reference]'") from e
    if resolution < 8 or resolution % 8:
        raise ValueError(f"resolution={resolution} is not valid: expected a multiple of 8")
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    f = resolution // 8
    x = np.repeat(np.repeat(x, f, axis=1), f, axis=2)[..., None].repeat(3, axis=-1)
    y = d.target.astype(np.int32)
    idx = np.random.default_rng(seed).permutation(len(y))
    a, b = int(split[0] * len(y)), int((split[0] + split[1]) * len(y))
    parts = (idx[:a], idx[a:b], idx[b:])
    return Data(*(arr for p in parts for arr in (x[p], y[p])))


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Settings of a search.

    Attributes:
      epochs: passes over the weight split.
      warmup_epochs: epochs of weight steps only, before architecture steps start.
      batch_size: images per step (weight and architecture steps).
      weight_lr: Adam learning rate of the supernet weights.
      arch_lr: Adam learning rate of the architecture logits and widths.
      tau_start: initial Gumbel-softmax temperature...
      tau_end: ...reached at the last epoch (geometric decay).
      gumbel: architecture steps sample Gumbel noise (False: plain softmax of logits / tau).
      gumbel_weights: weight steps sample it too (default: they see the plain softmax, a stable
        mixture for the shared weights).
      width_softness: channels over which a width mask goes from 1 to 0.
      train_resolution: the digits' resolution for the supernet (latency uses the space's);
        8 is their own. Architecture steps cost about 5x weight steps on a CPU (XLA), so the
        defaults keep the supernet small: accuracy is the search's proxy, not its product.
      nb201_cells: cells per stage of an NAS-Bench-201 supernet (latency uses the space's 5).
      seed: initialization, batches and Gumbel noise.
    """

    epochs: int = 20
    warmup_epochs: int = 4
    batch_size: int = 32
    weight_lr: float = 3e-3
    arch_lr: float = 3e-2
    tau_start: float = 5.0
    tau_end: float = 0.2
    gumbel: bool = True
    gumbel_weights: bool = False
    width_softness: float = 1.0
    train_resolution: int = 8
    nb201_cells: int = 1
    seed: int = 0


class ArchParams(NamedTuple):
    """What the architecture steps learn: op logits `[n_layers, n_ops]` and unconstrained
    widths `[n_stages]` (width = low + (high - low) * sigmoid(u))."""

    logits: jax.Array
    width_u: jax.Array


@dataclasses.dataclass
class SearchResult:
    """The outcome of a search.

    Attributes:
      arch: the derived architecture.
      probs: final softmax of the logits `[n_layers, n_ops]`.
      widths: final width multipliers (empty when not searched).
      expected_latency_ms: the relaxed expected latency at the end (softmax, tau_end).
      predicted_latency_ms: the predictor's whole-model latency of the derived architecture.
      supernet_accuracy: accuracy of the supernet on the test split with the derived ops.
      history: one dict per epoch (tau, weight and arch cross-entropy, expected latency, loss).
      penalty: the penalty's name and settings.
      seconds: wall time of the search.
    """

    arch: MobileArch | Nb201Arch
    probs: np.ndarray
    widths: np.ndarray
    expected_latency_ms: float
    predicted_latency_ms: float
    supernet_accuracy: float
    history: list[dict[str, float]]
    penalty: dict[str, Any]
    seconds: float


def widths_of(space: MobileSpace | Nb201Space, u: jax.Array) -> jax.Array | None:
    if not isinstance(space, MobileSpace) or space.width_range is None:
        return None
    lo, hi = space.width_range
    return lo + (hi - lo) * jax.nn.sigmoid(u)


def _probs(logits: jax.Array, key: jax.Array, tau: float, gumbel: bool) -> jax.Array:
    if gumbel:
        logits = logits + jax.random.gumbel(key, logits.shape)
    return jax.nn.softmax(logits / tau, axis=-1)


def derive(space: MobileSpace | Nb201Space, logits: np.ndarray, widths: np.ndarray | None) -> MobileArch | Nb201Arch:
    """The discrete architecture: each layer's most likely op; widths snapped to the multiples
    the space rounds channels to."""
    ops = tuple(space.ops[int(i)] for i in np.argmax(np.asarray(logits), axis=-1))
    if isinstance(space, Nb201Space):
        return Nb201Arch(ops)
    if widths is None or space.width_range is None:
        return MobileArch(ops)
    m = space.channel_multiple
    snapped = []
    for base, w in zip(space.base_channels[1:], np.asarray(widths)):
        ch = max(m, int(round(base * float(w) / m)) * m)
        snapped.append(float(np.clip(ch / base, *space.width_range)))
    return MobileArch(ops, tuple(snapped))


def fit_widths(space: MobileSpace | Nb201Space, arch: MobileArch, latency_ms: Callable[[list], np.ndarray],
               target_ms: float, *, n_grid: int = 64) -> tuple[MobileArch, float]:
    """Scale all stage widths of a derived architecture by one factor so that its predicted
    latency comes closest to `target_ms` (the ops stay): the target form's last step, since the
    argmax of a relaxed search lands near, not on, the target.

    Args:
      space: a `MobileSpace` with a `width_range`.
      arch: the derived architecture.
      latency_ms: records -> predicted ms (e.g. `lambda r: predictor.predict_models(r)["latency_ms"]`).
      target_ms: the target.
      n_grid: factors tried (log-spaced over what the width range allows; snapped widths).

    Returns:
      `(arch with the new widths, its predicted latency)`; `arch` itself if it has no widths.
    """
    if not isinstance(arch, MobileArch) or space.width_range is None or not arch.widths:
        return arch, float(np.asarray(latency_ms([space.record(arch)]))[0])
    if not target_ms > 0:
        raise ValueError(f"target_ms={target_ms} must be > 0")
    w = np.asarray(arch.widths, float)
    lo, hi = space.width_range
    factors = np.geomspace(lo / w.max(), hi / w.min(), n_grid)
    cands, seen = [], set()
    for f in factors:
        a = derive(space, one_hot(space, arch), np.clip(w * f, lo, hi))
        if a.widths not in seen:
            seen.add(a.widths)
            cands.append(a)
    ms = np.asarray(latency_ms([space.record(a) for a in cands]), float)
    best = int(np.argmin(np.abs(np.log(ms / target_ms))))
    return cands[best], float(ms[best])


def _with_op(arch: MobileArch | Nb201Arch, layer: int, op: str) -> MobileArch | Nb201Arch:
    if isinstance(arch, MobileArch):
        return MobileArch(arch.ops[:layer] + (op,) + arch.ops[layer + 1:], arch.widths)
    return Nb201Arch(arch.edges[:layer] + (op,) + arch.edges[layer + 1:])


def fit_to_target(space: MobileSpace | Nb201Space, probs: np.ndarray, arch: MobileArch | Nb201Arch,
                  latency_ms: Callable[[list], np.ndarray], target_ms: float, *, tolerance: float = 0.03,
                  max_moves: int | None = None) -> tuple[MobileArch | Nb201Arch, float]:
    """The target form's derivation: the argmax of a relaxed search lands near, not on, the
    target (a layer whose skip probability is highest is dropped whole, however close the other
    ops came). First the widths (`fit_widths`); if the predicted latency is still more than
    `tolerance` (relative) from `target_ms`, single-layer op changes, each the one that brings the
    prediction closest to the target per unit of log-probability given up under `probs`, until
    it is within `tolerance` or no change gets closer; then the widths again.

    Args:
      space: a `MobileSpace` or the NAS-Bench-201 space.
      probs: `[n_layers, n_ops]` op probabilities of the search (`SearchResult.probs`).
      arch: the derived architecture (`SearchResult.arch`).
      latency_ms: records -> predicted ms, as for `fit_widths`.
      target_ms: the target.
      tolerance: relative distance from the target at which to stop.
      max_moves: most op changes (default: the number of layers).

    Returns:
      `(architecture, its predicted latency)`.
    """
    if not target_ms > 0:
        raise ValueError(f"target_ms={target_ms} must be > 0")
    probs = np.asarray(probs, float)
    ops = list(space.ops)
    n_layers = len(op_names(arch))
    if probs.shape != (n_layers, len(ops)):
        raise ValueError(f"probs has shape {probs.shape}: expected {(n_layers, len(ops))} (layers, ops)")
    log_p = np.log(np.clip(probs, 1e-12, None))
    close = np.log1p(tolerance)
    arch, ms = fit_widths(space, arch, latency_ms, target_ms)
    for _ in range(n_layers if max_moves is None else max_moves):
        dist = abs(np.log(ms / target_ms))
        if dist <= close:
            break
        cur = op_names(arch)
        moves = [(l, o) for l in range(len(cur)) for o in ops if o != cur[l]]
        cands = [_with_op(arch, l, o) for l, o in moves]
        got = np.asarray(latency_ms([space.record(a) for a in cands]), float)
        gain = dist - np.abs(np.log(got / target_ms))
        cost = np.array([log_p[l, ops.index(cur[l])] - log_p[l, ops.index(o)] for l, o in moves])
        score = np.where(gain > 0, gain / np.maximum(cost, 1e-3), -np.inf)
        best = int(np.argmax(score))
        if not np.isfinite(score[best]):
            break
        arch, ms = cands[best], float(got[best])
    if abs(np.log(ms / target_ms)) > close:
        arch, ms = fit_widths(space, arch, latency_ms, target_ms)
    return arch, ms


def _batches(n: int, size: int, rng: np.random.Generator):
    idx = rng.permutation(n)
    for s in range(0, n - size + 1, size):
        yield idx[s:s + size]


class _StepCache:
    """Jitted steps kept across calls, so that searches of one space that differ only in data,
    seeds or a penalty's settings compile once. Keys are hashable settings plus the model's
    `GraphDef` (compared by equality: it does not hash). Bounded: the oldest entry goes first."""

    def __init__(self, size: int = 16):
        self.size = size
        self.entries: list[tuple[tuple, Any, Any]] = []

    def get(self, key: tuple, graphdef: Any, build: Callable[[], Any]) -> Any:
        for k, g, value in self.entries:
            if k == key and g == graphdef:
                return value
        value = build()
        self.entries = [*self.entries, (key, graphdef, value)][-self.size:]
        return value


_STEPS = _StepCache()


def _forward_fn(space: MobileSpace | Nb201Space, graphdef: Any, max_channels: tuple[int, ...] | None, width_softness: float):
    def forward(params, arch, x, key, tau, gumbel):
        probs = _probs(arch.logits, key, tau, gumbel)
        widths = widths_of(space, arch.width_u)
        masks = channel_masks(space, max_channels, widths, width_softness) if max_channels else None
        return nnx.merge(graphdef, params)(x, probs, masks), probs, widths

    return forward


def _ce(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _build_weight_step(forward: Callable, gumbel_weights: bool, weight_opt: optax.GradientTransformation):
    @jax.jit
    def weight_step(params, opt_state, arch, x, y, key, tau):
        def loss(p):
            logits, _, _ = forward(p, arch, x, key, tau, gumbel_weights)
            return _ce(logits, y), logits

        (ce, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = weight_opt.update(grads, opt_state, params)
        acc = (logits.argmax(-1) == y).mean()
        return optax.apply_updates(params, updates), opt_state, {"ce": ce, "acc": acc}

    return weight_step


def _build_arch_step(forward: Callable, gumbel: bool, form: Callable, latency_ms: Callable,
                     arch_opt: optax.GradientTransformation):
    @jax.jit
    def arch_step(params, arch, opt_state, x, y, key, tau, settings):
        def loss(a):
            logits, probs, widths = forward(params, a, x, key, tau, gumbel)
            ce = _ce(logits, y)
            lat = latency_ms(probs, widths)
            return form(ce, lat, settings), (ce, lat)

        (total, (ce, lat)), grads = jax.value_and_grad(loss, has_aux=True)(arch)
        updates, opt_state = arch_opt.update(grads, opt_state, arch)
        return optax.apply_updates(arch, updates), opt_state, {"arch_ce": ce, "latency_ms": lat, "loss": total}

    return arch_step


def make_steps(space: MobileSpace | Nb201Space, model: nnx.Module, penalty: Penalty, latency_ms: Callable, config: SearchConfig,
               weight_opt: optax.GradientTransformation, arch_opt: optax.GradientTransformation):
    """The two jitted steps: `weight_step(params, opt_state, arch, x, y, key, tau)` and
    `arch_step(params, arch, opt_state, x, y, key, tau)`; both return new state and metrics.

    Compiled steps are reused across calls with the same space, supernet structure, step
    settings, optimizers, `latency_ms` function and penalty form: the penalty's settings
    (strength, target) are passed to the compiled step, not baked into it.
    """
    graphdef, _ = nnx.split(model)
    max_channels = model.max_channels if isinstance(model, MobileSupernet) else None
    forward = _forward_fn(space, graphdef, max_channels, config.width_softness)
    base = (space, max_channels, config.width_softness)
    weight_step = _STEPS.get(("weight", *base, config.gumbel_weights, weight_opt), graphdef,
                             lambda: _build_weight_step(forward, config.gumbel_weights, weight_opt))
    compiled = _STEPS.get(("arch", *base, config.gumbel, penalty.fn, latency_ms, arch_opt), graphdef,
                          lambda: _build_arch_step(forward, config.gumbel, penalty.fn, latency_ms, arch_opt))
    settings = {k: jnp.asarray(v, jnp.float32) for k, v in penalty.config.items()}

    def arch_step(params, arch, opt_state, x, y, key, tau):
        return compiled(params, arch, opt_state, x, y, key, tau, settings)

    return weight_step, arch_step


@functools.cache
def _adam(lr: float) -> optax.GradientTransformation:
    # One optimizer object per learning rate, so that compiled steps can be reused.
    return optax.adam(lr)


def search(
    space: MobileSpace | Nb201Space,
    predictor: LatencyPredictor,
    penalty: Penalty,
    *,
    data: Data | None = None,
    config: SearchConfig = SearchConfig(),
    latency_ms: Callable | None = None,
    progress: bool = True,
) -> SearchResult:
    """Search `space` for an architecture that trades accuracy for latency under `penalty`.

    Args:
      space: a `profilers.spaces` space; its run settings give the latency's settings.
      predictor: the `LatencyPredictor` of the target device.
      penalty: a `Penalty` (`fbnet_penalty`, `proxyless_penalty`, `tfnas_penalty`, `no_penalty`).
      data: images and labels (default: `digits_data(config.train_resolution)`).
      config: search settings.
      latency_ms: a prepared `expected_latency_fn(predictor, space)` (reuse it across searches).
      progress: print one line per epoch to stderr.
    """
    t0 = time.perf_counter()
    data = data if data is not None else digits_data(config.train_resolution, seed=config.seed)
    latency_ms = latency_ms if latency_ms is not None else expected_latency_fn(predictor, space)
    kwargs = {"cells": config.nb201_cells} if isinstance(space, Nb201Space) else {}
    model = init_supernet(space, config.seed, **kwargs)
    _, params = nnx.split(model)
    n_layers, n_ops = (len(space.layers()), len(space.ops)) if isinstance(space, MobileSpace) else (6, 5)
    n_widths = len(space.stages) if isinstance(space, MobileSpace) and space.width_range else 0
    arch = ArchParams(jnp.zeros((n_layers, n_ops)), jnp.zeros((n_widths,)))
    weight_opt, arch_opt = _adam(config.weight_lr), _adam(config.arch_lr)
    w_state, a_state = weight_opt.init(params), arch_opt.init(arch)
    weight_step, arch_step = make_steps(space, model, penalty, latency_ms, config, weight_opt, arch_opt)
    rng = np.random.default_rng(config.seed)
    key = jax.random.key(config.seed)
    history = []
    n_w, n_a = len(data.y_weights), len(data.y_arch)
    for epoch in range(config.epochs):
        frac = epoch / max(1, config.epochs - 1)
        tau = config.tau_start * (config.tau_end / config.tau_start) ** frac
        wm, am = [], []
        arch_batches = _batches(n_a, min(config.batch_size, n_a), rng)
        for idx in _batches(n_w, min(config.batch_size, n_w), rng):
            key, k1, k2 = jax.random.split(key, 3)
            params, w_state, m = weight_step(params, w_state, arch, data.x_weights[idx], data.y_weights[idx], k1, tau)
            wm.append(m)
            if epoch >= config.warmup_epochs:
                a_idx = next(arch_batches, None)
                if a_idx is None:
                    arch_batches = _batches(n_a, min(config.batch_size, n_a), rng)
                    a_idx = next(arch_batches)
                arch, a_state, m = arch_step(params, arch, a_state, data.x_arch[a_idx], data.y_arch[a_idx], k2, tau)
                am.append(m)
        rec = {"epoch": epoch, "tau": tau, "ce": float(np.mean([m["ce"] for m in wm])),
               "acc": float(np.mean([m["acc"] for m in wm]))}
        if am:
            rec.update({k: float(np.mean([m[k] for m in am])) for k in am[0]})
        history.append(rec)
        if progress:
            _log.info("epoch %d/%d: tau %.2f, train acc %.3f%s", epoch + 1, config.epochs, tau, rec["acc"],
                      f", expected latency {rec['latency_ms']:.3f} ms, loss {rec['loss']:.3f}" if am else "")
    probs = np.asarray(jax.nn.softmax(arch.logits / config.tau_end, axis=-1))
    widths = widths_of(space, arch.width_u)
    widths_np = np.asarray(widths) if widths is not None else np.zeros((0,))
    derived = derive(space, np.asarray(arch.logits), widths_np if widths is not None else None)
    exp_lat = float(latency_ms(jnp.asarray(probs), widths))
    pred_lat = float(predictor.predict_model(space.record(derived))["latency_ms"])
    acc = supernet_accuracy(space, model, params, derived, data.x_test, data.y_test, config)
    return SearchResult(derived, probs, widths_np, exp_lat, pred_lat, acc, history,
                        {"name": penalty.name, **dict(penalty.config)}, time.perf_counter() - t0)


def supernet_accuracy(space: MobileSpace | Nb201Space, model: nnx.Module, params: Any, arch: MobileArch | Nb201Arch, x: np.ndarray, y: np.ndarray,
                      config: SearchConfig) -> float:
    """Test accuracy of the supernet's weights with the ops and widths of `arch` (one-hot)."""
    graphdef, _ = nnx.split(model)
    probs = jnp.asarray(one_hot(space, arch))
    masks = None
    if isinstance(model, MobileSupernet) and space.width_range is not None:
        masks = channel_masks(space, model.max_channels, jnp.asarray(arch.widths), config.width_softness)
    return _accuracy(graphdef, params, x, y, probs, masks)


def _accuracy(graphdef: Any, params: Any, x: np.ndarray, y: np.ndarray, probs: jax.Array, masks: Any) -> float:
    apply = _STEPS.get(("apply",), graphdef, lambda: jax.jit(lambda p, x, probs, masks: nnx.merge(graphdef, p)(x, probs, masks)))
    logits = apply(params, jnp.asarray(x), probs, masks)
    return float((np.asarray(logits).argmax(-1) == y).mean())


def train_derived(space: MobileSpace | Nb201Space, arch: MobileArch | Nb201Arch, data: Data, *, epochs: int = 30, batch_size: int = 64, lr: float = 3e-3,
                  seed: int = 0, width_softness: float = 1.0) -> float:
    """Train the derived architecture alone (the supernet with its one-hot ops and widths, fresh
    weights) on the weight and architecture splits; returns its test accuracy."""
    kwargs = {"cells": space.cells} if isinstance(space, Nb201Space) else {}
    model = init_supernet(space, seed, **kwargs)
    graphdef, params = nnx.split(model)
    probs = jnp.asarray(one_hot(space, arch))
    masks = None
    if isinstance(model, MobileSupernet) and space.width_range is not None:
        masks = channel_masks(space, model.max_channels, jnp.asarray(arch.widths), width_softness)
    opt = _adam(lr)
    state = opt.init(params)
    step = _STEPS.get(("derived", opt), graphdef, lambda: _build_derived_step(graphdef, opt))
    x = np.concatenate([data.x_weights, data.x_arch])
    y = np.concatenate([data.y_weights, data.y_arch])
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for idx in _batches(len(y), min(batch_size, len(y)), rng):
            params, state = step(params, state, x[idx], y[idx], probs, masks)
    return _accuracy(graphdef, params, data.x_test, data.y_test, probs, masks)


def _build_derived_step(graphdef: Any, opt: optax.GradientTransformation):
    # The architecture (one-hot probs, masks) is an argument: one compile serves every arch of a space.
    @jax.jit
    def step(params, state, x, y, probs, masks):
        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, p)(x, probs, masks), y).mean()

        grads = jax.grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step
