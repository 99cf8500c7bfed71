"""Architecture records: a whole model as the ordered list of catalogue module configs.

`capture_torch(model, inputs)` runs `torch.export` (a graph capture, so functional operations
such as attention, residual adds, concatenation and reshapes are seen, not only leaf modules)
and maps each ATen operator to a catalogue config. Operators the catalogue has no type for are
listed in `unmapped` with their count and the bytes they move; none is silently dropped.
Approximate mappings (a 16x16 patch convolution as a linear layer, attention's core as two
matrix products) say so in `approx`.

A record is plain JSON (`save` / `load_record`, format `ARCH_FORMAT_VERSION`) and needs neither
torch nor JAX to read; `jaxlat` predicts a model's latency from it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._catalogue import ModuleConfig, config_from_row, get_spec, make_config

#: Version of the architecture-record JSON; `load_record` reads exactly these.
ARCH_FORMAT_VERSION = 1
READABLE_ARCH_VERSIONS = (1,)

#: ATen operators that only create views or metadata (no data movement when their input is
#: contiguous); they are listed with kind "view".
VIEW_OPS = frozenset(
    "view _unsafe_view reshape flatten permute transpose t unsqueeze squeeze expand slice select "
    "narrow alias detach split split_with_sizes chunk unbind dropout contiguous clone_view "
    "lift_fresh_copy arange ge gt lt le eq ne full ones zeros scalar_tensor sym_size sym_numel "
    "_assert_tensor_metadata _assert_scalar getitem type_as to _to_copy_view".split()
)

_GATHER_OPS = frozenset({"embedding", "gather", "index", "index_select", "take"})

#: ATen operators that move data without arithmetic (padding, concatenation, layout copies,
#: gathers): their bytes are charged at the composition's copy rate, the other unmapped compute
#: operators' bytes (softmax, elementwise arithmetic, ...) at its arithmetic rate.
COPY_OPS = frozenset(
    "pad constant_pad_nd reflection_pad2d replication_pad2d cat concat stack contiguous clone copy copy_ "
    "_to_copy roll repeat tile flip reshape flatten view_copy expand_copy permute_copy masked_fill "
    "masked_fill_ index_put index_put_ slice_scatter select_scatter narrow_copy unfold pixel_shuffle "
    "pixel_unshuffle channel_shuffle".split()
) | _GATHER_OPS

_ACT = {"relu": "relu", "relu_": "relu", "gelu": "gelu", "gelu_": "gelu", "silu": "silu", "silu_": "silu",
        "hardswish": "hardswish", "hardswish_": "hardswish", "relu6": "relu6", "hardtanh": "relu6",
        "hardtanh_": "relu6"}


@dataclasses.dataclass(frozen=True)
class ArchModule:
    """One mapped operator: its catalogue config, the ATen op it came from, and why it is
    approximate (empty when exact)."""

    config: ModuleConfig
    op: str
    approx: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "approx": self.approx, **self.config.as_dict()}


@dataclasses.dataclass(frozen=True)
class UnmappedOp:
    """Operators the catalogue has no type for, aggregated by ATen name."""

    op: str
    kind: str  # "view" (metadata only) or "compute" (moves data)
    count: int
    bytes: int  # tensor bytes read and written by all `count` calls


@dataclasses.dataclass(frozen=True)
class ArchRecord:
    """A model as catalogue configs plus the operators outside the catalogue."""

    name: str
    input_shapes: tuple[tuple[int, ...], ...]
    modules: tuple[ArchModule, ...]
    unmapped: tuple[UnmappedOp, ...] = ()
    measured: Mapping[str, Any] | None = None  # end-to-end timing, when profiled
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.input_shapes[0][0]) if self.input_shapes and self.input_shapes[0] else 1

    def configs(self) -> list[ModuleConfig]:
        return [m.config for m in self.modules]

    def frame(self):
        """The mapped modules as a DataFrame (one row per operator, in graph order)."""
        import pandas as pd

        return pd.DataFrame([m.as_dict() for m in self.modules])

    def counts(self) -> dict[str, int]:
        """Composition counts: mapped operators, unmapped compute and view operators, the bytes
        the unmapped compute operators move, and the part of those bytes moved by copies
        (`COPY_OPS`) (inputs of the composition correction)."""
        compute = [u for u in self.unmapped if u.kind == "compute"]
        return {
            "n_modules": len(self.modules),
            "n_unmapped_compute": sum(u.count for u in compute),
            "n_unmapped_view": sum(u.count for u in self.unmapped if u.kind == "view"),
            "unmapped_bytes": sum(u.bytes for u in compute),
            "unmapped_copy_bytes": sum(u.bytes for u in compute if u.op in COPY_OPS),
        }

    @functools.cached_property
    def cost_totals(self) -> dict[str, float]:
        """The mapped modules' analytic costs summed (`COST_TOTALS`: FLOPs, parameters, bytes in,
        out and of weights) and their number per module type (`n_<type>`); computed once per
        record (`module_cost_totals` fills many records' at once)."""
        return module_cost_totals([self])[0]

    def summary(self) -> str:
        by_type: dict[str, int] = {}
        for m in self.modules:
            by_type[m.config.module] = by_type.get(m.config.module, 0) + 1
        lines = [f"{self.name}: input {' '.join('x'.join(map(str, s)) for s in self.input_shapes)}, "
                 f"{len(self.modules)} mapped operators"]
        lines.append("  " + ", ".join(f"{k} {v}" for k, v in sorted(by_type.items())))
        n_approx = sum(1 for m in self.modules if m.approx)
        if n_approx:
            lines.append(f"  approximate mappings: {n_approx}")
        comp = [u for u in self.unmapped if u.kind == "compute"]
        if comp:
            lines.append("  unmapped (compute): " + ", ".join(f"{u.op} x{u.count}" for u in comp))
        if self.measured:
            lines.append(f"  measured: {self.measured.get('latency_ms'):.4g} ms (median)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": ARCH_FORMAT_VERSION,
            "name": self.name,
            "input_shapes": [list(s) for s in self.input_shapes],
            "modules": [m.as_dict() for m in self.modules],
            "unmapped": [dataclasses.asdict(u) for u in self.unmapped],
            "measured": dict(self.measured) if self.measured else None,
            "info": dict(self.info),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the record as JSON, atomically."""
        return _write_atomic(Path(path), json.dumps(self.to_json(), indent=1) + "\n")

    def with_settings(self, **settings: Any) -> ArchRecord:
        """The record with common fields (`threads`, `utilization`, `dtype`) replaced in every
        module config, e.g. to predict the same model under load."""
        allowed = {"threads", "utilization", "dtype"}
        bad = sorted(set(settings) - allowed)
        if bad:
            raise ValueError(f"with_settings: {bad} not valid: expected fields from {sorted(allowed)}")
        mods = tuple(dataclasses.replace(m, config=m.config.replace(**settings)) for m in self.modules)
        return dataclasses.replace(self, modules=mods, measured=None)

    def with_measured(self, measured: Mapping[str, Any]) -> ArchRecord:
        return dataclasses.replace(self, measured=dict(measured))


#: The costs `ArchRecord.cost_totals` sums over a record's modules.
COST_TOTALS = ("flops", "params", "bytes_in", "bytes_out", "bytes_weight")


def module_cost_totals(records: Sequence[ArchRecord]) -> list[dict[str, float]]:
    """`ArchRecord.cost_totals` of many records, computed for those without it in one vectorized
    cost call per module type (thousands of records in seconds, not minutes), and kept on each."""
    import numpy as np

    from ._catalogue import costs_of_columns, module_types

    records = list(records)
    todo = [i for i, r in enumerate(records) if "cost_totals" not in r.__dict__]
    if todo:
        types = module_types()
        totals = np.zeros((len(todo), len(COST_TOTALS)))
        per_type = np.zeros((len(todo), len(types)))
        # Per module type: owners, each module's values (a config's fields in its spec's order),
        # and the field names.
        by_type: dict[str, tuple[list[int], list[tuple], list[str]]] = {}
        for j, i in enumerate(todo):
            for m in records[i].modules:
                v = m.config.values
                owners, rows, _ = by_type.setdefault(m.config.module, ([], [], list(v)))
                owners.append(j)
                rows.append(tuple(v.values()))
        for module, (owners, rows, names) in by_type.items():
            own = np.asarray(owners)
            uniq: dict[tuple, int] = {}  # identical configs are costed once
            idx = np.fromiter((uniq.setdefault(r, len(uniq)) for r in rows), np.int64, len(rows))
            cols = {n: np.asarray([u[k] for u in uniq]) for k, n in enumerate(names)}
            costs = costs_of_columns(module, cols)
            for c, name in enumerate(COST_TOTALS):
                per_unique = np.broadcast_to(np.asarray(costs[name], float), (len(uniq),))
                np.add.at(totals[:, c], own, per_unique[idx])
            np.add.at(per_type[:, types.index(module)], own, 1.0)
        for j, i in enumerate(todo):
            out = {c: float(totals[j, k]) for k, c in enumerate(COST_TOTALS)}
            out.update({f"n_{t}": float(per_type[j, k]) for k, t in enumerate(types)})
            records[i].__dict__["cost_totals"] = out  # the cached_property's own slot
    return [r.cost_totals for r in records]


class ArchError(ValueError):
    """A record that cannot be read (wrong version, missing field, invalid module config) or written."""


_RECORD_KEYS = ("format_version", "name", "input_shapes", "modules", "unmapped", "measured", "info")
_UNMAPPED_KINDS = ("view", "compute")
#: `measured` latencies that must be > 0; every other `*_ms` value must be >= 0.
_POSITIVE_MS = ("latency_ms", "p10_ms", "p90_ms")


def _count(v: Any, where: str, what: str) -> int:
    """`v` as an int >= 0 (an integral, finite number), else `ArchError` naming it."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
    if not ok or float(v) != int(v):
        raise ArchError(f"{where}={v!r} is not valid: expected {what}")
    return int(v)


def _check_measured(measured: Any, source: str) -> dict[str, Any] | None:
    if measured is None:
        return None
    if not isinstance(measured, Mapping):
        raise ArchError(f"{source}: measured={type(measured).__name__} is not valid: expected an object or null")
    for key, v in measured.items():
        if not key.endswith("_ms") or v is None:
            continue
        values = v if isinstance(v, list) else [v]
        positive = key in _POSITIVE_MS or key == "samples_ms"
        for x in values:
            ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            if not ok or (x <= 0 if positive else x < 0):
                raise ArchError(f"{source}: measured.{key}={x!r} is not valid: expected a finite latency "
                                + ("> 0 ms" if positive else ">= 0 ms"))
    return dict(measured) or None


def record_from_json(obj: Any, *, source: str = "record") -> ArchRecord:
    """Rebuild a record from its JSON object, validating every part of it.

    Module configs are checked as configs from outside are (`config_from_row(strict=True)`):
    every required field given, every value valid; unmapped operators need a kind (`view` or
    `compute`) and counts and bytes that are finite integers >= 0; measured latencies must be
    finite and positive.

    Raises:
      ArchError: naming `source`, the part (`modules[3].cout`, `unmapped[0].bytes`, ...), the
        value and what is allowed.
    """
    if not isinstance(obj, Mapping):
        kind = "list" if isinstance(obj, list) else type(obj).__name__
        hint = "; several records go in a .jsonl file, one object per line" if kind == "list" else ""
        raise ArchError(f"{source}: a JSON {kind} is not an architecture record: expected an object with "
                        f"{', '.join(_RECORD_KEYS[:4])}{hint}")
    version = obj.get("format_version")
    if version not in READABLE_ARCH_VERSIONS or isinstance(version, bool):
        raise ArchError(f"{source}: format_version={version!r} is unknown; this version reads "
                        f"{', '.join(map(str, READABLE_ARCH_VERSIONS))}")
    missing = [k for k in ("name", "input_shapes", "modules") if k not in obj]
    if missing:
        raise ArchError(f"{source}: missing field {missing[0]!r}; a record has {', '.join(_RECORD_KEYS)}")
    name = obj["name"]
    if not isinstance(name, str) or not name:
        raise ArchError(f"{source}: name={name!r} is not valid: expected a non-empty string")
    shapes = obj["input_shapes"]
    if not isinstance(shapes, list) or not all(isinstance(s, list) for s in shapes):
        raise ArchError(f"{source}: input_shapes={shapes!r} is not valid: expected a list of shapes (lists of ints)")
    input_shapes = tuple(
        tuple(_count(d, f"{source}: input_shapes[{i}][{j}]", "an int >= 0") for j, d in enumerate(s))
        for i, s in enumerate(shapes)
    )
    if not isinstance(obj["modules"], list):
        raise ArchError(f"{source}: modules is a {type(obj['modules']).__name__}: expected a list of module objects")
    modules = []
    for i, m in enumerate(obj["modules"]):
        where = f"{source}: modules[{i}]"
        if not isinstance(m, Mapping):
            raise ArchError(f"{where} is a {type(m).__name__}: expected an object with 'module' and its fields")
        fields = {k: v for k, v in m.items() if k not in ("module", "op", "approx")}
        try:
            spec = get_spec(m.get("module"))
            unknown = sorted(set(fields) - {f.name for f in spec.all_fields})
            if unknown:
                raise ValueError(f"{where}: unknown field(s) {unknown} for {spec.name}; fields: "
                                 + ", ".join(f.name for f in spec.all_fields))
            cfg = config_from_row({"module": spec.name, **fields}, strict=True, source=where)
        except ValueError as e:
            msg = str(e)
            raise ArchError(msg if msg.startswith(where) else f"{where}: {msg}") from None
        op, approx = m.get("op", ""), m.get("approx", "")
        if not isinstance(op, str) or not isinstance(approx, str):
            raise ArchError(f"{where}: op and approx must be strings, got op={op!r}, approx={approx!r}")
        modules.append(ArchModule(cfg, op, approx))
    raw_unmapped = obj.get("unmapped") or []
    if not isinstance(raw_unmapped, list):
        raise ArchError(f"{source}: unmapped is a {type(raw_unmapped).__name__}: expected a list of objects")
    unmapped = []
    for i, u in enumerate(raw_unmapped):
        where = f"{source}: unmapped[{i}]"
        if not isinstance(u, Mapping):
            raise ArchError(f"{where} is a {type(u).__name__}: expected an object with op, kind, count, bytes")
        lacking = [k for k in ("op", "kind", "count", "bytes") if k not in u]
        if lacking:
            raise ArchError(f"{where}: missing field {lacking[0]!r}; an unmapped entry has op, kind, count, bytes")
        if not isinstance(u["op"], str) or not u["op"]:
            raise ArchError(f"{where}.op={u['op']!r} is not valid: expected an operator name")
        if u["kind"] not in _UNMAPPED_KINDS:
            raise ArchError(f"{where}.kind={u['kind']!r} is not valid: expected one of {', '.join(_UNMAPPED_KINDS)}")
        count = _count(u["count"], f"{where}.count", "an int >= 0 (calls)")
        nbytes = _count(u["bytes"], f"{where}.bytes", "an int >= 0 (bytes moved by all calls)")
        unmapped.append(UnmappedOp(u["op"], u["kind"], count, nbytes))
    info = obj.get("info") or {}
    if not isinstance(info, Mapping):
        raise ArchError(f"{source}: info is a {type(info).__name__}: expected an object")
    return ArchRecord(
        name=name,
        input_shapes=input_shapes,
        modules=tuple(modules),
        unmapped=tuple(unmapped),
        measured=_check_measured(obj.get("measured"), source),
        info=info,
    )


def _read_text(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArchError(f"{p}: no such architecture record file") from None
    except IsADirectoryError:
        raise ArchError(f"{p} is a directory: expected an architecture record file (.json or .jsonl)") from None
    except UnicodeDecodeError:
        raise ArchError(f"{p}: not UTF-8 text; expected an architecture record (.json or .jsonl)") from None
    except OSError as e:
        raise ArchError(f"{p}: cannot read ({e.strerror or e})") from None


def load_record(path: str | os.PathLike) -> ArchRecord:
    """Read one record (`.json`).

    Raises:
      ArchError: a missing or unreadable file, invalid JSON, or an invalid record.
    """
    p = Path(path)
    try:
        obj = json.loads(_read_text(p))
    except json.JSONDecodeError as e:
        raise ArchError(f"{p}: not valid JSON ({e}); the file is truncated or corrupted") from None
    return record_from_json(obj, source=str(p))


def load_records(path: str | os.PathLike) -> list[ArchRecord]:
    """Read records from a `.json` file (one record) or a `.jsonl` file (one per line).

    Raises:
      ArchError: a missing or unreadable file, a line that is not valid JSON, or an invalid
        record (the message names the file and line).
    """
    p = Path(path)
    if p.suffix != ".jsonl":
        return [load_record(p)]
    out = []
    for i, line in enumerate(_read_text(p).splitlines()):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise ArchError(f"{p}:{i + 1}: not valid JSON; the line is truncated or corrupted") from None
        out.append(record_from_json(obj, source=f"{p}:{i + 1}"))
    return out


def append_record(path: str | os.PathLike, record: ArchRecord) -> None:
    """Append one record to a `.jsonl` file and fsync (a crash loses at most this line).

    Raises:
      ArchError: the file cannot be written (the message names it and why).
    """
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record.to_json()) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise ArchError(f"{path}: cannot write architecture records here ({e.strerror or e})") from None


def _write_atomic(path: Path, text: str) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as e:
        raise ArchError(f"{path}: cannot write an architecture record here ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# -- capture -------------------------------------------------------------------------------


def _nearest(value: int, choices: Sequence[int]) -> int:
    return min(choices, key=lambda c: (abs(math.log(c) - math.log(max(value, 1))), c))


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def _shape(node: Any) -> tuple[int, ...] | None:
    val = getattr(node, "meta", {}).get("val") if hasattr(node, "meta") else None
    shape = getattr(val, "shape", None)
    return None if shape is None else tuple(int(d) for d in shape)


def _nbytes(node: Any) -> int:
    val = node.meta.get("val") if hasattr(node, "meta") else None
    vals = val if isinstance(val, (list, tuple)) else [val]
    total = 0
    for v in vals:
        if hasattr(v, "numel") and hasattr(v, "element_size"):
            total += int(v.numel()) * int(v.element_size())
    return total


def _is_contiguous(node: Any) -> bool:
    val = node.meta.get("val") if hasattr(node, "meta") else None
    try:
        return bool(val.is_contiguous())
    except Exception:  # noqa: BLE001 - symbolic or non-tensor values
        return True


def _elementwise_fields(shape: tuple[int, ...]) -> dict[str, int] | None:
    """(batch, channels, h, w) for an element-wise op over `shape`; 3-D (b, tokens, f) and
    2-D (b, f) tensors map to channels=f, h=tokens, w=1."""
    if len(shape) == 4:
        b, c, h, w = shape
    elif len(shape) == 3:
        b, h, c = shape
        w = 1
    elif len(shape) == 2:
        b, c = shape
        h = w = 1
    else:
        return None
    return {"batch_size": b, "channels": c, "h": h, "w": w}


class _Mapper:
    """Maps one ATen call to catalogue configs; returns None when it cannot."""

    def __init__(self, common: Mapping[str, Any]):
        self.common = dict(common)

    def make(self, module: str, **fields: Any) -> ModuleConfig:
        if "batch_size" in fields:
            fields["batch_size"] = max(1, int(fields["batch_size"]))
        return make_config(get_spec(module).name, **{**self.common, **fields})

    def __call__(self, name: str, node: Any) -> list[tuple[ModuleConfig, str]] | None:
        fn = getattr(self, f"_{name}", None)
        if fn is None:
            if name in _ACT:
                return self._activation(name, node)
            return None
        return fn(node)

    # each returns [(config, approx-reason)] or None

    def _conv2d(self, node):  # conv2d(x, w, b, stride, padding, dilation, groups)
        return self._conv(list(node.args))

    def _convolution(self, node):  # convolution(x, w, b, stride, pad, dil, transposed, out_pad, groups)
        a = node.args
        if len(a) >= 9 and not a[6]:
            return self._conv([a[0], a[1], a[2], a[3], a[4], a[5], a[8]])
        return None

    def _conv(self, args: list):
        args = args + [None] * 7
        x, wt, bias = _shape(args[0]), _shape(args[1]), args[2]
        stride = _pair(args[3] if args[3] is not None else 1)
        padding = args[4] if args[4] is not None else 0
        dilation = _pair(args[5] if args[5] is not None else 1)
        groups = int(args[6] if args[6] is not None else 1)
        if x is None or wt is None or len(x) != 4:
            return None
        b, cin, h, w = x
        cout, _, kh, kw = wt
        notes = []
        if kh == kw == stride[0] == stride[1] and kh > 2 and groups == 1 and padding in (0, [0, 0], (0, 0)):
            # patchify (ViT, Swin, ConvNeXt stems): a linear layer over non-overlapping patches
            cfg = self.make("linear", batch_size=b, in_features=cin * kh * kw, out_features=cout,
                            tokens=max(1, (h // kh) * (w // kw)), bias=bias is not None)
            return [(cfg, f"{kh}x{kw} stride-{kh} patch convolution as a linear layer")]
        kernel = max(kh, kw)
        if kh != kw:
            notes.append(f"kernel {kh}x{kw} as square")
        if kernel not in (1, 3, 5, 7):
            notes.append(f"kernel {kernel} as {_nearest(kernel, (1, 3, 5, 7))}")
            kernel = _nearest(kernel, (1, 3, 5, 7))
        s = max(stride)
        if stride[0] != stride[1] or s not in (1, 2):
            notes.append(f"stride {stride} as {min(s, 2)}")
            s = min(s, 2)
        if dilation != (1, 1):
            notes.append(f"dilation {dilation} ignored")
        cfg = self.make("conv2d", batch_size=b, cin=cin, cout=cout, h=h, w=w, kernel=kernel, stride=s,
                        groups=groups, bias=bias is not None)
        return [(cfg, "; ".join(notes))]

    def _linear(self, node):
        x, wt = _shape(node.args[0]), _shape(node.args[1])
        if x is None or wt is None or len(x) < 1:
            return None
        bias = len(node.args) > 2 and node.args[2] is not None
        b = x[0] if len(x) >= 2 else 1
        tokens = math.prod(x[1:-1]) if len(x) > 2 else 1
        cfg = self.make("linear", batch_size=b, in_features=x[-1], out_features=wt[0], tokens=max(1, tokens), bias=bias)
        return [(cfg, "")]

    def _addmm(self, node):  # addmm(bias, x, w.t())
        x, wt = _shape(node.args[1]), _shape(node.args[2])
        if x is None or wt is None or len(x) != 2:
            return None
        return [(self.make("linear", batch_size=x[0], in_features=x[1], out_features=wt[1], tokens=1, bias=True), "")]

    def _matmul(self, node):
        a, bshape = _shape(node.args[0]), _shape(node.args[1])
        if a is None or bshape is None or len(a) < 2 or len(bshape) < 2:
            return None
        batch = math.prod(a[:-2]) if len(a) > 2 else 1
        return [(self.make("matmul", batch_size=max(1, batch), m=a[-2], k=a[-1], n=bshape[-1]), "")]

    _bmm = _matmul

    def _mm(self, node):
        return self._matmul(node)

    def _scaled_dot_product_attention(self, node):
        q, k = _shape(node.args[0]), _shape(node.args[1])
        if q is None or k is None or len(q) < 3:
            return None
        bh = math.prod(q[:-2])
        t, d, s = q[-2], q[-1], k[-2]
        note = "attention core as two matrix products (softmax not counted)"
        return [(self.make("matmul", batch_size=bh, m=t, k=d, n=s), note),
                (self.make("matmul", batch_size=bh, m=t, k=s, n=d), note)]

    def _batch_norm(self, node):
        x = _shape(node.args[0])
        if x is None or len(x) != 4:
            return None
        b, c, h, w = x
        return [(self.make("batchnorm2d", batch_size=b, channels=c, h=h, w=w), "")]

    _native_batch_norm_legit_no_training = _batch_norm
    _cudnn_batch_norm = _batch_norm

    def _layer_norm(self, node):
        x = _shape(node.args[0])
        if x is None:
            return None
        shape = node.args[1]
        features = int(shape) if isinstance(shape, int) else math.prod(int(d) for d in shape)
        b = x[0] if len(x) >= 2 else 1
        tokens = max(1, math.prod(x) // max(1, b * features))
        return [(self.make("layernorm", batch_size=b, tokens=tokens, features=features), "")]

    def _activation(self, name, node):
        x = _shape(node.args[0])
        fields = _elementwise_fields(x) if x else None
        if fields is None:
            return None
        act = _ACT[name]
        note = ""
        if name.startswith("hardtanh"):
            lo = node.args[1] if len(node.args) > 1 else -1.0
            hi = node.args[2] if len(node.args) > 2 else 1.0
            if (float(lo), float(hi)) != (0.0, 6.0):
                note = f"hardtanh({lo}, {hi}) as relu6"
        return [(self.make("activation", activation=act, **fields), note)]

    def _add(self, node):
        if len(node.args) < 2 or not all(hasattr(a, "meta") for a in node.args[:2]):
            return None
        a, b = _shape(node.args[0]), _shape(node.args[1])
        if a is None or a != b:
            return None
        fields = _elementwise_fields(a)
        return None if fields is None else [(self.make("add", **fields), "")]

    _add_ = _add

    def _pool(self, node, mode):
        x = _shape(node.args[0])
        if x is None or len(x) != 4:
            return None
        kernel = max(_pair(node.args[1]))
        stride_arg = node.args[2] if len(node.args) > 2 and node.args[2] not in (None, []) else kernel
        stride = max(_pair(stride_arg))
        notes = []
        if kernel not in (2, 3, 5, 7):
            notes.append(f"kernel {kernel} as {_nearest(kernel, (2, 3, 5, 7))}")
            kernel = _nearest(kernel, (2, 3, 5, 7))
        if stride not in (1, 2):
            notes.append(f"stride {stride} as 2")
            stride = 2
        b, c, h, w = x
        if min(h, w) + 2 * ((kernel - 1) // 2) < kernel:
            return None
        cfg = self.make("pool2d", batch_size=b, mode=mode, channels=c, h=h, w=w, kernel=kernel, stride=stride)
        return [(cfg, "; ".join(notes))]

    def _max_pool2d(self, node):
        return self._pool(node, "max")

    def _max_pool2d_with_indices(self, node):
        return self._pool(node, "max")

    def _avg_pool2d(self, node):
        return self._pool(node, "avg")

    def _global(self, node, mode):
        x = _shape(node.args[0])
        if x is None or len(x) != 4:
            return None
        b, c, h, w = x
        return [(self.make("global_pool2d", batch_size=b, mode=mode, channels=c, h=h, w=w), "")]

    def _adaptive_avg_pool2d(self, node):
        return self._global(node, "avg") if tuple(_pair(node.args[1])) == (1, 1) else None

    def _adaptive_max_pool2d(self, node):
        return self._global(node, "max") if tuple(_pair(node.args[1])) == (1, 1) else None

    def _mean(self, node):  # mean over the spatial dims of a 4-D tensor = global average pooling
        x = _shape(node.args[0])
        dims = node.args[1] if len(node.args) > 1 else None
        if x is None or len(x) != 4 or dims is None:
            return None
        dims = sorted(d % 4 for d in dims)
        return self._global(node, "avg") if dims == [2, 3] else None


def _op_name(target: Any) -> str:
    """'aten.conv2d.default' -> 'conv2d'; operator.getitem -> 'getitem'."""
    s = str(target)
    if s.startswith("aten."):
        return s.split(".")[1]
    return getattr(target, "__name__", s)


def capture_torch(
    model: Any,
    example_inputs: Sequence[Any] | Any,
    *,
    name: str = "model",
    threads: int = 1,
    utilization: float = 0.0,
    info: Mapping[str, Any] | None = None,
) -> ArchRecord:
    """Capture `model` called on `example_inputs` with `torch.export` into an `ArchRecord`.

    The model is put in eval mode. Every operator of the exported graph becomes a catalogue
    config or an `UnmappedOp` entry. Input dtype sets the configs' `dtype`.

    Raises:
      RuntimeError: the model cannot be exported (the message is torch.export's).
    """
    import torch

    from ._torch_backend import TORCH_DTYPES

    inputs = tuple(example_inputs) if isinstance(example_inputs, (list, tuple)) else (example_inputs,)
    model = model.eval()
    try:
        with torch.no_grad():
            ep = torch.export.export(model, inputs, strict=False)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise RuntimeError(f"{name}: torch.export failed: {type(e).__name__}: {e}") from e
    float_in = [t for t in inputs if isinstance(t, torch.Tensor) and t.is_floating_point()]
    names = {v: k for k, v in TORCH_DTYPES.items()}
    dtype = names.get(float_in[0].dtype, "fp32") if float_in else "fp32"
    mapper = _Mapper({"dtype": dtype, "threads": threads, "utilization": utilization})
    modules: list[ArchModule] = []
    unmapped: dict[tuple[str, str], list[int]] = {}
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        op = _op_name(node.target)
        try:
            mapped = mapper(op, node)
        except ValueError:  # a shape outside the catalogue's field ranges
            mapped = None
        if mapped:
            modules.extend(ArchModule(cfg, op, note) for cfg, note in mapped)
            continue
        view = op in VIEW_OPS and (op not in ("reshape", "flatten", "contiguous") or _is_contiguous(node.args[0]))
        kind = "view" if view else "compute"
        if view:
            moved = 0
        elif op in _GATHER_OPS:  # reads only the rows it gathers, not the whole table
            moved = 2 * _nbytes(node)
        else:
            moved = _nbytes(node) + sum(_nbytes(a) for a in node.args if hasattr(a, "meta"))
        entry = unmapped.setdefault((op, kind), [0, 0])
        entry[0] += 1
        entry[1] += moved
    return ArchRecord(
        name=name,
        input_shapes=tuple(tuple(int(d) for d in t.shape) for t in inputs if isinstance(t, torch.Tensor)),
        modules=tuple(modules),
        unmapped=tuple(UnmappedOp(op, kind, c, b) for (op, kind), (c, b) in unmapped.items()),
        info=dict(info or {}),
    )


def unique_configs(records: Iterable[ArchRecord]) -> list[ModuleConfig]:
    """The distinct module configs of `records`, in first-seen order (for profiling them)."""
    seen: dict[str, ModuleConfig] = {}
    for r in records:
        for m in r.modules:
            seen.setdefault(m.config.key, m.config)
    return list(seen.values())
