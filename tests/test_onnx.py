"""ONNX models as architecture records (`profilers.capture_onnx`) and one-step prediction."""

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper

import jaxlat
from profilers import capture_onnx


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def _graph_model(path, *, batch="N"):
    """A hand-written graph with the patterns exporters write: a convolution with an all-zero
    bias, SiLU as x * sigmoid(x), Clip(0, 6), a token MLP as MatMul + Add of a constant bias, a
    Gemm with transB, layer norm, softmax and a concatenation (both unmapped)."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node(
            "Conv", ["x", "w1", "b0"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]
        ),
        helper.make_node("Sigmoid", ["c1"], ["s1"]),
        helper.make_node("Mul", ["c1", "s1"], ["a1"]),
        helper.make_node("Clip", ["a1", "lo", "hi"], ["a2"]),
        helper.make_node("Concat", ["a2", "a2"], ["cat"], axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["g"], transB=1),
        helper.make_node("Reshape", ["g", "shape"], ["tok"]),
        helper.make_node("MatMul", ["tok", "wm"], ["mm"]),
        helper.make_node("Add", ["mm", "bm"], ["lin"]),
        helper.make_node("LayerNormalization", ["lin", "ln_s", "ln_b"], ["ln"], axis=-1),
        helper.make_node("Softmax", ["ln"], ["y"], axis=-1),
    ]
    inits = [
        _init("w1", rng.normal(size=(8, 3, 3, 3))),
        _init("b0", np.zeros(8)),
        _init("lo", 0.0),
        _init("hi", 6.0),
        _init("wg", rng.normal(size=(32, 16))),
        _init("bg", rng.normal(size=32)),
        numpy_helper.from_array(np.array([0, 4, 8], np.int64), "shape"),
        _init("wm", rng.normal(size=(8, 24))),
        _init("bm", rng.normal(size=24)),
        _init("ln_s", np.ones(24)),
        _init("ln_b", np.zeros(24)),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_graph_patterns_map_to_catalogue_configs(tmp_path):
    rec = capture_onnx(_graph_model(tmp_path / "g.onnx"), input_shapes=[(2, 3, 32, 32)], threads=2)
    got = [(m.config.module, m.op) for m in rec.modules]
    assert got == [
        ("conv2d", "conv2d"),
        ("activation", "silu"),
        ("activation", "hardtanh"),
        ("global_pool2d", "adaptive_avg_pool2d"),
        ("linear", "linear"),
        ("linear", "linear"),
        ("layernorm", "layer_norm"),
    ]
    conv, silu, relu6, _, gemm, mlp, ln = (m.config for m in rec.modules)
    assert (conv["cin"], conv["cout"], conv["h"], conv["stride"], conv["bias"]) == (
        3,
        8,
        32,
        2,
        False,
    )  # zero bias
    assert silu["activation"] == "silu" and relu6["activation"] == "relu6" and silu["channels"] == 8
    assert (gemm["in_features"], gemm["out_features"], gemm["bias"]) == (16, 32, True)
    assert (mlp["batch_size"], mlp["tokens"], mlp["in_features"], mlp["out_features"], mlp["bias"]) == (
        2,
        4,
        8,
        24,
        True,
    )
    assert (ln["tokens"], ln["features"]) == (4, 24)
    assert all(m.config["threads"] == 2 and m.config["batch_size"] == 2 for m in rec.modules)
    unmapped = {(u.op, u.kind): u for u in rec.unmapped}
    assert unmapped[("softmax", "compute")].bytes == 2 * 2 * 4 * 24 * 4  # read and written, fp32
    assert (
        unmapped[("cat", "compute")].bytes == 4 * 2 * 8 * 16 * 16 * 4
    )  # two inputs, an output twice their size
    assert ("flatten", "view") in unmapped and ("reshape", "view") in unmapped
    assert rec.input_shapes == ((2, 3, 32, 32),) and rec.name == "g"
    assert rec.counts()["unmapped_copy_bytes"] == unmapped[("cat", "compute")].bytes  # cat is a copy


def test_symbolic_batch_needs_a_shape_and_bad_files_say_why(tmp_path):
    path = _graph_model(tmp_path / "g.onnx")
    with pytest.raises(ValueError, match="input 'x' has a symbolic or unknown shape; give its shape"):
        capture_onnx(path)
    with pytest.raises(ValueError, match="input 'x' has 4 dimensions; the shape given"):
        capture_onnx(path, input_shapes=[(1, 3, 32)])
    (tmp_path / "m.tflite").write_bytes(b"TFL3")
    with pytest.raises(ValueError, match="a .tflite model cannot be read here; give the model as ONNX"):
        capture_onnx(tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="not an ONNX model"):
        capture_onnx(tmp_path / "m.pb")
    with pytest.raises(FileNotFoundError):
        capture_onnx(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a protobuf")
    with pytest.raises(ValueError, match="junk.onnx"):
        capture_onnx(tmp_path / "junk.onnx")


def _resnet_like():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(c, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(),
                nn.Conv2d(c, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
            )

        def forward(self, x):
            return torch.relu(x + self.body(x))

    stem = [nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    return nn.Sequential(
        *stem,
        Block(16),
        nn.Conv2d(16, 32, 3, 2, 1),
        nn.SiLU(),
        Block(32),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).eval()


def test_an_onnx_export_predicts_as_the_torch_model(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")  # torch.onnx.export's converter
    model, x = _resnet_like(), torch.randn(1, 3, 96, 96)
    path = tmp_path / "resnet_like.onnx"
    # optimize=False keeps the graph as the model is (an optimized export folds batch norm into
    # the convolutions, and the record then has no batch-norm modules, as a runtime would run it).
    with warnings.catch_warnings():  # the exporter's own deprecations (torch's pytree), not ours
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), str(path), optimize=False)
    pred = jaxlat.load_predictor("cpu_torch_1t")
    via_torch = jaxlat.predict_torch(model, x, predictor=pred, name="resnet_like")
    via_onnx = jaxlat.predict_onnx(path, predictor=pred)
    assert via_onnx["name"] == "resnet_like" and via_onnx["n_modules"] == via_torch["n_modules"]
    assert abs(via_onnx["latency_ms"] / via_torch["latency_ms"] - 1) < 0.10
    from profilers import capture_torch

    rt, ro = capture_torch(model, x), capture_onnx(path)
    assert [m.config.key for m in ro.modules] == [m.config.key for m in rt.modules]
