"""LiteRT (TFLite) export, host side: each module config becomes a single-module `.tflite` model.

The torch module is built from the config exactly as the torch backend builds it, then converted
with `litert-torch` (no TensorFlow). Layouts: TFLite's convolutions and pools are NHWC, so
layout-sensitive modules are wrapped with channels-last input and output
(`litert_torch.to_channel_last_io`) and the converter cancels the permutes, leaving the operator
itself; element-wise modules are converted as they are (wrapping them leaves TRANSPOSE pairs in
the graph); global pooling is written as a reduction over the NHWC spatial axes. Every converted
graph's operators are checked against the module (`profilers._tflite_backend.intended_ops`) and
every model's output against the torch module's on the same input; both go into the manifest.

Precisions (`dtype`): `fp32` (the conversion), `fp16w` (fp16 weights, fp32 activations) and
`int8` (full-integer static post-training quantization, int8 input and output, calibrated on
random normal inputs), both derived from the fp32 model with `ai-edge-quantizer`.

    summary = export_modules(configs, "models/", jobs=2)   # resumable; the directory is the cache

Needs torch and litert-torch; conversions run in worker processes (a converter crash costs its
configs, which are recorded as failed, not the run).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import io
import multiprocessing
import os
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._catalogue import ModuleConfig, config_from_row
from ._tflite_backend import (
    MANIFEST_NAME,
    TFLITE_DTYPES,
    ManifestEntry,
    append_manifest,
    export_key,
    graph_ops,
    intended_ops,
    load_manifest,
    make_interpreter,
    run_model,
)

#: Module types whose inputs are NCHW images that TFLite wants NHWC (wrapped channels-last).
_CHANNELS_LAST = frozenset({"conv2d", "conv_bn_act", "pool2d", "batchnorm2d"})
#: Random inputs used to calibrate int8 activation ranges.
CALIBRATION_SAMPLES = 8


def converter_versions() -> dict[str, str]:
    """Versions of what converts: a cached model is reused only when these are equal."""
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "litert-torch", "ai-edge-litert", "ai-edge-quantizer")}


def _quiet_converter():
    """Import litert-torch with its progress display off; C++ info logs silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GLOG_minloglevel", "2")
    from ._quiet import filtered_stderr

    with filtered_stderr():  # the converter's native notices at import (profilers._quiet.NOISY_STDERR)
        import litert_torch

    litert_torch.config.show_progress = False
    return litert_torch


def _global_pool_nhwc(mode: str):
    """Global pooling over the spatial axes of an NHWC tensor, keeping them: (B, 1, 1, C)."""
    import torch

    class GlobalPoolNHWC(torch.nn.Module):
        def forward(self, x):
            return x.mean((1, 2), keepdim=True) if mode == "avg" else x.amax((1, 2), keepdim=True)

    return GlobalPoolNHWC().eval()


def tflite_module(cfg: ModuleConfig):
    """The torch module to convert for `cfg` and its example inputs in the TFLite layout.

    Returns:
      `(module, inputs)`: `module(*inputs)` is the module of `cfg` with NHWC inputs and outputs
      where TFLite is NHWC (convolutions, pooling, batch norm), the torch builder's layout
      otherwise. fp16w and int8 configs are built in fp32 (they are quantized after conversion).
    """
    from ._torch_backend import build_torch_module

    module, inputs = build_torch_module(cfg.replace(dtype="fp32"))
    tfl_inputs = tuple(to_tflite_layout(cfg, inputs))
    if cfg.module == "global_pool2d":
        return _global_pool_nhwc(cfg["mode"]), tfl_inputs
    if cfg.module in _CHANNELS_LAST:
        four = [i for i, x in enumerate(inputs) if x.ndim == 4]
        return _quiet_converter().to_channel_last_io(module, args=four, outputs=[0]).eval(), tfl_inputs
    return module, inputs


def to_tflite_layout(cfg: ModuleConfig, tensors: Sequence[Any]) -> list[Any]:
    """Tensors of the torch module of `cfg` (its inputs or outputs) in the layout of its TFLite
    model: 4-D tensors of convolutions, pooling and batch norm NCHW -> NHWC, others unchanged."""
    if cfg.module in _CHANNELS_LAST or cfg.module == "global_pool2d":
        return [x.permute(0, 2, 3, 1).contiguous() if x.ndim == 4 else x for x in tensors]
    return list(tensors)


def convert_fp32(module, inputs: Sequence[Any]) -> bytes:
    """Convert a torch module called on `inputs` to a `.tflite` flatbuffer (fp32)."""
    lt = _quiet_converter()
    # torch.export inside the converter emits torch's own deprecation notices (pytree); they
    # are not about the caller's code.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return bytes(lt.convert(module.eval(), tuple(inputs)).model_content())


def convert_model(model, inputs: Sequence[Any], *, dtype: str = "fp32", seed: int = 0) -> bytes:
    """Convert a whole torch model to `.tflite`: 4-D floating inputs are taken channels-last
    (NHWC, TFLite's layout) so the converter can drop the layout transposes; fp16w and int8 are
    derived from the fp32 model (int8 calibrated on random inputs like the examples).

    Raises:
      ValueError: an unknown dtype; RuntimeError: the converter fails (its message).
    """
    import torch

    if dtype not in TFLITE_DTYPES:
        raise ValueError(f"dtype={dtype!r} is not valid for TFLite: expected one of {', '.join(TFLITE_DTYPES)}")
    inputs = tuple(inputs)
    image = [i for i, x in enumerate(inputs) if isinstance(x, torch.Tensor) and x.ndim == 4 and x.is_floating_point()]
    module = model.eval()
    if image:
        module = _quiet_converter().to_channel_last_io(module, args=image).eval()
        inputs = tuple(x.permute(0, 2, 3, 1).contiguous() if i in image else x for i, x in enumerate(inputs))
    try:
        fp32 = convert_fp32(module, inputs)
    except Exception as e:  # noqa: BLE001 - re-raised with the converter's message
        raise RuntimeError(f"litert-torch could not convert the model: {_short(e)}") from e
    if dtype == "fp32":
        return fp32
    if dtype == "fp16w":
        return quantize_fp16w(fp32)
    rng = np.random.default_rng(seed)
    calib = [[rng.standard_normal(tuple(x.shape)).astype(np.float32) for x in inputs] for _ in range(CALIBRATION_SAMPLES)]
    return quantize_int8(fp32, calib)


def _input_names(model: bytes) -> list[str]:
    """Signature input names in the order of the interpreter's inputs."""
    it = make_interpreter(model, delegate="none")
    sig = it.get_signature_runner()
    by_index = {d["index"]: name for name, d in sig.get_input_details().items()}
    return [by_index[d["index"]] for d in it.get_input_details()]


def quantize_fp16w(fp32_model: bytes) -> bytes:
    """fp16 weights, fp32 activations and arithmetic (TFLite's float16 quantization)."""
    from ai_edge_quantizer import qtyping, quantizer

    q = quantizer.Quantizer(fp32_model)
    q.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                             algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING)
    with contextlib.redirect_stdout(io.StringIO()):
        return bytes(q.quantize().quantized_model)


def quantize_int8(fp32_model: bytes, calibration: Sequence[Sequence[np.ndarray]]) -> bytes:
    """Full-integer static quantization: int8 weights and activations, int8 input and output,
    activation ranges calibrated on `calibration` (a list of input tuples)."""
    from ai_edge_quantizer import quantizer, recipe

    names = _input_names(fp32_model)
    q = quantizer.Quantizer(fp32_model, recipe.static_wi8_ai8())
    data = {"serving_default": [dict(zip(names, sample)) for sample in calibration]}
    # The quantizer draws its own calibration progress bar on stderr.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return bytes(q.quantize(q.calibrate(data, num_threads=1)).quantized_model)


def _to_model_dtype(x: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _from_model_dtype(y: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    if np.issubdtype(np.dtype(detail["dtype"]), np.floating):
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


def model_error(model: bytes, inputs: Sequence[np.ndarray], reference: np.ndarray) -> tuple[float, float]:
    """Largest absolute difference between the model's first output and `reference`, and that
    difference over the reference's largest magnitude; int8 inputs and outputs are quantized and
    dequantized with the model's own parameters."""
    it = make_interpreter(model, delegate="xnnpack")
    ins = [_to_model_dtype(np.asarray(x), d) for x, d in zip(inputs, it.get_input_details())]
    out = _from_model_dtype(run_model(it, ins)[0], it.get_output_details()[0])
    if out.shape != reference.shape:
        raise ValueError(f"TFLite output shape {out.shape} differs from the torch module's {reference.shape}")
    err = float(np.max(np.abs(out - reference))) if reference.size else 0.0
    return err, err / max(float(np.max(np.abs(reference))) if reference.size else 0.0, 1e-12)


@dataclasses.dataclass(frozen=True)
class ExportedModel:
    """A converted model in memory: flatbuffer, operators and its check against torch."""

    config: ModuleConfig
    model: bytes
    ops: tuple[str, ...]
    extra_ops: tuple[str, ...] | None
    missing_ops: tuple[str, ...]
    max_abs_err: float
    rel_err: float


def export_config_group(configs: Sequence[ModuleConfig], *, seed: int = 0) -> list[ExportedModel | str]:
    """Export configs that differ only in dtype: convert to fp32 once, derive the others.

    Returns one `ExportedModel` per config, or the error text where its export failed.
    """
    import torch

    torch.manual_seed(seed)
    try:
        module, inputs = tflite_module(configs[0])
        with torch.inference_mode():
            reference = module(*inputs).detach().float().numpy()
    except Exception as e:  # noqa: BLE001 - a module that cannot be built or run in torch
        return [f"torch module failed: {_short(e)}" for _ in configs]
    np_inputs = [x.detach().numpy() for x in inputs]
    try:
        fp32 = convert_fp32(module, inputs)
    except Exception as e:  # noqa: BLE001 - the converter raises many types; each config records it
        return [f"conversion failed: {_short(e)}" for _ in configs]
    rng = np.random.default_rng(seed)
    out: list[ExportedModel | str] = []
    for cfg in configs:
        try:
            if cfg["dtype"] == "fp32":
                model = fp32
            elif cfg["dtype"] == "fp16w":
                model = quantize_fp16w(fp32)
            elif cfg["dtype"] == "int8":
                calib = [[rng.standard_normal(x.shape).astype(np.float32) for x in np_inputs]
                         for _ in range(CALIBRATION_SAMPLES)]
                model = quantize_int8(fp32, calib)
            else:
                raise ValueError(f"dtype={cfg['dtype']!r} is not a TFLite precision: expected one of {', '.join(TFLITE_DTYPES)}")
            ops = tuple(graph_ops(model))
            rule = intended_ops(cfg)
            err, rel = model_error(model, np_inputs, reference)
            out.append(ExportedModel(cfg, model, ops, None if rule is None else tuple(rule.extra(ops)),
                                     () if rule is None else tuple(rule.missing(ops)), err, rel))
        except Exception as e:  # noqa: BLE001 - recorded per config
            out.append(f"{cfg['dtype']} export failed: {_short(e)}")
    return out


def _short(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def _noisy_levels() -> dict[str, int]:
    """This process's levels of the third-party loggers the commands quiet (`profilers._quiet`),
    for the conversion processes to take over: `configure_logging` raises them to ERROR unless
    the run is verbose (`-v`), and a spawned process starts without that setting."""
    import logging

    from ._quiet import NOISY_LOGGERS

    return {name: logging.getLogger(name).level for name in NOISY_LOGGERS}


def _worker_init(plugins: Sequence[str] = (), logger_levels: Mapping[str, int] | None = None) -> None:
    import importlib
    import logging
    import warnings

    # Before torch and the converter are imported: torchao logs "Failed to load ..._C_*.so" for
    # each CUDA-only extension at its import, and torch's pytree a deprecation per enum.
    for name, level in (logger_levels or {}).items():
        logging.getLogger(name).setLevel(level)

    import torch

    # A conversion process's own chatter (deprecation notices from torch's pytree, the
    # quantizer's calibration bar) would bury the run's progress bar.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
    torch.set_num_threads(1)
    _quiet_converter()
    for name in plugins:
        importlib.import_module(name)


def _export_task(rows: list[dict[str, Any]]) -> list[dict[str, Any] | str]:
    """Pool entry point: plain data in and out (configs as rows; models as bytes)."""
    from ._quiet import filtered_stderr

    with filtered_stderr():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" of the output check
        results = export_config_group([config_from_row(r) for r in rows])
    return [r if isinstance(r, str) else {f.name: getattr(r, f.name) for f in dataclasses.fields(r) if f.name != "config"}
            for r in results]


@dataclasses.dataclass(frozen=True)
class ExportSummary:
    """What an export run did; `format()` is what the CLI prints."""

    directory: str
    total: int
    exported: int
    failed: int
    cached: int
    elapsed_s: float
    with_extra_ops: Mapping[str, int]
    errors: Mapping[str, str]
    interrupted: bool = False

    def format(self) -> str:
        rate = 60 * (self.exported + self.failed) / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines = [f"{self.directory}: {self.exported} exported, {self.failed} failed, {self.cached} cached "
                 f"(of {self.total}) in {self.elapsed_s:.0f} s, {rate:.1f} models/min"
                 + ("  [interrupted: re-run the same command to resume]" if self.interrupted else "")]
        for m, n in sorted(self.with_extra_ops.items()):
            lines.append(f"  {m}: {n} model(s) with operators beyond the module's (see graph_extra_ops)")
        for key, err in list(self.errors.items())[:10]:
            lines.append(f"  failed {key}: {err}")
        return "\n".join(lines)


def _write_model(directory: Path, name: str, model: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _entry(directory: Path, key: str, r: Mapping[str, Any] | str, cfg: ModuleConfig,
           versions: Mapping[str, str]) -> ManifestEntry:
    if isinstance(r, str):
        return ManifestEntry(key, cfg, None, (), None, float("nan"), float("nan"), 0, versions, error=r)
    name = f"{cfg.module}_{key}.tflite"
    _write_model(directory, name, r["model"])
    return ManifestEntry(key, cfg, name, tuple(r["ops"]), None if r["extra_ops"] is None else tuple(r["extra_ops"]),
                         r["max_abs_err"], r["rel_err"], len(r["model"]), versions,
                         missing_ops=tuple(r["missing_ops"]))


def export_modules(
    configs: Sequence[ModuleConfig],
    directory: str | os.PathLike,
    *,
    jobs: int = 1,
    retry_failed: bool = False,
    progress: bool = True,
    plugins: Sequence[str] = (),
) -> ExportSummary:
    """Export every config (run settings ignored) into `directory`, resumably.

    The directory is the cache: a config whose model is already there, converted by the same
    library versions, is skipped. Each model is written atomically and then appended to the
    manifest (fsynced), so a crash or Ctrl-C loses at most the models being converted.

    Args:
      configs: module configs; `dtype` picks the precision (fp32, fp16w, int8).
      directory: the models directory (created).
      jobs: conversion processes (each converts one config at a time, in all its dtypes).
      retry_failed: convert configs again whose export failed before.
      progress: a progress bar on stderr.
      plugins: modules the conversion processes import first (user module types and their
        torch builders).
    """
    from tqdm.auto import tqdm

    bad = sorted({c["dtype"] for c in configs} - set(TFLITE_DTYPES))
    if bad:
        raise ValueError(f"dtype={bad[0]!r} is not valid for TFLite: expected one of {', '.join(TFLITE_DTYPES)}")
    if jobs < 1:
        raise ValueError(f"jobs={jobs} is not valid: expected an int >= 1")
    t0 = time.monotonic()
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ValueError(f"--models={str(d)!r} is a file: expected a models directory (new, or one to resume)")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--models={str(d)!r}: cannot create the models directory here ({e.strerror or e})") from None
    versions = converter_versions()
    done = load_manifest(d) if (d / MANIFEST_NAME).exists() else {}
    wanted = {export_key(c): c.replace(threads=1, utilization=0.0) for c in configs}

    def is_done(key: str) -> bool:
        e = done.get(key)
        if e is None or dict(e.converter) != versions:
            return False
        if e.error is not None:
            return not retry_failed
        return (d / e.file).exists()

    todo = {k: c for k, c in wanted.items() if not is_done(k)}
    groups: dict[str, list[tuple[str, ModuleConfig]]] = {}
    for k, c in todo.items():
        groups.setdefault(c.replace(dtype="fp32").key, []).append((k, c))
    exported = failed = 0
    extra: dict[str, int] = {}
    errors: dict[str, str] = {}
    interrupted = False
    bar = tqdm(total=len(todo), disable=not progress, unit="model", dynamic_ncols=True)
    ctx = multiprocessing.get_context("spawn")
    pending = list(groups.values())
    try:
        while pending:
            with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                                        initargs=(tuple(plugins), _noisy_levels())) as pool:
                futures = {pool.submit(_export_task, [c.as_dict() for _, c in g]): g for g in pending}
                pending = []
                broken = False
                for fut in cf.as_completed(futures):
                    group = futures[fut]
                    try:
                        results = fut.result()
                    except cf.process.BrokenProcessPool:
                        broken = True
                        results = ["converter process died (crash or out of memory)"] * len(group)
                    except Exception as e:  # noqa: BLE001 - e.g. a result that does not unpickle
                        results = [f"export failed: {type(e).__name__}: {e}"] * len(group)
                    for (key, cfg), r in zip(group, results):
                        entry = _entry(d, key, r, cfg, versions)
                        append_manifest(d, entry)
                        if entry.error is not None:
                            failed += 1
                            errors[key] = entry.error
                        else:
                            exported += 1
                            if entry.extra_ops:
                                extra[cfg.module] = extra.get(cfg.module, 0) + 1
                        bar.update(1)
                    bar.set_postfix(module=group[0][1].module, failed=failed, refresh=False)
                if broken:
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    return ExportSummary(str(d), len(wanted), exported, failed, len(wanted) - len(todo),
                         time.monotonic() - t0, extra, errors, interrupted)
