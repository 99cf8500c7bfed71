"""The V100 TensorRT conv dataset of another project as jaxlat module types (a user plugin).

Source: alibaba/lightweight-neural-architecture-search (Apache-2.0), commit 8ccaf889,
tinynas/latency/op_profiler/V100/conv_data.out. Each line
`{Conv_type,Batch,In_C,In_H,In_W,Out_C,Kernel,Stride,ElmtFused} latency_ms`; -1 = not measured.
The two conv kinds become two module types registered without editing the catalogue.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

import profilers
from profilers import Field, ModuleSpec, get_spec

REGULAR, DEPTHWISE = "tinynas_conv", "tinynas_dwconv"
_LINE = re.compile(r"\{(\w+),(\d+),(\d+),(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\}\s+(-?[\d.eE+-]+)")


def register() -> None:
    conv = get_spec("conv2d")
    fields = tuple(f for f in conv.fields if f.name != "bias") + (
        Field("fused_add", bool, False, doc="a residual element-wise add fused into the kernel"),
    )
    for name in (REGULAR, DEPTHWISE):
        if name not in profilers.module_types():
            profilers.register_module(
                ModuleSpec(name, fields, lambda v: conv.costs({**v, "bias": True}), conv.constraints, doc="TensorRT conv (V100)")
            )


def load(path: str) -> pd.DataFrame:
    """Valid rows as a frame with the catalogue's columns and `latency_ms_median`."""
    register()
    rows = []
    with open(path) as f:
        for line in f:
            m = _LINE.match(line.strip())
            if not m:
                continue
            kind, b, cin, h, w, cout, k, s, fused, lat = m.groups()
            lat = float(lat)
            if lat <= 0:
                continue
            dw = kind == "Depthwise"
            rows.append(dict(module=DEPTHWISE if dw else REGULAR, batch_size=int(b), cin=int(cin), h=int(h), w=int(w),
                             cout=int(cout), kernel=int(k), stride=int(s), groups=int(cin) if dw else 1,
                             fused_add=bool(int(fused)), latency_ms_median=lat))
    df = pd.DataFrame(rows)
    for c in ("dtype",):
        df[c] = "fp32"
    df["threads"], df["utilization"] = 1, 0.0
    return df


def random_split(df: pd.DataFrame, *, test_frac: float = 0.2, seed: int = 0):
    rng = np.random.default_rng(seed)
    test = rng.random(len(df)) < test_frac
    return df[~test].reset_index(drop=True), df[test].reset_index(drop=True)


def extrapolation_split(df: pd.DataFrame, *, min_channels: int = 1024):
    """Train on configs with both channel counts below `min_channels`, test on the rest."""
    big = (df["cin"] >= min_channels) | (df["cout"] >= min_channels)
    return df[~big].reset_index(drop=True), df[big].reset_index(drop=True)
