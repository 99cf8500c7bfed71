"""Multi-layer perceptron on standardized features, trained with AdamW (jaxlat._train).

Two recipes (`jaxlat.regressors._recipe`): recipe 1 maps standardized features to standardized
log latency by squared error (every MLP saved before recipes were recorded); recipe 2, the
default, learns the log latency over a roofline prior with a Huber loss and sets conformal
intervals that widen outside the training range (with `clip`, it also holds its correction at
the range's boundary), and, with `bins`, adds a step network: a second MLP that reads the
features' piecewise-linear encoding too and learns what the first left over, its inputs
clipped to the training range. The one `predict` serves both recipes: it reads the parts a
recipe saved (`prior`, `x_min`/`x_max` or `range_min`/`range_max`, `kappa`, `steps`) from the
parameters' structure, which is static under `jit`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._base import Regressor, predict_batch, residual_log_sigma, residual_rows, standardizer
from .._train import TrainConfig, fit_members, fit_with_adamw
from ._recipe import (
    DEFAULT,
    MIN_LOG_SIGMA,
    OUTSIDE_TOL,
    Recipe,
    as_recipe,
    beyond_edge,
    conformal_shift,
    edge_rows,
    edge_thresholds,
    encode,
    encode_host,
    excess,
    fit_encoding,
    is_edge_all,
    regression_loss,
    standardized_bounds,
    widened_log_sigma,
    widening_scale,
    widening_scales,
)
from ._roofline import fit_roofline, roofline_log_ms, roofline_log_ms_host

_ACTIVATIONS = {"relu": jax.nn.relu, "silu": jax.nn.silu, "gelu": jax.nn.gelu}


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> list[dict[str, jax.Array]]:
    """He-initialized dense layers `sizes[0] -> ... -> sizes[-1]`."""
    layers = []
    for k, (a, b) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        layers.append({"w": jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), "b": jnp.zeros(b)})
    return layers


def apply_mlp(layers, z, activation=jax.nn.relu):
    """The network's output for inputs `z [..., f]`; an ensemble's (layers stacked along a
    leading members axis, `w [m, a, b]`) is the mean of its members' outputs."""
    if layers[0]["w"].ndim == 3:
        return jnp.mean(jax.vmap(lambda member: apply_mlp(member, z, activation))(layers), axis=0)
    for layer in layers[:-1]:
        z = activation(z @ layer["w"] + layer["b"])
    return z @ layers[-1]["w"] + layers[-1]["b"]


def _mu_std(params, x, activation):
    """Standardized log latency of one config (recipe 1)."""
    z = (x - params["x_mean"]) / params["x_scale"]
    return apply_mlp(params["layers"], z, activation)[0]


@dataclasses.dataclass(frozen=True)
class MLPLoss:
    """Recipe 1: mean squared error of standardized log latency (`aux`: the target's mean and
    scale); every parameter, the standardization statistics too, is trained."""

    activation: str = "relu"

    def __call__(self, params, batch, aux):
        (xb, yb), (y_mean, y_scale) = batch, aux
        pred = jax.vmap(lambda r: _mu_std(params, r, _ACTIVATIONS[self.activation]))(xb)
        return jnp.mean((pred - (yb - y_mean) / y_scale) ** 2)


@dataclasses.dataclass(frozen=True)
class MLPResidualLoss:
    """Recipe 2: the loss of the layers alone on standardized (and clipped) inputs `z` and the
    standardized target `t` (log latency over the prior, when there is one)."""

    activation: str = "relu"
    loss: str = "huber"
    huber_delta: float = 1.0

    def __call__(self, layers, batch, aux):
        del aux
        zb, tb = batch
        pred = apply_mlp(layers, zb, _ACTIVATIONS[self.activation])[:, 0]
        return regression_loss(pred, tb, self.loss, self.huber_delta)


def _prepare(params, x):
    """The network's input of one config (standardized; clipped to the training range where
    the recipe clips), its excess over that range, and the log prior (0 without one)."""
    if "prior" in params:
        prior = roofline_log_ms(params["prior"], x)
        x = jnp.concatenate([x, prior[None]])
    else:
        prior = jnp.zeros((), jnp.float32)
    z = (x - params["x_mean"]) / params["x_scale"]
    if "x_min" in params:  # clipped to the training range
        lo, hi = standardized_bounds(params["x_min"], params["x_max"], params["x_mean"], params["x_scale"])
        return jnp.clip(z, lo, hi), excess(z, lo, hi), prior
    if "range_min" in params:  # the range widens the interval only
        lo, hi = standardized_bounds(params["range_min"], params["range_max"], params["x_mean"], params["x_scale"])
        return z, excess(z, lo, hi), prior
    return z, jnp.zeros_like(z), prior


@dataclasses.dataclass(frozen=True)
class MLPPredict:
    """The MLP's pure `predict` (a value, so that every fit with the same activation shares
    one compiled program); which recipe's parts apply is read from the parameters' keys."""

    activation: str = "relu"

    def __call__(self, params, x):
        act = _ACTIVATIONS[self.activation]
        if not any(k in params for k in ("prior", "x_min", "range_min", "kappa", "steps")):  # recipe 1, as saved
            mu = _mu_std(params, x, act) * params["y_scale"] + params["y_mean"]
            return jnp.stack([mu, params["log_sigma"]])
        z, e, prior = _prepare(params, x)
        out = apply_mlp(params["layers"], z, act)[0]
        if "steps" in params:  # the step network, held at the training range's boundary
            out = out + apply_mlp(params["steps"]["layers"], _step_input(params["steps"], x, prior), act)[0]
        mu = out * params["y_scale"] + params["y_mean"] + prior
        log_sigma = params["log_sigma"]
        if "kappa" in params:
            log_sigma = widened_log_sigma(log_sigma, params["kappa"], e)
        return jnp.stack([mu, log_sigma])


def _step_input(steps, x, prior, xp=jnp):
    """The step network's input of configs `x [..., f]` with their log priors `prior [...]`:
    the features, the log prior and the features' piecewise-linear encoding, standardized and
    clipped to the training range. `xp` is the array module (`np` for rows on the host)."""
    prior = xp.reshape(xp.asarray(prior, xp.float32), (*x.shape[:-1], 1))
    return _step_scaled(steps, xp.concatenate([x, prior, encode(steps["encoding"], x, xp)], axis=-1), xp)


def _step_scaled(steps, xa, xp=jnp):
    """Step-network inputs before scaling, `xa [..., f_steps]`, standardized and clipped to
    the training range."""
    lo, hi = standardized_bounds(steps["x_min"], steps["x_max"], steps["x_mean"], steps["x_scale"])
    return xp.clip((xa - steps["x_mean"]) / steps["x_scale"], lo, hi)


def _step_inputs_host(steps, x, prior):
    """`_step_input` of rows `x [n, f]` with their log priors `prior [n]`, on the host."""
    return _step_input(steps, np.asarray(x, np.float32), prior, np).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("activation",))
def _rms_sensitivity(layers, y_scale, z, *, activation: str):
    """RMS over rows `z [n, f]` of the gradient of the network's correction (log units) with
    respect to each standardized input: how fast the correction changes along each feature."""
    f = lambda v: apply_mlp(layers, v, _ACTIVATIONS[activation])[0] * y_scale
    return jnp.sqrt(jnp.mean(jax.vmap(jax.grad(f))(z) ** 2, axis=0))


def _fit_legacy(key, x, y, hidden, activation, train, predict, x_val, y_val):
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
    pred = predict_batch(Regressor("mlp", None, predict), params, xs)[:, 0]
    params["log_sigma"] = jnp.asarray(residual_log_sigma(ys, pred))
    return jax.tree.map(np.asarray, params)


def _fit_network(key, x, y, names, hidden, activation, train, recipe: Recipe, x_val, y_val, members: int = 1):
    """Recipe 2's parameters up to the interval: the prior, the standardization, the range
    and the trained layers (`log_sigma` 0, no `kappa`); with `members > 1`, that many networks
    from different seeds on the same inputs, stacked (their mean is the prediction). With
    `recipe.bins` and enough rows, then `steps`: the step network (as many members), trained
    on what the first left over of the training rows' standardized target, early-stopped on
    the validation rows' remainder."""
    params: dict = {}
    prior_tr = np.zeros(len(x))
    if recipe.prior:
        params["prior"] = fit_roofline(x, y, names)
        prior_tr = roofline_log_ms_host(params["prior"], x)
    xa = _augment(params, x, prior_tr)
    mean, scale = standardizer(np.asarray(xa, np.float64))
    target = y - prior_tr
    y_mean, y_scale = np.float32(np.mean(target)), np.float32(max(np.std(target), 1e-6))
    params.update(x_mean=mean, x_scale=scale, y_mean=y_mean, y_scale=y_scale)
    if recipe.clip or recipe.conformal:  # the range clips the inputs, or widens the interval only
        keys = ("x_min", "x_max") if recipe.clip else ("range_min", "range_max")
        params[keys[0]], params[keys[1]] = xa.min(axis=0), xa.max(axis=0)

    def standardize(a, t):
        z, _ = _standardized(params, a)
        p = roofline_log_ms_host(params["prior"], a) if recipe.prior else 0.0
        return z.astype(np.float32), ((t - p - y_mean) / y_scale).astype(np.float32)

    has_val = x_val is not None and len(x_val) > 0
    val = standardize(x_val, y_val) if has_val else None
    loss = MLPResidualLoss(activation, recipe.loss, recipe.huber_delta)
    rows = standardize(x, y)
    params["layers"] = _train_members(key, rows, val, hidden, activation, train, loss, members)
    params["log_sigma"] = np.float32(0.0)
    enc = fit_encoding(x, recipe.bins) if recipe.bins else None
    if enc is not None:  # the step network learns what the smooth one left over
        steps = {"encoding": enc}
        xs = np.concatenate([np.asarray(x, np.float32), prior_tr[:, None], encode_host(enc, x)], axis=1)
        steps["x_mean"], steps["x_scale"] = standardizer(np.asarray(xs, np.float64))
        steps["x_min"], steps["x_max"] = xs.min(axis=0), xs.max(axis=0)
        act = _ACTIVATIONS[activation]
        left = lambda r: (r[1] - np.asarray(apply_mlp(params["layers"], r[0], act))[:, 0]).astype(np.float32)
        step_rows = (_step_scaled(steps, xs.astype(np.float32), np).astype(np.float32), left(rows))
        step_val = None
        if has_val:
            prior_val = roofline_log_ms_host(params["prior"], x_val) if recipe.prior else np.zeros(len(x_val))
            step_val = (_step_inputs_host(steps, x_val, prior_val), left(val))
        steps["layers"] = _train_members(jax.random.fold_in(key, 7), step_rows, step_val, (recipe.step_width,) * len(hidden),
                                         activation, train, loss, members)
        params["steps"] = steps
    return params


def _train_members(key, rows, val, hidden, activation, train, loss, members):
    """`members` networks from their own seeds on `rows` (standardized inputs and target),
    stacked along a leading axis when more than one."""
    init = lambda k: init_mlp(k, (rows[0].shape[1], *hidden, 1))
    return fit_members(loss, init, members, rows, key=key, config=train, val=val)


def _augment(params, x, prior=None):
    """Features with the log prior appended (where the recipe has one)."""
    if "prior" not in params:
        return np.asarray(x, np.float32)
    prior = roofline_log_ms_host(params["prior"], x) if prior is None else prior
    return np.concatenate([x, prior[:, None]], axis=1).astype(np.float32)


def _standardized(params, x):
    """The network's standardized inputs of rows `x` (clipped where the recipe clips) and
    their excess over the training range (zeros without a range)."""
    z = (_augment(params, x) - params["x_mean"]) / params["x_scale"]
    keys = ("x_min", "x_max") if "x_min" in params else ("range_min", "range_max")
    if keys[0] not in params:
        return z, np.zeros_like(z)
    lo, hi = standardized_bounds(params[keys[0]], params[keys[1]], params["x_mean"], params["x_scale"])
    e = np.maximum(z - hi, 0) + np.maximum(lo - z, 0)
    return (np.clip(z, lo, hi) if "x_min" in params else z), e


def _residuals(params, xs, ys, predict):
    """Absolute log residuals of the point predictions of rows `xs`, `ys`."""
    out = predict_batch(Regressor("mlp", None, predict), params, xs)
    return np.abs(np.asarray(ys, np.float64) - out[:, 0])


def _set_interval(params, xs, ys, activation, predict):
    """Split-conformal `log_sigma` from the in-range rows of `xs`, `ys` and the first-order
    widening slopes `kappa` (unscaled); returns the rows' absolute residuals and spreads."""
    params.pop("kappa", None)
    resid = _residuals(params, xs, ys, predict)
    z, e = _standardized(params, xs)
    inside = ~(e > OUTSIDE_TOL).any(axis=1)
    rows = inside if inside.any() else np.ones(len(xs), bool)
    params["log_sigma"] = np.float32(max(conformal_shift(resid[rows], np.ones(rows.sum())), MIN_LOG_SIGMA))
    kappa = np.asarray(_rms_sensitivity(params["layers"], params["y_scale"], jnp.asarray(z, jnp.float32),
                                        activation=activation), np.float64)
    params["kappa"] = kappa.astype(np.float32)
    return resid, np.linalg.norm(kappa * e, axis=1)


def _fit_recipe(key, x, y, names, hidden, activation, train, recipe: Recipe, predict, x_val, y_val, members=1):
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32)
    has_val = x_val is not None and len(x_val) > 0
    if has_val:
        x_val, y_val = np.asarray(x_val, np.float32), np.asarray(y_val, np.float32)
    params = _fit_network(key, x, y, names, hidden, activation, train, recipe, x_val, y_val, members)
    xs, ys = (x_val, y_val) if has_val else (x, y)
    if not recipe.conformal:
        out = predict_batch(Regressor("mlp", None, predict), params, xs)
        params["log_sigma"] = residual_log_sigma(ys, out[:, 0])
        return params
    resid, spread = _set_interval(params, xs, ys, activation, predict)
    c = None
    edge = edge_rows(x, names, recipe.edge, recipe.edge_frac) if recipe.edge else None
    if edge is not None:  # a first fit without the edge rows, its widening calibrated on them
        # Its validation rows are those inside its range too: rows beyond would pick the
        # epoch that extrapolates best and make the edge rows' errors look small.
        fx, fy, vx, vy = x[~edge], y[~edge], None, None
        if has_val:
            inside = ~beyond_edge(x_val, edge_thresholds(x, names, recipe.edge, recipe.edge_frac))
            vx, vy = x_val[inside], y_val[inside]
        first = _fit_network(jax.random.fold_in(key, 1), fx, fy, names, hidden, activation, train,
                             dataclasses.replace(recipe, bins=0), vx, vy, members)
        _set_interval(first, *((vx, vy) if vx is not None and len(vx) else (fx, fy)), activation, predict)
        resid_e = _residuals(first, x[edge], y[edge], predict)
        contrib = np.asarray(first["kappa"], np.float64) * _standardized(first, x[edge])[1]
        sigma_e = np.full(len(resid_e), np.exp(float(first["log_sigma"])))
        if is_edge_all(recipe.edge):
            c = widening_scales(resid_e, sigma_e, contrib)
        else:
            c = widening_scale(resid_e, sigma_e, np.linalg.norm(contrib, axis=1), narrow=True)
    if c is None:
        c = widening_scale(resid, np.full(len(resid), np.exp(float(params["log_sigma"]))), spread)
    params["kappa"] = (params["kappa"] * c).astype(np.float32)
    return params


def mlp_regressor(
    hidden: tuple[int, ...] = (256, 256, 256),
    *,
    activation: str = "relu",
    train: TrainConfig = TrainConfig(),
    recipe: Recipe | Mapping[str, Any] = DEFAULT,
    members: int = 1,
) -> Regressor:
    """MLP from standardized features to log latency.

    Args:
      hidden: widths of the hidden layers.
      activation: `relu`, `silu` or `gelu`.
      train: optimization settings (AdamW, warm-up + cosine, early stopping on validation).
      recipe: what the network learns and how its interval is set (a `Recipe` or a mapping of
        its fields; `LEGACY` is recipe 1, squared error on standardized log latency).
      members: networks in the ensemble (recipe 2): each trained from its own seed on the same
        inputs, the prediction their mean in log latency and the interval set for that mean.
        Training and prediction cost grow with it; 3 members gained 1.6 points of ±10 % on
        the V100 conv data (`docs/results.md`).
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not valid: expected one of {', '.join(_ACTIVATIONS)}")
    recipe = as_recipe(recipe)
    if not isinstance(members, int) or isinstance(members, bool) or members < 1:
        raise ValueError(f"members={members!r} is not valid: expected an integer >= 1")
    if members > 1 and recipe.version == 1:
        raise ValueError(f"members={members} is not valid with recipe 1: ensembles need recipe 2")
    predict = MLPPredict(activation)

    def fit(key, x, y, *, names, x_val=None, y_val=None):
        if recipe.version == 1:
            return _fit_legacy(key, x, y, hidden, activation, train, predict, x_val, y_val)
        return _fit_recipe(key, x, y, names, hidden, activation, train, recipe, predict, x_val, y_val, members)

    config = {"hidden": list(hidden), "activation": activation}
    if members > 1:
        config["members"] = members
    if recipe.version != 1:  # recipe 1's configuration is what predictors saved before recipes
        config["recipe"] = recipe.as_config()
    return Regressor("mlp", fit, predict, config=config)
