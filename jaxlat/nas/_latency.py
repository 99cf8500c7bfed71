"""Expected latency of a relaxed search space, in pure JAX, through the learned predictor.

    lat = expected_latency_fn(predictor, space)           # (probs [L, K], widths [S]) -> ms
    jax.grad(lambda a, w: lat(jax.nn.softmax(a), w), argnums=(0, 1))(logits, widths)

`probs[l, k]` weighs candidate `k` of layer `l` (softmax or Gumbel-softmax of the architecture
logits); `widths[s]` multiplies the channels of stage `s` (continuous: the predictor covers
shapes never measured). Expected latency is linear in the weights:

    E[latency] = scale * sum_r weight_r * latency_ms(row_r) + per_module_ms * E[n_modules]
                 + per_unmapped_ms * E[n_unmapped] + per_view_ms * E[n_views]
                 + ms_per_mb * E[arithmetic MB] + ms_per_copy_mb * E[copy MB]

with the predictor's whole-model composition correction (the plain sum when it has none): the
same terms `LatencyPredictor.predict_models` applies to a derived architecture's record, so at
one-hot probabilities and widths whose channels are whole multiples the two agree.
Identical rows (the same module at the same symbolic shape) are predicted once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from profilers import COPY_OPS, get_spec
from profilers.spaces import Ch, MobileArch, Nb201Arch, Row

from .._composition import IDENTITY, Composition
from .._predict import ModelBatch, model_latency


@dataclasses.dataclass(frozen=True)
class _TypeTable:
    """The unique rows of one module type: per numeric field, value = const where group < 0,
    else mult * channels[group]; string and bool fields as host arrays."""

    module: str
    numeric: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # field -> (const, mult, group)
    host: Mapping[str, np.ndarray]
    weights: np.ndarray  # [n_rows, 1 + L*K]: how much each row counts per weight entry


def _row_key(r: Row) -> tuple:
    return (r.module, r.hw, tuple(sorted((k, ("ch", v.group, v.mult) if isinstance(v, Ch) else v)
                                         for k, v in r.fields.items())))


def _collect(fixed: Sequence[Row], choices: Sequence[Sequence[Sequence[Row]]], n_weights: int):
    """Unique rows with their weight matrix `[n_unique, n_weights]` (column 0: fixed rows)."""
    unique: dict[tuple, int] = {}
    rows: list[Row] = []
    entries: list[tuple[int, int]] = []  # (unique row, weight column)
    k_count = len(choices[0]) if choices else 0

    def add(r: Row, col: int) -> None:
        key = _row_key(r)
        if key not in unique:
            unique[key] = len(rows)
            rows.append(r)
        entries.append((unique[key], col))

    for r in fixed:
        add(r, 0)
    for l, cands in enumerate(choices):
        for k, cand in enumerate(cands):
            for r in cand:
                add(r, 1 + l * k_count + k)
    w = np.zeros((len(rows), n_weights), np.float32)
    for i, col in entries:
        w[i, col] += 1.0
    return rows, w


def _tables(rows: Sequence[Row], w: np.ndarray, common: Mapping[str, Any]) -> list[_TypeTable]:
    by_type: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.module != "unmapped":
            by_type.setdefault(r.module, []).append(i)
    out = []
    for module, idx in by_type.items():
        spec = get_spec(module)
        numeric, host = {}, {}
        for f in spec.all_fields:
            vals = [{**common, **rows[i].fields}.get(f.name, f.default) for i in idx]
            if f.kind is str:
                host[f.name] = np.asarray(vals, dtype=object)
            elif f.kind is bool:
                host[f.name] = np.asarray(vals, dtype=np.float32)
            else:
                const = np.array([0.0 if isinstance(v, Ch) else float(v) for v in vals], np.float32)
                mult = np.array([v.mult if isinstance(v, Ch) else 0.0 for v in vals], np.float32)
                group = np.array([v.group if isinstance(v, Ch) else -1 for v in vals], np.int32)
                numeric[f.name] = (const, mult, group)
        out.append(_TypeTable(module, numeric, host, w[idx]))
    return out


@dataclasses.dataclass(frozen=True)
class RelaxedSpace:
    """A search space prepared for expected-latency evaluation.

    Attributes:
      n_layers, n_ops: the shape of the probability matrix.
      n_widths: the number of width multipliers (0: widths not searched).
      op_names: candidate names.
      valid: `[n_layers, n_ops]` booleans (every candidate is valid in the built-in spaces).
    """

    n_layers: int
    n_ops: int
    n_widths: int
    op_names: tuple[str, ...]
    valid: np.ndarray


def relax(space: Any) -> tuple[RelaxedSpace, list[Row], list[list[list[Row]]]]:
    fixed, choices = space.relaxed_rows()
    n_layers, n_ops = len(choices), len(space.ops)
    n_widths = len(space.stages) if getattr(space, "width_range", None) is not None else 0
    info = RelaxedSpace(n_layers, n_ops, n_widths, tuple(space.ops), np.ones((n_layers, n_ops), bool))
    return info, fixed, choices


def expected_latency_fn(
    predictor: Any, space: Any, *, composition: bool = True
) -> Callable[[jax.Array, jax.Array | None], jax.Array]:
    """The expected latency (ms) of `space` under `predictor`, as a pure JAX function.

    Args:
      predictor: a `LatencyPredictor` with a JAX regressor for every module type of the space.
      space: a `profilers.spaces` space (`MobileSpace`, `Nb201Space`); its run settings
        (`batch_size`, `dtype`, `threads`, `utilization`) are the configs'.
      composition: apply the predictor's whole-model correction (False: the plain sum).

    Returns:
      `latency_ms(probs [n_layers, n_ops], widths [n_widths] or None, params=None) -> []`,
      already jitted; vmap- and grad-able in every argument (`params`: a `PredictorParams`
      like `predictor.whole_models.params`, the default; for a predictor that is not split,
      that is `predictor.params`).

    Raises:
      ValueError: the predictor has no model for a module type of the space.
    """
    # A split predictor composes whole models with its second predictor; `params` are then its.
    predictor = getattr(predictor, "whole_models", predictor)
    info, fixed, choices = relax(space)
    rows, w = _collect(fixed, choices, 1 + info.n_layers * info.n_ops)
    common = {"batch_size": space.batch_size, "dtype": space.dtype, "threads": space.threads,
              "utilization": space.utilization}
    tables = _tables(rows, w, common)
    missing = sorted({t.module for t in tables} - set(predictor.heads))
    if missing:
        raise ValueError(f"expected_latency_fn: the predictor has no JAX model for {missing} (space {space.name})")
    encoders = {t.module: predictor.models[t.module].encode for t in tables}
    # Composition counts per weight column: mapped modules, unmapped compute and view operators,
    # and the megabytes the unmapped compute operators move (symbolic in channels), arithmetic and
    # copies apart: the counts `jaxlat._predict.compose` reads.
    mapped = np.array([r.module != "unmapped" for r in rows])
    is_view = np.array([r.module == "unmapped" and r.fields["kind"] == "view" for r in rows])
    is_comp = np.array([r.module == "unmapped" and r.fields["kind"] == "compute" for r in rows])
    n_mod = w[mapped].sum(0)
    n_view = w[is_view].sum(0)
    n_comp = w[is_comp].sum(0)
    comp_rows = [r for r in rows if r.module == "unmapped" and r.fields["kind"] == "compute"]
    bytes_per = space.batch_size * 2 * _dtype_bytes(space.dtype)  # read and write
    numel = [r.fields["numel"] for r in comp_rows]
    b_const = np.array([0.0 if isinstance(v, Ch) else float(v) for v in numel], np.float32)
    b_mult = np.array([v.mult if isinstance(v, Ch) else 0.0 for v in numel], np.float32)
    b_group = np.array([v.group if isinstance(v, Ch) else -1 for v in numel], np.int32)
    # MB per unit of each row's `numel` field (`hw` elements, read and written), in the column of
    # its kind: copies or arithmetic.
    mb_per_numel = np.array([r.hw for r in comp_rows], np.float64) * bytes_per / 1e6
    is_copy = np.array([r.fields["op"] in COPY_OPS for r in comp_rows], bool)
    mb_arith = (mb_per_numel * ~is_copy).astype(np.float32)
    mb_copy = (mb_per_numel * is_copy).astype(np.float32)
    w_comp = w[is_comp]
    base = np.asarray(space.base_channels, np.float32)
    n_groups = len(base)
    identity = Composition(IDENTITY).coef_array

    def group_channels(widths):
        if info.n_widths == 0 or widths is None:
            return jnp.asarray(base)
        widths = jnp.asarray(widths, jnp.float32)
        # Group 0 (the stem) keeps its channels; group s + 1 is stage s.
        scale = jnp.concatenate([jnp.ones((n_groups - info.n_widths,), jnp.float32), widths])
        return jnp.asarray(base) * scale

    def resolve(const, mult, group, ch):
        return jnp.where(group < 0, const, mult * ch[jnp.maximum(group, 0)])

    def latency_ms(probs, widths=None, params=None):
        probs = jnp.asarray(probs, jnp.float32)
        if probs.shape != (info.n_layers, info.n_ops):
            raise ValueError(f"probs has shape {probs.shape}; expected ({info.n_layers}, {info.n_ops}) for {space.name}")
        if info.n_widths and widths is not None and jnp.shape(widths) != (info.n_widths,):
            raise ValueError(f"widths has shape {jnp.shape(widths)}; expected ({info.n_widths},) for {space.name}")
        params = predictor.params if params is None else params
        if not composition:
            params = params._replace(composition=jnp.asarray(identity))
        weights = jnp.concatenate([jnp.ones((1,), jnp.float32), probs.reshape(-1)])
        ch = group_channels(widths)
        feats, owner, weight = {}, {}, {}
        for t in tables:
            fields = {name: resolve(*map(jnp.asarray, cmg), ch) for name, cmg in t.numeric.items()}
            fields.update(t.host)
            feats[t.module] = encoders[t.module](fields, xp=jnp)
            weight[t.module] = jnp.asarray(t.weights) @ weights
            owner[t.module] = jnp.zeros(len(t.weights), jnp.int32)
        arith_mb = copy_mb = jnp.zeros((), jnp.float32)
        if len(comp_rows):
            per_row = jnp.asarray(w_comp) @ weights * resolve(jnp.asarray(b_const), jnp.asarray(b_mult),
                                                              jnp.asarray(b_group), ch)
            arith_mb, copy_mb = jnp.dot(per_row, jnp.asarray(mb_arith)), jnp.dot(per_row, jnp.asarray(mb_copy))
        counts = jnp.stack([jnp.dot(jnp.asarray(n_mod), weights), jnp.dot(jnp.asarray(n_comp), weights),
                            jnp.dot(jnp.asarray(n_view), weights), arith_mb, copy_mb])[None]
        return model_latency(predictor.heads, params, ModelBatch(feats, owner, weight, counts)).latency_ms[0]

    # Jitted here, so that a direct call (a report, a plot) runs one compiled program rather than
    # op by op; inside a caller's jit or grad it is traced through as usual.
    return jax.jit(latency_ms)


def _dtype_bytes(dtype: str) -> int:
    from profilers import dtype_bytes

    return int(dtype_bytes(dtype))


def op_names(arch: MobileArch | Nb201Arch) -> tuple[str, ...]:
    """The op of each searchable layer (a `MobileArch`'s ops, a NAS-Bench-201 cell's edges)."""
    return arch.ops if isinstance(arch, MobileArch) else arch.edges


def one_hot(space: Any, arch: MobileArch | Nb201Arch) -> np.ndarray:
    """`[n_layers, n_ops]` one-hot probabilities of a concrete architecture."""
    ops = list(space.ops)
    chosen = op_names(arch)
    out = np.zeros((len(chosen), len(ops)), np.float32)
    for l, op in enumerate(chosen):
        out[l, ops.index(op)] = 1.0
    return out
