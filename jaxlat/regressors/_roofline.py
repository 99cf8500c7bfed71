"""Roofline regressor: latency = overhead + FLOPs / peak + bytes / bandwidth.

Three non-negative coefficients per module type, fitted for relative error (each residual is
divided by the measured latency) by non-negative least squares. Interpretable (the fitted
peak FLOP/s and bandwidth are in the parameters) and it extrapolates linearly in size.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from scipy.optimize import nnls

from .._base import Regressor, residual_log_sigma, residual_rows


def _raw(x, names, xp=np):
    i_f, i_bi, i_bo, i_bw = (names.index(n) for n in ("log1p_flops", "log1p_bytes_in", "log1p_bytes_out", "log1p_bytes_weight"))
    flops = xp.expm1(x[..., i_f])
    moved = xp.expm1(x[..., i_bi]) + xp.expm1(x[..., i_bo]) + xp.expm1(x[..., i_bw])
    return flops, moved


def roofline_predict(params, x):
    """The roofline's pure `predict` (one module-level function: every fit shares its programs)."""
    flops = jnp.expm1(x[params["i_flops"]])
    moved = jnp.expm1(x[params["i_bytes"]]).sum()
    lat = params["overhead_ms"] + flops * params["ms_per_flop"] + moved * params["ms_per_byte"]
    return jnp.stack([jnp.log(jnp.maximum(lat, 1e-6)), params["log_sigma"]])


def roofline_regressor() -> Regressor:
    """Fits `overhead_ms + flops * ms_per_flop + bytes * ms_per_byte` per module type."""
    predict = roofline_predict

    def fit(key, x, y, *, names, x_val=None, y_val=None):
        del key
        names = list(names)
        flops, moved = (np.asarray(a, np.float64) for a in _raw(np.asarray(x, np.float64), names))
        lat = np.exp(np.asarray(y, np.float64))
        design = np.stack([np.ones_like(lat), flops, moved], axis=1) / lat[:, None]
        # Column scaling keeps NNLS well conditioned across 10 orders of magnitude.
        colscale = np.maximum(np.abs(design).max(axis=0), 1e-30)
        coef, _ = nnls(design / colscale, np.ones_like(lat), maxiter=2000)
        coef = coef / colscale
        params = {
            "i_flops": np.int32(names.index("log1p_flops")),
            "i_bytes": np.asarray([names.index(n) for n in ("log1p_bytes_in", "log1p_bytes_out", "log1p_bytes_weight")], np.int32),
            "overhead_ms": np.float32(max(coef[0], 1e-6)),
            "ms_per_flop": np.float32(coef[1]),
            "ms_per_byte": np.float32(coef[2]),
            "log_sigma": np.float32(0.0),
        }
        xs, ys = residual_rows(x, y, x_val, y_val)
        f_s, m_s = (np.asarray(a, np.float64) for a in _raw(np.asarray(xs, np.float64), names))
        lat_s = params["overhead_ms"] + f_s * float(params["ms_per_flop"]) + m_s * float(params["ms_per_byte"])
        params["log_sigma"] = residual_log_sigma(ys, np.log(np.maximum(lat_s, 1e-6)))
        return params

    return Regressor("roofline", fit, predict, config={})
