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
        **cost_indices(names),
        "overhead_ms": np.float32(max(coef[0], 1e-6)),
        "ms_per_flop": np.float32(coef[1]),
        "ms_per_byte": np.float32(coef[2]),
    }


def cost_indices(names: Sequence[str]) -> dict[str, np.ndarray]:
    """The feature indices a roofline reads: FLOPs (`i_flops`) and the three byte counts
    (`i_bytes`)."""
    names = list(names)
    return {"i_flops": np.int32(names.index("log1p_flops")),
            "i_bytes": np.asarray([names.index(n) for n in _BYTES], np.int32)}


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


# -- the piecewise roofline ----------------------------------------------------------------------

#: Bytes moved (inputs, outputs and weights, at the config's batch size) at which the piecewise
#: roofline's bandwidth term may change slope: from 512 KiB to 32 MiB, by factors of 4, where
#: caches of today's CPUs end. Fixed, not fitted: a few dozen rows cannot place a knee.
KNEE_BYTES = (2**19, 2**21, 2**23, 2**25)


def kind_columns(names: Sequence[str]) -> np.ndarray:
    """Indices of the one-hot columns of a type's categorical fields (e.g. `activation=gelu`,
    `mode=max`), dtype excluded: the kinds whose overhead and per-FLOP cost the piecewise
    roofline fits apart."""
    return np.asarray([i for i, n in enumerate(names) if "=" in n and not n.startswith("dtype=")], np.int32)


def piecewise_indices(names: Sequence[str]) -> dict[str, np.ndarray]:
    """The feature indices `piecewise_design` reads: FLOPs, the three byte counts, the kinds."""
    return {**cost_indices(names), "i_kinds": kind_columns(names)}


def piecewise_design(params, x, xp=np):
    """`[n, k]` design of the piecewise roofline for encoded rows `x [n, f]` (`params` holds
    `piecewise_indices`): an overhead, FLOPs, bytes moved, bytes moved beyond each of
    `KNEE_BYTES`, and per kind an extra overhead and an extra FLOPs column (`_SHARED` columns
    first, then the kinds')."""
    flops = xp.expm1(x[:, params["i_flops"]])
    moved = xp.expm1(x[:, params["i_bytes"]]).sum(axis=1)
    k = x[:, params["i_kinds"]]
    knees = [xp.maximum(moved - b, 0.0)[:, None] for b in KNEE_BYTES]
    return xp.concatenate([xp.ones_like(flops)[:, None], flops[:, None], moved[:, None], *knees,
                           k, k * flops[:, None]], axis=1)


#: Columns of `piecewise_design` shared by every kind; the kinds' extras follow.
_SHARED = 3 + len(KNEE_BYTES)
#: Pull of the kinds' extra overhead and FLOPs cost toward 0 (a ridge penalty in the
#: column-scaled relative-error problem): a kind with few rows, or rows of one size only,
#: takes the shared costs instead of an unidentified slope of its own.
KIND_PENALTY = 0.01


def fit_piecewise_roofline(x: np.ndarray, y: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """`piecewise_indices` and the non-negative coefficients (`coef`) of `piecewise_design` for
    relative error on rows `x [n, f]`, `y [n]` (log ms), the kinds' extras pulled toward 0
    (`KIND_PENALTY`): overhead and ms per FLOP (shared, and each kind's extra), ms per byte,
    and the rise of ms per byte beyond each knee (>= 0: a larger working set never moves
    bytes faster)."""
    params = piecewise_indices(names)
    lat = np.exp(np.asarray(y, np.float64))
    design = piecewise_design(params, np.asarray(x, np.float64)) / lat[:, None]
    colscale = np.maximum(np.abs(design).max(axis=0), 1e-30)
    n_extra = design.shape[1] - _SHARED
    penalty = np.hstack([np.zeros((n_extra, _SHARED)), KIND_PENALTY * np.sqrt(len(lat)) * np.eye(n_extra)])
    a = np.vstack([design / colscale, penalty])
    b = np.concatenate([np.ones_like(lat), np.zeros(n_extra)])
    coef, _ = nnls(a, b, maxiter=5000)
    return {**params, "coef": (coef / colscale).astype(np.float32)}


def piecewise_roofline_log_ms_host(params, x: np.ndarray) -> np.ndarray:
    """Log ms of the piecewise roofline for rows `x [n, f]` on the host, in float64."""
    lat = piecewise_design(params, np.asarray(x, np.float64)) @ np.asarray(params["coef"], np.float64)
    return np.log(np.maximum(lat, 1e-6))


def piecewise_roofline_predict(params, x):
    """The piecewise roofline's pure `predict(params, x [f]) -> (mu, log_sigma)`."""
    lat = piecewise_design(params, x[None, :], jnp)[0] @ params["coef"]
    return jnp.stack([jnp.log(jnp.maximum(lat, 1e-6)), params["log_sigma"]])


def piecewise_roofline_regressor() -> Regressor:
    """Fits, per module type, `overhead + flops * ms_per_flop + bytes * ms_per_byte + sum_j
    max(bytes - KNEE_BYTES[j], 0) * extra_ms_per_byte_j`, plus for each kind its extra overhead
    and ms per FLOP (pulled toward 0 where its rows cannot tell them): a roofline whose
    fixed and per-FLOP costs differ by kind (a GELU's fixed cost was 3.5 times a ReLU's on an
    AMD EPYC) and whose bandwidth drops as the working set leaves each cache. Fitted for
    relative error by non-negative least squares: a dozen rows per kind pin it down, where a
    network needs hundreds; `jaxlat calibrate` blends it into the module types where it
    predicts held-out rows better."""

    def fit(key, x, y, *, names, x_val=None, y_val=None):
        del key
        params = fit_piecewise_roofline(x, y, names)
        xs, ys = residual_rows(x, y, x_val, y_val)
        params["log_sigma"] = residual_log_sigma(ys, piecewise_roofline_log_ms_host(params, xs))
        return params

    return Regressor("roofline_pw", fit, piecewise_roofline_predict, config={})
