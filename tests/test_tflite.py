"""The LiteRT (TFLite) backend: real conversions with litert-torch and real timings with the LiteRT
interpreter on this machine's CPU (small ones)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import profilers
from profilers import make_config, read_dataset
from profilers._tflite_backend import (
    MANIFEST_NAME,
    export_key,
    graph_ops,
    intended_ops,
    load_manifest,
    make_interpreter,
    manifest_configs,
    run_model,
)
from profilers._tflite_export import convert_fp32, export_modules, to_tflite_layout
from profilers._torch_backend import build_torch_module

#: One small config of every built-in module type (the families that map to distinct operators).
CONFIGS = [
    make_config("conv2d", cin=16, cout=24, h=14, w=14, kernel=3),
    make_config("conv2d", cin=16, cout=16, h=14, w=14, kernel=5, groups=16),  # depthwise
    make_config("conv_bn_act", cin=8, cout=16, h=12, w=12, kernel=3, activation="hardswish"),
    make_config("linear", in_features=32, out_features=48, tokens=5),
    make_config("matmul", m=12, k=20, n=8, batch_size=2),
    make_config("pool2d", mode="avg", channels=8, h=12, w=12, kernel=3, stride=2),
    make_config("global_pool2d", mode="max", channels=16, h=7, w=7),
    make_config("batchnorm2d", channels=8, h=10, w=10),
    make_config("layernorm", tokens=6, features=32),
    make_config("activation", activation="silu", channels=8, h=9, w=9),
    make_config("add", channels=8, h=9, w=9),
    make_config("mhsa", tokens=8, embed_dim=32, heads=4),
]
DTYPES = ("fp32", "fp16w", "int8")
FAST = ["--min-run-time", "0.01", "--min-repeats", "3", "--no-progress"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("tflite_models")
    cfgs = profilers.expand(CONFIGS, dtype=list(DTYPES))
    summary = export_modules(cfgs, d, jobs=2, progress=False)
    assert summary.failed == 0, summary.errors
    return d


def test_every_module_type_is_covered():
    assert {c.module for c in CONFIGS} == set(profilers.ModuleType)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.module)
def test_tflite_output_equals_the_torch_modules(models, cfg, dtype):
    entry = load_manifest(models)[export_key(cfg.replace(dtype=dtype))]
    module, inputs = build_torch_module(cfg)  # the torch module as the torch backend measures it
    with torch.inference_mode():
        ref = to_tflite_layout(cfg, [module(*inputs)])[0].numpy()
    it = make_interpreter(models / entry.file, delegate="xnnpack")
    ins = [x.numpy() for x in to_tflite_layout(cfg, inputs)]
    details = it.get_input_details()
    if dtype == "int8":  # int8 input and output: quantize and dequantize with the model's parameters
        assert all(d["dtype"] == np.int8 for d in details)
        ins = [np.clip(np.round(x / d["quantization"][0] + d["quantization"][1]), -128, 127).astype(np.int8)
               for x, d in zip(ins, details)]
    out = run_model(it, ins)[0]
    if dtype == "int8":
        scale, zero = it.get_output_details()[0]["quantization"]
        out = (out.astype(np.float32) - zero) * scale
    assert out.shape == ref.shape
    rel = np.abs(out - ref).max() / np.abs(ref).max()
    if dtype == "int8":  # quantization error, but the same function
        assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.9, rel  # saturation at the calibrated range
    else:
        assert rel < {"fp32": 1e-4, "fp16w": 1e-2}[dtype]
    # The manifest's own check agrees.
    assert entry.rel_err < {"fp32": 1e-4, "fp16w": 1e-2, "int8": 0.5}[dtype]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.module)
def test_fp32_graphs_hold_the_intended_operators(models, cfg):
    entry = load_manifest(models)[export_key(cfg)]
    rule = intended_ops(cfg)
    assert rule.missing(entry.ops) == []
    assert list(entry.extra_ops) == rule.extra(entry.ops) == []
    assert "TRANSPOSE" not in entry.ops or cfg.module == "mhsa"  # heads are split by transposes


def test_operator_check_catches_an_inserted_transpose():
    cfg = make_config("conv2d", cin=8, cout=8, h=10, w=10, kernel=3)
    module, inputs = build_torch_module(cfg)
    ops = graph_ops(convert_fp32(module, inputs))  # NCHW in and out: no channels-last wrapper
    assert ops == ["TRANSPOSE", "CONV_2D", "TRANSPOSE"]
    assert intended_ops(cfg).extra(ops) == ["TRANSPOSE", "TRANSPOSE"]


def test_int8_models_are_integer_and_fp16w_models_have_fp16_weights(models):
    entries = load_manifest(models)
    conv = CONFIGS[0]
    e16, e8, e32 = (entries[export_key(conv.replace(dtype=d))] for d in ("fp16w", "int8", "fp32"))
    assert "DEQUANTIZE" in e16.ops and e16.extra_ops == ()
    assert e8.ops == ("CONV_2D",)
    assert e8.model_bytes < e16.model_bytes < e32.model_bytes


def test_export_resumes_from_its_cache(models, tmp_path):
    cfgs = CONFIGS[:2]
    d = tmp_path / "m"
    first = export_modules(cfgs, d, progress=False)
    assert (first.exported, first.cached) == (2, 0)
    again = export_modules(cfgs, d, progress=False)
    assert (again.exported, again.cached) == (0, 2)
    # A model file lost, and a manifest line torn by a crash: those are exported again.
    entries = load_manifest(d)
    (d / entries[export_key(cfgs[0])].file).unlink()
    with open(d / MANIFEST_NAME, "a") as f:
        f.write('{"format_version": 1, "key": "tor')
    third = export_modules(cfgs, d, progress=False)
    assert (third.exported, third.cached) == (1, 1)


def test_a_module_that_fails_to_export_is_recorded(tmp_path, plugin_path):
    import jaxlat_test_plugin  # noqa: F401  (registers test_scale)

    cfgs = [make_config("test_scale", size=16, behaviour="raise"), make_config("test_scale", size=16)]
    summary = export_modules(cfgs, tmp_path, progress=False, plugins=["jaxlat_test_plugin"])
    assert (summary.exported, summary.failed) == (1, 1)
    entries = load_manifest(tmp_path)
    bad = entries[export_key(cfgs[0])]
    assert bad.file is None and "deliberate failure from the test plugin" in bad.error
    assert entries[export_key(cfgs[1])].extra_ops is None  # no operator rule for a user type
    # Measuring the directory writes the failed export as a failed row, with its reason.
    out = tmp_path / "run.parquet"
    run = profilers.run_profile(manifest_configs(entries), out, backend="tflite", progress=False,
                                worker_args=["--models", str(tmp_path)], plugins=["jaxlat_test_plugin"],
                                timer=profilers.TimerConfig(warmup_s=0.005, min_run_time_s=0.01, min_repeats=3))
    assert (run.measured, run.failed) == (1, 1)
    df = read_dataset(out, include_failed=True).set_index("config_key")
    assert "export failed: torch module failed" in df.loc[cfgs[0].key, "error"]


def test_bad_tflite_input_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="dtype='bf16' is not valid for TFLite: expected one of fp32, fp16w, int8"):
        export_modules([make_config("add", dtype="bf16")], tmp_path, progress=False)
    with pytest.raises(ValueError, match="delegate='gpu' is not valid: expected one of xnnpack, none"):
        make_interpreter(b"", delegate="gpu")
    with pytest.raises(profilers._tflite_backend.TFLiteError, match="no manifest.jsonl"):
        load_manifest(tmp_path / "empty")
    with pytest.raises(ValueError, match="dtype='int8' is not measured by the torch backend"):
        build_torch_module(make_config("add", dtype="int8"))


_BLOCKER = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {'torch', 'jax', 'jaxlib', 'flax', 'litert_torch'}:
            raise ImportError(name + ' is not installed on this target (blocked by the test)')
sys.meta_path.insert(0, _Block())
"""


def test_target_side_run_needs_neither_torch_nor_jax(models, tmp_path):
    # sitecustomize runs in every Python process started with this PYTHONPATH: the CLI and its
    # measurement worker both run without torch and JAX, as on a board with only ai-edge-litert.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked by the test" in probe.stderr
    outs = {}
    for delegate in ("xnnpack", "none"):
        out = tmp_path / f"{delegate}.parquet"
        res = subprocess.run(
            [sys.executable, "-m", "profilers._cli", "tflite-run", "--models", str(models), "--dtype", "fp32,int8",
             "--module", "conv2d,add", "--delegate", delegate, "--out", str(out), *FAST],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        outs[delegate] = read_dataset(out)
    df = outs["xnnpack"]
    assert len(df) == 6 and set(df["dtype"]) == {"fp32", "int8"}  # 3 configs x 2 precisions
    assert (df["latency_ms_median"] > 0).all() and (df["backend"] == "tflite").all()
    assert (df["delegate"] == "xnnpack").all()
    assert set(df.loc[df["module"] == "add", "graph_ops"]) == {"ADD"}
    assert (df["graph_extra_ops"] == "").all()
    meta = df.attrs["jaxlat"][0]
    assert meta["libraries"]["ai-edge-litert"] and "torch" not in meta["libraries"]
    assert meta["device_id"] != outs["none"].attrs["jaxlat"][0]["device_id"]  # the delegate is part of the device


def test_export_then_run_from_the_cli(tmp_path):
    out = tmp_path / "t.parquet"
    res = subprocess.run(
        [sys.executable, "-m", "profilers._cli", "tflite", "--module", "add", "--n", "2", "--dtype", "fp32",
         "--utilization", "0,0.5", "--out", str(out), *FAST],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "exporting 2 configs" in res.stderr and "4 measured" in res.stdout  # 2 configs x 2 utilizations
    df = read_dataset(out)
    assert sorted(df["utilization"]) == [0.0, 0.0, 0.5, 0.5]
    manifest = [json.loads(x) for x in (tmp_path / "t.models" / MANIFEST_NAME).read_text().splitlines()]
    assert len(manifest) == 2 and all(m["converter"]["litert-torch"] for m in manifest)
    # A bad --dtype is refused before anything runs.
    bad = subprocess.run([sys.executable, "-m", "profilers._cli", "tflite", "--module", "add", "--n", "1",
                          "--dtype", "fp16", "--out", str(tmp_path / "x.parquet")], capture_output=True, text=True)
    assert bad.returncode == 2 and "--dtype 'fp16' is not valid for TFLite" in bad.stderr


def test_a_whole_model_is_converted_checked_and_timed(tmp_path):
    from profilers._models import TFLiteRuntime, profile_torch_model
    from profilers.spaces import NB201

    arch = NB201.parse("|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|")
    space = NB201.with_settings(resolution=16)
    model, x = space.torch_model(arch), torch.randn(1, 3, 16, 16)
    timer = profilers.TimerConfig(warmup_s=0.01, min_run_time_s=0.05, min_repeats=3)
    rec = profile_torch_model(model, (x,), name="nb201_small", timer=timer, runtime=TFLiteRuntime(tmp_path))
    m = rec.measured
    assert m["backend"] == "tflite" and m["delegate"] == "xnnpack" and m["latency_ms"] > 0 and m["n_graph_ops"] > 10
    assert rec.modules == space.record(arch).modules  # the record is the torch capture
    # The converted model computes what the torch model computes (NHWC input, logits out).
    it = make_interpreter(tmp_path / m["model_file"])
    with torch.inference_mode():
        ref = model(x).numpy()
    out = run_model(it, [x.permute(0, 2, 3, 1).numpy()])[0]
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def test_tflite_model_cli_with_int8(tmp_path):
    arch = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
    out = tmp_path / "nb.json"
    res = subprocess.run(
        [sys.executable, "-m", "profilers._cli", "tflite-model", "--model", "profilers.spaces:model", "--kwargs",
         json.dumps({"space": "nb201", "arch": arch, "resolution": 16}), "--input-shape", "1,3,16,16",
         "--tflite-dtype", "int8", "--min-run-time", "0.05", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    rec = profilers.load_record(out)
    assert rec.measured["backend"] == "tflite" and rec.measured["dtype"] == "int8"
    assert {m.config["dtype"] for m in rec.modules} == {"int8"}
    assert (tmp_path / "nb.models" / "model_int8.tflite").exists()
