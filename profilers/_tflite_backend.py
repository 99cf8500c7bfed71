"""LiteRT (TFLite) backend, target side: time converted single-module models with the LiteRT
interpreter, and check a converted graph's operators against the module it should be.

Needs only `ai-edge-litert` and numpy: it runs on the target (a phone, a Raspberry Pi) where
neither torch nor JAX is installed. Models come from `jaxlat-profile tflite-export` (host side,
`profilers._tflite_export`): a directory of `.tflite` files and a manifest.

    entries = load_manifest("models/")            # export key -> ManifestEntry
    timing = time_tflite_model("models/x.tflite", threads=1, delegate="xnnpack")

Timing follows the torch backend's rules (`profilers._timer`: warm-up, sized blocks, repeats);
the timed call is `Interpreter.invoke()` on inputs set once, so a sample includes the Python
call into the interpreter (about a microsecond) and nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._catalogue import ModuleConfig, config_from_row
from ._timer import Timing, TimerConfig, time_function

#: Delegates a measurement can run with: XNNPACK (LiteRT's default CPU delegate) or none (the
#: built-in kernels alone).
DELEGATES = ("xnnpack", "none")
#: Precisions an export produces (catalogue dtypes): fp32; fp16 weights with fp32 activations;
#: int8 weights and activations (full-integer post-training quantization).
TFLITE_DTYPES = ("fp32", "fp16w", "int8")
#: The manifest of a models directory: one JSON object per exported model, appended and fsynced.
MANIFEST_NAME = "manifest.jsonl"
#: Version of a manifest line; `load_manifest` reads exactly these.
MANIFEST_FORMAT_VERSION = 1
READABLE_MANIFEST_VERSIONS = (1,)
#: Fields that are run settings, not part of the converted model: one model serves them all.
RUNTIME_FIELDS = ("threads", "utilization")


class TFLiteError(ValueError):
    """A models directory or a model that cannot be used, with the reason."""


# -- graph operators -------------------------------------------------------------------------


def _builtin_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def graph_ops(model: bytes) -> list[str]:
    """The operators of a `.tflite` flatbuffer in execution order (all subgraphs), by builtin
    name (`CONV_2D`, ...); custom operators as `CUSTOM:<name>`."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.Model.GetRootAsModel(model, 0)
    names = _builtin_names()
    codes = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        # Builtin codes above 127 live in BuiltinCode; older files use DeprecatedBuiltinCode.
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        if names.get(code) == "CUSTOM":
            codes.append("CUSTOM:" + (oc.CustomCode() or b"").decode(errors="replace"))
        else:
            codes.append(names.get(code, f"BUILTIN_{code}"))
    ops = []
    for s in range(m.SubgraphsLength()):
        sg = m.Subgraphs(s)
        ops += [codes[sg.Operators(j).OpcodeIndex()] for j in range(sg.OperatorsLength())]
    return ops


@dataclasses.dataclass(frozen=True)
class IntendedOps:
    """What a module's converted graph should hold.

    Attributes:
      required: operators that must appear (the module itself).
      allowed: auxiliary operators that are part of the module's semantics (a PAD of a padded
        pooling, the RESHAPE around a matrix product, DEQUANTIZE of fp16 weights).
    """

    required: frozenset[str]
    allowed: frozenset[str] = frozenset()

    def extra(self, ops: Iterable[str]) -> list[str]:
        """Operators outside `required` and `allowed`, in graph order (e.g. an inserted TRANSPOSE)."""
        ok = self.required | self.allowed
        return [o for o in ops if o not in ok]

    def missing(self, ops: Iterable[str]) -> list[str]:
        return sorted(self.required - set(ops))


_ACT_OPS = {
    "relu": ("RELU",),
    "relu6": ("RELU6",),
    "gelu": ("GELU",),
    "silu": ("LOGISTIC", "MUL"),  # x * sigmoid(x)
    "hardswish": ("HARD_SWISH",),
}


def _conv_op(cfg: ModuleConfig) -> str:
    depthwise = cfg["groups"] > 1 and cfg["groups"] == cfg["cin"]
    return "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"


def _intended_base(cfg: ModuleConfig) -> IntendedOps | None:
    m = cfg.module
    f = frozenset
    if m == "conv2d":
        return IntendedOps(f({_conv_op(cfg)}))
    if m == "conv_bn_act":
        act = cfg["activation"]
        # relu and relu6 fuse into the convolution; the others stay separate operators.
        return IntendedOps(f({_conv_op(cfg)}) | (f() if act in ("relu", "relu6") else f(_ACT_OPS[act])))
    if m == "linear":
        return IntendedOps(f({"FULLY_CONNECTED"}), f({"RESHAPE"}))
    if m == "matmul":
        return IntendedOps(f({"BATCH_MATMUL"}), f({"RESHAPE"}))
    if m == "pool2d":
        return IntendedOps(f({"MAX_POOL_2D" if cfg["mode"] == "max" else "AVERAGE_POOL_2D"}), f({"PAD", "PADV2"}))
    if m == "global_pool2d":
        return IntendedOps(f({"MEAN" if cfg["mode"] == "avg" else "REDUCE_MAX"}), f({"RESHAPE"}))
    if m == "batchnorm2d":
        return IntendedOps(f({"MUL", "ADD"}))
    if m == "layernorm":  # decomposed: mean, variance, rsqrt, scale and shift
        return IntendedOps(f({"MEAN", "RSQRT"}), f({"SQUARED_DIFFERENCE", "SUB", "MUL", "ADD", "RESHAPE"}))
    if m == "activation":
        return IntendedOps(f(_ACT_OPS[cfg["activation"]]))
    if m == "add":
        return IntendedOps(f({"ADD"}))
    if m == "mhsa":  # head split and merge are reshapes and transposes by construction
        return IntendedOps(
            f({"FULLY_CONNECTED", "BATCH_MATMUL", "SOFTMAX"}),
            f({"RESHAPE", "TRANSPOSE", "SLICE", "STRIDED_SLICE", "SPLIT", "MUL", "ADD"}),
        )
    return None


def intended_ops(cfg: ModuleConfig) -> IntendedOps | None:
    """The operators the converted graph of `cfg` should hold (None: no rule for this type).

    fp16w models also hold DEQUANTIZE operators (fp16 weights to fp32). A full-integer int8
    model holds none: a QUANTIZE or DEQUANTIZE there means part of the module stayed float.
    """
    base = _intended_base(cfg)
    if base is None:
        return None
    if cfg["dtype"] == "fp16w":
        return IntendedOps(base.required, base.allowed | {"DEQUANTIZE"})
    return base


# -- manifest --------------------------------------------------------------------------------


def export_key(cfg: ModuleConfig) -> str:
    """Identity of a converted model: the config without its run settings (threads,
    utilization), which one `.tflite` file serves."""
    return cfg.replace(threads=1, utilization=0.0).key


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One exported model.

    Attributes:
      key: `export_key` of the config.
      config: the module config (run settings at their defaults).
      file: the `.tflite` file name inside the models directory (None when the export failed).
      ops: the converted graph's operators.
      extra_ops: operators beyond the intended ones (empty when clean; None: no rule).
      max_abs_err: largest difference between the TFLite output and the torch module's, on the
        export's example input.
      rel_err: `max_abs_err` over the largest reference magnitude.
      model_bytes: size of the file.
      converter: library versions that produced it (a cache entry is reused only when equal).
      missing_ops: intended operators the graph lacks (the converter chose another form).
      error: why the export failed (the run writes the config as a failed row).
    """

    key: str
    config: ModuleConfig
    file: str | None
    ops: tuple[str, ...]
    extra_ops: tuple[str, ...] | None
    max_abs_err: float
    rel_err: float
    model_bytes: int
    converter: Mapping[str, str]
    missing_ops: tuple[str, ...] = ()
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": MANIFEST_FORMAT_VERSION,
            "key": self.key,
            "config": self.config.as_dict(),
            "file": self.file,
            "ops": list(self.ops),
            "extra_ops": None if self.extra_ops is None else list(self.extra_ops),
            "max_abs_err": self.max_abs_err,
            "rel_err": self.rel_err,
            "model_bytes": self.model_bytes,
            "converter": dict(self.converter),
            "missing_ops": list(self.missing_ops),
            "error": self.error,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, source: str) -> ManifestEntry:
        version = obj.get("format_version")
        if version not in READABLE_MANIFEST_VERSIONS:
            raise TFLiteError(f"{source}: format_version={version!r} is unknown; this version reads "
                              f"{', '.join(map(str, READABLE_MANIFEST_VERSIONS))}")
        try:
            cfg = config_from_row(obj["config"])
            extra = obj["extra_ops"]
            return cls(obj["key"], cfg, obj["file"], tuple(obj["ops"]), None if extra is None else tuple(extra),
                       float(obj["max_abs_err"]), float(obj["rel_err"]), int(obj["model_bytes"]),
                       dict(obj.get("converter", {})), tuple(obj.get("missing_ops", ())), obj.get("error"))
        except KeyError as e:
            raise TFLiteError(f"{source}: missing field {e.args[0]!r}") from None
        except ValueError as e:
            raise TFLiteError(f"{source}: {e}") from None

    def backend_columns(self, delegate: str) -> dict[str, str | None]:
        """The dataset's backend columns for a row measured from this model."""
        return {
            "delegate": delegate,
            "graph_ops": ";".join(self.ops),
            "graph_extra_ops": None if self.extra_ops is None else ";".join(self.extra_ops),
        }


def load_manifest(directory: str | os.PathLike) -> dict[str, ManifestEntry]:
    """The exported models of a directory, by export key (the last line of a key wins).

    A line torn by a crash mid-write is skipped (that model is exported again on resume).

    Raises:
      TFLiteError: no manifest, or a line of an unknown version or with missing fields.
    """
    d = Path(directory)
    path = d / MANIFEST_NAME
    if not path.exists():
        raise TFLiteError(f"{d}: no {MANIFEST_NAME}; not a models directory written by jaxlat-profile tflite-export")
    out: dict[str, ManifestEntry] = {}
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # torn by a crash: that model is simply not done
                continue
            raise TFLiteError(f"{path}:{i + 1}: not valid JSON; the manifest is corrupted") from None
        entry = ManifestEntry.from_json(obj, source=f"{path}:{i + 1}")
        out[entry.key] = entry
    return out


def append_manifest(directory: str | os.PathLike, entry: ManifestEntry) -> None:
    """Append one entry and fsync (its `.tflite` file must already be in place)."""
    with open(Path(directory) / MANIFEST_NAME, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry.to_json()) + "\n")
        f.flush()
        os.fsync(f.fileno())


def describe_manifest(directory: str | os.PathLike) -> str:
    """A text report of a models directory: per module type and dtype, the models, how many
    have operators beyond the module's, the median relative output error against torch, and the
    first model's operators; then the failed exports."""
    entries = load_manifest(directory)
    ok = [e for e in entries.values() if e.error is None]
    failed = [e for e in entries.values() if e.error is not None]
    lines = [f"{directory}: {len(ok)} models, {len(failed)} failed exports"]
    groups: dict[tuple[str, str], list[ManifestEntry]] = {}
    for e in ok:
        groups.setdefault((e.config.module, e.config["dtype"]), []).append(e)
    lines.append(f"{'module':<14} {'dtype':<6} {'models':>6} {'extra ops':>9} {'rel err':>9}  operators (first model)")
    for (m, dt), es in sorted(groups.items()):
        n_extra = sum(1 for e in es if e.extra_ops)
        rel = float(np.median([e.rel_err for e in es]))
        lines.append(f"{m:<14} {dt:<6} {len(es):>6} {n_extra:>9} {rel:>9.1e}  {' '.join(es[0].ops)}")
    for e in failed[:10]:
        lines.append(f"failed {e.config}: {e.error}")
    if len(failed) > 10:
        lines.append(f"... and {len(failed) - 10} more failed exports")
    return "\n".join(lines)


def manifest_configs(entries: Mapping[str, ManifestEntry], **settings: Sequence[Any]) -> list[ModuleConfig]:
    """The configs to measure: every exported model at every combination of run settings
    (`threads=[1, 2]`, `utilization=[0, 0.5]`)."""
    from ._samplers import expand

    bad = sorted(set(settings) - set(RUNTIME_FIELDS))
    if bad:
        raise ValueError(f"manifest_configs: {bad} are not run settings; expected some of {list(RUNTIME_FIELDS)}")
    return expand([e.config for e in entries.values()], **settings)


# -- interpreter and timing ------------------------------------------------------------------


def litert_version() -> str:
    from importlib.metadata import version

    return version("ai-edge-litert")


def make_interpreter(model: str | os.PathLike | bytes, *, threads: int = 1, delegate: str = "xnnpack"):
    """A LiteRT interpreter with `threads` threads and the delegate applied, tensors allocated.

    Raises:
      ValueError: an unknown delegate or a thread count below 1.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if delegate not in DELEGATES:
        raise ValueError(f"delegate={delegate!r} is not valid: expected one of {', '.join(DELEGATES)}")
    if int(threads) < 1:
        raise ValueError(f"threads={threads!r} is not valid: expected an int >= 1")
    resolver = OpResolverType.AUTO if delegate == "xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    kwargs = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    it = Interpreter(**kwargs, num_threads=int(threads), experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    return it


def random_inputs(interpreter, *, seed: int = 0) -> list[np.ndarray]:
    """Inputs of the interpreter's shapes and dtypes: standard normal floats; the full range of
    8-bit (quantized) inputs; integers in [0, 100) for wider integer inputs (token ids)."""
    rng = np.random.default_rng(seed)
    out = []
    for d in interpreter.get_input_details():
        shape, dtype = tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"])
        if np.issubdtype(dtype, np.floating):
            x = rng.standard_normal(shape).astype(dtype)
        elif dtype.itemsize == 1:
            info = np.iinfo(dtype)
            x = rng.integers(info.min, info.max + 1, size=shape).astype(dtype)
        else:
            x = rng.integers(0, 100, size=shape).astype(dtype)
        out.append(x)
    return out


def run_model(interpreter, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Set the inputs, invoke once and return copies of the outputs."""
    for d, x in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(d["index"], x)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]


def time_tflite_model(
    model: str | os.PathLike | bytes,
    *,
    threads: int = 1,
    delegate: str = "xnnpack",
    config: TimerConfig = TimerConfig(),
    block_timer: Callable | None = None,
) -> Timing:
    """Time `Interpreter.invoke()` of a `.tflite` model on random inputs set once."""
    it = make_interpreter(model, threads=threads, delegate=delegate)
    for d, x in zip(it.get_input_details(), random_inputs(it)):
        it.set_tensor(d["index"], x)
    kwargs = {} if block_timer is None else {"block_timer": block_timer}
    return time_function(it.invoke, config=config, **kwargs)


# -- worker (profilers._worker --backend tflite) ---------------------------------------------


def worker_hello(delegate: str) -> dict[str, Any]:
    """What a tflite worker reports first: library versions and the delegate (part of the
    device id)."""
    return {"libraries": {"ai-edge-litert": litert_version(), "numpy": np.__version__}, "delegate": delegate}


class WorkerTasks:
    """Measures the models of one directory; a task's config picks the model by `export_key`."""

    def __init__(self, models_dir: str | os.PathLike, delegate: str):
        if delegate not in DELEGATES:
            raise ValueError(f"delegate={delegate!r} is not valid: expected one of {', '.join(DELEGATES)}")
        self.dir, self.delegate = Path(models_dir), delegate
        self.entries = load_manifest(self.dir)

    def run(self, task: Mapping[str, Any]) -> dict[str, Any]:
        cfg = config_from_row(task["config"])
        entry = self.entries.get(export_key(cfg))
        if entry is None:
            raise TFLiteError(f"no exported model for {cfg} in {self.dir}")
        if entry.error is not None:
            raise TFLiteError(f"export failed: {entry.error}")
        timer = TimerConfig(**task.get("timer", {}))
        timing = time_tflite_model(self.dir / entry.file, threads=cfg["threads"], delegate=self.delegate, config=timer)
        return {
            "ok": True,
            "samples_ms": list(timing.samples_ms),
            "number_per_run": timing.number_per_run,
            "utilization_achieved": None,
            "backend_columns": entry.backend_columns(self.delegate),
        }
