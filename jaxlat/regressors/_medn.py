"""MEDN: a Multi-task Encoder-Decoder Network that serves every module type at once.

A shared encoder reads a learned module-type embedding next to the type's standardized
features (zero-padded to a common width) and maps them to a latent code; one small decoder
head per task (module type) maps the code to the mean and log standard deviation of the log
latency. Trained with AdamW (warm-up, cosine decay, early stopping on validation): the mean by
squared error, the spread by Gaussian negative log-likelihood with the mean held fixed, so
the interval never pulls on the point estimate.

Recipe 2 (`jaxlat.regressors._recipe`, the default of new fits) adds, per module type, a
roofline cost prior that the network reads as an input and learns the log latency over, a
Huber loss, and split-conformal intervals per type that widen outside the training range
(calibrated per feature on the edge rows of a first fit by default, `Recipe.edge`); with `clip`, inputs
are clipped to that range (beyond it the prior carries the growth). With `bins`, a second
MEDN as deep as the first and `step_width` wide, the step network, reads the features'
piecewise-linear encoding too and learns what the first left over (on the types with an
encoding; for the others its output is 0), its inputs clipped to the training range (so beyond it
the step network holds its boundary value and the first network extrapolates). Parameters
saved by recipe 1 have none of those parts, and `medn_forward` reads them as before.

The network is an `nnx.Module`; prediction crosses into pure JAX with `nnx.merge` of a cached
graph definition and the saved parameter dict, so `predict` jit-compiles, vmaps and
differentiates like every other regressor.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .._base import Regressor, predict_batch, standardizer
from .._features import feature_schema
from .._train import TrainConfig, fit_members, fit_with_adamw
from ._recipe import (
    DEFAULT,
    MIN_LOG_SIGMA,
    OUTSIDE_TOL,
    Recipe,
    as_recipe,
    beyond_edge,
    check_edge,
    conformal_shift,
    edge_rows,
    edge_thresholds,
    encode,
    encode_host,
    excess,
    fit_encoding,
    is_edge_all,
    pad_encodings,
    regression_loss,
    standardized_bounds,
    widened_log_sigma,
    widening_scale,
    widening_scales,
)
from ._roofline import fit_roofline, roofline_log_ms, roofline_log_ms_host


@dataclasses.dataclass(frozen=True)
class MEDNConfig:
    """Architecture of MEDN.

    Attributes:
      n_tasks: module types served (set from the data).
      n_features: common, padded feature width (set from the data).
      embed_dim: size of the learned module-type embedding.
      encoder: hidden widths of the shared encoder.
      latent: size of the latent code.
      decoder: hidden widths of each task's decoder head.
      device_dim: size of the device vector read next to the features (0: no device input;
        the device-aware MEDN of `jaxlat.transfer` sets it).
    """

    n_tasks: int
    n_features: int
    embed_dim: int = 16
    encoder: tuple[int, ...] = (256, 256, 256)
    latent: int = 128
    decoder: tuple[int, ...] = (64,)
    device_dim: int = 0


class MEDN(nnx.Module):
    """The network: `(features [n_features], task) -> (mu, log_sigma)`, standardized units."""

    def __init__(self, config: MEDNConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embed = nnx.Embed(config.n_tasks, config.embed_dim, rngs=rngs)
        sizes = (config.n_features + config.embed_dim + config.device_dim, *config.encoder, config.latent)
        self.encoder = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        # Decoder heads stacked over tasks: every head runs, the row's task is selected.
        dsizes = (config.latent, *config.decoder, 2)
        key = rngs.params()
        self.decoder_w = nnx.List()
        self.decoder_b = nnx.List()
        for k, (a, b) in zip(jax.random.split(key, len(dsizes) - 1), zip(dsizes[:-1], dsizes[1:])):
            w = jax.random.normal(k, (config.n_tasks, a, b)) * jnp.sqrt(2.0 / a)
            self.decoder_w.append(nnx.Param(w))
            self.decoder_b.append(nnx.Param(jnp.zeros((config.n_tasks, b))))

    def __call__(self, x: jax.Array, task: jax.Array | int, device: jax.Array | None = None) -> jax.Array:
        static_task = isinstance(task, int)
        # Index the table directly: nnx.Embed special-cases a one-row table.
        parts = [self.embed.embedding[...][task], x]
        if self.config.device_dim:
            if device is None:
                raise ValueError("this MEDN reads a device vector: pass `device`")
            parts.append(device)
        h = jnp.concatenate(parts, axis=-1)
        for layer in self.encoder[:-1]:
            h = jax.nn.silu(layer(h))
        h = self.encoder[-1](h)  # the latent code
        n = len(self.decoder_w)
        if static_task:
            # One module type per call (mass prediction, NAS): only its own head runs.
            for i, (w, b) in enumerate(zip(self.decoder_w, self.decoder_b)):
                if i < n - 1:
                    h = jax.nn.silu(h @ w[...][task] + b[...][task])
            return _outputs(h, w[...][task], b[...][task])
        # Rows of mixed types (training batches): every head runs, the row's own is selected.
        heads = jnp.broadcast_to(h, (self.config.n_tasks, h.shape[-1]))
        for i, (w, b) in enumerate(zip(self.decoder_w, self.decoder_b)):
            if i < n - 1:
                heads = jax.nn.silu(jnp.einsum("ta,tab->tb", heads, w[...]) + b[...])
        return jax.vmap(_outputs)(heads, w[...], b[...])[task]


def _outputs(h: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """The last decoder layer: the mean from `h`; the log spread from `h` with its gradient
    stopped, so that learning the interval never reshapes the features the mean is read from
    (sharing them cost 8 points of ±10 % accuracy on the V100 data)."""
    mu = h @ w[:, 0] + b[0]
    log_sigma = jax.lax.stop_gradient(h) @ w[:, 1] + b[1]
    return jnp.stack([mu, log_sigma])


@functools.cache
def _graphdef(config: MEDNConfig):
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: MEDN(config, rngs=nnx.Rngs(0))))
    return graphdef


def medn_forward(config: MEDNConfig, params: Mapping[str, Any], x: jax.Array, task: int | jax.Array) -> jax.Array:
    """MEDN's forward pass for one config, in natural units: `x [f_type]` (encoded, not
    standardized) -> `(mu, log_sigma)` of log latency (ms). The one forward pass: the plain and the
    device-aware MEDN (`params["device_vec"]`, read when `config.device_dim > 0`) both call it.

    Args:
      config: the architecture (static).
      params: standardization statistics `x_mean`, `x_scale` `[n_tasks, f]`, `y_mean`, `y_scale`
        `[n_tasks]`, the network's `model` state, and `device_vec` for a device-aware MEDN.
        Recipe 2 adds, each where its part is on: `prior` (per-task roofline coefficients and
        feature indices; the log prior is the last input column), `x_min`, `x_max`
        `[n_tasks, f]` (the training range the inputs are clipped to) or `range_min`,
        `range_max` (the range that widens the interval alone), `log_sigma_shift`
        `[n_tasks]` (the conformal factor), `kappa` `[n_tasks, f]` (the widening) and `steps`
        (the step network: `encoding`, per task `[n_tasks, n_bins]`, its input statistics and
        range `x_mean`, `x_scale`, `x_min`, `x_max` `[n_tasks, f_steps]`, and `model`).
      x: encoded features of one config; zero-padded to the common width.
      task: the module type's index in the MEDN's tasks.
    """
    f = params["x_mean"].shape[1]
    has_prior = "prior" in params
    xp = jnp.zeros(f - 1 if has_prior else f, jnp.float32).at[: x.shape[-1]].set(x)
    prior = None
    if has_prior:
        prior = roofline_log_ms({k: v[task] for k, v in params["prior"].items()}, xp)
        xp = jnp.concatenate([xp, prior[None]])
    z = (xp - params["x_mean"][task]) / params["x_scale"][task]
    e = None
    if "x_min" in params:  # clipped to the training range
        lo, hi = standardized_bounds(params["x_min"][task], params["x_max"][task], params["x_mean"][task],
                                     params["x_scale"][task])
        z, e = jnp.clip(z, lo, hi), excess(z, lo, hi)
    elif "range_min" in params:  # the range widens the interval only
        lo, hi = standardized_bounds(params["range_min"][task], params["range_max"][task], params["x_mean"][task],
                                     params["x_scale"][task])
        e = excess(z, lo, hi)
    device = params["device_vec"] if config.device_dim else None
    out = _network(config, params["model"], z, task, device)
    mu = out[0]
    if "steps" in params:  # the step network, held at the training range's boundary
        s = params["steps"]
        xs = jnp.concatenate([xp[: f - 1] if has_prior else xp, jnp.reshape(prior if has_prior else 0.0, (1,)),
                              encode({k: v[task] for k, v in s["encoding"].items()}, xp[: f - 1] if has_prior else xp)])
        lo, hi = standardized_bounds(s["x_min"][task], s["x_max"][task], s["x_mean"][task], s["x_scale"][task])
        zs = jnp.clip((xs - s["x_mean"][task]) / s["x_scale"][task], lo, hi)
        has_bins = jnp.any(s["encoding"]["mask"][task] > 0)  # a type without an encoding has no steps
        mu = mu + jnp.where(has_bins, _network(_steps_config(config, s), s["model"], zs, task)[0], 0.0)
    mu = mu * params["y_scale"][task] + params["y_mean"][task]
    log_sigma = out[1] + jnp.log(params["y_scale"][task])
    if prior is not None:
        mu = mu + prior
    if "log_sigma_shift" in params:
        log_sigma = log_sigma + params["log_sigma_shift"][task]
    if "kappa" in params and e is not None:
        log_sigma = widened_log_sigma(log_sigma, params["kappa"][task], e)
    return jnp.stack([mu, log_sigma])


def _steps_config(config: MEDNConfig, steps) -> MEDNConfig:
    """The step network's architecture, read from its parameters' shapes (static under jit):
    its own input and layer widths, the first's task count and embedding, no device."""
    model = steps["model"]
    widths = [model["encoder"][k]["kernel"].shape[-1] for k in sorted(model["encoder"], key=int)]
    decoder = [model["decoder_w"][k].shape[-1] for k in sorted(model["decoder_w"], key=int)][:-1]
    return dataclasses.replace(config, n_features=int(steps["x_mean"].shape[1]), encoder=tuple(widths[:-1]),
                               latent=int(widths[-1]), decoder=tuple(decoder), device_dim=0)


def _network(config: MEDNConfig, model, z, task, device=None) -> jax.Array:
    """The network's `(mu, log_sigma)` in standardized units; an ensemble's (every state
    array stacked along a leading members axis) is the mean of its members'."""
    if model["embed"]["embedding"].ndim == 3:  # [members, n_tasks, embed_dim]: static under jit
        return jnp.mean(jax.vmap(lambda m: nnx.merge(_graphdef(config), m)(z, task, device))(model), axis=0)
    return nnx.merge(_graphdef(config), model)(z, task, device)


@functools.partial(jax.jit, static_argnames=("config",))
def _first_mu(config: MEDNConfig, model, z, task):
    """The standardized mean of rows `z [n, f]` of tasks `task [n]`."""
    return jax.vmap(lambda zi, ti: _network(config, model, zi, ti)[0])(z, task)


@functools.partial(jax.jit, static_argnames=("config", "task"))
def _rms_sensitivity(config: MEDNConfig, model, y_scale, z, *, task: int):
    """RMS over rows `z [n, f]` of the gradient of one task's correction (log units) with
    respect to each standardized input."""
    f = lambda v: _network(config, model, v, task)[0] * y_scale
    return jnp.sqrt(jnp.mean(jax.vmap(jax.grad(f))(z) ** 2, axis=0))


@dataclasses.dataclass(frozen=True)
class MEDNLoss:
    """MEDN's training loss, for the plain and the device-aware network: the mean by squared
    error, the log spread by Gaussian negative log-likelihood with the mean held fixed.

    Batches are `(z, task, y)` (standardized features and targets), or `(z, task, device, y)`
    for a device-aware network, whose parameters are then `{"model", "emb"}` and `aux` holds
    the standardized device descriptors `[n_devices, n_desc]`.
    """

    config: MEDNConfig
    nll_weight: float = 0.1
    loss: str = "mse"  # the mean's loss (`jaxlat.regressors._recipe.regression_loss`)
    huber_delta: float = 1.0

    def __call__(self, params, batch, aux):
        graphdef = _graphdef(self.config)
        if self.config.device_dim:
            (xb, tb, db, yb), (desc,) = batch, aux
            vec = jnp.concatenate([params["emb"][db], desc[db]], axis=-1)
            model = params["model"]
            out = jax.vmap(lambda z, t, v: nnx.merge(graphdef, model)(z, t, v))(xb, tb, vec)
        else:
            xb, tb, yb = batch
            out = jax.vmap(lambda z, t: nnx.merge(graphdef, params)(z, t))(xb, tb)
        mu, log_sigma = out[:, 0], out[:, 1]
        r2 = jax.lax.stop_gradient((mu - yb) ** 2)
        nll = jnp.mean(0.5 * r2 * jnp.exp(-2 * log_sigma) + log_sigma)
        return regression_loss(mu, yb, self.loss, self.huber_delta) + self.nll_weight * nll


@dataclasses.dataclass(frozen=True)
class MEDNPredict:
    """MEDN's pure `predict(params, x, task)` for an architecture (a value: every MEDN of the
    same architecture shares its compiled programs); the shapes come from `params`."""

    embed_dim: int
    encoder: tuple[int, ...]
    latent: int
    decoder: tuple[int, ...]

    def __call__(self, params, x, task):
        n_tasks, n_features = params["x_mean"].shape  # static under jit
        config = MEDNConfig(int(n_tasks), int(n_features), self.embed_dim, self.encoder, self.latent, self.decoder)
        return medn_forward(config, params, x, task)


@dataclasses.dataclass(frozen=True)
class TaskPredict:
    """One task's `predict(params, x)` of a multi-task `predict(params, x, task)`."""

    predict: Any
    task: int

    def __call__(self, params, x):
        return self.predict(params, x, self.task)


class MultiTaskRegressor(NamedTuple):
    """A regressor over all module types at once (MEDN).

    Attributes:
      name: registry name.
      fit: `(key, train, *, val) -> params`, with `train` and `val` mapping each module type to
        `(x [n, f_type], y [n])`.
      predict: `(params, x [f_type], task) -> [2]` for one config of task index `task` (the
        module type's position in `params["tasks"]`, a static list).
      config: settings for rebuilding.
    """

    name: str
    fit: Any
    predict: Any
    config: Mapping[str, Any]


def medn_regressor(
    *,
    embed_dim: int = 16,
    encoder: tuple[int, ...] = (256, 256, 256),
    latent: int = 128,
    decoder: tuple[int, ...] = (64,),
    nll_weight: float = 0.1,
    train: TrainConfig = TrainConfig(epochs=500, batch_size=256, learning_rate=1e-3, patience=0),
    recipe: Recipe | Mapping[str, Any] = DEFAULT,
    members: int = 1,
) -> MultiTaskRegressor:
    """Builds MEDN (see the module docstring).

    Args:
      embed_dim, encoder, latent, decoder: the architecture (`MEDNConfig`).
      nll_weight: weight of the spread's negative log-likelihood next to the mean's loss.
      train: optimization settings.
      recipe: what the network learns and how its interval is set (a `Recipe` or a mapping of
        its fields; `LEGACY` is recipe 1).
      members: networks in the ensemble (recipe 2): each trained from its own seed on the same
        inputs, the prediction their mean and the interval set for that mean; training and
        prediction cost grow with it.
    """
    recipe = as_recipe(recipe)
    if not isinstance(members, int) or isinstance(members, bool) or members < 1:
        raise ValueError(f"members={members!r} is not valid: expected an integer >= 1")
    if members > 1 and recipe.version == 1:
        raise ValueError(f"members={members} is not valid with recipe 1: ensembles need recipe 2")
    settings = dict(embed_dim=embed_dim, encoder=tuple(encoder), latent=latent, decoder=tuple(decoder))
    predict = MEDNPredict(**settings)

    def _stack(data: Mapping[str, tuple[np.ndarray, np.ndarray]], tasks: list[str], f: int, stats):
        xs, ts, ys = [], [], []
        for t, name in enumerate(tasks):
            if name not in data:
                continue
            x, y = data[name]
            xp = np.zeros((len(x), f), np.float32)
            xp[:, : x.shape[1]] = x
            xs.append((xp - stats["x_mean"][t]) / stats["x_scale"][t])
            ys.append((np.asarray(y, np.float32) - stats["y_mean"][t]) / stats["y_scale"][t])
            ts.append(np.full(len(x), t, np.int32))
        return np.concatenate(xs), np.concatenate(ts), np.concatenate(ys)

    def fit_legacy(key, train_data, *, val=None):
        tasks = sorted(train_data)
        f = max(x.shape[1] for x, _ in train_data.values())
        stats = {k: np.zeros((len(tasks), f), np.float32) for k in ("x_mean",)}
        stats["x_scale"] = np.ones((len(tasks), f), np.float32)
        stats["y_mean"] = np.zeros(len(tasks), np.float32)
        stats["y_scale"] = np.ones(len(tasks), np.float32)
        for t, name in enumerate(tasks):
            x, y = train_data[name]
            m, s = standardizer(np.asarray(x, np.float64))
            stats["x_mean"][t, : x.shape[1]], stats["x_scale"][t, : x.shape[1]] = m, s
            stats["y_mean"][t], stats["y_scale"][t] = np.mean(y), max(np.std(y), 1e-6)
        init_key, train_key = jax.random.split(key)
        config = MEDNConfig(len(tasks), f, **settings)
        model = MEDN(config, rngs=nnx.Rngs(params=init_key))
        _, state = nnx.split(model)
        trainable = nnx.to_pure_dict(state)

        train_arrays = _stack(train_data, tasks, f, stats)
        val = {k: v for k, v in (val or {}).items() if len(v[1]) > 0}
        val_arrays = _stack(val, tasks, f, stats) if val else None
        trainable = fit_with_adamw(MEDNLoss(config, nll_weight), trainable, train_arrays, key=train_key, config=train,
                                   val=val_arrays)
        params = {k: np.asarray(v) for k, v in stats.items()}
        params["model"] = jax.tree.map(np.asarray, trainable)
        params["tasks"] = tasks  # static metadata, stored in the artifact's JSON
        return params

    def fit_recipe(key, train_data, *, val=None):
        params, edges, config, inputs, val = fit_network(key, train_data, val)
        if not recipe.conformal:
            return params
        tasks = params["tasks"]
        scales = {}
        if edges:  # a first fit without the edge rows; each task's widening calibrated on its own
            first_data = {n: tuple(a[~edges[n]] for a in d) if n in edges else d for n, d in train_data.items()}
            # Its validation rows are those inside its range too (as for the MLP).
            first_val = {}
            for n, d in val.items():
                keep = ~beyond_edge(d[0], edge_thresholds(train_data[n][0], feature_schema(n).names, recipe.edge,
                                                          recipe.edge_frac)) if n in edges else slice(None)
                first_val[n] = tuple(np.asarray(a)[keep] for a in d)
            first, _, _, first_inputs, first_val = fit_network(jax.random.fold_in(key, 1), first_data, first_val, bins=0)
            _conformal(first, config, tasks, first_data, first_val, first_inputs, raw=True)
            for t, name in enumerate(tasks):
                if name in edges:
                    x, y = (np.asarray(a, np.float32)[edges[name]] for a in train_data[name])
                    resid, base = _residuals(first, t, x, y)
                    contrib = first["kappa"][t].astype(np.float64) * _standardized(first, t, x, first_inputs)[1]
                    sigma = base * np.exp(first["log_sigma_shift"][t])
                    scales[t] = (widening_scales(resid, sigma, contrib) if is_edge_all(recipe.edge) else
                                 widening_scale(resid, sigma, np.linalg.norm(contrib, axis=1), narrow=True))
        _conformal(params, config, tasks, train_data, val, inputs, scales=scales)
        return params

    def fit_network(key, train_data, val, bins=None):
        """Recipe 2's parameters up to the interval, the edge rows of each task (with
        `recipe.edge`), the architecture, the input function and the validation rows used.
        `bins` overrides the recipe's (the edge calibration's first fit has no step network:
        beyond the range the first network alone extrapolates)."""
        tasks = sorted(train_data)
        if recipe.edge and recipe.conformal:
            check_edge(recipe.edge, {name: feature_schema(name).names for name in tasks})
        f = max(x.shape[1] for x, _ in train_data.values())
        width = f + 1 if recipe.prior else f  # the log prior is the last input column
        n = len(tasks)
        params: dict[str, Any] = {
            "x_mean": np.zeros((n, width), np.float32),
            "x_scale": np.ones((n, width), np.float32),
            "y_mean": np.zeros(n, np.float32),
            "y_scale": np.ones(n, np.float32),
        }
        ranged = recipe.clip or recipe.conformal  # the range clips the inputs, or widens the interval only
        rkeys = ("x_min", "x_max") if recipe.clip else ("range_min", "range_max")
        if ranged:
            params[rkeys[0]] = np.zeros((n, width), np.float32)
            params[rkeys[1]] = np.zeros((n, width), np.float32)
        priors = []

        def inputs(t, x):
            """Padded features with the log prior appended, and the log prior (0 without)."""
            xp = np.zeros((len(x), f), np.float32)
            xp[:, : x.shape[1]] = x
            if not recipe.prior:
                return xp, np.zeros(len(x))
            lp = roofline_log_ms_host(priors[t], x)
            return np.concatenate([xp, lp[:, None]], axis=1).astype(np.float32), lp

        for t, name in enumerate(tasks):
            x, y = (np.asarray(a, np.float32) for a in train_data[name])
            if recipe.prior:
                priors.append(fit_roofline(x, y, feature_schema(name).names))
            xa, lp = inputs(t, x)
            cols = np.r_[np.arange(x.shape[1]), [f] if recipe.prior else []].astype(int)
            m, s = standardizer(np.asarray(xa[:, cols], np.float64))
            params["x_mean"][t, cols], params["x_scale"][t, cols] = m, s
            r = y - lp
            params["y_mean"][t], params["y_scale"][t] = np.mean(r), max(np.std(r), 1e-6)
            if ranged:
                params[rkeys[0]][t, cols], params[rkeys[1]][t, cols] = xa[:, cols].min(axis=0), xa[:, cols].max(axis=0)
        if recipe.prior:
            params["prior"] = {k: np.stack([p[k] for p in priors]) for k in priors[0]}

        def stack(data):
            zs, ts, ys = [], [], []
            for t, name in enumerate(tasks):
                if name not in data:
                    continue
                x, y = (np.asarray(a, np.float32) for a in data[name])
                xa, lp = inputs(t, x)
                z = (xa - params["x_mean"][t]) / params["x_scale"][t]
                if recipe.clip:
                    lo, hi = standardized_bounds(params["x_min"][t], params["x_max"][t], params["x_mean"][t],
                                                 params["x_scale"][t])
                    z = np.clip(z, lo, hi)
                zs.append(z.astype(np.float32))
                ys.append(((y - lp - params["y_mean"][t]) / params["y_scale"][t]).astype(np.float32))
                ts.append(np.full(len(x), t, np.int32))
            return np.concatenate(zs), np.concatenate(ts), np.concatenate(ys)

        config = MEDNConfig(n, width, **settings)
        val = {k: v for k, v in (val or {}).items() if len(v[1]) > 0 and k in train_data}
        rows, val_rows = stack(train_data), (stack(val) if val else None)
        params["model"] = train_members(key, config, rows, val_rows)
        params["tasks"] = tasks  # static metadata, stored in the artifact's JSON
        bins = recipe.bins if bins is None else bins
        encs = pad_encodings([fit_encoding(train_data[name][0], bins) if bins else None for name in tasks])
        if encs is not None:  # the step network learns what the first left over
            params["steps"] = fit_steps(jax.random.fold_in(key, 7), params, config, encs, train_data, val, inputs,
                                        rows, val_rows)
        edges = {}
        if recipe.edge and recipe.conformal:
            for name in tasks:
                mask = edge_rows(train_data[name][0], feature_schema(name).names, recipe.edge, recipe.edge_frac)
                if mask is not None:
                    edges[name] = mask
        return params, edges, config, inputs, val

    def train_members(key, config, rows, val_rows):
        """`members` MEDNs of `config` from their own seeds on `rows` (`(z, task, target)`),
        stacked along a leading axis when more than one."""
        loss = MEDNLoss(config, nll_weight, recipe.loss, recipe.huber_delta)
        init = lambda k: nnx.to_pure_dict(nnx.split(MEDN(config, rngs=nnx.Rngs(params=k)))[1])
        return fit_members(loss, init, members, rows, key=key, config=train, val=val_rows)

    def fit_steps(key, params, config, encs, train_data, val, inputs, rows, val_rows):
        """The step network: each task's features, log prior and encoding (masked bins stay 0),
        standardized and clipped to the training range, mapped to what the first network left
        over of the standardized target; trained on the rows of the tasks with an encoding."""
        tasks = params["tasks"]
        has_bins = encs["mask"].sum(axis=1) > 0
        f = max(x.shape[1] for x, _ in train_data.values())
        width = f + 1 + encs["col"].shape[1]
        steps = {"encoding": encs, "x_mean": np.zeros((len(tasks), width), np.float32),
                 "x_scale": np.ones((len(tasks), width), np.float32), "x_min": np.zeros((len(tasks), width), np.float32),
                 "x_max": np.zeros((len(tasks), width), np.float32)}

        def step_inputs(t, x):
            xa, lp = inputs(t, x)
            return np.concatenate([xa[:, :f], np.asarray(lp, np.float32)[:, None],
                                   encode_host({k: v[t] for k, v in encs.items()}, xa[:, :f])], axis=1)

        for t, name in enumerate(tasks):
            xs = step_inputs(t, np.asarray(train_data[name][0], np.float32))
            own = np.r_[np.arange(train_data[name][0].shape[1]), [f], f + 1 + np.arange(int(encs["mask"][t].sum()))]
            m, sc = standardizer(np.asarray(xs[:, own], np.float64))
            steps["x_mean"][t, own], steps["x_scale"][t, own] = m, sc
            steps["x_min"][t, own], steps["x_max"][t, own] = xs[:, own].min(axis=0), xs[:, own].max(axis=0)

        def stacked(data, first_rows):
            if not any(name in data and has_bins[t] for t, name in enumerate(tasks)):
                return None
            zs = []
            for t, name in enumerate(tasks):
                if name in data and has_bins[t]:
                    xs = step_inputs(t, np.asarray(data[name][0], np.float32))
                    lo, hi = standardized_bounds(steps["x_min"][t], steps["x_max"][t], steps["x_mean"][t],
                                                 steps["x_scale"][t])
                    zs.append(np.clip((xs - steps["x_mean"][t]) / steps["x_scale"][t], lo, hi).astype(np.float32))
            z, task, target = (a[has_bins[first_rows[1]]] for a in first_rows)  # the same rows, in order
            mu = np.asarray(_first_mu(config, params["model"], jnp.asarray(z), jnp.asarray(task)))
            return np.concatenate(zs), task, (target - mu).astype(np.float32)

        w = recipe.step_width
        step_config = dataclasses.replace(config, n_features=width, encoder=(w,) * len(config.encoder),
                                          latent=min(config.latent, w))
        steps["model"] = train_members(key, step_config, stacked(train_data, rows),
                                       stacked(val, val_rows) if val_rows is not None else None)
        return steps

    def _standardized(params, t, x, inputs):
        """Task `t`'s network inputs of rows `x` (clipped where the recipe clips) and their
        excess over the training range."""
        xa, _ = inputs(t, x)
        z = (xa - params["x_mean"][t]) / params["x_scale"][t]
        rkeys = ("x_min", "x_max") if recipe.clip else ("range_min", "range_max")
        lo, hi = standardized_bounds(params[rkeys[0]][t], params[rkeys[1]][t], params["x_mean"][t], params["x_scale"][t])
        e = np.maximum(z - hi, 0) + np.maximum(lo - z, 0)
        return (np.clip(z, lo, hi) if recipe.clip else z), e

    def _residuals(params, t, x, y):
        """Task `t`'s absolute log residuals of rows `x`, `y` and its learned spread there,
        before the conformal shift and the widening."""
        bare = {k: v for k, v in params.items() if k not in ("kappa", "log_sigma_shift", "tasks")}
        out = predict_batch(Regressor("medn", None, TaskPredict(predict, t)), bare, x)
        return np.abs(y - out[:, 0]), np.exp(out[:, 1].astype(np.float64))

    def _conformal(params, config, tasks, train_data, val, inputs, *, raw=False, scales=None):
        """Per task: the conformal shift of the learned spread on in-range validation rows
        (the training rows where a task has none), and the widening outside the range: its
        first-order slopes times `scales[t]` where given (edge-calibrated), else times the
        validation rows' `widening_scale` (1 with `raw`)."""
        shift = np.zeros(len(tasks), np.float32)
        kappa = np.zeros_like(params["x_mean"])
        params.pop("kappa", None)
        for t, name in enumerate(tasks):
            x, y = (np.asarray(a, np.float32) for a in (val[name] if name in val else train_data[name]))
            resid, base = _residuals(params, t, x, y)
            z, e = _standardized(params, t, x, inputs)
            inside = ~(e > OUTSIDE_TOL).any(axis=1)
            rows = inside if inside.any() else np.ones(len(x), bool)
            shift[t] = max(conformal_shift(resid[rows], base[rows]), MIN_LOG_SIGMA - float(np.log(base[rows].max())))
            k = np.asarray(_rms_sensitivity(config, params["model"], params["y_scale"][t], jnp.asarray(z), task=t),
                           np.float64)
            if scales and t in scales and scales[t] is not None:
                c = scales[t]
            elif raw:
                c = 1.0
            else:
                c = widening_scale(resid, base * np.exp(shift[t]), np.linalg.norm(k * e, axis=1))
            kappa[t] = k * c
        params["log_sigma_shift"], params["kappa"] = shift, kappa.astype(np.float32)

    fit = fit_legacy if recipe.version == 1 else fit_recipe
    config = dict(settings)
    if members > 1:
        config["members"] = members
    if recipe.version != 1:  # recipe 1's configuration is what predictors saved before recipes
        config["recipe"] = recipe.as_config()
    return MultiTaskRegressor("medn", fit, predict, config=config)


def medn_task_view(medn: MultiTaskRegressor, params: Mapping[str, Any], module: str) -> tuple[Regressor, Any]:
    """One module type's slice of a fitted MEDN, as a per-type `Regressor` and its params.

    The view's `predict` calls MEDN's own `predict` (one code path); `fit` is not available
    on a view (MEDN is fitted over all types together).
    """
    tasks = list(params["tasks"])
    if module not in tasks:
        raise ValueError(f"module={module!r} is not a task of this MEDN; tasks: {', '.join(tasks)}")
    arrays = {k: v for k, v in params.items() if k != "tasks"}
    return medn_task_regressor(medn, module, tasks.index(module)), arrays


def medn_task_regressor(medn: MultiTaskRegressor, module: str, task: int) -> Regressor:
    """The per-type `Regressor` of `medn`'s task `module` (index `task` among its tasks), whose
    parameters are the MEDN's without `tasks` (`medn_task_view`)."""

    def fit(*args, **kwargs):
        raise TypeError("a MEDN task view is not fitted on its own; fit the MEDN over all module types")

    return Regressor(f"medn[{module}]", fit, TaskPredict(medn.predict, task), config={**medn.config, "task": module})
