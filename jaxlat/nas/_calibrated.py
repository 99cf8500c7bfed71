"""A NAS penalty's latency on the machine a predictor was calibrated to.

`expected_latency_fn` is the predictor's expected latency of a relaxed space; a calibration
(`jaxlat.transfer.calibrate`) maps it onto the machine that will run the network, in one of two
forms that stay pure JAX, so the penalty keeps its gradient:

- log-affine (`reuse`, `affine`): ms = exp(a) * expected ms ** b;
- recomposed (`recompose`): the calibrated predictor's own expected latency (its composition
  correction refitted on the machine).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import jax

from ..transfer._calibration import Calibration, log_affine_ms
from ._latency import expected_latency_fn

if TYPE_CHECKING:
    from profilers.spaces import MobileSpace, Nb201Space

    from .._predictor import LatencyPredictor

#: `(probs [n_layers, n_ops], widths [n_widths] or None) -> expected latency (ms)`, pure JAX.
ExpectedLatencyFn = Callable[[jax.Array, jax.Array | None], jax.Array]


def log_affine_latency_fn(latency_ms: ExpectedLatencyFn, log_scale: float, power: float) -> ExpectedLatencyFn:
    """`latency_ms` mapped by `exp(log_scale) * ms ** power` (`jaxlat.transfer.log_affine_ms`).

    Args:
      latency_ms: an expected-latency function (`expected_latency_fn`).
      log_scale: `a`.
      power: `b`.

    Returns:
      The mapped function, with the same arguments; differentiable where `latency_ms` is.
    """

    def mapped(probs: jax.Array, widths: jax.Array | None = None) -> jax.Array:
        return log_affine_ms(latency_ms(probs, widths), log_scale, power)

    return mapped


def calibrated_latency_fn(
    predictor: LatencyPredictor,
    space: MobileSpace | Nb201Space,
    calibration: Calibration | None,
    *,
    latency_ms: ExpectedLatencyFn | None = None,
) -> ExpectedLatencyFn:
    """The expected latency of `space` on the machine `predictor` was calibrated to.

    Args:
      predictor: the uncalibrated `LatencyPredictor`.
      space: a `profilers.spaces` space.
      calibration: from `jaxlat.transfer.calibrate(predictor, ...)`; None: the predictor as is.
      latency_ms: `expected_latency_fn(predictor, space)` where the caller has it already.

    Returns:
      `latency_ms(probs, widths) -> ms`, pure JAX (grad- and vmap-able).

    Raises:
      ValueError: the calibration's method reads item features (`adaproxy`, `scratch`,
        learned corrections), which no JAX latency of the relaxed space can carry.
    """
    if calibration is not None and calibration.method == "recompose":
        return expected_latency_fn(calibration.predictor(), space)
    base = latency_ms if latency_ms is not None else expected_latency_fn(predictor, space)
    if calibration is None:
        return base
    log_affine = calibration.log_affine
    if log_affine is None:
        raise ValueError(
            f"calibrated_latency_fn: method {calibration.method!r} is not a map of the predicted "
            "latency; calibrate with methods among 'reuse', 'affine', 'recompose'"
        )
    return log_affine_latency_fn(base, *log_affine)
