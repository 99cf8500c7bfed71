"""Multi-layer perceptron on standardized features, trained with AdamW (jaxlat._train)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .._base import Regressor, predict_batch, residual_log_sigma, residual_rows, standardizer
from .._train import TrainConfig, fit_with_adamw

_ACTIVATIONS = {"relu": jax.nn.relu, "silu": jax.nn.silu, "gelu": jax.nn.gelu}


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> list[dict[str, jax.Array]]:
    """He-initialized dense layers `sizes[0] -> ... -> sizes[-1]`."""
    layers = []
    for k, (a, b) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        layers.append({"w": jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), "b": jnp.zeros(b)})
    return layers


def apply_mlp(layers, z, activation=jax.nn.relu):
    for layer in layers[:-1]:
        z = activation(z @ layer["w"] + layer["b"])
    return z @ layers[-1]["w"] + layers[-1]["b"]


def _mu_std(params, x, activation):
    """Standardized log latency of one config."""
    z = (x - params["x_mean"]) / params["x_scale"]
    return apply_mlp(params["layers"], z, activation)[0]


@dataclasses.dataclass(frozen=True)
class MLPLoss:
    """Mean squared error of standardized log latency (`aux`: the target's mean and scale)."""

    activation: str = "relu"

    def __call__(self, params, batch, aux):
        (xb, yb), (y_mean, y_scale) = batch, aux
        pred = jax.vmap(lambda r: _mu_std(params, r, _ACTIVATIONS[self.activation]))(xb)
        return jnp.mean((pred - (yb - y_mean) / y_scale) ** 2)


@dataclasses.dataclass(frozen=True)
class MLPPredict:
    """The MLP's pure `predict` (a value, so that every fit with the same activation shares
    one compiled program)."""

    activation: str = "relu"

    def __call__(self, params, x):
        mu = _mu_std(params, x, _ACTIVATIONS[self.activation]) * params["y_scale"] + params["y_mean"]
        return jnp.stack([mu, params["log_sigma"]])


def mlp_regressor(
    hidden: tuple[int, ...] = (256, 256, 256),
    *,
    activation: str = "relu",
    train: TrainConfig = TrainConfig(),
) -> Regressor:
    """MLP from standardized features to standardized log latency (MSE).

    Args:
      hidden: widths of the hidden layers.
      activation: `relu`, `silu` or `gelu`.
      train: optimization settings (AdamW, warm-up + cosine, early stopping on validation).
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not valid: expected one of {', '.join(_ACTIVATIONS)}")
    predict = MLPPredict(activation)

    def fit(key, x, y, *, names, x_val=None, y_val=None):
        del names
        mean, scale = standardizer(np.asarray(x, np.float64))
        y_mean, y_scale = np.float32(np.mean(y)), np.float32(max(np.std(y), 1e-6))
        init_key, train_key = jax.random.split(key)
        params = {
            "x_mean": jnp.asarray(mean),
            "x_scale": jnp.asarray(scale),
            "y_mean": jnp.asarray(y_mean),
            "y_scale": jnp.asarray(y_scale),
            "layers": init_mlp(init_key, (x.shape[1], *hidden, 1)),
            "log_sigma": jnp.asarray(0.0),
        }

        val = None if x_val is None or len(x_val) == 0 else (np.asarray(x_val, np.float32), np.asarray(y_val, np.float32))
        params = fit_with_adamw(MLPLoss(activation), params, (np.asarray(x, np.float32), np.asarray(y, np.float32)),
                                key=train_key, config=train, val=val, aux=(y_mean, y_scale))
        xs, ys = residual_rows(x, y, x_val, y_val)
        pred = predict_batch(Regressor("mlp", fit, predict), params, xs)[:, 0]
        params["log_sigma"] = jnp.asarray(residual_log_sigma(ys, pred))
        return jax.tree.map(np.asarray, params)

    return Regressor("mlp", fit, predict, config={"hidden": list(hidden), "activation": activation})
