"""One training loop for gradient-trained regressors (MLP, MEDN): AdamW, warm-up + cosine
decay, minibatches from a seeded permutation, early stopping on a validation loss.

Deterministic on CPU for a given key: the permutation comes from the key, and each epoch is
one compiled `lax.scan` over its minibatches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


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
    """

    epochs: int = 300
    batch_size: int = 256
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    warmup_frac: float = 0.05
    patience: int = 40
    eval_every: int = 1


Batch = tuple[Any, ...]


def fit_with_adamw(
    loss_fn: Callable[[Any, Batch], jax.Array],
    params: Any,
    train: Batch,
    *,
    key: jax.Array,
    config: TrainConfig,
    val: Batch | None = None,
    progress: Callable[[int, float, float], None] | None = None,
) -> Any:
    """Minimize `loss_fn(params, batch)` over minibatches of `train` (a tuple of arrays).

    Returns the parameters with the best validation loss (the last ones without `val`).
    """
    n = int(train[0].shape[0])
    bs = min(config.batch_size, n)
    steps_per_epoch = max(1, n // bs)
    total = steps_per_epoch * config.epochs
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, max(1, int(config.warmup_frac * total)), max(2, total), config.learning_rate * 1e-2
    )
    opt = optax.adamw(schedule, weight_decay=config.weight_decay)
    opt_state = opt.init(params)
    train = tuple(jnp.asarray(a) for a in train)

    @jax.jit
    def epoch(params, opt_state, key):
        perm = jax.random.permutation(key, n)[: steps_per_epoch * bs].reshape(steps_per_epoch, bs)

        def step(carry, idx):
            p, s = carry
            loss, grads = jax.value_and_grad(loss_fn)(p, tuple(a[idx] for a in train))
            updates, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), perm)
        return params, opt_state, losses.mean()

    val_loss = jax.jit(loss_fn) if val is not None else None
    val = tuple(jnp.asarray(a) for a in val) if val is not None else None
    best, best_loss, since = params, np.inf, 0
    for e in range(config.epochs):
        key, sub = jax.random.split(key)
        params, opt_state, train_loss = epoch(params, opt_state, sub)
        if val is None:
            best = params
            continue
        if (e + 1) % config.eval_every:
            continue
        vl = float(val_loss(params, val))
        if progress is not None:
            progress(e, float(train_loss), vl)
        if vl < best_loss:
            best, best_loss, since = params, vl, 0
        else:
            since += config.eval_every
            if config.patience and since >= config.patience:
                break
    return best
