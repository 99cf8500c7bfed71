"""ONNX models as architecture records: the graph read with the `onnx` package (no runtime).

`capture_onnx("model.onnx")` infers every tensor's shape (`onnx.shape_inference`) and maps each
node to catalogue configs with the same rules as `capture_torch` (the same mapper, fed the
ONNX node's shapes in the ATen operator's argument order), so that a model predicts alike
from either source. Nodes the catalogue has no type for are listed in `unmapped` with their
count and the bytes they move, under the ATen name of the same operation where there is one
(`Concat` as `cat`, `Pad` as `constant_pad_nd`), so that the composition correction charges
copies and arithmetic at their own rates; none is silently dropped.

Patterns an exporter writes for one torch operator are read as that operator: `x * sigmoid(x)`
as SiLU, `MatMul` by a constant weight (and the `Add` of a constant bias after it) as a linear
layer, `Clip(0, 6)` as ReLU6. Constant subgraphs (shape arithmetic, axes, an all-zero bias
made for a convolution without one) are evaluated as an optimizing runtime folds them, and
listed with kind "folded" (no run-time cost; not counted by the composition). An exporter
that folded batch normalization into the preceding convolution leaves no batch-norm node, so
the record has none either: export with `torch.onnx.export(..., optimize=False)` to predict
the model as torch runs it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._arch import COPY_OPS, ArchModule, ArchRecord, UnmappedOp, _Mapper

#: ONNX element types (`onnx.TensorProto`) -> (catalogue dtype, bytes per element).
_ELEM = {
    1: ("fp32", 4),
    10: ("fp16", 2),
    16: ("bf16", 2),
    11: ("fp32", 8),
    7: ("fp32", 8),
    6: ("fp32", 4),
    9: ("fp32", 1),
    2: ("fp32", 1),
    3: ("fp32", 1),
}

#: ONNX operators that only change metadata (shapes, constants): kind "view", no bytes.
_VIEW_OPS = frozenset(
    {
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Shape",
        "Size",
        "Constant",
        "ConstantOfShape",
        "Identity",
        "Range",
        "Dropout",
        "Cast",
        "CastLike",
    }
)

#: ONNX operator -> the ATen name of the same operation, for the unmapped list.
_ATEN_NAME = {
    "Concat": "cat",
    "Pad": "constant_pad_nd",
    "Transpose": "permute_copy",
    "Gather": "index_select",
    "GatherElements": "gather",
    "Expand": "expand_copy",
    "Tile": "repeat",
    "Slice": "slice_copy",
    "Split": "split_copy",
    "Softmax": "softmax",
    "LogSoftmax": "log_softmax",
    "Mul": "mul",
    "Add": "add",
    "Sub": "sub",
    "Div": "div",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Erf": "erf",
    "Pow": "pow",
    "Sqrt": "sqrt",
    "ReduceMean": "mean",
    "ReduceSum": "sum",
    "ReduceMax": "amax",
    "Where": "where",
    "Resize": "upsample",
    "ScatterND": "index_put",
    "Einsum": "einsum",
}

_ACT_ONNX = {"Relu": "relu", "Gelu": "gelu", "HardSwish": "hardswish"}


class _Val:
    """A tensor's static description, shaped like the FX node values `_Mapper` reads."""

    def __init__(self, shape: Sequence[int], itemsize: int):
        self.shape = tuple(int(d) for d in shape)
        self._itemsize = itemsize

    def numel(self) -> int:
        return math.prod(self.shape)

    def element_size(self) -> int:
        return self._itemsize

    def is_contiguous(self) -> bool:
        return True


class _Node:
    """An argument for `_Mapper`: a tensor (`meta["val"]`) standing in for an FX node."""

    def __init__(self, val: _Val | None):
        self.meta = {"val": val}


class _Call:
    """An ATen-style call for `_Mapper`: positional `args`."""

    def __init__(self, *args: Any):
        self.args = args


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _check_path(path: Path) -> None:
    if path.suffix.lower() == ".tflite":
        raise ValueError(
            f"{path}: a .tflite model cannot be read here; give the model as ONNX (.onnx) or as a "
            "torch factory (--model package.module:factory), or capture it with "
            "`jaxlat-profile tflite-model` from its torch source"
        )
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"{path}: not an ONNX model (expected a .onnx file)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")


def capture_onnx(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    input_shapes: Mapping[str, Sequence[int]] | Sequence[Sequence[int]] | None = None,
    threads: int = 1,
    utilization: float = 0.0,
    info: Mapping[str, Any] | None = None,
) -> ArchRecord:
    """Read an ONNX model into an `ArchRecord`, as `capture_torch` captures a torch model.

    Args:
      path: the `.onnx` file.
      name: the record's name (default: the file's stem).
      input_shapes: shapes for the graph inputs, by input name or in input order; needed where
        the model has symbolic dimensions (a dynamic batch), else the model's own shapes.
      threads: the configs' `threads` (the setting to predict at).
      utilization: the configs' `utilization`.
      info: extra metadata kept in the record.

    Returns:
      The record: mapped modules in graph order, the other nodes in `unmapped`.

    Raises:
      ValueError: not a `.onnx` file (a `.tflite` file says how to proceed), a model the `onnx`
        package cannot read, or an input whose shape stays symbolic.
      FileNotFoundError: no such file.
      ImportError: the `onnx` package is not installed (`pip install 'jaxlat[onnx]'`).
    """
    path = Path(path)
    _check_path(path)
    try:
        import onnx
        from onnx import numpy_helper, shape_inference
    except ImportError as e:
        raise ImportError("reading ONNX models needs the onnx package: pip install 'jaxlat[onnx]'") from e
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf's decode errors have no common base
        raise ValueError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    _set_input_shapes(path, inputs, input_shapes)
    try:
        model = shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as e:  # noqa: BLE001 - onnx raises its own InferenceError and others
        raise ValueError(f"{path}: ONNX shape inference failed ({type(e).__name__}: {e})") from None
    graph = model.graph

    vals: dict[str, _Val] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if all(d is not None for d in dims):
            vals[vi.name] = _Val(dims, _ELEM.get(t.elem_type, ("fp32", 4))[1])
    consts: dict[str, Any] = {}
    for t in graph.initializer:
        consts[t.name] = numpy_helper.to_array(t)
        vals.setdefault(t.name, _Val(t.dims, _ELEM.get(t.data_type, ("fp32", 4))[1]))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    nodes = list(graph.node)  # one Python object per node for the whole read: ids are kept below
    folded = _fold_constants(nodes, vals, consts, opset)

    for i in inputs:
        if i.name not in vals:
            raise ValueError(
                f"{path}: input {i.name!r} has a symbolic or unknown shape; give its shape "
                "(--input-shape, or input_shapes=)"
            )
    first = inputs[0].type.tensor_type.elem_type if inputs else 1
    dtype = _ELEM.get(first, ("fp32", 4))[0]
    mapper = _Mapper({"dtype": dtype, "threads": threads, "utilization": utilization})
    reader = _GraphReader(nodes, vals, consts, mapper, folded)
    modules, unmapped = reader.read()
    return ArchRecord(
        name=name or path.stem,
        input_shapes=tuple(vals[i.name].shape for i in inputs),
        modules=tuple(modules),
        unmapped=tuple(UnmappedOp(op, kind, c, b) for (op, kind), (c, b) in unmapped.items()),
        info={"source": "onnx", "file": path.name, **dict(info or {})},
    )


#: Constant subgraphs (shape arithmetic, axes, transposed weights) are evaluated up to this many
#: elements per output, as an optimizing runtime folds them before it runs the model.
_FOLD_MAX_ELEMENTS = 1 << 24


def _fold_constants(
    nodes: Sequence[Any], vals: dict[str, _Val], consts: dict[str, Any], opset: int | None
) -> set[int]:
    """Evaluate, in graph order, the nodes whose inputs are all known constants (and `Shape` of
    a tensor of known shape) with onnx's reference evaluator, into `consts`. Returns the ids of
    the folded nodes: they cost nothing at run time and are listed as views."""
    import numpy as np
    from onnx.reference import ReferenceEvaluator

    folded: set[int] = set()
    for n in nodes:
        if n.domain not in ("", "ai.onnx"):
            continue
        if n.op_type == "CastLike" and n.input[0] in consts:  # only the other input's dtype is needed
            consts[n.output[0]] = consts[n.input[0]]
            folded.add(id(n))
            continue
        if n.op_type == "Shape" and n.input[0] in vals:
            a = _attrs(n)
            shape = vals[n.input[0]].shape
            consts[n.output[0]] = np.asarray(shape[a.get("start", 0) : a.get("end", len(shape))], np.int64)
            folded.add(id(n))
            continue
        ins = [i for i in n.input if i]
        if not all(i in consts for i in ins):  # Constant has no inputs: always folded
            continue
        try:
            outs = ReferenceEvaluator(n, opsets={"": opset} if opset else None).run(
                None, {i: consts[i] for i in ins}
            )
        except Exception:  # noqa: BLE001, S112 - an op the reference evaluator lacks: left to the mapping
            continue
        if any(np.asarray(o).size > _FOLD_MAX_ELEMENTS for o in outs):
            continue
        for name, o in zip(n.output, outs):
            o = np.asarray(o)
            consts[name] = o
            vals.setdefault(name, _Val(o.shape, o.dtype.itemsize))
        folded.add(id(n))
    return folded


def _set_input_shapes(path: Path, inputs: Sequence[Any], shapes: Any) -> None:
    if shapes is None:
        return
    if isinstance(shapes, Mapping):
        unknown = sorted(set(shapes) - {i.name for i in inputs})
        if unknown:
            raise ValueError(
                f"{path}: input_shapes names {unknown}; the model's inputs are {[i.name for i in inputs]}"
            )
        pairs = [(i, shapes[i.name]) for i in inputs if i.name in shapes]
    else:
        shapes = list(shapes)
        if len(shapes) > len(inputs):
            raise ValueError(f"{path}: {len(shapes)} input shapes given; the model has {len(inputs)} inputs")
        pairs = list(zip(inputs, shapes))
    for inp, shape in pairs:
        dims = inp.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ValueError(
                f"{path}: input {inp.name!r} has {len(dims)} dimensions; the shape given "
                f"{tuple(shape)} has {len(shape)}"
            )
        for d, v in zip(dims, shape):
            if d.HasField("dim_value") and d.dim_value != int(v):
                raise ValueError(
                    f"{path}: input {inp.name!r} is fixed at "
                    f"{tuple(x.dim_value for x in dims)}; the shape given is {tuple(shape)}"
                )
            d.dim_value = int(v)


class _GraphReader:
    """Walks the nodes in graph order, fusing the exporter patterns named in the module doc."""

    def __init__(
        self,
        nodes: Sequence[Any],
        vals: dict[str, _Val],
        consts: dict[str, Any],
        mapper: _Mapper,
        folded: set[int],
    ):
        self.nodes, self.vals, self.consts, self.mapper, self.folded = nodes, vals, consts, mapper, folded
        self.producer = {o: n for n in nodes for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.skip: set[int] = set()  # ids of nodes already read as part of a pattern
        self.silu = self._silu_pairs()  # id(Mul) -> x, for x * sigmoid(x)

    def _silu_pairs(self) -> dict[int, str]:
        """`Mul(x, Sigmoid(x))` pairs whose Sigmoid feeds only the Mul; their Sigmoid is skipped
        (the graph lists it first) when the Mul maps."""
        out = {}
        for n in self.nodes:
            if n.op_type != "Mul" or len(n.input) != 2:
                continue
            for i, j in ((0, 1), (1, 0)):
                sig = self.producer.get(n.input[j])
                if (
                    sig is not None
                    and sig.op_type == "Sigmoid"
                    and sig.input[0] == n.input[i]
                    and len(self.consumers.get(sig.output[0], [])) == 1
                ):
                    try:
                        ok = self.mapper._activation("silu", _Call(self.node(n.input[i])))
                    except ValueError:
                        ok = None
                    if ok:
                        out[id(n)] = n.input[i]
                        self.skip.add(id(sig))
                    break
        return out

    def node(self, name: str) -> _Node:
        return _Node(self.vals.get(name))

    def read(self) -> tuple[list[ArchModule], dict[tuple[str, str], list[int]]]:
        modules: list[ArchModule] = []
        unmapped: dict[tuple[str, str], list[int]] = {}
        for n in self.nodes:
            if id(n) in self.skip:
                continue
            try:
                got = self.map(n)
            except ValueError:  # a shape outside the catalogue's field ranges
                got = None
            if got:
                op, mapped = got
                modules.extend(ArchModule(cfg, op, note) for cfg, note in mapped)
                continue
            op = _ATEN_NAME.get(n.op_type, n.op_type.lower())
            kind = "folded" if id(n) in self.folded else "view" if n.op_type in _VIEW_OPS else "compute"
            moved = self.nbytes(n) if kind == "compute" else 0
            entry = unmapped.setdefault((op, kind), [0, 0])
            entry[0] += 1
            entry[1] += moved
        return modules, unmapped

    def nbytes(self, n: Any) -> int:
        names = [*n.output] + (
            []
            if _ATEN_NAME.get(n.op_type) in ("index_select", "gather")
            else [i for i in n.input if i and i not in self.consts]
        )
        total = sum(self.vals[x].numel() * self.vals[x].element_size() for x in names if x in self.vals)
        if _ATEN_NAME.get(n.op_type) in ("index_select", "gather"):  # rows gathered, not the table
            total *= 2
        return total

    def const(self, name: str) -> Any:
        return self.consts.get(name)

    def bias(self, name: str) -> _Node | None:
        """A bias input; None where absent or all zeros (an exporter's stand-in for no bias)."""
        if not name:
            return None
        b = self.const(name)
        if b is not None and not b.any():
            return None
        return self.node(name)

    def map(self, n: Any) -> tuple[str, list] | None:
        if n.op_type in _ACT_ONNX:
            act = _ACT_ONNX[n.op_type]
            return act, self.mapper._activation(act, _Call(self.node(n.input[0])))
        fn = getattr(self, f"_{n.op_type}", None)
        return None if fn is None else fn(n)

    # -- operators -------------------------------------------------------------------------

    def _Conv(self, n):
        a = _attrs(n)
        if len(self.vals.get(n.input[0], _Val((), 4)).shape) != 4:
            return None
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            pads = [1, 1, 1, 1]  # SAME padding: not zero, the only thing the mapper asks of it
        padding = [pads[0], pads[1]] if len(pads) == 4 else [0, 0]
        bias = self.bias(n.input[2] if len(n.input) > 2 else "")
        call = _Call(
            self.node(n.input[0]),
            self.node(n.input[1]),
            bias,
            list(a.get("strides", [1, 1])),
            padding,
            list(a.get("dilations", [1, 1])),
            int(a.get("group", 1)),
        )
        return "conv2d", self.mapper._conv2d(call)

    def _weight(self, name: str, *, transposed: bool) -> _Node | None:
        """A constant 2-D weight as torch's linear weight `(out, in)`."""
        w = self.const(name)
        if w is None or w.ndim != 2:
            return None
        out_in = w.shape if transposed else w.shape[::-1]
        return _Node(_Val(out_in, w.dtype.itemsize))

    def _Gemm(self, n):
        a = _attrs(n)
        if a.get("transA", 0):
            return None
        w = self._weight(n.input[1], transposed=bool(a.get("transB", 0)))
        x = self.node(n.input[0])
        bias = self.bias(n.input[2] if len(n.input) > 2 else "")
        if w is None:  # activation x activation: a matrix product
            return "mm", self.mapper._matmul(_Call(x, self.node(n.input[1])))
        return "linear", self.mapper._linear(_Call(x, w, bias) if bias is not None else _Call(x, w))

    def _MatMul(self, n):
        x = self.node(n.input[0])
        w = self._weight(n.input[1], transposed=False)
        if w is None:
            return "matmul", self.mapper._matmul(_Call(x, self.node(n.input[1])))
        bias = None
        users = self.consumers.get(n.output[0], [])
        if len(users) == 1 and users[0].op_type == "Add":  # the bias of a linear layer
            other = [i for i in users[0].input if i != n.output[0]]
            b = self.const(other[0]) if other else None
            if b is not None and b.ndim == 1:
                self.skip.add(id(users[0]))
                bias = _Node(_Val(b.shape, b.dtype.itemsize))
        return "linear", self.mapper._linear(_Call(x, w, bias) if bias is not None else _Call(x, w))

    def _BatchNormalization(self, n):
        return "batch_norm", self.mapper._batch_norm(_Call(self.node(n.input[0])))

    def _LayerNormalization(self, n):
        x = self.vals.get(n.input[0])
        if x is None:
            return None
        axis = int(_attrs(n).get("axis", -1)) % len(x.shape)
        return "layer_norm", self.mapper._layer_norm(_Call(self.node(n.input[0]), list(x.shape[axis:])))

    def _Clip(self, n):
        lo = self.const(n.input[1]) if len(n.input) > 1 and n.input[1] else None
        hi = self.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        a = _attrs(n)
        lo = float(lo) if lo is not None else a.get("min")
        hi = float(hi) if hi is not None else a.get("max")
        if lo is None or hi is None:
            return None
        return "hardtanh", self.mapper._activation("hardtanh", _Call(self.node(n.input[0]), lo, hi))

    def _Mul(self, n):  # x * sigmoid(x): SiLU (its Sigmoid is skipped, see `_silu_pairs`)
        x = self.silu.get(id(n))
        return None if x is None else ("silu", self.mapper._activation("silu", _Call(self.node(x))))

    def _Add(self, n):
        if len(n.input) < 2 or any(i in self.consts for i in n.input):
            return None
        return "add", self.mapper._add(_Call(self.node(n.input[0]), self.node(n.input[1])))

    def _pool(self, n, mode):
        a = _attrs(n)
        if any(p for p in a.get("dilations", [1, 1]) if p != 1):
            return None
        kernel = list(a["kernel_shape"])
        stride = list(a.get("strides", [1, 1]))
        fn = self.mapper._max_pool2d if mode == "max" else self.mapper._avg_pool2d
        return f"{mode}_pool2d", fn(_Call(self.node(n.input[0]), kernel, stride))

    def _MaxPool(self, n):
        return self._pool(n, "max")

    def _AveragePool(self, n):
        return self._pool(n, "avg")

    def _GlobalAveragePool(self, n):
        return "adaptive_avg_pool2d", self.mapper._global(_Call(self.node(n.input[0])), "avg")

    def _GlobalMaxPool(self, n):
        return "adaptive_max_pool2d", self.mapper._global(_Call(self.node(n.input[0])), "max")

    def _ReduceMean(self, n):
        axes = self.const(n.input[1]) if len(n.input) > 1 and n.input[1] else _attrs(n).get("axes")
        if axes is None:
            return None
        return "mean", self.mapper._mean(_Call(self.node(n.input[0]), [int(x) for x in list(axes)]))


__all__ = ["COPY_OPS", "capture_onnx"]
