"""Architecture records: graph capture, mapping to catalogue configs, unmapped operators, files."""

import json
import re

import pytest
import torch
from torch import nn

import profilers
from profilers import ArchError, capture_torch, load_record, load_records
from profilers._arch import append_record
from profilers._netgen import generated_network


class _Tiny(nn.Module):
    """Conv-BN-ReLU, depthwise conv, residual add, max pool, SE-style sigmoid gate, global
    pool and a linear head: leaf modules and functional operators."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 5, 1, 2, groups=16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = x + self.dw(x)
        x = nn.functional.max_pool2d(x, 3, 2, 1)
        x = x * torch.sigmoid(x.mean((2, 3), keepdim=True))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class _Attn(nn.Module):
    def __init__(self, d=64, heads=4):
        super().__init__()
        self.qkv, self.proj, self.norm, self.h = nn.Linear(d, 3 * d), nn.Linear(d, d), nn.LayerNorm(d), heads
        self.patch = nn.Conv2d(3, d, 8, 8)

    def forward(self, img):
        x = self.patch(img).flatten(2).transpose(1, 2)
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        o = nn.functional.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(o.transpose(1, 2).reshape(b, t, d))
        return torch.cat([x, nn.functional.gelu(x)], dim=-1), img.permute(0, 2, 3, 1).reshape(b, -1)


def test_cnn_operators_map_to_catalogue_configs_in_graph_order():
    rec = capture_torch(_Tiny(), torch.randn(2, 3, 32, 32), name="tiny", threads=1)
    mods = [(m.config.module, m.op) for m in rec.modules]
    assert mods == [
        ("conv2d", "conv2d"), ("batchnorm2d", "batch_norm"), ("activation", "relu"), ("conv2d", "conv2d"),
        ("add", "add"), ("pool2d", "max_pool2d"), ("global_pool2d", "mean"),
        ("global_pool2d", "adaptive_avg_pool2d"), ("linear", "linear"),
    ]
    conv, dw = rec.modules[0].config, rec.modules[3].config
    assert (conv["cin"], conv["cout"], conv["h"], conv["kernel"], conv["stride"], conv["bias"]) == (3, 16, 32, 3, 2, False)
    assert (dw["groups"], dw["kernel"], dw["h"], dw["batch_size"]) == (16, 5, 16, 2)
    assert rec.modules[-1].config["in_features"] == 16 and rec.modules[-1].config["out_features"] == 10
    # the sigmoid gate is not in the catalogue: listed with its bytes, never dropped
    unmapped = {u.op: u for u in rec.unmapped}
    assert unmapped["sigmoid"].kind == "compute" and unmapped["sigmoid"].count == 1
    assert unmapped["mul"].bytes == 4 * (2 * 16 * 8 * 8) * 2 + 4 * 2 * 16  # two inputs and the output
    assert rec.counts()["n_unmapped_compute"] == 2


def test_attention_and_patch_convolution_are_mapped_approximately_and_say_so():
    rec = capture_torch(_Attn(), torch.randn(1, 3, 32, 32), name="attn")
    by_op = {}
    for m in rec.modules:
        by_op.setdefault(m.op, []).append(m)
    patch = by_op["conv2d"][0]
    assert patch.config.module == "linear" and "patch" in patch.approx
    assert (patch.config["tokens"], patch.config["in_features"], patch.config["out_features"]) == (16, 192, 64)
    sdpa = by_op["scaled_dot_product_attention"]
    assert [m.config.module for m in sdpa] == ["matmul", "matmul"] and all("attention" in m.approx for m in sdpa)
    assert (sdpa[0].config["batch_size"], sdpa[0].config["m"], sdpa[0].config["k"], sdpa[0].config["n"]) == (4, 16, 16, 16)
    assert by_op["layer_norm"][0].config["tokens"] == 16
    assert by_op["gelu"][0].config["activation"] == "gelu"
    ops = {(u.op, u.kind) for u in rec.unmapped}
    assert {("cat", "compute"), ("permute", "view")} <= ops
    # reshaping the qkv projection is a view (strides from the graph's metadata); flattening a
    # permuted input copies
    assert {("reshape", "view"), ("reshape", "compute")} <= ops


def test_record_round_trips_and_bad_files_give_clear_errors(tmp_path):
    rec = capture_torch(_Tiny(), torch.randn(1, 3, 32, 32), name="tiny")
    rec.save(tmp_path / "r.json")
    back = load_record(tmp_path / "r.json")
    assert back.configs() == rec.configs() and back.unmapped == rec.unmapped and back.input_shapes == ((1, 3, 32, 32),)
    append_record(tmp_path / "rs.jsonl", rec)
    append_record(tmp_path / "rs.jsonl", rec.with_settings(threads=2))
    both = load_records(tmp_path / "rs.jsonl")
    assert [r.configs()[0]["threads"] for r in both] == [1, 2]
    text = (tmp_path / "r.json").read_text()
    (tmp_path / "bad.json").write_text(text[: len(text) // 2])
    with pytest.raises(ArchError, match="not valid JSON"):
        load_record(tmp_path / "bad.json")
    obj = json.loads(text)
    (tmp_path / "v9.json").write_text(json.dumps({**obj, "format_version": 9}))
    with pytest.raises(ArchError, match="format_version=9 is unknown"):
        load_record(tmp_path / "v9.json")
    obj["modules"][0]["kernel"] = 4
    (tmp_path / "k4.json").write_text(json.dumps(obj))
    with pytest.raises(ArchError, match=r"modules\[0\].*kernel=4 is not valid"):
        load_record(tmp_path / "k4.json")
    with pytest.raises(ValueError, match="with_settings"):
        rec.with_settings(batch_size=4)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_generated_networks_are_deterministic_and_capture(seed):
    m1, x1, info1 = generated_network(seed, batch_size=2)
    m2, x2, info2 = generated_network(seed, batch_size=2)
    assert info1 == info2 and x1[0].shape == x2[0].shape
    assert [p.shape for p in m1.parameters()] == [p.shape for p in m2.parameters()]
    rec = capture_torch(m1, x1, name=f"g{seed}")
    assert rec.batch_size == 2 and len(rec.modules) > 10
    assert all(m.config["batch_size"] >= 2 for m in rec.modules if m.config.module != "matmul")


def test_explicit_padding_is_a_copy_before_each_convolution():
    """TensorFlow-style padding: the same convolutions, each after a pad whose bytes count as
    copied, and the same function (up to where the odd pixel goes)."""
    from profilers._models import generated_jobs

    model, x, info = generated_network(1, family="mbconv", explicit_padding=True)
    plain, _, _ = generated_network(1, family="mbconv")
    rec, ref = capture_torch(model, x, name="pad", info=info), capture_torch(plain, x, name="plain")
    n_conv = sum(1 for m in ref.modules if m.config.module == "conv2d")
    assert info["explicit_padding"] and [m.config.module for m in rec.modules] == [m.config.module for m in ref.modules]
    assert {u.op: u.count for u in rec.unmapped if u.kind == "compute"} == {"pad": n_conv}
    c = rec.counts()
    assert c["unmapped_copy_bytes"] == c["unmapped_bytes"] > 0 and ref.counts()["unmapped_copy_bytes"] == 0
    with torch.no_grad():
        assert model(*x).shape == plain(*x).shape
    assert generated_jobs([3], [1, 8], family="resnet", explicit_padding=True)[1][0] == "gen3_resnet_pad_b8_t1_u0"
    with pytest.raises(ValueError, match="family='cnn' is not valid: expected one of resnet, mbconv, vit, text"):
        generated_jobs([0], [1], family="cnn")


def test_zoo_model_captures_without_download():
    from profilers import zoo

    model, inputs = zoo.build("mobilenet_v1", batch_size=1)
    rec = capture_torch(model, inputs, name="mobilenet_v1")
    types = {m.config.module for m in rec.modules}
    assert {"conv2d", "batchnorm2d", "activation", "linear"} <= types
    assert sum(1 for m in rec.modules if m.config.module == "conv2d" and m.config["groups"] > 1) == 13
    with pytest.raises(ValueError, match="model='nope' is not valid"):
        zoo.build("nope")


def test_module_configs_of_records_can_be_profiled(tmp_path):
    rec = capture_torch(_Tiny(), torch.randn(1, 3, 16, 16), name="tiny")
    configs = profilers.unique_configs([rec, rec])
    assert len(configs) == len(rec.modules) - 1  # the two global pools are the same config


def _record_json():
    mods = (
        profilers.ArchModule(profilers.make_config("conv2d", cin=3, cout=8, h=16, w=16, kernel=3), "conv2d"),
        profilers.ArchModule(profilers.make_config("add", channels=8, h=16, w=16), "add"),
    )
    rec = profilers.ArchRecord("net", ((1, 3, 16, 16),), mods, (profilers.UnmappedOp("cat", "compute", 2, 4096),),
                               measured={"latency_ms": 1.5, "p10_ms": 1.4, "iqr_ms": 0.0, "samples_ms": [1.5, 1.4]})
    return rec.to_json()


def _without(d, key):
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: [r], "a JSON list is not an architecture record: expected an object"),
        (lambda r: "net", "a JSON str is not an architecture record"),
        (lambda r: {**r, "format_version": True}, "format_version=True is unknown"),
        (lambda r: _without(r, "modules"), "missing field 'modules'"),
        (lambda r: {**r, "modules": [_without(r["modules"][0], "cout")]}, "modules[0]: conv2d needs the field 'cout'"),
        (lambda r: {**r, "modules": [{**r["modules"][0], "cout": None}]}, "conv2d needs the field 'cout'"),
        (lambda r: {**r, "modules": [{**r["modules"][0], "kernel": 4}]}, "modules[0]: conv2d.kernel=4 is not valid"),
        (lambda r: {**r, "modules": [{**r["modules"][0], "groups": 7}]}, "groups must divide cin and cout"),
        (lambda r: {**r, "modules": [{**r["modules"][0], "cot": 8}]}, "unknown field(s) ['cot'] for conv2d"),
        (lambda r: {**r, "modules": [{**r["modules"][1], "module": "warp"}]}, "module='warp' is not a registered"),
        (lambda r: {**r, "modules": [3]}, "modules[0] is a int: expected an object"),
        (lambda r: {**r, "unmapped": [{**r["unmapped"][0], "bytes": -1e13}]}, "unmapped[0].bytes=-10000000000000.0 is not valid"),
        (lambda r: {**r, "unmapped": [{**r["unmapped"][0], "bytes": float("nan")}]}, "unmapped[0].bytes=nan"),
        (lambda r: {**r, "unmapped": [{**r["unmapped"][0], "bytes": float("inf")}]}, "unmapped[0].bytes=inf"),
        (lambda r: {**r, "unmapped": [{**r["unmapped"][0], "count": 1.5}]}, "unmapped[0].count=1.5 is not valid"),
        (lambda r: {**r, "unmapped": [{**r["unmapped"][0], "kind": "magic"}]}, "unmapped[0].kind='magic'"),
        (lambda r: {**r, "unmapped": [_without(r["unmapped"][0], "bytes")]}, "unmapped[0]: missing field 'bytes'"),
        (lambda r: {**r, "input_shapes": [[1, -3]]}, "input_shapes[0][1]=-3 is not valid"),
        (lambda r: {**r, "measured": {"latency_ms": -5.0}}, "measured.latency_ms=-5.0 is not valid"),
        (lambda r: {**r, "measured": {"latency_ms": float("nan")}}, "measured.latency_ms=nan is not valid"),
    ],
)
def test_malformed_records_are_refused_naming_the_part(tmp_path, edit, message):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(edit(_record_json())))
    with pytest.raises(ArchError, match=re.escape(message)) as e:
        load_record(path)
    assert str(path) in str(e.value)


def test_a_valid_record_round_trips_and_missing_files_are_named(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_record_json()))
    rec = load_record(path)
    assert rec.counts()["unmapped_bytes"] == 4096 and rec.measured["latency_ms"] == 1.5
    with pytest.raises(ArchError, match="missing.json: no such architecture record file"):
        load_record(tmp_path / "missing.json")
    with pytest.raises(ArchError, match="missing.jsonl: no such architecture record file"):
        load_records(tmp_path / "missing.jsonl")
    with pytest.raises(ArchError, match="is a directory"):
        load_record(tmp_path)


def test_records_that_cannot_be_written_name_the_path(tmp_path):
    rec = load_record_from(_record_json())
    parent = tmp_path / "file"
    parent.write_text("x")
    with pytest.raises(ArchError, match=f"{parent}/r.jsonl: cannot write architecture records here"):
        append_record(parent / "r.jsonl", rec)
    with pytest.raises(ArchError, match=f"{parent}/r.json: cannot write an architecture record here"):
        rec.save(parent / "r.json")


def load_record_from(obj):
    return profilers._arch.record_from_json(obj)


def test_cost_totals_sum_the_modules_costs_and_are_computed_once():
    from profilers import COST_TOTALS, module_cost_totals
    from profilers.spaces import NB201

    recs = [NB201.record(NB201.random_arch(s)) for s in range(3)]
    want = [{c: sum(getattr(m.config.costs(), c) for m in r.modules) for c in COST_TOTALS} for r in recs]
    got = module_cost_totals(recs)
    for w, g, r in zip(want, got, recs):
        for c in COST_TOTALS:
            assert g[c] == pytest.approx(w[c], rel=1e-9)
        assert sum(v for k, v in g.items() if k.startswith("n_")) == len(r.modules)
        assert r.cost_totals is r.__dict__["cost_totals"]  # kept on the record
