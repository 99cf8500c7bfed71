import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

import profilers
from profilers import ModuleType, make_config
from profilers._torch_backend import _SelfAttention, build_torch_module


def test_defaults_and_key_are_stable():
    a = make_config("conv2d", cin=32, cout=64, h=56, w=56, kernel=3)
    b = make_config(ModuleType.CONV2D, cout=64, cin=32, w=56, h=56, kernel=3, threads=1)
    assert a == b and a.key == b.key and len(a.key) == 16
    assert a["stride"] == 1 and a["dtype"] == "fp32" and a["utilization"] == 0.0
    assert a.replace(threads=2).key != a.key


@pytest.mark.parametrize(
    "module, values, needle",
    [
        ("conv3d", {}, "module='conv3d' is not a registered module type; known: conv2d"),
        ("conv2d", {"kernel": 4}, "conv2d.kernel=4 is not valid: expected one of 1, 3, 5, 7"),
        ("conv2d", {"cin": 0}, "conv2d.cin=0 is out of range: expected int in [1, 16384]"),
        ("conv2d", {"cin": 2.5}, "conv2d.cin=2.5 is not valid: expected int"),
        ("conv2d", {"dtype": "fp64"}, "conv2d.dtype='fp64' is not valid: expected one of 'fp32', 'fp16', 'bf16'"),
        ("conv2d", {"utilization": 1.5}, "conv2d.utilization=1.5 is out of range"),
        ("conv2d", {"cin": 30, "groups": 4}, "groups must divide cin and cout"),
        ("conv2d", {"padding": 1}, "unknown field(s) ['padding']"),
        ("mhsa", {"embed_dim": 100, "heads": 3}, "heads must divide embed_dim"),
        ("activation", {"activation": "tanh"}, "activation.activation='tanh' is not valid: expected one of 'relu'"),
        ("linear", {"bias": "yes"}, "linear.bias='yes' is not valid: expected True or False"),
    ],
)
def test_invalid_configs_name_the_field(module, values, needle):
    with pytest.raises(ValueError) as e:
        make_config(module, **values)
    assert needle in str(e.value)


def test_config_round_trips_through_a_flat_row():
    cfg = make_config("conv_bn_act", cin=8, cout=8, groups=8, activation="hardswish", batch_size=4)
    row = {**cfg.as_dict(), "latency_ms_median": 1.0, "flops": 3.0, "tokens": None}
    assert profilers.config_from_row(row) == cfg


def test_user_module_type_registers_without_editing_the_catalogue():
    spec = profilers.ModuleSpec(
        "user_op",
        (profilers.Field("size", int, 8, 1, 100),),
        lambda v: profilers.Costs(1.0, 0.0, 0.0, 1.0, 1.0, 0.0),
    )
    profilers.register_module(spec)
    try:
        assert make_config("user_op", size=9)["size"] == 9
        assert "user_op" in profilers.module_types()
        with pytest.raises(ValueError, match="already registered"):
            profilers.register_module(spec)
        clash = profilers.ModuleSpec("user_op2", (profilers.Field("cin", str, "a"),), spec.costs)
        with pytest.raises(ValueError, match="field 'cin' of 'user_op2' is str but"):
            profilers.register_module(clash)
    finally:
        profilers.unregister_module("user_op")
    with pytest.raises(ValueError, match="built-in"):
        profilers.unregister_module("conv2d")


def test_costs_are_positive_and_intensity_consistent():
    for m in profilers.module_types():
        c = make_config(m).costs()
        d = c.as_dict()
        assert d["flops"] > 0 and d["bytes_in"] > 0 and d["bytes_out"] > 0
        assert math.isclose(d["arith_intensity"], d["flops"] / (d["bytes_in"] + d["bytes_out"] + d["bytes_weight"]))


def _counted_flops(cfg, *, explicit_attention=False) -> int:
    module, inputs = build_torch_module(cfg)
    if explicit_attention:
        module.need_weights = True  # the fused SDPA kernel is not counted on CPU
    with FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops()


def _params(cfg) -> int:
    module, _ = build_torch_module(cfg)
    return sum(p.numel() for p in module.parameters())


small = st.integers(1, 48)


@given(
    cin_per_group=small,
    cout_per_group=st.integers(1, 16),
    groups=st.sampled_from([1, 1, 2, 3, 4]),
    depthwise=st.booleans(),
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    kernel=st.sampled_from([1, 3, 5, 7]),
    stride=st.sampled_from([1, 2]),
    batch=st.integers(1, 3),
    bias=st.booleans(),
)
def test_conv2d_flops_match_torch_flop_counter(cin_per_group, cout_per_group, groups, depthwise, h, w, kernel, stride, batch, bias):
    if depthwise:
        cin = cout = groups = cin_per_group
    else:
        cin, cout = cin_per_group * groups, cout_per_group * groups
    cfg = make_config("conv2d", cin=cin, cout=cout, groups=groups, h=h, w=w, kernel=kernel, stride=stride, batch_size=batch, bias=bias)
    assert cfg.costs().flops == _counted_flops(cfg)
    assert cfg.costs().params == _params(cfg)


@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 20), st.integers(1, 3), st.booleans())
def test_linear_flops_match_torch_flop_counter(fin, fout, tokens, batch, bias):
    cfg = make_config("linear", in_features=fin, out_features=fout, tokens=tokens, batch_size=batch, bias=bias)
    assert cfg.costs().flops == _counted_flops(cfg)
    assert cfg.costs().params == _params(cfg)


@given(st.integers(1, 64), st.integers(1, 64), st.integers(1, 64), st.integers(1, 4))
def test_matmul_flops_match_torch_flop_counter(m, k, n, batch):
    cfg = make_config("matmul", m=m, k=k, n=n, batch_size=batch)
    assert cfg.costs().flops == _counted_flops(cfg)


@given(st.integers(1, 40), st.integers(1, 12), st.sampled_from([1, 2, 4, 8]), st.integers(1, 3))
def test_attention_flops_match_torch_flop_counter(tokens, dim_per_head, heads, batch):
    cfg = make_config("mhsa", tokens=tokens, embed_dim=dim_per_head * heads, heads=heads, batch_size=batch)
    assert cfg.costs().flops == _counted_flops(cfg, explicit_attention=True)
    assert cfg.costs().params == _params(cfg)


def test_conv_bn_act_params_count_the_folded_bias():
    cfg = make_config("conv_bn_act", cin=16, cout=32, kernel=3)
    assert cfg.costs().params == _params(cfg)
    assert isinstance(build_torch_module(cfg)[0][0], torch.nn.Conv2d)


def test_every_builtin_module_builds_and_runs_with_the_catalogue_shapes():
    for m in profilers.module_types():
        cfg = make_config(m, batch_size=2)
        module, inputs = build_torch_module(cfg)
        with torch.inference_mode():
            out = module(*inputs)
        assert out.shape[0] == 2
        assert out.numel() * 4 == cfg.costs().bytes_out, m
        assert sum(x.numel() * 4 for x in inputs) == cfg.costs().bytes_in, m
    assert isinstance(_SelfAttention(8, 2), torch.nn.Module)


def test_costs_of_columns_equal_per_config_costs():
    import numpy as np

    for m in profilers.module_types():
        cfgs = profilers.sample_configs(m, 25, seed=5) + [make_config(m, dtype="bf16", batch_size=3)]
        cols = {k: np.array([c[k] for c in cfgs]) for k in cfgs[0].values}
        got = profilers.costs_of_columns(m, cols)
        for name in profilers.COST_COLUMNS:
            want = np.array([c.costs().as_dict()[name] for c in cfgs])
            np.testing.assert_allclose(got[name], want, rtol=1e-12, err_msg=f"{m}.{name}")
