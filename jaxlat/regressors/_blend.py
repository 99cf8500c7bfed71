"""A weighted geometric mean of two fitted regressors of one module type: `blend_regressor`.

    mu(x) = (1 - weight) * mu_first(x) + weight * mu_second(x)          (log ms)

`jaxlat calibrate` blends a base predictor's model of a type (carried from another machine and
fine-tuned) with a piecewise roofline fitted on this machine's rows of that type
(`piecewise_roofline_regressor`), the weight chosen on held-out rows. The weight is a learned
value (a float leaf of the parameters, so `jax.grad` reaches it; read clipped to [0, 1]); the
parts' parameters are kept whole, a MEDN part with its own copy of the network's weights (a
gradient step on the predictor's shared MEDN does not reach it).

A blend is not fitted from rows (its parts are); its configuration names the parts, so a
saved predictor rebuilds it from the registry.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._base import Regressor
from ._medn import TaskPredict


@dataclasses.dataclass(frozen=True)
class BlendPredict:
    """`predict(params, x)` of a blend of `parts` (hashable by value: equal blends share their
    compiled programs)."""

    parts: tuple[Any, Any]

    def __call__(self, params, x):
        a = self.parts[0](params["parts"][0], x)
        b = self.parts[1](params["parts"][1], x)
        w = jnp.clip(params["weight"], 0.0, 1.0)  # a gradient step may carry it out of [0, 1]
        mu = (1.0 - w) * a[0] + w * b[0]
        # The interval: the parts' spreads mixed by the same weight.
        log_sigma = jnp.log((1.0 - w) * jnp.exp(a[1]) + w * jnp.exp(b[1]))
        return jnp.stack([mu, log_sigma])


def _fit(*args, **kwargs):
    raise TypeError("a blend is not fitted from rows; fit its parts and join them with `blend_params`")


def blend_regressor(first: Regressor, second: Regressor, specs: Sequence[Mapping[str, Any]]) -> Regressor:
    """The blend of two fitted regressors' `predict`s (`specs`: each part's registry name and
    configuration, `{"regressor": ..., "config": ...}`, what loading rebuilds it from)."""
    if len(specs) != 2:
        raise ValueError(f"blend: {len(specs)} part specs given, expected 2")
    if not (first.jittable and second.jittable):
        raise ValueError(f"blend: both parts must be JAX regressors, got {first.name} and {second.name}")
    return Regressor(
        "blend",
        _fit,
        BlendPredict((first.predict, second.predict)),
        differentiable=first.differentiable and second.differentiable,
        config={"parts": [dict(s) for s in specs]},
    )


def part_spec(reg: Regressor) -> dict[str, Any]:
    """What rebuilds a fitted regressor from the registry: its name and configuration (a MEDN
    task view: `medn`, with its task's name and index)."""
    if isinstance(reg.predict, TaskPredict):
        return {"regressor": "medn", "config": {**reg.config, "task_index": int(reg.predict.task)}}
    return {"regressor": reg.name, "config": dict(reg.config)}


def blend_params(first: Any, second: Any, weight: float) -> dict[str, Any]:
    """Parameters of a blend: the parts' and `weight` (in [0, 1], the second part's share)."""
    w = float(weight)
    if not (math.isfinite(w) and 0.0 <= w <= 1.0):
        raise ValueError(f"weight={weight!r} is not valid: expected a number in [0, 1]")
    return {"parts": [first, second], "weight": np.float32(w)}
