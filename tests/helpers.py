"""Shared test helpers: a synthetic latency law and small regressor settings."""

import numpy as np

import profilers
import profilers.spaces
from jaxlat import TrainConfig, encode_columns, feature_schema

SMALL_TRAIN = TrainConfig(epochs=150, batch_size=64, learning_rate=3e-3, patience=0)


def synthetic_latency_ms(cfgs) -> np.ndarray:
    """A known roofline-like law: 5 us overhead + FLOPs at 20 GFLOP/s + bytes at 10 GB/s."""
    out = []
    for c in cfgs:
        k = c.costs()
        out.append(5e-3 + k.flops / 2e7 + (k.bytes_in + k.bytes_out + k.bytes_weight) / 1e7)
    return np.asarray(out)


def synthetic_arrays(module: str, n: int, seed: int = 0):
    cfgs = profilers.sample_configs(module, n, method="lhs", seed=seed)
    cols = {k: np.array([c[k] for c in cfgs], dtype=object if isinstance(cfgs[0][k], str) else None) for k in cfgs[0].values}
    x = np.asarray(encode_columns(module, cols), np.float32)
    return cfgs, x, np.log(synthetic_latency_ms(cfgs)).astype(np.float32), feature_schema(module).names


def synthetic_rows(modules, n_per: int, seed: int = 0, *, spread: float = 0.0) -> list[dict]:
    """Dataset rows of the synthetic law: `n_per` sampled configs of each module type, three
    samples per row at (1 - spread, 1, 1 + spread) times the law."""
    rows = []
    for i, m in enumerate(modules):
        cfgs = profilers.sample_configs(m, n_per, seed=seed + i)
        for c, lat in zip(cfgs, synthetic_latency_ms(cfgs)):
            rows.append(profilers.measurement_row(c, samples_ms=[(1 - spread) * lat, lat, (1 + spread) * lat],
                                                  number_per_run=1, backend="torch", device="cpu",
                                                  device_id="synthetic"))
    return rows


#: A small space: 3 layers in 2 stages, 3 candidates, searchable widths.
TINY_SPACE = profilers.spaces.MobileSpace(
    "tiny",
    stages=((1, 16, 1), (2, 24, 2)),
    ops=("k3_e1", "k5_e3", "skip"),
    stem_channels=16,
    stem_stride=2,
    head_channels=0,
    classes=10,
    resolution=32,
    act="relu6",
    expand_when_e1=False,
    width_range=(0.5, 1.5),
)
