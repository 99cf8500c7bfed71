"""One training loop for gradient-trained regressors (MLP, MEDN): AdamW, warm-up + cosine
decay, minibatches from a seeded permutation, early stopping on a validation loss.

Deterministic on CPU for a given key: the permutation comes from the key, and each epoch is
one compiled `lax.scan` over its minibatches.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm


@dataclasses.dataclass(frozen=True, slots=True)
class TrainConfig:
    """Optimization settings.

    Attributes:
      epochs: passes over the training data, at most.
      batch_size: rows per step (the last partial batch of an epoch is dropped).
      learning_rate: peak learning rate after warm-up.
      weight_decay: AdamW decoupled weight decay.
      warmup_frac: share of all steps spent warming up linearly from 0.
      patience: stop after this many epochs without a better validation loss (0: never).
      eval_every: epochs between validation checks.
      clip_norm: clip each step's gradient to this global norm before AdamW (None: no
        clipping, as before this setting existed).
      ema_decay: keep an exponential moving average of the parameters, updated after every
        step with this decay and debiased as Adam's moments are. At each validation check
        the parameters and their average are both scored and the better one competes for
        the best epoch, so averaging never loses on validation; without validation rows the
        average is returned once the fit has run three of its time constants
        (`3 / (1 - ema_decay)` steps), the parameters before that (a short fit's average
        still holds its start). None: no average.
    """

    epochs: int = 300
    batch_size: int = 256
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    warmup_frac: float = 0.05
    patience: int = 40
    eval_every: int = 1
    clip_norm: float | None = None
    ema_decay: float | None = 0.999

    def __post_init__(self):
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay={self.ema_decay!r} is not valid: expected a number in (0, 1), or None")


Batch = tuple[Any, ...]


class LossFn(Protocol):
    """A training loss, hashable and equal across fits with the same settings (a frozen
    dataclass), so that the compiled epoch is reused: data and constants are arguments.

    Args:
      params: the parameters being trained.
      batch: a minibatch, rows of each array of `train`.
      aux: arrays every minibatch shares (statistics, lookup tables), not indexed by rows.

    Returns:
      The scalar loss.
    """

    def __call__(self, params: Any, batch: Batch, aux: Batch) -> jax.Array: ...


def _schedule(hyper: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """Linear warm-up from 0 to the peak, then cosine decay to the end value (optax's
    `warmup_cosine_decay_schedule`), from `hyper = [peak, warmup_steps, total_steps, end]` as
    data, so a new schedule needs no new compilation."""
    peak, warmup, total, end = hyper[0], hyper[1], hyper[2], hyper[3]

    def lr(count):
        count = jnp.asarray(count, jnp.float32)
        warm = peak * jnp.clip(count, 0.0, warmup) / jnp.maximum(warmup, 1.0)
        decay_steps = jnp.maximum(total - warmup, 1.0)
        t = jnp.minimum(jnp.maximum(count - warmup, 0.0), decay_steps)
        alpha = jnp.where(peak == 0, 0.0, end / jnp.where(peak == 0, 1.0, peak))
        cos = peak * ((1 - alpha) * 0.5 * (1 + jnp.cos(jnp.pi * t / decay_steps)) + alpha)
        return jnp.where(count < warmup, warm, cos)

    return lr


def _optimizer(hyper: jax.Array, weight_decay: float, clip_norm: float | None = None) -> optax.GradientTransformation:
    adamw = optax.adamw(_schedule(hyper), weight_decay=weight_decay)
    return adamw if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), adamw)


@functools.partial(jax.jit, static_argnames=("loss_fn", "batch_size", "weight_decay", "clip_norm", "ema_decay"))
def _epoch(loss_fn: LossFn, params, opt_state, key, train: Batch, aux: Batch, hyper, *, batch_size: int,
           weight_decay: float, clip_norm: float | None = None, ema=None, ema_decay: float | None = None):
    """One pass over `train` in minibatches of a seeded permutation: a compiled `lax.scan`.
    With `ema_decay`, `ema` (the moving average of the parameters) is updated after each step
    and returned (else returned as given)."""
    n = train[0].shape[0]
    steps = max(1, n // batch_size)
    opt = _optimizer(hyper, weight_decay, clip_norm)
    perm = jax.random.permutation(key, n)[: steps * batch_size].reshape(steps, batch_size)

    def step(carry, idx):
        p, s, avg = carry
        loss, grads = jax.value_and_grad(loss_fn)(p, tuple(a[idx] for a in train), aux)
        updates, s = opt.update(grads, s, p)
        p = optax.apply_updates(p, updates)
        if ema_decay is not None:
            avg = (jax.tree.map(lambda a, b: ema_decay * a + (1 - ema_decay) * b, avg[0], p), avg[1] + 1)
        return (p, s, avg), loss

    (params, opt_state, ema), losses = jax.lax.scan(step, (params, opt_state, ema), perm)
    return params, opt_state, ema, losses.mean()


def averaged_enough(steps: int, decay: float) -> bool:
    """Whether a debiased moving average over `steps` steps has forgotten its start: at least
    three time constants (`1 / (1 - decay)` steps) long."""
    return steps * (1 - decay) >= 3


def _debiased(ema, decay: float):
    """The moving average `(sum, steps)` started at zero, divided by `1 - decay ** steps`."""
    acc, steps = ema
    return jax.tree.map(lambda a: a / (1 - decay ** steps.astype(a.dtype)), acc)


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _loss(loss_fn: LossFn, params, batch: Batch, aux: Batch):
    return loss_fn(params, batch, aux)


def fit_with_adamw(
    loss_fn: LossFn,
    params: Any,
    train: Batch,
    *,
    key: jax.Array,
    config: TrainConfig,
    val: Batch | None = None,
    aux: Batch = (),
    progress: Callable[[int, float, float], None] | None = None,
) -> Any:
    """Minimize `loss_fn(params, batch, aux)` over minibatches of `train` (a tuple of arrays).

    The epoch is compiled once per (loss, shapes, batch size, weight decay) and reused by later
    fits: the data, the schedule and `aux` are its arguments.

    Returns the parameters (or, with `config.ema_decay`, their moving average) with the best
    validation loss; without `val`, the last ones (their average once `averaged_enough`). A
    non-finite validation loss (divergence) ends the fit there.
    """
    n = int(train[0].shape[0])
    bs = min(config.batch_size, n)
    steps_per_epoch = max(1, n // bs)
    total = steps_per_epoch * config.epochs
    # device_put, not jnp.asarray: on host data jnp.asarray compiles a program per shape.
    hyper = jax.device_put(np.asarray([config.learning_rate, max(1, int(config.warmup_frac * total)), max(2, total),
                                       config.learning_rate * 1e-2], np.float32))
    opt_state = _optimizer(hyper, config.weight_decay, config.clip_norm).init(params)
    train = tuple(jax.device_put(a) for a in train)
    aux = tuple(jax.device_put(a) for a in aux)
    val = tuple(jax.device_put(a) for a in val) if val is not None else None
    best, best_loss, since = params, np.inf, 0
    ema = (jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.int32)) if config.ema_decay is not None else None
    # A progress bar on a terminal only (disable=None), gone when the fit ends.
    for e in tqdm(range(config.epochs), desc="epochs", unit="epoch", leave=False, disable=None):
        key, sub = jax.random.split(key)
        params, opt_state, ema, train_loss = _epoch(loss_fn, params, opt_state, sub, train, aux, hyper,
                                                    batch_size=bs, weight_decay=config.weight_decay,
                                                    clip_norm=config.clip_norm, ema=ema, ema_decay=config.ema_decay)
        if val is None:
            ready = ema is not None and averaged_enough((e + 1) * steps_per_epoch, config.ema_decay)
            best = _debiased(ema, config.ema_decay) if ready else params
            continue
        if (e + 1) % config.eval_every:
            continue
        averaged = None if ema is None else _debiased(ema, config.ema_decay)
        # The parameters and their average, whichever validates better.
        scored = [(float(_loss(loss_fn, c, val, aux)), c) for c in (params, averaged) if c is not None]
        vl, current = min(scored, key=lambda t: t[0] if np.isfinite(t[0]) else np.inf)
        if progress is not None:
            progress(e, float(train_loss), vl)
        if not np.isfinite(vl):  # diverged: nothing later can beat the best so far
            break
        if vl < best_loss:
            best, best_loss, since = current, vl, 0
        else:
            since += config.eval_every
            if config.patience and since >= config.patience:
                break
    return best


def fit_members(
    loss_fn: LossFn,
    init: Callable[[jax.Array], Any],
    members: int,
    train: Batch,
    *,
    key: jax.Array,
    config: TrainConfig,
    val: Batch | None = None,
) -> Any:
    """`members` models, each `init(init_key)` fitted by `fit_with_adamw` from its own seeds
    (the first from `key`, member `i` from `fold_in(key, 1000 + i)`), as host arrays; with
    more than one, every leaf stacked along a leading members axis (an ensemble)."""
    trained = []
    for i in range(members):
        init_key, train_key = jax.random.split(key if i == 0 else jax.random.fold_in(key, 1000 + i))
        params = fit_with_adamw(loss_fn, init(init_key), train, key=train_key, config=config, val=val)
        trained.append(jax.tree.map(np.asarray, params))
    return trained[0] if members == 1 else jax.tree.map(lambda *a: np.stack(a), *trained)
