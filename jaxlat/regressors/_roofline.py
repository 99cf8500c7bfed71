"""Roofline regressor: latency = overhead + FLOPs / peak + bytes / bandwidth.

Three non-negative coefficients per module type, fitted for relative error (each residual is
divided by the measured latency) by non-negative least squares. Interpretable (the fitted
peak FLOP/s and bandwidth are in the parameters) and it extrapolates linearly in size.

The same fit is the cost prior of the MLP and MEDN recipes (`fit_roofline`,
`roofline_log_ms`): the networks learn the log latency over it.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import nnls

from .._base import Regressor, residual_log_sigma, residual_rows

_BYTES = ("log1p_bytes_in", "log1p_bytes_out", "log1p_bytes_weight")


def _raw(x, names, xp=np):
    i_f, i_bi, i_bo, i_bw = (names.index(n) for n in ("log1p_flops", *_BYTES))
    flops = xp.expm1(x[..., i_f])
    moved = xp.expm1(x[..., i_bi]) + xp.expm1(x[..., i_bo]) + xp.expm1(x[..., i_bw])
    return flops, moved


def roofline_ms(params, x: jax.Array) -> jax.Array:
    """`overhead_ms + flops * ms_per_flop + bytes * ms_per_byte` of one config `x [f]`
    (encoded features; `params` from `fit_roofline`)."""
    flops = jnp.expm1(x[params["i_flops"]])
    moved = jnp.expm1(x[params["i_bytes"]]).sum()
    return params["overhead_ms"] + flops * params["ms_per_flop"] + moved * params["ms_per_byte"]


def roofline_log_ms(params, x: jax.Array) -> jax.Array:
    """Natural log of `roofline_ms`, floored at 1 ns: the cost prior of the network recipes.
    Non-decreasing in FLOPs and bytes (the coefficients are non-negative)."""
    return jnp.log(jnp.maximum(roofline_ms(params, x), 1e-6))


def fit_roofline(x: np.ndarray, y: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The three non-negative coefficients for relative error on rows `x [n, f]`, `y [n]`
    (log ms), and the feature indices the prediction reads."""
    names = list(names)
    flops, moved = (np.asarray(a, np.float64) for a in _raw(np.asarray(x, np.float64), names))
    lat = np.exp(np.asarray(y, np.float64))
    design = np.stack([np.ones_like(lat), flops, moved], axis=1) / lat[:, None]
    # Column scaling keeps NNLS well conditioned across 10 orders of magnitude.
    colscale = np.maximum(np.abs(design).max(axis=0), 1e-30)
    coef, _ = nnls(design / colscale, np.ones_like(lat), maxiter=2000)
    coef = coef / colscale
    return {
        "i_flops": np.int32(names.index("log1p_flops")),
        "i_bytes": np.asarray([names.index(n) for n in _BYTES], np.int32),
        "overhead_ms": np.float32(max(coef[0], 1e-6)),
        "ms_per_flop": np.float32(coef[1]),
        "ms_per_byte": np.float32(coef[2]),
    }


def roofline_log_ms_host(params, x: np.ndarray) -> np.ndarray:
    """`roofline_log_ms` of rows `x [n, f]` on the host, in float64."""
    x = np.asarray(x, np.float64)
    flops = np.expm1(x[:, int(params["i_flops"])])
    moved = np.expm1(x[:, np.asarray(params["i_bytes"])]).sum(axis=1)
    lat = float(params["overhead_ms"]) + flops * float(params["ms_per_flop"]) + moved * float(params["ms_per_byte"])
    return np.log(np.maximum(lat, 1e-6))


def roofline_predict(params, x):
    """The roofline's pure `predict` (one module-level function: every fit shares its programs)."""
    return jnp.stack([roofline_log_ms(params, x), params["log_sigma"]])


def roofline_regressor() -> Regressor:
    """Fits `overhead_ms + flops * ms_per_flop + bytes * ms_per_byte` per module type."""
    predict = roofline_predict

    def fit(key, x, y, *, names, x_val=None, y_val=None):
        del key
        params = {**fit_roofline(x, y, names), "log_sigma": np.float32(0.0)}
        xs, ys = residual_rows(x, y, x_val, y_val)
        f_s, m_s = (np.asarray(a, np.float64) for a in _raw(np.asarray(xs, np.float64), list(names)))
        lat_s = params["overhead_ms"] + f_s * float(params["ms_per_flop"]) + m_s * float(params["ms_per_byte"])
        params["log_sigma"] = residual_log_sigma(ys, np.log(np.maximum(lat_s, 1e-6)))
        return params

    return Regressor("roofline", fit, predict, config={})
