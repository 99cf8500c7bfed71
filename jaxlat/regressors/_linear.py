"""Closed-form ridge regression, on the features or on their polynomial expansion."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._base import Regressor, residual_log_sigma, residual_rows, standardizer

_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def _monomials(n_features: int, degree: int) -> np.ndarray:
    """Index tuples of every monomial of degree 1..`degree`, padded with `n_features`, the
    position of the constant 1 appended to the features."""
    rows = []
    for d in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(n_features), d):
            rows.append(list(combo) + [n_features] * (degree - d))
    return np.asarray(rows, dtype=np.int32)


def _expand(z, index, xp: Any = jnp):
    # Append a constant 1 so that the padding index selects it: a lower-degree monomial.
    z1 = xp.concatenate([z, xp.ones(z.shape[:-1] + (1,), z.dtype)], axis=-1)
    return xp.prod(xp.take(z1, index, axis=-1), axis=-1)


@dataclasses.dataclass(frozen=True)
class PolyPredict:
    """The pure `predict` of a ridge of `degree` (a value, so that every fit of the same degree
    shares one compiled program)."""

    degree: int

    def features(self, params, x, xp: Any = jnp):
        z = (x - params["x_mean"]) / params["x_scale"]
        return _expand(z, params["index"], xp) if self.degree > 1 else z

    def __call__(self, params, x):
        mu = self.features(params, x) @ params["w"] + params["b"]
        return jnp.stack([mu, params["log_sigma"]])


def _solve(a: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    mean_a, mean_y = a.mean(axis=0), y.mean()
    ac = a - mean_a
    n, p = ac.shape
    if p > n:  # more terms than rows: the dual (kernel) form is the well-conditioned one
        w = ac.T @ np.linalg.solve(ac @ ac.T + alpha * n * np.eye(n), y - mean_y)
    else:
        w = np.linalg.solve(ac.T @ ac + alpha * n * np.eye(p), ac.T @ (y - mean_y))
    return w, float(mean_y - mean_a @ w)


def poly_ridge_regressor(degree: int = 1, *, alpha: float | None = None) -> Regressor:
    """Ridge regression on standardized features expanded to all monomials up to `degree`.

    Args:
      degree: 1 is plain linear ridge; 2 and 3 add interactions.
      alpha: L2 strength per sample; None picks it from a grid on the validation split.
    """
    if degree < 1:
        raise ValueError(f"degree={degree} is not valid: expected an int >= 1")

    predict = PolyPredict(degree)

    def fit(key, x, y, *, names, x_val=None, y_val=None):
        del key, names
        x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
        mean, scale = standardizer(x64)
        params = {"x_mean": mean, "x_scale": scale, "index": _monomials(x.shape[1], degree)}
        # Fitted on the host in float64: no compilation, whatever the data's shape.
        a = predict.features(params, x64, np)
        alphas = [alpha] if alpha is not None else list(_ALPHAS)
        validate = x_val is not None and len(x_val) > 0 and len(alphas) > 1
        av = predict.features(params, np.asarray(x_val, np.float64), np) if validate else None
        best = None
        for al in alphas:
            w, b = _solve(a, y64, al)
            err = float(np.mean((av @ w + b - y_val) ** 2)) if validate else 0.0
            if best is None or err < best[0]:
                best = (err, w, b)
        _, w, b = best
        params.update(w=w.astype(np.float32), b=np.float32(b))
        xs, ys = residual_rows(x, y, x_val, y_val)
        pred = predict.features(params, np.asarray(xs, np.float64), np) @ w + b
        params["log_sigma"] = residual_log_sigma(ys, pred)
        return params

    name = "ridge" if degree == 1 else f"poly{degree}"
    return Regressor(name, fit, predict, config={"degree": degree, "alpha": alpha})


def ridge_regressor(*, alpha: float | None = None) -> Regressor:
    """Linear ridge regression on standardized features (closed form)."""
    return poly_ridge_regressor(1, alpha=alpha)
