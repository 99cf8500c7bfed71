"""A device-aware MEDN: one network for several devices (or settings of one device), reading a
device vector next to each config's features: the device's measured descriptor (standardized,
`profilers._descriptor.descriptor_features`) and a learned device embedding.

    dm = fit_device_medn({"torch t1": df_a, "tflite t1": df_b, ...}, descriptors={...})
    pred = dm.predictor("tflite t1")                      # a LatencyPredictor for one device
    vec = dm.fit_embedding(frame_k, measured_ms_k)        # a new device: its embedding alone
    dm.predictor(vec)                                     # predicts the new device

Fitting the embedding of a new device from K samples (modules, or whole networks through the
sum of their modules and a scale) keeps every network weight fixed: the few numbers a handful of
measurements can determine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax import nnx

from .._base import Regressor, standardizer
from .._data import split_by_config, type_arrays
from .._features import feature_schema
from .._predict import module_sum
from .._predictor import LatencyPredictor, TypeModel
from .._train import TrainConfig, fit_with_adamw
from ..regressors._medn import MEDN, MEDNConfig, MEDNLoss, medn_forward

#: Descriptor features read by the device vector (`descriptor_features` keys).
DESCRIPTOR_KEYS = ("log_peak_gflops", "log_bandwidth_gbs", "log_l2_kib", "log_l3_kib", "log_cores")


@dataclasses.dataclass
class DeviceMEDN:
    """A fitted device-aware MEDN.

    Attributes:
      devices: device names in embedding order.
      params: MEDN parameters and standardization statistics (`tasks`: module types).
      embeddings: `[n_devices, embed_dim]` learned device embeddings.
      descriptors: `[n_devices, n_desc]` standardized descriptor features.
      desc_mean, desc_scale: how descriptors are standardized.
      config: the MEDN architecture.
    """

    devices: tuple[str, ...]
    params: dict[str, Any]
    embeddings: np.ndarray
    descriptors: np.ndarray
    desc_mean: np.ndarray
    desc_scale: np.ndarray
    config: MEDNConfig

    def device_vector(self, device: str | np.ndarray, descriptor: Mapping[str, float] | None = None) -> np.ndarray:
        """The vector a device is predicted with: a known device by name, or an embedding
        (from `fit_embedding`) with the new device's descriptor features (default: the mean)."""
        if isinstance(device, str):
            if device not in self.devices:
                raise ValueError(f"device={device!r} is not known: expected one of {', '.join(self.devices)}")
            i = self.devices.index(device)
            return np.concatenate([self.embeddings[i], self.descriptors[i]]).astype(np.float32)
        desc = np.zeros(len(DESCRIPTOR_KEYS), np.float32) if descriptor is None else (
            (np.array([descriptor[k] for k in DESCRIPTOR_KEYS]) - self.desc_mean) / self.desc_scale)
        return np.concatenate([np.asarray(device, np.float32), desc]).astype(np.float32)

    def _predict_one(self, params, x, task: int, vec):
        return medn_forward(self.config, params, x, task)

    def predictor(self, device: str | np.ndarray, descriptor: Mapping[str, float] | None = None) -> LatencyPredictor:
        """A `LatencyPredictor` of one device (per-type views of this network with the device's
        vector fixed): predict, predict_models, latency_fn all work. Not saved as an artifact."""
        vec = self.device_vector(device, descriptor)
        models = {}
        arrays = {k: v for k, v in self.params.items() if k != "tasks"}
        p = {**arrays, "device_vec": jnp.asarray(vec)}  # one network serves every type
        for t, module in enumerate(self.params["tasks"]):
            def predict(p, x, t=t):
                return self._predict_one(p, x, t, None)

            reg = Regressor(f"medn_device[{module}]", _no_fit, predict, config={"task": module})
            n = len(feature_schema(module).names)
            models[module] = TypeModel(module, reg, p, feature_schema(module).names,
                                       np.full(n, -np.inf, np.float32), np.full(n, np.inf, np.float32), shared="medn")
        name = device if isinstance(device, str) else "adapted"
        return LatencyPredictor(models, device={"device": name, "device_aware": True})

    def fit_embedding(self, items: Any, latency_ms: Sequence[float], *, steps: int = 300, lr: float = 0.05,
                      init: str | None = None, descriptor: Mapping[str, float] | None = None) -> np.ndarray:
        """The embedding of a new device from K measured samples, every network weight fixed.

        Args:
          items: a frame of module configs, or architecture records (whole networks, matched
            through the sum of their modules times a learned scale).
          latency_ms: the K measured latencies.
          steps, lr: Adam on the embedding (and the scale, for networks).
          init: start from a known device's embedding (default: the mean embedding).
          descriptor: the new device's descriptor features, if measured.
        """
        y = jnp.log(jnp.asarray(latency_ms, jnp.float32))
        e0 = self.embeddings.mean(0) if init is None else self.embeddings[self.devices.index(init)]
        desc = self.device_vector(np.zeros(self.embeddings.shape[1]), descriptor)[self.embeddings.shape[1]:]
        groups = _groups(items, self.params["tasks"])
        base = {k: v for k, v in self.params.items() if k != "tasks"}

        def log_pred(theta):
            vec = jnp.concatenate([theta["e"], jnp.asarray(desc)])
            p = {**base, "device_vec": vec}
            total = None
            for t, (x, owner, n) in groups.items():
                lat = jnp.exp(jax.vmap(lambda r: self._predict_one(p, r, t, None)[0])(x))
                part = module_sum(lat, jnp.ones_like(lat), owner, n)
                total = part if total is None else total + part
            return jnp.log(total) + theta["s"]

        theta = {"e": jnp.asarray(e0), "s": jnp.zeros(())}
        if not isinstance(items, pd.DataFrame):  # networks: start the scale at the median gap
            theta["s"] = jnp.median(y - log_pred(theta))
        opt = optax.adam(lr)
        state = opt.init(theta)

        @jax.jit
        def step(theta, state):
            loss, g = jax.value_and_grad(lambda th: jnp.mean((log_pred(th) - y) ** 2))(theta)
            if isinstance(items, pd.DataFrame):
                g = {**g, "s": jnp.zeros(())}  # modules: the embedding alone
            updates, state = opt.update(g, state, theta)
            return optax.apply_updates(theta, updates), state, loss

        for _ in range(steps):
            theta, state, _ = step(theta, state)
        self._last_scale = float(theta["s"])
        return np.asarray(theta["e"])


def _no_fit(*args, **kwargs):
    raise TypeError("a device-aware MEDN view is not fitted on its own: use fit_device_medn")


def _groups(items: Any, tasks: Sequence[str]) -> dict[int, tuple[jnp.ndarray, jnp.ndarray, int]]:
    """Per task index: encoded features of every module row, the item each row belongs to, and
    the number of items. A frame's rows are one item each; a record's modules belong to it."""
    from .._features import encode_frame

    if isinstance(items, pd.DataFrame):
        frame = items.reset_index(drop=True).assign(_owner=np.arange(len(items)))
        n = len(items)
    else:
        parts = []
        for i, r in enumerate(items):
            f = r.frame()
            parts.append(f.assign(_owner=i))
        frame, n = pd.concat(parts, ignore_index=True), len(items)
    out = {}
    for module, sub in frame.groupby("module"):
        if module not in tasks:
            raise ValueError(f"module type {module!r} is not one the device-aware MEDN learned")
        out[list(tasks).index(module)] = (jnp.asarray(encode_frame(sub, module)),
                                          jnp.asarray(sub["_owner"].to_numpy()), n)
    return out


def fit_device_medn(
    frames: Mapping[str, pd.DataFrame],
    *,
    descriptors: Mapping[str, Mapping[str, float]] | None = None,
    device_embed_dim: int = 8,
    train: TrainConfig = TrainConfig(epochs=200, batch_size=256, learning_rate=1e-3, patience=0),
    medn: Mapping[str, Any] | None = None,
    seed: int = 0,
    val_frac: float = 0.15,
) -> DeviceMEDN:
    """Train one MEDN over datasets of several devices.

    Args:
      frames: device name -> dataset rows (ok rows; one device or setting each).
      descriptors: device name -> `descriptor_features(...)` (default: zeros, the embedding
        alone tells devices apart, as for settings of one CPU).
      device_embed_dim: size of the learned device embedding.
      train: optimization settings.
      medn: MEDN architecture overrides (`encoder`, `latent`, `decoder`, `embed_dim`).
      seed: initialization, shuffling, validation split.
      val_frac: share of config groups held out per device for early stopping.
    """
    devices = tuple(frames)
    if len(devices) < 1:
        raise ValueError("fit_device_medn: no datasets")
    tasks = sorted(set().union(*(set(df["module"]) for df in frames.values())))
    f = max(len(feature_schema(m).names) for m in tasks)
    desc = np.array([[float((descriptors or {}).get(d, {}).get(k, 0.0)) for k in DESCRIPTOR_KEYS] for d in devices],
                    np.float32)
    d_mean, d_scale = standardizer(desc.astype(np.float64))
    desc_std = (desc - d_mean) / d_scale
    # Per task standardization over every device's rows.
    xs = {m: [] for m in tasks}
    for d, df in frames.items():
        for m in tasks:
            if (df["module"] == m).any():
                xs[m].append(type_arrays(df, m))
    stats = {"x_mean": np.zeros((len(tasks), f), np.float32), "x_scale": np.ones((len(tasks), f), np.float32),
             "y_mean": np.zeros(len(tasks), np.float32), "y_scale": np.ones(len(tasks), np.float32)}
    for t, m in enumerate(tasks):
        x = np.concatenate([a for a, _ in xs[m]])
        y = np.concatenate([b for _, b in xs[m]])
        mean, scale = standardizer(x.astype(np.float64))
        stats["x_mean"][t, : x.shape[1]], stats["x_scale"][t, : x.shape[1]] = mean, scale
        stats["y_mean"][t], stats["y_scale"][t] = y.mean(), max(y.std(), 1e-6)

    def arrays(split_frames):
        X, T, D, Y = [], [], [], []
        for di, (d, df) in enumerate(split_frames.items()):
            for t, m in enumerate(tasks):
                if not (df["module"] == m).any():
                    continue
                x, y = type_arrays(df, m)
                xp = np.zeros((len(x), f), np.float32)
                xp[:, : x.shape[1]] = x
                X.append((xp - stats["x_mean"][t]) / stats["x_scale"][t])
                Y.append((y - stats["y_mean"][t]) / stats["y_scale"][t])
                T.append(np.full(len(x), t, np.int32))
                D.append(np.full(len(x), devices.index(d), np.int32))
        return tuple(np.concatenate(a) for a in (X, T, D, Y))

    splits = {d: split_by_config(df, test_frac=val_frac, seed=seed) for d, df in frames.items()}
    train_arrays = arrays({d: s[0] for d, s in splits.items()})
    val_arrays = arrays({d: s[1] for d, s in splits.items()})
    settings = {"embed_dim": 16, "encoder": (256, 256, 256), "latent": 128, "decoder": (64,), **dict(medn or {})}
    config = MEDNConfig(len(tasks), f, device_dim=device_embed_dim + len(DESCRIPTOR_KEYS), **settings)
    key = jax.random.key(seed)
    init_key, train_key, emb_key = jax.random.split(key, 3)
    model = MEDN(config, rngs=nnx.Rngs(params=init_key))
    trainable = {"model": nnx.to_pure_dict(nnx.split(model)[1]),
                 "emb": jax.random.normal(emb_key, (len(devices), device_embed_dim)) * 0.1}
    trained = fit_with_adamw(MEDNLoss(config, 0.1), trainable, train_arrays, key=train_key, config=train,
                             val=val_arrays, aux=(np.asarray(desc_std, np.float32),))
    params = {k: np.asarray(v) for k, v in stats.items()}
    params["model"] = jax.tree.map(np.asarray, trained["model"])
    params["tasks"] = tasks
    return DeviceMEDN(devices, params, np.asarray(trained["emb"]), desc_std, d_mean, d_scale, config)


def embedding_method(dm: DeviceMEDN, *, descriptor: Mapping[str, float] | None = None, steps: int = 300):
    """`adapt`'s learned candidate `embedding`: fit the target's device embedding alone."""

    def fit(items, latency_ms):
        vec = dm.fit_embedding(items, latency_ms, steps=steps, descriptor=descriptor)
        scale = 0.0 if isinstance(items, pd.DataFrame) else dm._last_scale
        pred = dm.predictor(vec, descriptor)

        def predict(new_items):
            if isinstance(new_items, pd.DataFrame):
                return pred.predict(new_items)["latency_ms"].to_numpy(float)
            return pred.predict_models(list(new_items))["plain_sum_ms"].to_numpy(float) * np.exp(scale)

        return predict

    return fit


def finetune_method(dm: DeviceMEDN, proxy_device: str, *, steps: int = 200, lr: float = 1e-3):
    """`adapt`'s learned candidate `finetune`: the decoder heads of the proxy device's MEDN
    fine-tuned on the K samples (encoder and device vector fixed; networks through the sum of
    their modules and a learned scale)."""

    def fit(items, latency_ms):
        y = jnp.log(jnp.asarray(latency_ms, jnp.float32))
        groups = _groups(items, dm.params["tasks"])
        base = {k: v for k, v in dm.params.items() if k != "tasks"}
        vec = jnp.asarray(dm.device_vector(proxy_device))
        networks = not isinstance(items, pd.DataFrame)

        def log_pred(theta, groups):
            model = {**base["model"], "decoder_w": theta["w"], "decoder_b": theta["b"]}
            p = {**base, "model": model, "device_vec": vec}
            total = None
            n = next(iter(groups.values()))[2]
            for t, (x, owner, _) in groups.items():
                lat = jnp.exp(jax.vmap(lambda r: dm._predict_one(p, r, t, None)[0])(x))
                part = module_sum(lat, jnp.ones_like(lat), owner, n)
                total = part if total is None else total + part
            return jnp.log(total) + (theta["s"] if networks else 0.0)

        theta = {"w": base["model"]["decoder_w"], "b": base["model"]["decoder_b"], "s": jnp.zeros(())}
        if networks:
            theta["s"] = jnp.median(y - log_pred(theta, groups))
        opt = optax.adam(lr)
        state = opt.init(theta)

        @jax.jit
        def step(theta, state):
            g = jax.grad(lambda th: jnp.mean((log_pred(th, groups) - y) ** 2))(theta)
            updates, state = opt.update(g, state, theta)
            return optax.apply_updates(theta, updates), state

        for _ in range(steps):
            theta, state = step(theta, state)

        def predict(new_items):
            return np.exp(np.asarray(log_pred(theta, _groups(new_items, dm.params["tasks"]))))

        return predict

    return fit
