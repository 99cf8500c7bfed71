"""The module catalogue: module types, their typed fields, valid ranges and analytic costs.

This file is the contract between `profilers` (which measures modules) and `jaxlat` (which
learns from the measurements). It is plain Python and imports neither torch nor JAX.

A module configuration is one `ModuleConfig`: the module type, its own fields (for example
`cin`, `kernel`) and the common inputs every measurement has (`batch_size`, `dtype`,
`threads`, `utilization`). `make_config` validates it; an invalid value raises `ValueError`
naming the field and the allowed values.

Users add module types with `register_module(ModuleSpec(...))` without editing this file.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import math
import numbers
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

_log = logging.getLogger("profilers")

#: Bumped whenever a built-in module type, field, range or cost formula changes meaning.
#: Version 2 added the TFLite precisions `fp16w` and `int8` to `dtype` (version-1 configs are
#: valid version-2 configs with the same costs).
CATALOGUE_VERSION = 2


class ModuleType(enum.StrEnum):
    """Built-in module types. Members compare equal to their string value."""

    CONV2D = "conv2d"
    CONV_BN_ACT = "conv_bn_act"
    LINEAR = "linear"
    MATMUL = "matmul"
    POOL2D = "pool2d"
    GLOBAL_POOL2D = "global_pool2d"
    BATCHNORM2D = "batchnorm2d"
    LAYERNORM = "layernorm"
    ACTIVATION = "activation"
    ADD = "add"
    MHSA = "mhsa"


#: Element types. `fp32`, `fp16` and `bf16`: weights and activations of that type (torch, and
#: `fp32` on TFLite). `fp16w`: fp16 weights with fp32 activations and arithmetic (TFLite's
#: float16 quantization). `int8`: int8 weights and activations (TFLite's full-integer
#: post-training quantization).
DTYPES = ("fp32", "fp16", "bf16", "fp16w", "int8")
#: Bytes per activation element of each dtype.
DTYPE_BYTES = types.MappingProxyType({"fp32": 4, "fp16": 2, "bf16": 2, "fp16w": 4, "int8": 1})
#: Bytes per weight element of each dtype.
WEIGHT_DTYPE_BYTES = types.MappingProxyType({"fp32": 4, "fp16": 2, "bf16": 2, "fp16w": 2, "int8": 1})
ACTIVATIONS = ("relu", "relu6", "gelu", "silu", "hardswish")
POOL_MODES = ("max", "avg")

_KINDS = (int, float, str, bool)


@dataclasses.dataclass(frozen=True, slots=True)
class Interval:
    """A numeric sampling range `[low, high]` (inclusive), optionally on multiples of `step`.

    `log=None` takes the field's own default scale (log-uniform for sizes).
    """

    low: float
    high: float
    step: float = 1
    log: bool | None = None

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"Interval: low={self.low} must not exceed high={self.high}")
        if self.step <= 0:
            raise ValueError(f"Interval: step={self.step} must be positive")


@dataclasses.dataclass(frozen=True, slots=True)
class Tie:
    """A sampling range that copies another field's value (e.g. depthwise `groups=cin`)."""

    field: str


#: A sampling range: an `Interval`, a `Tie`, a tuple of allowed values, or one fixed value.
Range = Any


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    """One typed field of a module configuration.

    Attributes:
      name: column name in datasets; the same name means the same thing in every module type.
      kind: one of `int`, `float`, `str`, `bool`.
      default: value used when a config omits the field, unless the field is `required`.
      low: smallest valid value (numeric fields), inclusive.
      high: largest valid value (numeric fields), inclusive.
      choices: the allowed values (categorical fields, or a restricted numeric set).
      log: whether samplers draw the field log-uniformly by default (scale-free sizes).
      sample: default sampling range `(low, high)` or a tuple of choices for profiling runs,
        narrower than the valid range so that default runs stay affordable.
      doc: one line for `jaxlat-profile catalogue`.
      required: a value the user must give where configs come from outside (dataset
        columns, architecture records, frames to predict: `validate_config_columns`); its
        `default` then only seeds `make_config`'s convenience for code that builds configs.
        Sizes and the operator's kind are required (a missing `cin` is not 16 channels);
        settings with a conventional value (stride 1, groups 1, bias, the common inputs) are not.
    """

    name: str
    kind: type
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    log: bool = False
    sample: tuple[Any, ...] | None = None
    doc: str = ""
    required: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Field {self.name!r}: kind must be one of int, float, str, bool")

    def sampling_range(self) -> Range:
        """The default sampling range: `sample`, else the choices, else the valid range."""
        if self.sample is not None:
            return self.sample
        if self.choices is not None:
            return self.choices
        if self.kind is bool:
            return (False, True)
        return Interval(self.low, self.high)

    def allowed(self) -> str:
        """Human-readable description of the allowed values."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind is bool:
            return "True or False"
        return f"{self.kind.__name__} in [{self.low}, {self.high}]"

    def coerce(self, value: Any, module: str) -> Any:
        """Return `value` as this field's kind, or raise `ValueError` naming the field."""
        where = f"{module}.{self.name}"
        ok_type = True
        if self.kind is bool:
            if isinstance(value, bool) or (_is_int(value) and int(value) in (0, 1)):
                value = bool(value)
            else:
                ok_type = False
        elif self.kind is int:
            if _is_int(value) and not isinstance(value, bool):
                value = int(value)
            elif isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                ok_type = False
        elif self.kind is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = float(value)
            elif _is_int(value):
                value = float(value)
            else:
                ok_type = False
        elif self.kind is str:
            ok_type = isinstance(value, str)
        if not ok_type:
            raise ValueError(f"{where}={value!r} is not valid: expected {self.allowed()}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{where}={value!r} is not valid: expected {self.allowed()}")
        if self.kind in (int, float):
            if (self.low is not None and value < self.low) or (
                self.high is not None and value > self.high
            ):
                raise ValueError(f"{where}={value!r} is out of range: expected {self.allowed()}")
            if self.kind is float and not math.isfinite(value):
                raise ValueError(f"{where}={value!r} is not finite")
        return value


def _is_int(value: Any) -> bool:
    # numpy integers register as numbers.Integral, so dataset values pass too.
    return isinstance(value, numbers.Integral)


#: Inputs every configuration carries, whatever its module type.
COMMON_FIELDS: tuple[Field, ...] = (
    Field("batch_size", int, 1, 1, 65536, log=True, sample=(1,), doc="samples per call"),
    Field("dtype", str, "fp32", choices=DTYPES, sample=("fp32",),
          doc="element type: fp32, fp16, bf16; TFLite also fp16w (fp16 weights) and int8"),
    Field("threads", int, 1, 1, 1024, sample=(1,), doc="intra-op threads (CPU backends)"),
    Field(
        "utilization",
        float,
        0.0,
        0.0,
        1.0,
        sample=(0.0,),
        doc="requested background utilization of the device, 0 (idle) to 1 (saturated)",
    ),
)
COMMON_FIELD_NAMES = tuple(f.name for f in COMMON_FIELDS)


@dataclasses.dataclass(frozen=True, slots=True)
class Costs:
    """Analytic cost of one call of a module (the whole batch), from its config alone.

    FLOPs count a multiply-add as 2 (the convention of `torch.utils.flop_counter`); bias
    additions inside conv/linear are not counted, as there. The cost functions are written with
    plain arithmetic, so they also take columns (numpy or JAX arrays) and return arrays:
    `costs_of_columns` computes them for many configs at once.
    """

    flops: float
    macs: float
    params: float
    bytes_in: float
    bytes_out: float
    bytes_weight: float

    @property
    def arith_intensity(self) -> Any:
        """FLOPs per byte moved (inputs, outputs and weights once each)."""
        return self.flops / (self.bytes_in + self.bytes_out + self.bytes_weight)

    def as_dict(self) -> dict[str, Any]:
        """The costs and the intensity; plain floats for one config, arrays for columns."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["arith_intensity"] = self.arith_intensity
        return {k: float(v) if isinstance(v, numbers.Real) else v for k, v in out.items()}


COST_COLUMNS = ("flops", "macs", "params", "bytes_in", "bytes_out", "bytes_weight", "arith_intensity")

#: A constraint: a message stating the rule, and a predicate over the filled config values.
Constraint = tuple[str, Callable[[Mapping[str, Any]], bool]]


@dataclasses.dataclass(frozen=True)
class ModuleSpec:
    """Everything the catalogue knows about one module type.

    Attributes:
      name: the module type's name (a `ModuleType` value for built-ins).
      fields: the type's own fields (common fields are added automatically).
      costs: pure function of the filled config values to `Costs`.
      constraints: cross-field rules; each is `(message, predicate)`.
      families: named sampling families `{name: (weight, {field: range})}` that a default
        profiling run mixes, e.g. regular, depthwise and grouped convolutions.
      doc: one line for `jaxlat-profile catalogue`.
    """

    name: str
    fields: tuple[Field, ...]
    costs: Callable[[Mapping[str, Any]], Costs]
    constraints: tuple[Constraint, ...] = ()
    families: Mapping[str, tuple[float, Mapping[str, Any]]] = dataclasses.field(
        default_factory=lambda: {"default": (1.0, {})}
    )
    doc: str = ""

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"module {self.name!r}: duplicate field names in {names}")
        clash = set(names) & set(COMMON_FIELD_NAMES)
        if clash:
            raise ValueError(f"module {self.name!r}: fields {sorted(clash)} are common fields")

    @property
    def all_fields(self) -> tuple[Field, ...]:
        return self.fields + COMMON_FIELDS

    @property
    def required_fields(self) -> tuple[str, ...]:
        """Names of the fields a config from outside must give (`Field.required`)."""
        return tuple(f.name for f in self.all_fields if f.required)

    def check_columns(self, columns: Mapping[str, Any], *, source: str = "columns",
                      labels: Sequence[Any] | None = None) -> dict[str, Any]:
        """`validate_config_columns` for this module type."""
        return validate_config_columns(self.name, columns, source=source, labels=labels)

    def field(self, name: str) -> Field:
        for f in self.all_fields:
            if f.name == name:
                return f
        raise ValueError(
            f"module {str(self.name)!r} has no field {name!r}; fields: "
            + ", ".join(f.name for f in self.all_fields)
        )


_REGISTRY: dict[str, ModuleSpec] = {}


def register_module(spec: ModuleSpec, *, overwrite: bool = False) -> ModuleSpec:
    """Add a module type to the catalogue.

    A field name already used by another module type must have the same kind there, since
    both land in the same dataset column.

    Raises:
      ValueError: the name is taken (and `overwrite` is False) or a field's kind clashes.
    """
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(f"module type {spec.name!r} is already registered")
    for other in _REGISTRY.values():
        if other.name == spec.name:
            continue
        for f in spec.fields:
            for g in other.fields:
                if f.name == g.name and f.kind is not g.kind:
                    raise ValueError(
                        f"field {f.name!r} of {spec.name!r} is {f.kind.__name__} but "
                        f"{other.name!r} declares it {g.kind.__name__}"
                    )
    _REGISTRY[spec.name] = spec
    return spec


def unregister_module(name: str) -> None:
    """Remove a user-registered module type (built-ins stay)."""
    if name in set(ModuleType):
        raise ValueError(f"{name!r} is a built-in module type and cannot be removed")
    _REGISTRY.pop(name, None)


def module_types() -> tuple[str, ...]:
    """Names of all registered module types, built-ins first."""
    return tuple(_REGISTRY)


def get_spec(module: str) -> ModuleSpec:
    """The spec of a registered module type; `ValueError` lists the known ones otherwise."""
    try:
        return _REGISTRY[str(module)]
    except KeyError:
        raise ValueError(
            f"module={module!r} is not a registered module type; known: "
            + ", ".join(_REGISTRY)
        ) from None


def all_field_columns() -> tuple[Field, ...]:
    """Every module field across registered types, one per name, in a stable order."""
    seen: dict[str, Field] = {}
    for spec in _REGISTRY.values():
        for f in spec.fields:
            seen.setdefault(f.name, f)
    return tuple(seen.values())


@dataclasses.dataclass(frozen=True)
class ModuleConfig:
    """A validated, immutable module configuration (module fields and common inputs).

    Build with `make_config`; read fields with `cfg["cin"]`; `cfg.key` is a stable id.
    """

    module: str
    values: Mapping[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModuleConfig) and self.key == other.key

    @property
    def spec(self) -> ModuleSpec:
        return get_spec(self.module)

    @property
    def key(self) -> str:
        """Stable 16-hex id of the config (module type and every value)."""
        blob = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        """Flat dict: `module` plus every field and common input."""
        return {"module": self.module, **self.values}

    def replace(self, **changes: Any) -> ModuleConfig:
        """A copy with some values changed, validated again."""
        return make_config(self.module, **{**self.values, **changes})

    def costs(self) -> Costs:
        return self.spec.costs(self.values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.values.items())
        return f"ModuleConfig({self.module}: {inner})"


def make_config(module: str, /, **values: Any) -> ModuleConfig:
    """Validate values for `module` and fill defaults.

    Raises:
      ValueError: unknown module, unknown field, wrong type, out of range, or a broken
        cross-field rule; the message names the field(s) and what is allowed.

    Examples:
      >>> cfg = make_config("conv2d", cin=32, cout=64, h=56, w=56, kernel=3)
      >>> cfg["stride"], cfg["dtype"]
      (1, 'fp32')
      >>> make_config("conv2d", kernel=4)
      Traceback (most recent call last):
      ...
      ValueError: conv2d.kernel=4 is not valid: expected one of 1, 3, 5, 7
    """
    spec = get_spec(module)
    known = {f.name for f in spec.all_fields}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"{spec.name}: unknown field(s) {unknown}; fields: "
            + ", ".join(f.name for f in spec.all_fields)
        )
    filled = {}
    for f in spec.all_fields:
        filled[f.name] = f.coerce(values.get(f.name, f.default), spec.name)
    for message, predicate in spec.constraints:
        if not predicate(filled):
            shown = ", ".join(f"{k}={v!r}" for k, v in filled.items() if k not in COMMON_FIELD_NAMES)
            raise ValueError(f"{spec.name}: {message} (got {shown})")
    return ModuleConfig(spec.name, types.MappingProxyType(filled))


def costs_of_columns(module: str, columns: Mapping[str, Any]) -> dict[str, Any]:
    """Costs of many configs of one module type at once, from columns (arrays) of field values.

    Missing common fields take their defaults. Values are not validated here.
    """
    import numpy as np

    spec = get_spec(module)
    v = {f.name: columns[f.name] if f.name in columns else f.default for f in spec.all_fields}
    out = spec.costs(v).as_dict()
    shape = np.broadcast_shapes(*(np.shape(x) for x in out.values()))
    return {k: np.broadcast_to(x, shape) if np.shape(x) != shape else x for k, x in out.items()}


def _is_missing(v: Any) -> bool:
    """None, NaN or a pandas NA: no value."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return True
    return type(v).__name__ in ("NAType", "NaTType") or (isinstance(v, numbers.Real) and math.isnan(float(v)))


def config_from_row(row: Mapping[str, Any], *, strict: bool = False, source: str = "row") -> ModuleConfig:
    """Rebuild a config from a flat row (dataset record); other columns are ignored.

    Args:
      row: `module` and field values; a missing value is None, NaN or absent.
      strict: a missing required field (`Field.required`) is an error instead of taking the
        default, and defaults taken for optional fields are logged (rows from outside: records,
        user frames). Without it every missing value takes its default (configs written by
        `ModuleConfig.as_dict`, which always has every field).
      source: what the row is, for error messages (a file and line, a frame and row).

    Raises:
      ValueError: the module type is unknown, a required field is missing (strict), or a
        value is invalid; the message names `source`, the field and what is allowed.
    """
    if "module" not in row or _is_missing(row["module"]):
        raise ValueError(f"{source}: no 'module'; expected one of {', '.join(_REGISTRY)}")
    try:
        spec = get_spec(row["module"])
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    values, defaulted = {}, []
    for f in spec.all_fields:
        v = row.get(f.name)
        if _is_missing(v):
            if strict and f.required:
                raise ValueError(_missing_message(spec, f, source))
            v = f.default
            if f.name in row or strict:
                defaulted.append(f"{f.name}={f.default!r}")
        values[f.name] = v
    try:
        cfg = make_config(spec.name, **values)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    if strict and defaulted:
        _log.info("%s: %s: catalogue defaults for the omitted fields %s", source, spec.name, ", ".join(defaulted))
    return cfg


def _missing_message(spec: ModuleSpec, f: Field, source: str, detail: str = "") -> str:
    return (
        f"{source}: {spec.name} needs the field {f.name!r} ({f.doc or f.name}: {f.allowed()}){detail}; "
        f"it has no default. Required fields of {spec.name}: {', '.join(spec.required_fields)}"
    )


def _plain_value(v: Any) -> Any:
    return v.item() if hasattr(v, "item") and not isinstance(v, str) else v


def _label(labels: Sequence[Any] | None, i: int) -> str:
    return f"row {i}" if labels is None else f"row {labels[i]!r}"


def _check_values(f: Field, raw: Any, where: str, labels: Sequence[Any] | None) -> Any:
    """One field's column (1-D, no missing values; numeric or object) as a typed array;
    `ValueError` naming the field, the first bad value, how many rows, and what is allowed."""
    import numpy as np

    def fail(bad: Any, why: str = "is not valid") -> None:
        idx = np.flatnonzero(bad)
        i = int(idx[0])
        more = f" ({len(idx)} rows)" if len(idx) > 1 else ""
        v = raw[i].item() if isinstance(raw[i], np.generic) else raw[i]
        if f.kind in (int, bool) and isinstance(v, float) and v.is_integer():
            v = int(v)  # a numeric column holds ints as floats
        raise ValueError(f"{where}={v!r} {why} at {_label(labels, i)}{more}: expected {f.allowed()}")

    if f.kind is str:
        bad = np.array([not isinstance(v, str) or (f.choices is not None and v not in f.choices) for v in raw])
        if bad.any():
            fail(bad)
        return raw
    if raw.dtype.kind in "iuf":  # a numeric array: no per-element type checks
        x = raw.astype(np.float64)
    else:
        boolish = np.array([isinstance(v, (bool, np.bool_)) for v in raw], dtype=bool)
        numeric = np.array([isinstance(v, numbers.Real) for v in raw], dtype=bool)
        if f.kind is not bool and boolish.any():
            fail(boolish)
        if not numeric.all():
            fail(~numeric)
        x = raw.astype(np.float64)
    if not np.isfinite(x).all():
        fail(~np.isfinite(x), "is not finite")
    if f.kind is bool:
        if not np.isin(x, (0.0, 1.0)).all():
            fail(~np.isin(x, (0.0, 1.0)))
        return x.astype(bool)
    if f.kind is int and not (x == np.round(x)).all():
        fail(x != np.round(x), "is not an integer")
    if f.choices is not None and not np.isin(x, f.choices).all():
        fail(~np.isin(x, f.choices))
    lo = -np.inf if f.low is None else f.low
    hi = np.inf if f.high is None else f.high
    out = (x < lo) | (x > hi)
    if out.any():
        fail(out, "is out of range")
    return x.astype(np.int64) if f.kind is int else x


def _host_column(v: Any) -> Any:
    """A column as a numpy array: numeric columns (numpy, pandas, nullable pandas) as numbers
    with NaN for missing values, everything else as objects."""
    import numpy as np
    import pandas as pd

    if isinstance(v, (pd.Series, pd.Index)):
        if pd.api.types.is_numeric_dtype(v.dtype) and not pd.api.types.is_bool_dtype(v.dtype):
            return v.to_numpy(dtype=np.float64, na_value=np.nan)
        return v.to_numpy(dtype=object)
    if isinstance(v, (list, tuple)):  # element by element: a list inside a column is a value
        a = np.empty(len(v), dtype=object)
        for i, x in enumerate(v):
            a[i] = x
        return a
    a = np.asarray(v)
    if a.dtype.kind in "iuf":
        return a
    out = np.empty(a.shape, dtype=object)
    out[...] = v if a.ndim == 0 else a
    return out


def validate_config_columns(
    module: str,
    columns: Mapping[str, Any],
    *,
    source: str = "columns",
    labels: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Check configs of one module type given as columns, and fill the defaults it may.

    The boundary check for configs from outside (dataset files, frames to predict): every
    required field (`Field.required`) present with a value in every row; every value of the
    field's kind, finite, inside its range or choices; the cross-field rules (groups dividing
    the channels, ...) true in every row. An optional field that is absent, or without a value
    in some rows, takes the catalogue's default, and that is logged (logger `profilers`).
    Columns that are not fields of the type are ignored.

    Args:
      module: a registered module type.
      columns: field name -> scalar or 1-D sequence (numpy, pandas, lists); host values.
      source: what the columns are, for messages (a file, `predict`, ...).
      labels: a label per row for messages (e.g. the `config_key`s); default the position.

    Returns:
      Every field of the type (module fields and common inputs) as a 1-D numpy array of its
      kind (int64, float64, bool, or object for strings), all of the same length.

    Raises:
      ValueError: naming `source`, the field, the first bad value and its row, and what is
        allowed; or columns of different lengths.

    Examples:
      >>> cols = validate_config_columns("linear", {"in_features": [64, 128], "out_features": 32})
      >>> cols["in_features"].tolist(), cols["tokens"].tolist()
      ([64, 128], [1, 1])
      >>> validate_config_columns("conv2d", {"cin": [3], "cout": [8], "h": [32], "w": [32]})
      Traceback (most recent call last):
      ...
      ValueError: columns: conv2d needs the field 'kernel' (square kernel size; ...) and there is no such column; ...
    """
    import numpy as np
    import pandas as pd

    spec = get_spec(module)
    host = {}
    for f in spec.all_fields:
        if f.name not in columns:
            continue
        a = _host_column(columns[f.name])
        if a.ndim > 1:
            raise ValueError(f"{source}: {spec.name}.{f.name} has shape {a.shape}; expected a scalar or 1-D column")
        host[f.name] = a
    lengths = {k: len(a) for k, a in host.items() if a.ndim == 1}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{source}: {spec.name} columns have different lengths {lengths}")
    n = next(iter(lengths.values())) if lengths else 1
    if labels is not None and len(labels) != n:
        raise ValueError(f"{source}: {len(labels)} labels for {n} rows")
    out: dict[str, Any] = {}
    defaulted = []
    for f in spec.all_fields:
        where = f"{source}: {spec.name}.{f.name}"
        if f.name not in host:
            if f.required:
                raise ValueError(_missing_message(spec, f, source, " and there is no such column"))
            raw = np.full(n, f.default, dtype=object)
            defaulted.append(f"{f.name}={f.default!r}")
        else:
            raw = np.broadcast_to(host[f.name], (n,)).copy()
            if f.kind in (str, bool) or raw.dtype.kind not in "iuf":
                raw = raw.astype(object)
            missing = np.isnan(raw) if raw.dtype.kind == "f" else np.asarray(pd.isna(raw), dtype=bool).reshape(n)
            if missing.any():
                if f.required:
                    i = int(np.flatnonzero(missing)[0])
                    raise ValueError(_missing_message(
                        spec, f, source, f"; {int(missing.sum())} of {n} rows have no value (first {_label(labels, i)})"))
                raw[missing] = f.default
                defaulted.append(f"{f.name}={f.default!r} ({int(missing.sum())} of {n} rows)")
        out[f.name] = _check_values(f, raw, where, labels)
    for message, predicate in spec.constraints:
        try:
            ok = np.broadcast_to(np.asarray(predicate(out), dtype=bool), (n,))
        except (ValueError, TypeError):  # a rule written for one config (Python `and`, `min`)
            ok = np.array([bool(predicate({k: _plain_value(a[i]) for k, a in out.items()})) for i in range(n)])
        if not ok.all():
            bad = np.flatnonzero(~ok)
            i = int(bad[0])
            shown = ", ".join(f"{f.name}={_plain_value(out[f.name][i])!r}" for f in spec.fields)
            raise ValueError(f"{source}: {spec.name}: {message} (got {shown} at {_label(labels, i)}"
                             + (f"; {len(bad)} rows break it)" if len(bad) > 1 else ")"))
    if defaulted:
        _log.info("%s: %s: catalogue defaults for the omitted fields %s", source, spec.name, ", ".join(defaulted))
    return out


# ---------------------------------------------------------------------------------------
# Built-in module types.


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _lookup_bytes(table: Mapping[str, int], dtype: Any) -> Any:
    if isinstance(dtype, str):
        return table[dtype]
    import numpy as np

    d = np.asarray(dtype)
    return np.select([d == name for name in table], list(table.values()), default=0)


def dtype_bytes(dtype: Any) -> Any:
    """Bytes per activation element of a dtype name, or of an array of dtype names (elementwise)."""
    return _lookup_bytes(DTYPE_BYTES, dtype)


def weight_dtype_bytes(dtype: Any) -> Any:
    """Bytes per weight element of a dtype name, or of an array of dtype names (elementwise)."""
    return _lookup_bytes(WEIGHT_DTYPE_BYTES, dtype)


def _bytes(v: Mapping[str, Any]) -> Any:
    return dtype_bytes(v["dtype"])


def _wbytes(v: Mapping[str, Any]) -> Any:
    return weight_dtype_bytes(v["dtype"])


def _conv_costs(v: Mapping[str, Any]) -> Costs:
    b, s = v["batch_size"], _bytes(v)
    k, st = v["kernel"], v["stride"]
    ho, wo = _out_size(v["h"], k, st, k // 2), _out_size(v["w"], k, st, k // 2)
    out_numel = b * v["cout"] * ho * wo
    macs = out_numel * (v["cin"] / v["groups"]) * k * k
    params = v["cout"] * (v["cin"] / v["groups"]) * k * k + v["cout"] * v["bias"]
    return Costs(
        flops=2.0 * macs,
        macs=macs,
        params=params,
        bytes_in=b * v["cin"] * v["h"] * v["w"] * s,
        bytes_out=out_numel * s,
        bytes_weight=params * _wbytes(v),
    )


def _conv_bn_act_costs(v: Mapping[str, Any]) -> Costs:
    c = _conv_costs({**v, "bias": True})  # batch norm folds into the conv's weight and bias
    k, st = v["kernel"], v["stride"]
    out_numel = (
        v["batch_size"]
        * v["cout"]
        * _out_size(v["h"], k, st, k // 2)
        * _out_size(v["w"], k, st, k // 2)
    )
    return dataclasses.replace(c, flops=c.flops + out_numel)


def _linear_costs(v: Mapping[str, Any]) -> Costs:
    b, s, t = v["batch_size"], _bytes(v), v["tokens"]
    macs = b * t * v["in_features"] * v["out_features"]
    params = v["in_features"] * v["out_features"] + v["out_features"] * v["bias"]
    return Costs(
        flops=2.0 * macs,
        macs=macs,
        params=params,
        bytes_in=b * t * v["in_features"] * s,
        bytes_out=b * t * v["out_features"] * s,
        bytes_weight=params * _wbytes(v),
    )


def _matmul_costs(v: Mapping[str, Any]) -> Costs:
    b, s, m, k, n = v["batch_size"], _bytes(v), v["m"], v["k"], v["n"]
    macs = b * m * k * n
    return Costs(2.0 * macs, macs, 0.0, b * (m * k + k * n) * s, b * m * n * s, 0.0)


def _pool_padding(kernel: int) -> int:
    return (kernel - 1) // 2


def _pool_costs(v: Mapping[str, Any]) -> Costs:
    b, s, c, k, st = v["batch_size"], _bytes(v), v["channels"], v["kernel"], v["stride"]
    p = _pool_padding(k)
    out = b * c * _out_size(v["h"], k, st, p) * _out_size(v["w"], k, st, p)
    return Costs(out * k * k, 0.0, 0.0, b * c * v["h"] * v["w"] * s, out * s, 0.0)


def _global_pool_costs(v: Mapping[str, Any]) -> Costs:
    b, s = v["batch_size"], _bytes(v)
    numel = b * v["channels"] * v["h"] * v["w"]
    return Costs(numel, 0.0, 0.0, numel * s, b * v["channels"] * s, 0.0)


def _elementwise(numel: int, s: int, *, flops_per: float, inputs: int = 1, params: int = 0,
                 ws: Any = None) -> Costs:
    return Costs(
        flops=flops_per * numel,
        macs=0.0,
        params=params,
        bytes_in=inputs * numel * s,
        bytes_out=numel * s,
        bytes_weight=params * (s if ws is None else ws),
    )


def _chw(v: Mapping[str, Any]) -> int:
    return v["batch_size"] * v["channels"] * v["h"] * v["w"]


def _batchnorm_costs(v: Mapping[str, Any]) -> Costs:
    # Inference batch norm is a per-channel scale and shift; running mean/var count as params.
    return _elementwise(_chw(v), _bytes(v), flops_per=2, params=4 * v["channels"], ws=_wbytes(v))


def _layernorm_costs(v: Mapping[str, Any]) -> Costs:
    numel = v["batch_size"] * v["tokens"] * v["features"]
    # mean, variance, normalize, scale, shift: about 5 operations per element.
    return _elementwise(numel, _bytes(v), flops_per=5, params=2 * v["features"], ws=_wbytes(v))


def _activation_costs(v: Mapping[str, Any]) -> Costs:
    return _elementwise(_chw(v), _bytes(v), flops_per=1)


def _add_costs(v: Mapping[str, Any]) -> Costs:
    return _elementwise(_chw(v), _bytes(v), flops_per=1, inputs=2)


def _mhsa_costs(v: Mapping[str, Any]) -> Costs:
    b, s, t, d = v["batch_size"], _bytes(v), v["tokens"], v["embed_dim"]
    # q, k, v and output projections (4 T D^2) plus scores and weighted sum (2 T^2 D).
    macs = b * (4 * t * d * d + 2 * t * t * d)
    params = 4 * d * d + 4 * d
    return Costs(
        flops=2.0 * macs,
        macs=macs,
        params=params,
        bytes_in=b * t * d * s,
        bytes_out=b * t * d * s,
        bytes_weight=params * _wbytes(v),
    )


def _conv_fields() -> tuple[Field, ...]:
    return (
        Field("cin", int, 16, 1, 16384, log=True, sample=Interval(8, 512), doc="input channels",
              required=True),
        Field("cout", int, 16, 1, 16384, log=True, sample=Interval(8, 512), doc="output channels",
              required=True),
        Field("h", int, 32, 1, 4096, log=True, sample=Interval(7, 112), doc="input height", required=True),
        Field("w", int, 32, 1, 4096, log=True, sample=Tie("h"), doc="input width (default sampling: square, w=h)",
              required=True),
        Field("kernel", int, 3, choices=(1, 3, 5, 7), doc="square kernel size; padding kernel//2",
              required=True),
        Field("stride", int, 1, choices=(1, 2), doc="stride"),
        Field("groups", int, 1, 1, 16384, sample=(1,), doc="groups (groups=cin=cout: depthwise)"),
    )


_CONV_CONSTRAINTS: tuple[Constraint, ...] = (
    # Written with `&`, not `and`, so that the rule also checks columns (arrays) at once.
    ("groups must divide cin and cout",
     lambda v: (v["cin"] % v["groups"] == 0) & (v["cout"] % v["groups"] == 0)),
)
_CONV_FAMILIES = {
    "regular": (0.6, {"groups": (1,)}),
    "depthwise": (0.25, {"cout": Tie("cin"), "groups": Tie("cin"), "cin": Interval(16, 1024)}),
    "grouped": (0.15, {"groups": (2, 4, 8), "cin": Interval(16, 512, step=8), "cout": Interval(16, 512, step=8)}),
}

for _spec in (
    ModuleSpec(
        ModuleType.CONV2D,
        _conv_fields() + (Field("bias", bool, True, doc="add a bias"),),
        _conv_costs,
        _CONV_CONSTRAINTS,
        _CONV_FAMILIES,
        doc="2-D convolution, 'same' padding; groups cover depthwise and grouped",
    ),
    ModuleSpec(
        ModuleType.CONV_BN_ACT,
        _conv_fields() + (Field("activation", str, "relu", choices=ACTIVATIONS, doc="activation", required=True),),
        _conv_bn_act_costs,
        _CONV_CONSTRAINTS,
        _CONV_FAMILIES,
        doc="conv2d with batch norm folded in (inference) followed by an activation",
    ),
    ModuleSpec(
        ModuleType.LINEAR,
        (
            Field("in_features", int, 256, 1, 65536, log=True, sample=Interval(16, 4096), required=True),
            Field("out_features", int, 256, 1, 65536, log=True, sample=Interval(16, 4096), required=True),
            Field("tokens", int, 1, 1, 65536, log=True, sample=Interval(1, 256), doc="rows per sample"),
            Field("bias", bool, True, doc="add a bias"),
        ),
        _linear_costs,
        doc="fully connected layer over (batch, tokens, in_features)",
    ),
    ModuleSpec(
        ModuleType.MATMUL,
        (
            Field("m", int, 64, 1, 65536, log=True, sample=Interval(8, 1024), required=True),
            Field("k", int, 64, 1, 65536, log=True, sample=Interval(8, 1024), required=True),
            Field("n", int, 64, 1, 65536, log=True, sample=Interval(8, 1024), required=True),
        ),
        _matmul_costs,
        doc="batched matrix product (batch, m, k) @ (batch, k, n) of two activations",
    ),
    ModuleSpec(
        ModuleType.POOL2D,
        (
            Field("mode", str, "max", choices=POOL_MODES, required=True),
            Field("channels", int, 32, 1, 16384, log=True, sample=Interval(8, 1024), required=True),
            Field("h", int, 32, 1, 4096, log=True, sample=Interval(7, 112), required=True),
            Field("w", int, 32, 1, 4096, log=True, sample=Tie("h"), required=True),
            Field("kernel", int, 3, choices=(2, 3, 5, 7), required=True),
            Field("stride", int, 2, choices=(1, 2)),
        ),
        _pool_costs,
        (("kernel must not exceed h + 2*padding and w + 2*padding, padding=(kernel-1)//2",
          lambda v: (v["h"] + 2 * _pool_padding(v["kernel"]) >= v["kernel"])
          & (v["w"] + 2 * _pool_padding(v["kernel"]) >= v["kernel"])),),
        doc="max or average pooling with padding (kernel-1)//2",
    ),
    ModuleSpec(
        ModuleType.GLOBAL_POOL2D,
        (
            Field("mode", str, "avg", choices=POOL_MODES, required=True),
            Field("channels", int, 32, 1, 16384, log=True, sample=Interval(8, 2048), required=True),
            Field("h", int, 7, 1, 4096, log=True, sample=Interval(1, 112), required=True),
            Field("w", int, 7, 1, 4096, log=True, sample=Tie("h"), required=True),
        ),
        _global_pool_costs,
        doc="global max or average pooling to (batch, channels, 1, 1)",
    ),
    ModuleSpec(
        ModuleType.BATCHNORM2D,
        (
            Field("channels", int, 32, 1, 16384, log=True, sample=Interval(8, 1024), required=True),
            Field("h", int, 32, 1, 4096, log=True, sample=Interval(7, 112), required=True),
            Field("w", int, 32, 1, 4096, log=True, sample=Tie("h"), required=True),
        ),
        _batchnorm_costs,
        doc="batch norm in inference mode (running statistics)",
    ),
    ModuleSpec(
        ModuleType.LAYERNORM,
        (
            Field("tokens", int, 197, 1, 65536, log=True, sample=Interval(1, 1024), required=True),
            Field("features", int, 768, 1, 65536, log=True, sample=Interval(16, 4096), required=True),
        ),
        _layernorm_costs,
        doc="layer norm over the last dimension of (batch, tokens, features)",
    ),
    ModuleSpec(
        ModuleType.ACTIVATION,
        (
            Field("activation", str, "relu", choices=ACTIVATIONS, required=True),
            Field("channels", int, 32, 1, 16384, log=True, sample=Interval(8, 1024), required=True),
            Field("h", int, 32, 1, 4096, log=True, sample=Interval(1, 112), required=True),
            Field("w", int, 32, 1, 4096, log=True, sample=Tie("h"), required=True),
        ),
        _activation_costs,
        doc="element-wise activation over (batch, channels, h, w)",
    ),
    ModuleSpec(
        ModuleType.ADD,
        (
            Field("channels", int, 32, 1, 16384, log=True, sample=Interval(8, 1024), required=True),
            Field("h", int, 32, 1, 4096, log=True, sample=Interval(1, 112), required=True),
            Field("w", int, 32, 1, 4096, log=True, sample=Tie("h"), required=True),
        ),
        _add_costs,
        doc="element-wise sum of two (batch, channels, h, w) tensors (residual add)",
    ),
    ModuleSpec(
        ModuleType.MHSA,
        (
            Field("tokens", int, 197, 1, 65536, log=True, sample=Interval(4, 512), required=True),
            Field("embed_dim", int, 768, 1, 65536, log=True, sample=Interval(32, 1024), required=True),
            Field("heads", int, 12, 1, 256, choices=None, sample=(1, 2, 4, 8, 12, 16),
                  required=True),
        ),
        _mhsa_costs,
        (("heads must divide embed_dim", lambda v: v["embed_dim"] % v["heads"] == 0),),
        {"default": (1.0, {"embed_dim": Interval(32, 1024, step=16)})},
        doc="multi-head self-attention with input/output projections over (batch, tokens, embed_dim)",
    ),
):
    register_module(_spec)
del _spec
