"""Latency penalties as loss terms: `loss = penalty(ce, latency_ms)`.

Three published forms, each a factory returning a `Penalty` (a named pure function):

- FBNet (Wu et al., 2019): multiplicative, `ce * alpha * log(latency)^beta`. The latency inside
  the log is in microseconds, so the log stays positive for any latency above 1 us.
- ProxylessNAS (Cai et al., 2019): additive, `ce + lam * E[latency_ms]`.
- TF-NAS (Hu et al., 2020): a target, `ce + lam * |E[latency_ms] / target_ms - 1|`.

`no_penalty()` is plain accuracy training. Penalties compose: `a + b` adds their latency terms
(`(a + b)(ce, lat) = a(ce, lat) + b(ce, lat) - ce`, for additive forms). A penalty's settings
are data, not part of its form: the search driver passes them to its jitted step as arguments,
so searches at several strengths or targets compile once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp


class Penalty(NamedTuple):
    """A loss term `penalty(ce, latency_ms) -> loss`: a form `fn(ce, latency_ms, settings)`, its
    name and its settings (floats, for reports).

    The settings are separate from the form so that a jitted step can take them as arguments:
    searches that differ only in a penalty's strength or target share one compiled step.
    """

    name: str
    fn: Callable[[Any, Any, Mapping[str, Any]], Any]
    config: Mapping[str, float] = {}

    def __call__(self, ce, latency_ms, settings: Mapping[str, Any] | None = None):
        """The loss; `settings` (default: `self.config`) may hold traced values."""
        return self.fn(ce, latency_ms, self.config if settings is None else settings)

    def __add__(self, other: Penalty) -> Penalty:
        if self.name == other.name:
            raise ValueError(f"Penalty: cannot add two penalties named {self.name!r}: their settings would collide")
        return Penalty(f"{self.name}+{other.name}", _sum_form(self.name, self.fn, other.name, other.fn),
                       {**{f"{self.name}.{k}": v for k, v in self.config.items()},
                        **{f"{other.name}.{k}": v for k, v in other.config.items()}})


@functools.cache
def _sum_form(a_name: str, a_fn: Callable, b_name: str, b_fn: Callable) -> Callable:
    # Cached so that the same sum of forms is the same function (one compiled step).
    def part(settings, name):
        return {k[len(name) + 1:]: v for k, v in settings.items() if k.startswith(name + ".")}

    def fn(ce, lat, settings):
        return a_fn(ce, lat, part(settings, a_name)) + b_fn(ce, lat, part(settings, b_name)) - ce

    return fn


def _none_form(ce, lat, settings):
    return ce


def _fbnet_form(ce, lat, s):
    return ce * s["alpha"] * jnp.log(jnp.maximum(lat * 1e3, 1.0 + 1e-6)) ** s["beta"]


def _proxyless_form(ce, lat, s):
    return ce + s["lam"] * lat


def _tfnas_form(ce, lat, s):
    return ce + s["lam"] * jnp.abs(lat / s["target_ms"] - 1.0)


def no_penalty() -> Penalty:
    """Plain accuracy training: the latency does not enter the loss."""
    return Penalty("none", _none_form)


def fbnet_penalty(alpha: float = 0.2, beta: float = 0.6) -> Penalty:
    """FBNet's multiplicative form `ce * alpha * log(latency_us)^beta`.

    Args:
      alpha: overall strength.
      beta: exponent; larger tightens the penalty.
    """
    if alpha <= 0 or beta < 0:
        raise ValueError(f"fbnet_penalty: alpha={alpha} must be > 0 and beta={beta} >= 0")
    return Penalty("fbnet", _fbnet_form, {"alpha": float(alpha), "beta": float(beta)})


def proxyless_penalty(lam: float) -> Penalty:
    """ProxylessNAS's additive form `ce + lam * latency_ms` (`lam` per millisecond)."""
    if lam < 0:
        raise ValueError(f"proxyless_penalty: lam={lam} must be >= 0")
    return Penalty("proxyless", _proxyless_form, {"lam": float(lam)})


def tfnas_penalty(lam: float, target_ms: float) -> Penalty:
    """TF-NAS's target form `ce + lam * |latency_ms / target_ms - 1|`."""
    if lam < 0 or target_ms <= 0:
        raise ValueError(f"tfnas_penalty: lam={lam} must be >= 0 and target_ms={target_ms} > 0")
    return Penalty("tfnas", _tfnas_form, {"lam": float(lam), "target_ms": float(target_ms)})
