"""Latency penalties as loss terms: `loss = penalty(ce, latency_ms)`.

Three published forms, each a factory returning a `Penalty` (a named pure function):

- FBNet (Wu et al., 2019): multiplicative, `ce * alpha * log(latency)^beta`. The latency inside
  the log is in microseconds, so the log stays positive for any latency above 1 us.
- ProxylessNAS (Cai et al., 2019): additive, `ce + lam * E[latency_ms]`.
- TF-NAS (Hu et al., 2020): a target, `ce + lam * |E[latency_ms] / target_ms - 1|`.

`no_penalty()` is plain accuracy training. Penalties compose: `a + b` adds their latency terms
(`(a + b)(ce, lat) = a(ce, lat) + b(ce, lat) - ce`, for additive forms).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp


class Penalty(NamedTuple):
    """A loss term: `fn(ce, latency_ms) -> loss`, with its name and settings (for reports)."""

    name: str
    fn: Callable[[Any, Any], Any]
    config: Mapping[str, float] = {}

    def __call__(self, ce, latency_ms):
        return self.fn(ce, latency_ms)

    def __add__(self, other: Penalty) -> Penalty:
        return Penalty(f"{self.name}+{other.name}", lambda ce, lat: self.fn(ce, lat) + other.fn(ce, lat) - ce,
                       {**{f"{self.name}.{k}": v for k, v in self.config.items()},
                        **{f"{other.name}.{k}": v for k, v in other.config.items()}})


def no_penalty() -> Penalty:
    """Plain accuracy training: the latency does not enter the loss."""
    return Penalty("none", lambda ce, lat: ce)


def fbnet_penalty(alpha: float = 0.2, beta: float = 0.6) -> Penalty:
    """FBNet's multiplicative form `ce * alpha * log(latency_us)^beta`.

    Args:
      alpha: overall strength.
      beta: exponent; larger tightens the penalty.
    """
    if alpha <= 0 or beta < 0:
        raise ValueError(f"fbnet_penalty: alpha={alpha} must be > 0 and beta={beta} >= 0")
    return Penalty("fbnet", lambda ce, lat: ce * alpha * jnp.log(jnp.maximum(lat * 1e3, 1.0 + 1e-6)) ** beta,
                   {"alpha": alpha, "beta": beta})


def proxyless_penalty(lam: float) -> Penalty:
    """ProxylessNAS's additive form `ce + lam * latency_ms` (`lam` per millisecond)."""
    if lam < 0:
        raise ValueError(f"proxyless_penalty: lam={lam} must be >= 0")
    return Penalty("proxyless", lambda ce, lat: ce + lam * lat, {"lam": lam})


def tfnas_penalty(lam: float, target_ms: float) -> Penalty:
    """TF-NAS's target form `ce + lam * |latency_ms / target_ms - 1|`."""
    if lam < 0 or target_ms <= 0:
        raise ValueError(f"tfnas_penalty: lam={lam} must be >= 0 and target_ms={target_ms} > 0")
    return Penalty("tfnas", lambda ce, lat: ce + lam * jnp.abs(lat / target_ms - 1.0),
                   {"lam": lam, "target_ms": target_ms})
