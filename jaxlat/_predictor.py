"""`LatencyPredictor`: one regressor per module type (or one MEDN for all), their parameters,
feature schemas, device metadata, the selection report and the whole-model composition
correction, saved as a directory of JSON and `.npz` files.

    predictor = train_predictor(read_dataset("data/cpu.parquet"), regressor="auto", archs=records)
    predictor.predict(configs)            # DataFrame: latency_ms, lo_ms, hi_ms per config
    predictor.predict_models(records)     # whole models: corrected sum, interval, plain sum
    predictor.latency_fn("conv2d")        # pure JAX: fields -> latency_ms (jit, vmap, grad)
    predictor.save("predictors/cpu")      # no pickle; checksummed
    LatencyPredictor.load("predictors/cpu")
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from profilers import SCHEMA_VERSION, ArchRecord, ModuleConfig

from ._base import Regressor
from ._composition import IDENTITY, TERMS, Composition, count_rows, fit_composition
from ._data import STATISTICS, check_count, measured_ms, split_by_config, statistic_column, type_arrays
from ._features import (
    FEATURE_SCHEMA_VERSION,
    check_columns,
    encode_columns,
    feature_schema,
    outside_training_range,
)
from ._io import WHOLE_MODELS_DIR, ArtifactError, load_tree, save_tree, sha256_file, write_json
from ._predict import (
    INTERVAL_Z,
    Head,
    ModelBatch,
    ModelPrediction,
    PredictorParams,
    PyTree,
    ShiftedPredict,
    combine,
    compose,
    head_items,
    model_latency,
    model_latency_jit,
    module_outputs,
    module_outputs_jit,
    padded_size,
    partition,
)
from ._train import TrainConfig
from .regressors import MultiTaskRegressor, blend_params, blend_regressor, medn_task_view, regressor_entry
from .regressors._blend import part_spec
from .regressors._recipe import Recipe, as_recipe, check_edge

if TYPE_CHECKING:
    import pandas as pd

_log = logging.getLogger(__name__)

#: Version of the predictor directory layout; `load` accepts exactly these. Version 2 added the
#: composition correction and the selection report; a version-1 directory loads without them
#: (whole models are then predicted as the plain sum of their modules). Version 3 gives the
#: correction a separate rate for the bytes of unmapped copies (`ms_per_copy_mb`); a version-2
#: correction reads with copies at its `ms_per_mb`, as it predicted them (an older jaxlat
#: refuses a version-3 directory instead of ignoring the copy rate). Version 4 adds per-type
#: latency factors (`log_scale`, `with_type_scales`); it is written only by a predictor that has
#: some, so that an older jaxlat refuses it rather than ignore them. Version 5 carries a second
#: predictor in `whole_models/` that composes whole models (`with_whole_models`); it is
#: written only by such a predictor.
PREDICTOR_FORMAT_VERSION = 3
READABLE_PREDICTOR_VERSIONS = (1, 2, 3, 4, 5)
#: Feature-schema versions a predictor may have been trained on. Version 1 lacks the dtype
#: one-hots `dtype=fp16w` and `dtype=int8`; such a model reads its own columns of today's
#: encoding, and a config in a dtype it never saw is flagged as extrapolated (its dtype column
#: falls outside the training range).
READABLE_FEATURE_VERSIONS = (1, 2)
#: Rows per compiled call of the prediction paths (the last chunk padded).
CHUNK_ROWS = 65536


@dataclasses.dataclass
class TypeModel:
    """The fitted model of one module type."""

    module: str
    regressor: Regressor
    params: PyTree
    feature_names: tuple[str, ...]
    feature_min: np.ndarray  # training range per feature, for extrapolation flags
    feature_max: np.ndarray
    shared: str | None = None  # "medn" when the params are a slice of a shared MEDN
    #: Columns of the current feature encoding this model reads, when it was trained on an
    #: older feature schema whose names are a subset of today's (None: all, in order).
    feature_index: np.ndarray | None = None

    def encode(self, columns: Mapping[str, Any], *, xp: Any = np) -> Any:
        """Features of configs given as columns, as this model was trained on them."""
        x = encode_columns(self.module, columns, xp=xp)
        return x if self.feature_index is None else x[:, self.feature_index]


class LatencyPredictor:
    """Predicts latency (ms) for configs of any module type it was trained on.

    A thin wrapper over data and one pure function: `params` (a `PredictorParams` PyTree of
    every learned value) and `heads` (per module type, the regressor's pure `predict`), combined
    by `jaxlat._predict.model_latency`. `predict` and `predict_models` encode DataFrames and
    records, call its compiled form, and return DataFrames; `apply` is the pure function itself,
    for `jax.grad` and `jax.vmap` with respect to the parameters.

    A predictor may carry a second one that composes its whole models (`with_whole_models`,
    written by `jaxlat calibrate --objective split`): module queries (`predict`, `latency_fn`,
    `regressor_view`, `params`, `apply`) answer from its own module models, whole-model
    queries (`predict_models`, `breakdown`, `model_batch`, `composition`, the NAS latency) from
    `whole_models`.
    """

    def __init__(
        self,
        models: Mapping[str, TypeModel],
        *,
        device: Mapping[str, Any],
        medn: tuple[MultiTaskRegressor, PyTree] | None = None,
        composition: Composition | None = None,
        selection: Mapping[str, Any] | None = None,
        feature_version: int = FEATURE_SCHEMA_VERSION,
        statistic: str = "median",
        log_scale: Mapping[str, float] | None = None,
        whole_models: LatencyPredictor | None = None,
    ):
        self.models = dict(models)
        self.feature_version = feature_version  # the feature schema its models were trained on
        self.device = dict(device)
        self._medn = medn  # (MultiTaskRegressor, params) when a MEDN serves some types
        self._composition = composition  # None: whole models are the plain sum of their modules
        self.selection = dict(selection) if selection else None  # the auto-selection report
        statistic_column(statistic)
        #: The latency statistic it learned (`jaxlat._data.STATISTICS`): modules and whole models
        #: are predicted, and measured records compared, as this statistic.
        self.statistic = statistic
        self.heads, self._regressor_params = _heads(self.models)
        #: Per module type, a log-latency shift (`with_type_scales`); empty: none.
        self.log_scale = _checked_log_scale(log_scale or {}, self.models)
        # Compiled once per head structure and shape, shared by every predictor with the same
        # regressors (a refit, a copy, a `with_params` adaptation).
        items = head_items(self.heads)
        self._model_fn = functools.partial(model_latency_jit, items)
        self._module_fn = functools.partial(module_outputs_jit, items)
        self._whole = _checked_whole(whole_models, statistic)

    @property
    def composition(self) -> Composition | None:
        """The whole-model correction (None: whole models are the plain sum of their modules);
        read-only: `with_composition` and `with_fitted_composition` return a new predictor.
        A split predictor's is that of `whole_models`."""
        return self._composition if self._whole is None else self._whole.composition

    @property
    def whole_models(self) -> LatencyPredictor:
        """The predictor whole models are composed from: this one, or the second predictor it
        carries (`with_whole_models`)."""
        return self if self._whole is None else self._whole

    @property
    def is_split(self) -> bool:
        """Whether whole models come from a second predictor (`with_whole_models`)."""
        return self._whole is not None

    def with_whole_models(self, predictor: LatencyPredictor | None) -> LatencyPredictor:
        """A copy whose whole models (`predict_models`, `breakdown`, `model_batch`,
        `composition`, the NAS latency) are composed by `predictor`, its module queries still
        answered by this one's models (None: composed from its own again).

        Why two: a base fine-tuned on a machine's module timings predicts those modules best,
        while another base's modules, composed and corrected on measured networks, predict
        whole networks best (`docs/results.md`, "A new machine"); one set of module
        predictions cannot serve both.

        Raises:
          ValueError: `predictor` is itself split, or learned another latency statistic.
        """
        out = copy.copy(self)
        out._whole = _checked_whole(predictor, self.statistic)
        return out

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(sorted(self.models))

    @property
    def params(self) -> PredictorParams:
        """Every learned value, one PyTree: per-type (or shared MEDN) regressor parameters and
        the composition coefficients. Differentiate `apply` with respect to it."""
        comp = self._composition or Composition(IDENTITY)  # its own, also when split
        # device_put, not jnp.asarray: on host data jnp.asarray compiles a program per shape.
        shifts = {m: jax.device_put(np.float32(self.log_scale.get(m, 0.0))) for m in self.heads}
        return PredictorParams(self._regressor_params, jax.device_put(comp.coef_array), shifts)

    def apply(self, params: PredictorParams, batch: ModelBatch):
        """The pure prediction function (`jaxlat._predict.model_latency` with this predictor's
        heads): `ModelPrediction` of every model in `batch` (`model_batch`). Transform it freely:
        `jax.grad(lambda p: pred.apply(p, b).latency_ms.sum())(pred.params)`. It composes this
        predictor's own module models: for a split predictor, whole models are
        `pred.whole_models.apply(pred.whole_models.params, batch)`."""
        return model_latency(self.heads, params, batch)

    def _model(self, module: str) -> TypeModel:
        try:
            return self.models[str(module)]
        except KeyError:
            raise ValueError(
                f"module={module!r} has no model in this predictor; it predicts: {', '.join(self.modules)}"
            ) from None

    def _outputs(self, module: str, x: np.ndarray) -> np.ndarray:
        """`[n, 2]` (mu, log_sigma) for features `[n, f]`, in padded chunks of the compiled path."""
        m = self._model(module)
        if not m.regressor.jittable:  # tree ensembles predict on host, the whole batch at once
            out = np.array(m.regressor.predict(m.params, np.asarray(x, np.float32)), np.float32)
            out[:, 0] += self.log_scale.get(module, 0.0)
            return out
        n, rows = len(x), padded_size(len(x), maximum=CHUNK_ROWS)
        params = self.params
        parts = [np.asarray(self._module_fn(params, {module: _pad(x[s:s + rows], rows)})[module])[:len(x[s:s + rows])]
                 for s in range(0, n, rows)]
        return np.concatenate(parts) if parts else np.zeros((0, 2), np.float32)

    def regressor_view(self, module: str) -> tuple[Regressor, PyTree]:
        """One module type's model as a plain regressor and its parameters, per-type factor
        included (`with_type_scales`): for the regressor-level paths, which a predictor's
        factors would not otherwise reach.

            reg, params = pred.regressor_view("conv2d")
            jaxlat.predict_chunks(reg.predict, params, [x], dtype="bf16")   # mass prediction
            jaxlat.single_query(reg.predict, params)                        # one config at a time

        Its `predict(params, x [f]) -> (mu, log_sigma)` equals what `predict_features` gives.

        Raises:
          ValueError: a module type this predictor has no model for, or one whose regressor is
            not a JAX regressor (tree ensembles).
        """
        m = self._model(module)
        if not m.regressor.jittable:
            raise ValueError(f"{module}: {m.regressor.name} is not a JAX regressor; no pure JAX path")
        reg = m.regressor._replace(predict=ShiftedPredict(m.regressor.predict))
        return reg, (m.params, np.float32(self.log_scale.get(module, 0.0)))

    def predict_features(self, module: str, x: np.ndarray) -> np.ndarray:
        """`[n, 2]` (mu, log_sigma) of log latency for encoded features `[n, f]`."""
        return self._outputs(module, np.asarray(x, np.float32))

    def _encode(self, module: str, frame: pd.DataFrame, *, source: str = "predict") -> np.ndarray:
        """Features of a frame's rows of one module type, checked against the catalogue first
        (`jaxlat.check_columns`: required fields present, values in range, defaults stated);
        non-finite features are an error."""
        m = self._model(module)
        cols = check_columns(module, {c: frame[c] for c in frame.columns if c not in ("module", "_owner")},
                             source=source, labels=frame.index.to_numpy())
        x = np.asarray(m.encode(cols), np.float32)
        bad = ~np.isfinite(x)
        if bad.any():
            names = sorted({m.feature_names[j] for j in np.nonzero(bad.any(axis=0))[0]})
            raise ValueError(f"{module}: {int(bad.any(axis=1).sum())} row(s) have non-finite features "
                             f"({', '.join(names)}); every field must be a finite number in the catalogue's range")
        return x

    def _extrapolated(self, module: str, x: np.ndarray) -> np.ndarray:
        m = self._model(module)
        return outside_training_range(x, m.feature_min, m.feature_max)

    def predict(self, configs: Sequence[ModuleConfig] | pd.DataFrame) -> pd.DataFrame:
        """Predict configs (a list of `ModuleConfig`, or a DataFrame with a `module` column).

        Rows are grouped by module type and each group is predicted in one vectorized call.

        Returns:
          A DataFrame in input order: `module`, `latency_ms` (median), `lo_ms` and `hi_ms` (80 %
          interval), `extrapolated` (a feature outside its training range).

        Raises:
          ValueError: a module type this predictor has no model for, non-finite features, or a
            non-finite prediction.
        """
        import pandas as pd

        df = configs if isinstance(configs, pd.DataFrame) else pd.DataFrame([c.as_dict() for c in configs])
        if "module" not in df.columns:
            raise ValueError("predict: the frame needs a 'module' column")
        out = pd.DataFrame(index=df.index, columns=["module", "latency_ms", "lo_ms", "hi_ms", "extrapolated"])
        out["module"] = df["module"]
        for module, sub in df.groupby("module", sort=False):
            x = self._encode(module, sub)
            pred = self._outputs(module, x)
            if not np.isfinite(pred).all():
                raise ValueError(f"{module}: the model predicted a non-finite latency for "
                                 f"{int((~np.isfinite(pred).all(axis=1)).sum())} row(s)")
            # float64 on host: a far-off prediction of a barely trained model stays > 0 ms
            mu, sigma = pred[:, 0].astype(np.float64), np.exp(pred[:, 1].astype(np.float64))
            out.loc[sub.index, "latency_ms"] = np.exp(mu)
            out.loc[sub.index, "lo_ms"] = np.exp(mu - INTERVAL_Z * sigma)
            out.loc[sub.index, "hi_ms"] = np.exp(mu + INTERVAL_Z * sigma)
            out.loc[sub.index, "extrapolated"] = self._extrapolated(module, x)
        return out.astype({"latency_ms": float, "lo_ms": float, "hi_ms": float, "extrapolated": bool})

    def latency_fn(self, module: str) -> Callable[..., jax.Array]:
        """A pure JAX function `(fields, params=None) -> latency_ms` for one module type.

        `fields` maps every field of the type (and the common fields) to a scalar or an array
        (broadcast together; string fields such as `dtype` stay Python values). Numeric
        fields may be traced: `jax.grad` of the latency with respect to a width, `jax.vmap`
        over candidates, `jax.jit` of a whole search step. `params` (default: this predictor's
        `params`) may be traced too.

        Examples:
          >>> import jax, jax.numpy as jnp  # doctest: +SKIP
          >>> f = predictor.latency_fn("conv2d")  # doctest: +SKIP
          >>> jax.grad(lambda c: f({**cfg, "cout": c}).sum())(64.0)  # doctest: +SKIP
        """
        m = self._model(module)
        if not m.regressor.jittable:
            raise ValueError(f"{module}: {m.regressor.name} is not a JAX regressor; no pure JAX path")
        heads, default = self.heads, self.params

        def latency_ms(fields: Mapping[str, Any], params: PredictorParams | None = None):
            x = m.encode(fields, xp=jnp)
            out = module_outputs(heads, default if params is None else params, {module: x})[module]
            return jnp.exp(out[:, 0])

        return latency_ms

    def breakdown(self, record: ArchRecord) -> pd.DataFrame:
        """Per-operator predictions of an architecture record (`profilers.ArchRecord`): graph
        order, with `op`, `approx` and the share of the module sum (from `whole_models`)."""
        if self._whole is not None:
            return self._whole.breakdown(record)
        df = record.frame()
        if df.empty:
            raise ValueError(f"{record.name}: the record has no mapped modules")
        pred = self.predict(df.drop(columns=["op", "approx"]))
        out = df[["module", "op", "approx"]].copy()
        out[["latency_ms", "lo_ms", "hi_ms", "extrapolated"]] = pred[["latency_ms", "lo_ms", "hi_ms", "extrapolated"]]
        out["share"] = out["latency_ms"] / out["latency_ms"].sum()
        return out

    def model_batch(self, records: Sequence[ArchRecord], *, pad: bool = True) -> tuple[ModelBatch, np.ndarray]:
        """The `ModelBatch` of architecture records (the input of `apply`), and per record the
        number of its modules outside the training ranges.

        Args:
          records: `profilers.ArchRecord`s.
          pad: pad rows and models to powers of two, so that batches of other sizes reuse the
            compiled program (padded rows count nowhere; padded models have zero counts).

        Raises:
          ValueError: a record without mapped modules, a module type without a model, or
            non-finite features (the message names the record).
        """
        import pandas as pd

        if self._whole is not None:
            return self._whole.model_batch(records, pad=pad)
        records = list(records)
        n = len(records)
        n_models = padded_size(n, minimum=1) if pad else n
        frames = []
        for i, r in enumerate(records):
            f = r.frame()
            if f.empty:
                raise ValueError(f"{r.name}: the record has no mapped modules")
            frames.append(f.drop(columns=["op", "approx"]).assign(_owner=i))
        rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["module", "_owner"])
        feats, owner, weight = {}, {}, {}
        n_ext = np.zeros(n, np.int64)
        for module, sub in rows.groupby("module", sort=True):
            try:
                x = self._encode(module, sub.drop(columns=["_owner"]), source="record")
            except ValueError as e:
                names = sorted({records[i].name for i in sub["_owner"]})
                raise ValueError(f"record(s) {', '.join(names[:5])}: {e}") from None
            own = sub["_owner"].to_numpy(np.int32)
            n_ext += np.bincount(own[self._extrapolated(module, x)], minlength=n)
            size = padded_size(len(x)) if pad else len(x)
            feats[module] = _pad(x, size)
            owner[module] = np.concatenate([own, np.full(size - len(own), n_models, np.int32)])
            weight[module] = np.concatenate([np.ones(len(own), np.float32), np.zeros(size - len(own), np.float32)])
        counts = np.zeros((n_models, 5), np.float32)
        counts[:n] = count_rows([r.counts() for r in records])
        return ModelBatch(feats, owner, weight, counts), n_ext

    def _predict_batch(self, records: Sequence[ArchRecord]) -> tuple[ModelPrediction, np.ndarray]:
        """`ModelPrediction` (host arrays, padding dropped) and extrapolation counts of records;
        a model with a non-finite module prediction is an error naming it."""
        if self._whole is not None:
            return self._whole._predict_batch(records)
        records = list(records)
        batch, n_ext = self.model_batch(records)
        out = jax.tree.map(lambda a: np.asarray(a, np.float64)[:len(records)], self._model_fn(self.params, batch))
        bad = [r.name for r, k in zip(records, out.n_nonfinite) if k > 0]
        if bad:
            raise ValueError(f"non-finite module predictions in record(s) {', '.join(bad[:5])}; "
                             "check their module configs against the catalogue's ranges")
        return out, n_ext

    def predict_models(self, records: Sequence[ArchRecord]) -> pd.DataFrame:
        """Whole-model latency of architecture records, all modules in one vectorized call.

        Returns:
          A DataFrame, one row per record: `name`, `latency_ms` (corrected), `lo_ms`, `hi_ms`
          (80 % interval: with a fitted correction, the 80th percentile of its relative error on
          the fitting networks; without one, the module intervals summed),
          `plain_sum_ms` (sum of module medians), `n_modules`, `n_extrapolated`,
          `n_unmapped_compute`, and `measured_ms` where the record was profiled (its
          measurement's `statistic`, the one this predictor learned).
        """
        import pandas as pd

        records = list(records)
        out, n_ext = self._predict_batch(records)
        counts = [r.counts() for r in records]
        comp = self.composition or Composition(IDENTITY)
        mid = out.latency_ms
        if comp.log_q80 is not None:  # calibrated on the fitting networks' residuals
            w_lo = w_hi = np.full(len(mid), comp.log_q80)
        else:  # module intervals summed (errors fully correlated), widened by the correction's spread
            # the one formula, on the host in float64 (compose is plain arithmetic)
            c, coef = count_rows(counts), comp.coef_array.astype(np.float64)
            lo = compose(coef, out.sum_ms[:, 1], c)
            hi = compose(coef, out.sum_ms[:, 2], c)
            zs = INTERVAL_Z * comp.log_sigma
            w_lo = np.sqrt(np.log(np.maximum(mid, 1e-9) / np.maximum(lo, 1e-9)) ** 2 + zs**2)
            w_hi = np.sqrt(np.log(np.maximum(hi, 1e-9) / np.maximum(mid, 1e-9)) ** 2 + zs**2)
        return pd.DataFrame({
            "name": [r.name for r in records],
            "latency_ms": mid,
            "lo_ms": mid * np.exp(-w_lo),
            "hi_ms": mid * np.exp(w_hi),
            "plain_sum_ms": out.sum_ms[:, 0],
            "n_modules": [c["n_modules"] for c in counts],
            "n_extrapolated": n_ext.astype(int),
            "n_unmapped_compute": [c["n_unmapped_compute"] for c in counts],
            "measured_ms": [measured_ms(r, self.statistic) if r.measured else np.nan for r in records],
        })

    def predict_model(self, record: ArchRecord) -> dict[str, Any]:
        """`predict_models` for one record, as a dict."""
        return self.predict_models([record]).iloc[0].to_dict()

    def composition_terms(self, records: Sequence[ArchRecord]) -> np.ndarray:
        """Design rows of the composition correction (`jaxlat.design_rows`): each record's sum of
        module predictions and its operator counts."""
        records = list(records)
        out, _ = self._predict_batch(records)
        return np.concatenate([out.sum_ms[:, :1], count_rows([r.counts() for r in records])], axis=1)

    def with_composition(self, composition: Composition | None) -> LatencyPredictor:
        """A copy with another composition correction (the module models and the compiled
        functions shared, not copied); a split predictor's goes to `whole_models`."""
        out = copy.copy(self)
        if self._whole is not None:
            out._whole = self._whole.with_composition(composition)
        else:
            out._composition = composition
        return out

    def with_params(self, params: PredictorParams) -> LatencyPredictor:
        """A copy whose learned values are `params` (same structure as `self.params`), e.g. after
        a gradient-based adaptation; the composition keeps its interval and fit report. A split
        predictor's `whole_models` is kept as it is (its own `params` are its own)."""
        if jax.tree.structure(params) != jax.tree.structure(self.params):
            raise ValueError("with_params: params must have the structure of this predictor's `params`")
        models = {}
        for module, m in self.models.items():
            h = self.heads[module]
            full = jax.tree.map(np.asarray, combine(params.regressors[h.key], h.static))
            models[module] = dataclasses.replace(m, params=full)
        medn = None
        if self._medn is not None:
            mr, old = self._medn
            new = jax.tree.map(np.asarray, combine(params.regressors["medn"], self.heads[_first_shared(self.models)].static))
            medn = (mr, {**new, "tasks": old["tasks"]})
        comp = None
        if self._composition is not None or np.any(np.asarray(params.composition) != Composition(IDENTITY).coef_array):
            base = self._composition or Composition(IDENTITY)
            comp = dataclasses.replace(base, coef={t: float(v) for t, v in zip(TERMS, np.asarray(params.composition))})
        # Host-only (tree) models have no head, so their factors stay as they are.
        shifts = {m: v for m, v in self.log_scale.items() if m not in self.heads}
        shifts.update({m: float(v) for m, v in params.log_scale.items()})
        return LatencyPredictor(models, device=self.device, medn=medn, composition=comp, selection=self.selection,
                                feature_version=self.feature_version, statistic=self.statistic, log_scale=shifts,
                                whole_models=self._whole)

    def with_type_models(
        self, models: Mapping[str, TypeModel], *, log_scale: Mapping[str, float] | None = None
    ) -> LatencyPredictor:
        """A copy whose models of the types in `models` are the ones given (each reading the
        features of the model it replaces, e.g. `blended_type_model`), with per-type log shifts
        `log_scale` (default: its own). Composition and whole-model predictor are kept; a shared
        MEDN that no model reads any more is dropped.

        Raises:
          ValueError: a module type this predictor has no model for.
        """
        for module in models:
            self._model(module)
        new = {**self.models, **{str(k): v for k, v in models.items()}}
        medn = self._medn if any(m.shared for m in new.values()) else None
        return LatencyPredictor(new, device=self.device, medn=medn, composition=self._composition,
                                selection=self.selection, feature_version=self.feature_version,
                                statistic=self.statistic, log_scale=self.log_scale if log_scale is None else log_scale,
                                whole_models=self._whole)

    @property
    def type_scales(self) -> dict[str, float]:
        """Per module type, the latency factor applied to its model (`with_type_scales`); 1.0
        for every type that has none."""
        return {m: float(np.exp(self.log_scale.get(m, 0.0))) for m in self.modules}

    def with_type_scales(self, scales: Mapping[str, float]) -> LatencyPredictor:
        """A copy whose module predictions of each type in `scales` are multiplied by its factor
        (intervals too), on top of any factor it has: how a predictor is carried to a machine
        that runs some module types faster or slower. Whole models follow, through the module
        sum (a split predictor's `whole_models` takes the factors of the types it has). The
        factors are part of `params` (`PredictorParams.log_scale`), so `jax.grad` fits
        them like any other parameter.

        Raises:
          ValueError: a module type this predictor has no model for, or a factor that is not
            a finite number > 0.
        """
        shifts = dict(self.log_scale)
        for module, factor in scales.items():
            self._model(module)
            f = float(factor)
            if not np.isfinite(f) or f <= 0:
                raise ValueError(f"scales[{module!r}]={factor!r} is not valid: expected a finite number > 0")
            shifts[module] = shifts.get(module, 0.0) + float(np.log(f))
        out = copy.copy(self)
        out.log_scale = _checked_log_scale(shifts, self.models)
        if self._whole is not None:
            theirs = {m: f for m, f in scales.items() if m in self._whole.models}
            out._whole = self._whole.with_type_scales(theirs) if theirs else self._whole
        return out

    def fitted_composition(self, records: Sequence[ArchRecord]) -> Composition:
        """The composition correction fitted on profiled architecture records (measured end to
        end, in this predictor's statistic); this predictor is left as it is.

        Raises:
          ValueError: a record not measured end to end, or fewer than 6 records.
        """
        measured = [r for r in records if r.measured]
        if len(measured) < len(records):
            raise ValueError(f"fitted_composition: {len(records) - len(measured)} record(s) were not measured end to end")
        y_ms = np.array([measured_ms(r, self.statistic) for r in measured])
        terms = self.composition_terms(measured)
        plain = terms[:, 0] / y_ms
        return fit_composition(
            terms, y_ms,
            info={"plain_sum_over_measured_median": float(np.median(plain)),
                  "plain_sum_acc10": float(np.mean(np.abs(plain - 1) <= 0.10))},
        )

    def with_fitted_composition(self, records: Sequence[ArchRecord]) -> LatencyPredictor:
        """A copy whose composition correction is fitted on `records` (`fitted_composition`)."""
        return self.with_composition(self.fitted_composition(records))

    def fit_composition(self, records: Sequence[ArchRecord]) -> Composition:
        """Deprecated: fits the correction and changes this predictor in place. Use
        `with_fitted_composition` (a new predictor) or `fitted_composition` (the correction)."""
        warnings.warn("LatencyPredictor.fit_composition changes the predictor in place; use "
                      "with_fitted_composition(records) or fitted_composition(records)", DeprecationWarning,
                      stacklevel=2)
        if self._whole is not None:
            raise ValueError("fit_composition: not for a split predictor; use with_fitted_composition(records)")
        self._composition = self.fitted_composition(records)
        return self._composition

    # -- persistence ---------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write the predictor to `directory` (created; files replaced atomically)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        manifest: dict[str, Any] = {
            "format_version": PREDICTOR_FORMAT_VERSION,
            "feature_schema_version": self.feature_version,
            "dataset_schema_version": SCHEMA_VERSION,
            "device": self.device,
            "statistic": self.statistic,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "modules": {},
        }
        if self.log_scale:  # format 4: an older jaxlat would ignore the factors, so it refuses
            manifest["format_version"] = 4
            manifest["log_scale"] = dict(self.log_scale)
        if self._composition is not None:
            manifest["composition"] = self._composition.as_json()
        if self.selection is not None:
            manifest["selection"] = self.selection
        if self._medn is None and any(m.shared for m in self.models.values()):
            raise ArtifactError("this predictor's shared network (a device-aware MEDN view) is not saved as an "
                                "artifact; save the DeviceMEDN's data instead")
        if self._medn is not None:
            medn, params = self._medn
            manifest["medn"] = {"config": dict(medn.config), **save_tree(d / "medn.npz", params)}
        for module, m in self.models.items():
            entry = {
                "regressor": m.regressor.name if m.shared is None else "medn",
                "config": dict(m.regressor.config),
                "feature_names": list(m.feature_names),
                "feature_min": m.feature_min.tolist(),
                "feature_max": m.feature_max.tolist(),
            }
            if m.shared is None:
                if not m.regressor.jittable:
                    raise ArtifactError(f"{module}: {m.regressor.name} is a reference regressor and is not saved")
                entry.update(save_tree(d / f"{module}.npz", m.params))
            manifest["modules"][module] = entry
        whole_dir = d / WHOLE_MODELS_DIR
        if self._whole is not None:  # format 5: an older jaxlat would compose from the wrong modules
            self._whole.save(whole_dir)
            manifest["format_version"] = 5
            manifest["whole_models"] = {"dir": WHOLE_MODELS_DIR, "sha256": sha256_file(whole_dir / "predictor.json")}
        elif (whole_dir / "predictor.json").exists():  # a split predictor's, saved here before: not this one's
            shutil.rmtree(whole_dir)
        write_json(d / "predictor.json", manifest)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> LatencyPredictor:
        """Read a predictor directory, checking versions, checksums and feature schemas.

        Raises:
          ArtifactError: missing or corrupted files, an unknown format version, or features
            that differ from this version's feature schema.
        """
        import json

        d = Path(directory)
        path = d / "predictor.json"
        if not path.exists():
            raise ArtifactError(f"{d}: no predictor.json; not a jaxlat predictor directory")
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{path}: not valid JSON ({e}); the file is truncated or corrupted") from None
        version = manifest.get("format_version")
        if version not in READABLE_PREDICTOR_VERSIONS:
            raise ArtifactError(
                f"{path}: format_version={version!r} is unknown; this version of jaxlat reads "
                f"{', '.join(map(str, READABLE_PREDICTOR_VERSIONS))}"
            )
        feature_version = manifest.get("feature_schema_version")
        if feature_version not in READABLE_FEATURE_VERSIONS:
            raise ArtifactError(
                f"{path}: feature_schema_version={feature_version!r}, this version of jaxlat encodes "
                f"features version {FEATURE_SCHEMA_VERSION} and reads "
                f"{', '.join(map(str, READABLE_FEATURE_VERSIONS))}; retrain"
            )
        medn = None
        if "medn" in manifest:
            mr = regressor_entry("medn").build(manifest["medn"]["config"])
            medn = (mr, load_tree(d, manifest["medn"]))
        models = {}
        for module, e in manifest["modules"].items():
            names = tuple(e["feature_names"])
            current = feature_schema(module).names
            index = None
            if names != current:
                if feature_version == FEATURE_SCHEMA_VERSION or not set(names) <= set(current):
                    raise ArtifactError(f"{path}: the features of {module!r} differ from this version's; retrain")
                index = np.array([current.index(n) for n in names])
            if e["regressor"] == "medn":
                if medn is None:
                    raise ArtifactError(f"{path}: {module!r} uses a MEDN but none is saved")
                reg, params = medn_task_view(medn[0], medn[1], module)
                shared = "medn"
            else:
                try:
                    entry = regressor_entry(e["regressor"])
                except ValueError as err:
                    raise ArtifactError(f"{path}: {module!r}: {err} (register it before loading)") from None
                try:
                    reg = entry.build(e["config"])
                except ValueError as err:
                    raise ArtifactError(f"{path}: {module!r}: {err}") from None
                params, shared = load_tree(d, e), None
            models[module] = TypeModel(
                module, reg, params, names, np.asarray(e["feature_min"], np.float32),
                np.asarray(e["feature_max"], np.float32), shared, index,
            )
        try:
            comp = Composition.from_json(manifest["composition"]) if "composition" in manifest else None
        except ValueError as e:
            raise ArtifactError(f"{path}: {e}") from None
        statistic = manifest.get("statistic", "median")  # artifacts written before it was recorded: median
        if statistic not in STATISTICS:
            raise ArtifactError(f"{path}: statistic={statistic!r} is unknown; this version of jaxlat knows "
                                f"{', '.join(STATISTICS)}")
        try:
            log_scale = _checked_log_scale(manifest.get("log_scale", {}), models)
        except (TypeError, ValueError) as e:
            raise ArtifactError(f"{path}: log_scale: {e}") from None
        whole = None
        if "whole_models" in manifest:
            entry, sub = manifest["whole_models"], d / WHOLE_MODELS_DIR
            if not isinstance(entry, dict) or entry.get("dir") != WHOLE_MODELS_DIR:
                raise ArtifactError(f"{path}: whole_models={entry!r} is not valid: expected "
                                    f"{{'dir': {WHOLE_MODELS_DIR!r}, 'sha256': ...}}")
            if not (sub / "predictor.json").exists():
                raise ArtifactError(f"{path}: its whole-model predictor {sub} is missing")
            if sha256_file(sub / "predictor.json") != entry.get("sha256"):
                raise ArtifactError(f"{sub / 'predictor.json'}: checksum mismatch; it is not the whole-model "
                                    f"predictor saved with {path}")
            whole = cls.load(sub)
        try:
            return cls(models, device=manifest.get("device", {}), medn=medn, composition=comp,
                       selection=manifest.get("selection"), feature_version=feature_version, statistic=statistic,
                       log_scale=log_scale, whole_models=whole)
        except ValueError as e:
            raise ArtifactError(f"{path}: {e}") from None


def _checked_whole(whole: LatencyPredictor | None, statistic: str) -> LatencyPredictor | None:
    """`whole` if it may compose the whole models of a predictor of `statistic`, else a
    ValueError saying why."""
    if whole is None:
        return None
    if not isinstance(whole, LatencyPredictor):
        raise ValueError(f"whole_models={type(whole).__name__} is not valid: expected a LatencyPredictor or None")  # noqa: TRY004
    if whole.is_split:
        raise ValueError("whole_models: that predictor is split itself; pass its `whole_models`")
    if whole.statistic != statistic:
        raise ValueError(f"whole_models learned the {whole.statistic} latency, this predictor the {statistic}: "
                         "both parts must learn the same statistic")
    return whole


def _device_of(df: pd.DataFrame) -> dict[str, Any]:
    metas = df.attrs.get("jaxlat", [])
    if not metas:
        return {}
    m = metas[0]
    return {k: m.get(k) for k in ("device_id", "backend", "device", "fingerprint")}


def train_predictor(
    df: pd.DataFrame,
    *,
    regressor: str | Mapping[str, str] = "medn",
    seed: int = 0,
    val_frac: float = 0.15,
    train: TrainConfig | None = None,
    modules: Iterable[str] | None = None,
    select: Mapping[str, Any] | None = None,
    archs: Sequence[ArchRecord] | None = None,
    statistic: str = "median",
    members: int = 1,
    recipe: Recipe | Mapping[str, Any] | None = None,
) -> LatencyPredictor:
    """Fit a predictor on a dataset frame (from `profilers.read_dataset`).

    Args:
      df: dataset rows (ok rows only).
      regressor: one name for every module type (`medn`, `mlp`, `ridge`, `poly2`, `poly3`,
        `roofline`, `roofline_pw`), a mapping module -> name, or `"auto"`: run `select_regressors` (with the
        keyword arguments in `select`, e.g. `{"mode": "time", "budgets": Budgets(...)}`) and
        keep its report in the predictor.
      select: keyword arguments of `select_regressors` when `regressor="auto"`.
      archs: profiled architecture records; the composition correction is fitted on them.
      seed: seeds the validation split and the training.
      val_frac: share of config groups held out for early stopping and interval widths.
      train: optimization settings for gradient-trained regressors (MLP, MEDN).
      modules: restrict to these module types (default: all in `df`).
      statistic: the latency statistic to learn (`jaxlat._data.STATISTICS`): `"median"`, or
        `"p10"` for data measured in rounds on a machine whose speed wanders; the composition
        is fitted on the same statistic of the records.
      members: MLP and MEDN as ensembles of this many networks (their mean; `members` times
        the training time and the prediction arithmetic; other regressors ignore it). Applies
        to the regressors named; `"auto"` selection scores single networks.
      recipe: the training recipe of MLP and MEDN (a `jaxlat.regressors.Recipe` or a mapping
        of its fields, e.g. `{"edge": ("log_cin", "log_cout")}`; default: the current one).
    """
    column = statistic_column(statistic)
    members = check_count(members, name="members") or 1
    mods = sorted(set(df["module"]) if modules is None else set(modules))
    if not mods:
        raise ValueError("train_predictor: the dataset has no rows")
    selection = None
    if regressor == "auto":
        from ._select import select_regressors

        sel = select_regressors(df[df["module"].isin(mods)], seed=seed, train=train, statistic=statistic,
                                **dict(select or {}))
        _log.info("%s", sel.format())
        regressor, selection = sel.choice, sel.as_json()
    choice = {m: regressor for m in mods} if isinstance(regressor, str) else dict(regressor)
    missing = [m for m in mods if m not in choice]
    if missing:
        raise ValueError(f"train_predictor: no regressor given for {missing}")
    entries = {}
    for m, name in choice.items():
        try:
            entries[m] = regressor_entry(name)
        except ValueError as e:
            raise ValueError(f"{m}: {e}") from None
    tr, va = split_by_config(df, test_frac=val_frac, seed=seed)
    key = jax.random.key(seed)
    models: dict[str, TypeModel] = {}
    arrays = {m: (type_arrays(tr, m, column), type_arrays(va, m, column)) for m in mods}
    overrides = ({} if train is None else {"train": train}) | ({"members": members} if members > 1 else {})
    if recipe is not None:  # checked before any training
        overrides["recipe"] = as_recipe(recipe)
        check_edge(overrides["recipe"].edge, {m: feature_schema(m).names for m in mods})
    shared_mods = [m for m in mods if entries[m].multi_task]
    medn = None
    if shared_mods:
        names = {entries[m].name for m in shared_mods}
        if len(names) > 1:
            raise ValueError(f"train_predictor: one multi-task regressor per predictor, got {sorted(names)}")
        mr = entries[shared_mods[0]].build(overrides)
        # With a selection, the shared network learns every type, as it did when it was scored.
        fit_mods = mods if selection is not None else shared_mods
        params = mr.fit(key, {m: arrays[m][0] for m in fit_mods}, val={m: arrays[m][1] for m in fit_mods if len(arrays[m][1][1])})
        medn = (mr, params)
        for m in shared_mods:
            reg, p = medn_task_view(mr, params, m)
            models[m] = _type_model(m, reg, p, arrays[m][0][0], shared="medn")
    for i, m in enumerate(tqdm(mods, desc="per-type models", unit="type", disable=None)):
        if entries[m].multi_task:
            continue
        (x, y), (xv, yv) = arrays[m]
        reg = entries[m].build(overrides)
        params = reg.fit(jax.random.fold_in(key, i), x, y, names=feature_schema(m).names,
                         x_val=xv if len(yv) else None, y_val=yv if len(yv) else None)
        models[m] = _type_model(m, reg, params, x)
    pred = LatencyPredictor(models, device=_device_of(df), medn=medn, selection=selection, statistic=statistic)
    return pred.with_fitted_composition(archs) if archs else pred


def blended_type_model(
    model: TypeModel, local: Regressor, local_params: PyTree, weight: float, *, local_x: np.ndarray | None = None
) -> TypeModel:
    """`model` blended with `local`, a regressor fitted on the same encoded features
    (`model.encode`): log latency `(1 - weight) * model's + weight * local's`
    (`jaxlat.regressors.blend_regressor`); with `weight` 1, `local` alone, whose training range
    (for the extrapolation flags) is that of `local_x`, the rows it was fitted on, where given.
    The blend holds its own copy of a shared MEDN's weights.

    Raises:
      ValueError: `weight` outside [0, 1], or a part that is not a JAX regressor or not one a
        saved predictor can rebuild (a registered name).
    """
    params = blend_params(model.params, local_params, weight)  # checks the weight
    if float(weight) == 1.0:
        out = dataclasses.replace(model, regressor=local, params=local_params, shared=None)
        if local_x is not None and len(local_x):
            out = dataclasses.replace(out, feature_min=np.min(local_x, axis=0), feature_max=np.max(local_x, axis=0))
        return out
    specs = [part_spec(model.regressor), part_spec(local)]
    for spec, reg in zip(specs, (model.regressor, local)):
        try:
            regressor_entry(spec["regressor"])
        except ValueError:
            raise ValueError(f"{model.module}: {reg.name} is not a registered regressor; a blend with it could "
                             "not be loaded again") from None
    reg = blend_regressor(model.regressor, local, specs)
    return dataclasses.replace(model, regressor=reg, params=params, shared=None)


def _type_model(module: str, reg: Regressor, params: PyTree, x: np.ndarray, shared: str | None = None) -> TypeModel:
    return TypeModel(module, reg, params, feature_schema(module).names, x.min(axis=0), x.max(axis=0), shared)


def _pad(x: np.ndarray, rows: int) -> np.ndarray:
    """`x` (`[m, f]`, m <= rows) with zero rows appended up to `rows`."""
    x = np.asarray(x, np.float32)
    return x if len(x) == rows else np.concatenate([x, np.zeros((rows - len(x),) + x.shape[1:], np.float32)])


def _checked_log_scale(log_scale: Mapping[str, float], models: Mapping[str, TypeModel]) -> dict[str, float]:
    """Per-type log-latency shifts as floats, zeros dropped; each type must have a model."""
    out = {}
    for module, v in log_scale.items():
        if module not in models:
            raise ValueError(f"module={module!r} has no model in this predictor; it predicts: {', '.join(sorted(models))}")
        v = float(v)
        if not np.isfinite(v):
            raise ValueError(f"the log scale of {module!r} is {v}: expected a finite number")
        if v != 0.0:
            out[str(module)] = v
    return out


def _first_shared(models: Mapping[str, TypeModel]) -> str:
    return next(k for k in sorted(models) if models[k].shared)


def _heads(models: Mapping[str, TypeModel]) -> tuple[dict[str, Head], dict[str, PyTree]]:
    """Per module type, its `Head`, and the float parameters by key: a model's own type, or
    `"medn"` for the network that several types share (stored once)."""
    heads, params = {}, {}
    for module in sorted(models):
        m = models[module]
        if not m.regressor.jittable:  # host regressors (tree ensembles) have no pure path
            continue
        key = "medn" if m.shared else module
        floats, static = partition(m.params)
        params.setdefault(key, floats)
        heads[module] = Head(module, key, m.regressor.predict, static)
    return heads, params
