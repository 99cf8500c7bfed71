"""The one prediction function: module rows and whole models from a predictor's parameters.

A predictor is data plus structure:

- `PredictorParams`, a PyTree of float arrays: each module type's regressor parameters (a
  multi-task network such as MEDN is stored once, under the key `"medn"`, and serves several
  types), the whole-model composition coefficients and a per-type log-latency scale.
- `Head`s, static structure: per module type, the regressor's pure `predict(params, x [f]) ->
  (mu, log_sigma)`, the key of its parameters and the non-float parts of them (index arrays).

Everything is a transformation of `model_latency(heads, params, batch)`:

    jax.jit(functools.partial(model_latency, heads))            # batch prediction
    jax.grad(lambda p: model_latency(heads, p, b).latency_ms.sum())(params)   # adaptation
    jax.vmap(..., in_axes=(None, batch_axes))                   # many batches at once

and a module row is a model of one module (`module_outputs`). The whole-model formula is
`compose` and the module sum is `module_sum`; nothing else in the library sums modules or
applies the composition.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._base import PredictFn

#: z-value of the two-sided 80 % interval reported as `lo_ms` / `hi_ms`.
INTERVAL_Z = 1.2815515655446004
#: The composition's count columns, after the module sum (see `jaxlat._composition.TERMS`).
COUNT_TERMS = ("n_modules", "n_unmapped_compute", "n_unmapped_view", "arithmetic_mb", "copy_mb")

PyTree = Any


class Static(NamedTuple):
    """The non-float leaves of a regressor's parameters (index arrays, counts) and where they go:
    structure, not learned values, so they stay out of `PredictorParams`."""

    treedef: Any
    is_param: tuple[bool, ...]
    values: tuple[Any, ...]  # the non-float leaves (None where a float leaf goes)

    def _key(self) -> tuple[Any, ...]:
        vals = tuple(None if v is None else (v.dtype.str, v.shape, v.tobytes()) for v in self.values)
        return (self.treedef, self.is_param, vals)

    # Compared and hashed by value, so that heads of equal structure are one static argument
    # of a compiled function (`model_latency_jit`): predictors that share regressors share programs.
    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Static) and self._key() == other._key()

    def __ne__(self, other: object) -> bool:
        return not self == other


class Head(NamedTuple):
    """How one module type is predicted (static structure, no learned values).

    Attributes:
      module: the module type.
      key: the `PredictorParams.regressors` entry that holds its parameters.
      predict: the regressor's pure `predict(params, x [f]) -> [2]`.
      static: the non-float leaves of its parameters (`partition`).
    """

    module: str
    key: str
    predict: PredictFn
    static: Static


class PredictorParams(NamedTuple):
    """A predictor's learned values, one PyTree of float arrays.

    Attributes:
      regressors: key (a module type, or `"medn"` for a shared network) -> float parameters.
      composition: `[6]` whole-model coefficients in `jaxlat._composition.TERMS` order.
      log_scale: module type -> a scalar added to that type's log latency (a per-type latency
        factor `exp(log_scale)`: calibration to another machine); a type without one is not
        shifted. Zero for a freshly trained predictor.
    """

    regressors: Mapping[str, PyTree]
    composition: Float[Array, 6]
    log_scale: Mapping[str, Float[Array, ""]] = {}  # never mutated


class ModelBatch(NamedTuple):
    """Module rows of several models, grouped by module type, and the models' counts.

    Attributes:
      features: module type -> encoded features `[n_rows, n_features]`.
      owner: module type -> `[n_rows]` index of the model each row belongs to; an index
        `>= n_models` (padding) counts nowhere.
      weight: module type -> `[n_rows]` how much each row counts (1 in an architecture
        record; candidate probabilities in a relaxed search space).
      counts: `[n_models, 5]` composition counts in `COUNT_TERMS` order.
    """

    features: Mapping[str, Float[Array, "_rows _features"]]
    owner: Mapping[str, Int[Array, " _rows"]]
    weight: Mapping[str, Float[Array, " _rows"]]
    counts: Float[Array, "models 5"]


class ModelPrediction(NamedTuple):
    """`model_latency`'s output.

    Attributes:
      latency_ms: `[n_models]` corrected whole-model latency (median).
      sum_ms: `[n_models, 3]` sums of the module medians and of the module interval bounds.
      n_nonfinite: `[n_models]` module predictions that were NaN or infinite (their model's
        latency is then NaN too, never a silent 0).
    """

    latency_ms: Float[Array, " models"]
    sum_ms: Float[Array, "models 3"]
    n_nonfinite: Float[Array, " models"]


def _is_param(leaf: Any) -> bool:
    return np.issubdtype(np.asarray(leaf).dtype, np.floating)


def partition(tree: PyTree) -> tuple[PyTree, Static]:
    """Split a regressor's parameters into float leaves (learned; a PyTree with the same
    structure, `None` elsewhere) and the rest (`Static`). `combine` undoes it."""
    leaves, treedef = jax.tree.flatten(tree)
    is_param = tuple(_is_param(x) for x in leaves)
    # device_put, not jnp.asarray: on host data jnp.asarray compiles a program per shape.
    floats = jax.tree.unflatten(treedef, [jax.device_put(x) if p else None for x, p in zip(leaves, is_param)])
    static = Static(treedef, is_param, tuple(None if p else np.asarray(x) for x, p in zip(leaves, is_param)))
    return floats, static


def combine(floats: PyTree, static: Static) -> PyTree:
    """The full parameters of a regressor from its float leaves and its `Static` part."""
    it = iter(jax.tree.leaves(floats))
    leaves = [next(it) if p else v for p, v in zip(static.is_param, static.values)]
    return jax.tree.unflatten(static.treedef, leaves)


def module_outputs(heads: Mapping[str, Head], params: PredictorParams,
                   features: Mapping[str, Float[Array, "_rows _features"]]) -> dict[str, Float[Array, "_rows 2"]]:
    """`(mu, log_sigma)` of log latency (ms) for rows of each module type in `features`."""
    out = {}
    for module, x in features.items():
        h = heads[module]
        p = combine(params.regressors[h.key], h.static)
        o = jax.vmap(h.predict, in_axes=(None, 0))(p, x)
        shift = params.log_scale.get(module)
        out[module] = o if shift is None else o.at[:, 0].add(shift)
    return out


def module_sum(latency_ms: Float[Array, "rows ..."], weight: Float[Array, " rows"], owner: Int[Array, " rows"],
               n_models: int) -> Float[Array, "models ..."]:
    """Per model, the weighted sum of its rows' latencies; rows with `owner >= n_models` drop out."""
    w = weight.reshape(weight.shape + (1,) * (latency_ms.ndim - 1))
    return jax.ops.segment_sum(latency_ms * w, owner, num_segments=n_models)


def compose(coef: Float[Array, 6], sum_ms: Float[Array, ...], counts: Float[Array, "... 5"]) -> Float[Array, ...]:
    """The whole-model formula: `scale * module sum + counts @ per-count coefficients` (ms)."""
    return coef[0] * sum_ms + counts @ coef[1:]


def model_latency(heads: Mapping[str, Head], params: PredictorParams, batch: ModelBatch) -> ModelPrediction:
    """Whole-model latency of every model in `batch` (see the module docstring)."""
    n = batch.counts.shape[0]
    sums = jnp.zeros((n, 3), jnp.float32)
    bad = jnp.zeros((n,), jnp.float32)
    for module, out in module_outputs(heads, params, batch.features).items():
        mu, sigma = out[:, 0], jnp.exp(out[:, 1])
        lat = jnp.exp(jnp.stack([mu, mu - INTERVAL_Z * sigma, mu + INTERVAL_Z * sigma], axis=1))
        sums = sums + module_sum(lat, batch.weight[module], batch.owner[module], n)
        finite = jnp.isfinite(mu) & jnp.isfinite(out[:, 1])
        bad = bad + module_sum((~finite).astype(jnp.float32), jnp.ones_like(mu), batch.owner[module], n)
    return ModelPrediction(compose(params.composition, sums[:, 0], batch.counts), sums, bad)


@dataclasses.dataclass(frozen=True)
class ShiftedPredict:
    """A module type's regressor `predict` with the type's log-latency shift added (the factor of
    `PredictorParams.log_scale`), for regressor-level paths (`jaxlat.predict_batch`,
    `predict_chunks`, `single_query`): its params are `(regressor params, shift)`, so the shift
    is data, not part of the compiled program."""

    predict: PredictFn

    def __call__(self, params: tuple[PyTree, Any], x: Float[Array, " features"]) -> Float[Array, 2]:
        inner, shift = params
        return self.predict(inner, x).at[0].add(shift)


HeadItems = tuple[tuple[str, Head], ...]


def head_items(heads: Mapping[str, Head]) -> HeadItems:
    """`heads` as a sorted tuple of items: hashable (by value), the static argument of the
    compiled forms below."""
    return tuple(sorted(heads.items()))


@functools.partial(jax.jit, static_argnums=0)
def model_latency_jit(heads: HeadItems, params: PredictorParams, batch: ModelBatch) -> ModelPrediction:
    """`model_latency`, compiled once per (head structure, shapes) for every predictor."""
    return model_latency(dict(heads), params, batch)


@functools.partial(jax.jit, static_argnums=0)
def module_outputs_jit(heads: HeadItems, params: PredictorParams,
                       features: Mapping[str, Float[Array, "_rows _features"]]) -> dict[str, Float[Array, "_rows 2"]]:
    """`module_outputs`, compiled once per (head structure, shapes) for every predictor."""
    return module_outputs(dict(heads), params, features)


def padded_size(n: int, *, minimum: int = 8, maximum: int | None = None) -> int:
    """The next power of two of `n` (at least `minimum`, at most `maximum`): padded shapes, so a
    compiled function serves batches of many sizes."""
    rows = max(minimum, 1 << max(0, n - 1).bit_length())
    return rows if maximum is None else min(rows, maximum)


def stack_batches(batches: list[ModelBatch], features_per_module: Mapping[str, int]) -> ModelBatch:
    """Stack single-model-count batches along a new leading axis, for `jax.vmap` over them.

    Each module type's rows are padded to the longest batch's (padded rows count nowhere), and a
    type a batch lacks gets only padded rows, so every batch has the same structure.

    Args:
      batches: `ModelBatch`es with the same number of models.
      features_per_module: the feature width of every module type that occurs.

    Raises:
      ValueError: batches with different numbers of models.
    """
    sizes = {int(b.counts.shape[0]) for b in batches}
    if len(sizes) != 1:
        raise ValueError(f"stack_batches: the batches hold different numbers of models {sorted(sizes)}")
    n_models = sizes.pop()
    modules = sorted({m for b in batches for m in b.features})
    rows = {m: max(len(b.features[m]) if m in b.features else 1 for b in batches) for m in modules}

    def pad(b: ModelBatch, m: str, field: str) -> np.ndarray:
        r = rows[m]
        if m not in b.features:
            if field == "features":
                return np.zeros((r, features_per_module[m]), np.float32)
            return np.full(r, n_models, np.int32) if field == "owner" else np.zeros(r, np.float32)
        a = np.asarray(getattr(b, field)[m])
        fill = n_models if field == "owner" else 0
        return np.concatenate([a, np.full((r - len(a),) + a.shape[1:], fill, a.dtype)])

    return ModelBatch(
        {m: np.stack([pad(b, m, "features") for b in batches]) for m in modules},
        {m: np.stack([pad(b, m, "owner") for b in batches]) for m in modules},
        {m: np.stack([pad(b, m, "weight") for b in batches]) for m in modules},
        np.stack([np.asarray(b.counts) for b in batches]),
    )
