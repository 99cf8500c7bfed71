"""Fine-tuning a predictor's networks on module rows measured on another machine.

A per-type latency factor (`LatencyPredictor.with_type_scales`) moves every config of a type by
the same ratio; a new machine also differs in *how* latency depends on a config (a matrix unit
that speeds up large matmuls and not small ones, another cache size). `fine_tuned` fits the
network regressors' weights (MLP and MEDN heads; their standardization statistics, ranges
and roofline prior stay as trained) further on rows measured there, pulled toward their
starting values, with a per-type factor for every type:

    loss = mean |log predicted - log measured| + l2 * sum (theta - theta_start)^2

Regressors without network weights (ridge, roofline, tree ensembles) keep their parameters and
are moved by their factor only. `jaxlat.calibrate_machine` scores a fine-tuned candidate beside
the factor-only ones, out of fold, and keeps it only where it predicts held-out rows better.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._data import statistic_column
from ._predict import PredictorParams, module_outputs, padded_size
from ._predictor import _pad

if TYPE_CHECKING:
    import pandas as pd

    from ._predictor import LatencyPredictor


def _is_network(name: str) -> bool:
    return name == "mlp" or name.startswith("medn")


def trainable_keys(predictor: LatencyPredictor) -> tuple[str, ...]:
    """The keys of `predictor.params.regressors` that `fine_tuned` trains: those of MLP and MEDN
    heads (a shared MEDN's key, `"medn"`, once)."""
    keys = {h.key for m, h in predictor.heads.items() if _is_network(predictor.models[m].regressor.name)}
    return tuple(sorted(keys))


def _check_number(value: Any, name: str, *, integer: bool = False, positive: bool = True) -> None:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value > 0 if positive else value >= 0)
    if not ok:
        what = "an int" if integer else "a number"
        raise ValueError(f"{name}={value!r} is not valid: expected {what} {'>' if positive else '>='} 0")


def _padded(predictor: LatencyPredictor, frame: pd.DataFrame, column: str) -> dict[str, tuple[np.ndarray, ...]]:
    """Per module type: features, row weights (0 on padding) and log labels, padded to a power
    of two (compiled steps are then shared between fits of similar size)."""
    out = {}
    for module, sub in frame.groupby("module", sort=True):
        if module not in predictor.heads:
            continue
        x = predictor._encode(str(module), sub, source="fine_tuned")
        rows = padded_size(len(x))
        y = np.log(sub[column].to_numpy(np.float64))
        xp, w, y = _pad(x, rows), _pad(np.ones(len(x)), rows), _pad(y, rows)
        out[str(module)] = (xp, w, y)
    return out


#: The keys of a network regressor's parameters that `fine_tuned` trains: its weights and a
#: device-aware MEDN's device vector; the others are statistics of its training data
#: (standardization, ranges, interval calibration, the roofline prior), which stay as they are.
WEIGHT_KEYS = ("layers", "model", "device_vec")


def split_weights(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`(weights, rest)` of one network regressor's parameters: the `WEIGHT_KEYS` entries (and
    a step network's, `params["steps"]["layers"]`) and everything else; `merge_weights` joins them.

    Examples:
      >>> w, rest = split_weights({"layers": [1], "x_scale": 2, "steps": {"layers": [3], "edges": 4}})
      >>> w, rest
      ({'layers': [1], 'steps': {'layers': [3]}}, {'x_scale': 2, 'steps': {'edges': 4}})
      >>> merge_weights(w, rest) == {"layers": [1], "x_scale": 2, "steps": {"layers": [3], "edges": 4}}
      True
    """
    weights = {k: v for k, v in params.items() if k in WEIGHT_KEYS}
    rest = {k: v for k, v in params.items() if k not in WEIGHT_KEYS}
    if isinstance(params.get("steps"), dict):
        steps_w, steps_rest = split_weights(params["steps"])
        weights["steps"], rest["steps"] = steps_w, steps_rest
    return weights, rest


def merge_weights(weights: dict[str, Any], rest: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `split_weights`."""
    out = {**rest, **weights}
    if isinstance(rest.get("steps"), dict):
        out["steps"] = merge_weights(weights.get("steps", {}), rest["steps"])
    return out


@functools.partial(jax.jit, static_argnames=("items", "steps", "learning_rate"))
def _fit(items, trainable, fixed, frozen, log_scale, data, *, steps: int, learning_rate: float, l2: float):
    """`steps` of Adam on (trainable network weights, per-type log shifts); returns them.
    `fixed`: the other parameters of the trainable regressors (`split_weights`)."""
    heads = dict(items)
    start = trainable
    n = sum(jnp.sum(w) for _, w, _ in data.values())
    opt = optax.adam(learning_rate)

    def loss(theta):
        weights, shift = theta
        reg = {k: merge_weights(v, fixed[k]) for k, v in weights.items()}
        params = PredictorParams({**frozen, **reg}, jnp.zeros(6, jnp.float32), shift)
        out = module_outputs(heads, params, {m: v[0] for m, v in data.items()})
        err = sum(jnp.sum(w * jnp.abs(out[m][:, 0] - y)) for m, (_, w, y) in data.items()) / n
        pull = sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(weights), jax.tree.leaves(start)))
        return err + l2 * pull

    def step(carry, _):
        theta, state = carry
        grads = jax.grad(loss)(theta)
        updates, state = opt.update(grads, state, theta)
        return (optax.apply_updates(theta, updates), state), None

    theta = (trainable, log_scale)
    (theta, _), _ = jax.lax.scan(step, (theta, opt.init(theta)), None, length=steps)
    return theta


def fine_tuned(
    predictor: LatencyPredictor,
    frame: pd.DataFrame,
    *,
    statistic: str | None = None,
    steps: int = 300,
    learning_rate: float = 1e-3,
    l2: float = 1e-2,
) -> LatencyPredictor:
    """A copy of `predictor` fitted further to measured module rows (see the module docstring).

    Args:
      predictor: the starting point (e.g. a shipped predictor of another machine).
      frame: measured module rows (a `profilers` dataset frame): the catalogue's fields and the
        latency column of `statistic`. Types with a host-only regressor (tree ensembles) are left
        as they are.
      statistic: the label column (`jaxlat.STATISTICS`); default the predictor's own.
      steps: full-batch Adam steps.
      learning_rate: Adam's step size.
      l2: weight of the squared distance of the network weights from their starting values.

    Returns:
      A new `LatencyPredictor` (same regressors and composition, other parameters and per-type
      factors); `predictor` is not changed.

    Raises:
      ValueError: a bad argument (naming it), a frame without the label column or with no row
        of a type the predictor predicts, or a config the catalogue refuses.
    """
    stat = predictor.statistic if statistic is None else statistic
    column = statistic_column(stat)
    _check_number(steps, "steps", integer=True)
    _check_number(learning_rate, "learning_rate")
    _check_number(l2, "l2", positive=False)
    if column not in frame.columns or "module" not in frame.columns:
        raise ValueError(f"frame: expected columns 'module' and {column!r} (statistic {stat!r})")
    y = frame[column].to_numpy(np.float64)
    if not np.all(np.isfinite(y) & (y > 0)):
        raise ValueError(f"frame[{column!r}]: every latency must be finite and > 0")
    data = _padded(predictor, frame, column)
    if not data:
        raise ValueError(f"frame: no rows of a module type the predictor predicts ({', '.join(predictor.modules)})")
    params = predictor.params
    keys = trainable_keys(predictor)
    parts = {k: split_weights(params.regressors[k]) for k in keys}
    trainable = {k: w for k, (w, _) in parts.items()}
    fixed = {k: rest for k, (_, rest) in parts.items()}
    frozen = {k: v for k, v in params.regressors.items() if k not in keys}
    shift = {m: jnp.asarray(params.log_scale[m]) for m in params.log_scale}
    items = tuple(sorted((m, h) for m, h in predictor.heads.items() if m in data))
    data = {m: tuple(jax.device_put(a) for a in v) for m, v in data.items()}
    reg, shift = _fit(items, trainable, fixed, frozen, shift, data, steps=int(steps),
                      learning_rate=float(learning_rate), l2=jnp.float32(l2))
    reg = {k: merge_weights(v, fixed[k]) for k, v in reg.items()}
    new = params._replace(regressors={**frozen, **reg}, log_scale=shift)
    return predictor.with_params(new)
