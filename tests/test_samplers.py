import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import profilers
from profilers import Interval, Tie, expand, make_config, parse_range, sample_configs


@given(
    module=st.sampled_from(sorted(profilers.ModuleType)),
    method=st.sampled_from(["random", "lhs"]),
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 30),
)
def test_every_sampled_config_validates_and_is_distinct(module, method, seed, n):
    cfgs = sample_configs(module, n, method=method, seed=seed)
    assert len(cfgs) == n
    assert len({c.key for c in cfgs}) == n
    for c in cfgs:
        assert make_config(c.module, **c.values) == c  # validates again, unchanged


def test_same_seed_same_configs_other_seed_others():
    a = sample_configs("linear", 20, method="lhs", seed=3)
    assert a == sample_configs("linear", 20, method="lhs", seed=3)
    assert a != sample_configs("linear", 20, method="lhs", seed=4)


def test_user_ranges_are_respected():
    cfgs = sample_configs(
        "conv2d",
        60,
        seed=1,
        ranges={"kernel": (1, 3), "cin": Interval(16, 512), "cout": Interval(16, 64, step=16), "stride": 1},
    )
    assert all(c["kernel"] in (1, 3) and 16 <= c["cin"] <= 512 and c["stride"] == 1 for c in cfgs)
    assert all(c["cout"] in (16, 32, 48, 64) for c in cfgs if c["groups"] == 1)


def test_families_mix_regular_depthwise_and_grouped_convs():
    cfgs = sample_configs("conv2d", 100, seed=0)
    dw = [c for c in cfgs if c["groups"] == c["cin"] == c["cout"] and c["groups"] > 1]
    grouped = [c for c in cfgs if 1 < c["groups"] < c["cin"]]
    assert len(dw) == 25 and len(grouped) == 15
    only_dw = sample_configs("conv2d", 10, seed=0, families=["depthwise"])
    assert all(c["groups"] == c["cin"] == c["cout"] for c in only_dw)
    with pytest.raises(ValueError, match="family='dw' is not valid: expected one of regular, depthwise, grouped"):
        sample_configs("conv2d", 1, families=["dw"])


def test_log_uniform_sampling_covers_decades_evenly():
    cfgs = sample_configs("matmul", 400, method="lhs", seed=0, ranges={"m": Interval(1, 1000)})
    small = sum(c["m"] < 32 for c in cfgs)  # half of the decades [1, 1000) lie below ~31.6
    assert 160 < small < 240


def test_grid_is_every_valid_point_and_subsets_are_seeded():
    ranges = {"kernel": (1, 3), "cin": (8, 16), "cout": (8,), "h": (7, 14), "stride": (1, 2), "bias": (True,)}
    grid = sample_configs("conv2d", None, method="grid", ranges=ranges, families=["regular"])
    assert len(grid) == 2 * 2 * 1 * 2 * 2  # w is tied to h
    sub = sample_configs("conv2d", 5, method="grid", ranges=ranges, families=["regular"], seed=2)
    assert len(sub) == 5 and set(sub) <= set(grid)
    levels = sample_configs("linear", None, method="grid", grid_levels=3, ranges={"tokens": 1, "bias": (True,)})
    assert sorted({c["in_features"] for c in levels}) == [16, 256, 4096]


def test_grid_drops_invalid_points():
    grid = sample_configs("mhsa", None, method="grid", ranges={"embed_dim": (30, 32), "heads": (4, 8, 12), "tokens": 8})
    assert {(c["embed_dim"], c["heads"]) for c in grid} == {(32, 4), (32, 8)}


def test_impossible_ranges_raise_instead_of_emitting_invalid_configs():
    with pytest.raises(ValueError, match="only 0 distinct valid configs"):
        sample_configs("mhsa", 3, ranges={"embed_dim": 30, "heads": 4})
    with pytest.raises(ValueError, match="has no field 'kernal'"):
        sample_configs("conv2d", 3, ranges={"kernal": 3})
    with pytest.raises(ValueError, match="method='sobol' is not valid"):
        sample_configs("conv2d", 3, method="sobol")


def test_max_flops_filters():
    cfgs = sample_configs("conv2d", 50, seed=0, max_flops=1e7)
    assert all(c.costs().flops <= 1e7 for c in cfgs)


def test_parse_range_forms():
    spec = profilers.get_spec("conv2d")
    assert parse_range(spec.field("cin"), "16:512") == Interval(16, 512)
    assert parse_range(spec.field("cin"), "16:512:log") == Interval(16, 512, log=True)
    assert parse_range(spec.field("kernel"), "1,3,5") == (1, 3, 5)
    assert parse_range(spec.field("groups"), "=cin") == Tie("cin")
    assert parse_range(spec.field("bias"), "false") is False
    with pytest.raises(ValueError, match="'x' in 'x:3' is not a number"):
        parse_range(spec.field("cin"), "x:3")


@pytest.mark.parametrize(
    "field, text, message",
    [
        ("cin", "3.5", "cin: '3.5' in '3.5' is not an integer"),
        ("cin", "nan:8", "'nan' in 'nan:8' is not a finite number"),
        ("cin", "16:8", "cin: interval '16:8': Interval: low=16 must not exceed high=8"),
        ("cin", "16:512:0", "cin: interval '16:512:0': Interval: step=0 must be positive"),
        ("cin", "", "cin: empty range"),
        ("kernel", ",", "kernel: ',' lists no values"),
    ],
)
def test_bad_range_specs_name_the_field_and_the_spec(field, text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_range(profilers.get_spec("conv2d").field(field), text)


@pytest.mark.parametrize(
    "ranges, message",
    [
        ({"kernel": (4,)}, "conv2d.kernel=4 is not valid: expected one of 1, 3, 5, 7"),
        ({"kernel": Interval(1, 7)}, "conv2d.kernel: an interval 1:7 is not valid: expected one of 1, 3, 5, 7"),
        ({"cin": Interval(16, 100000)}, "conv2d.cin: interval 16:100000 is beyond the catalogue's limits: "
                                        "expected int in [1, 16384]"),
        ({"cin": -3}, "conv2d.cin=-3 is out of range: expected int in [1, 16384]"),
        ({"groups": Tie("foo")}, "module 'conv2d' has no field 'foo'"),
        ({"groups": Tie("bias")}, "conv2d.groups: a tie to 'bias' is not valid"),
    ],
)
def test_ranges_beyond_the_catalogue_are_refused_with_the_limits(ranges, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        sample_configs("conv2d", 3, ranges=ranges)


def test_counts_must_be_positive_and_shortfalls_say_which_rule_rejected():
    with pytest.raises(ValueError, match=re.escape("n=0 is not valid (--n): expected a count >= 1")):
        sample_configs("add", 0)
    with pytest.raises(ValueError, match="n=-1 is not valid"):
        sample_configs("add", -1)
    with pytest.raises(ValueError, match="max_flops=0 is not valid"):
        sample_configs("add", 3, max_flops=0)
    with pytest.raises(ValueError, match="Rejected most: conv2d: groups must divide cin and cout"):
        sample_configs("conv2d", 3, ranges={"groups": 7, "cin": Interval(8, 16), "cout": Interval(8, 16)},
                       families=["regular"])
    with pytest.raises(ValueError, match="the grid has no valid points. Rejected most: conv2d: groups must divide"):
        sample_configs("conv2d", None, method="grid", ranges={"groups": 7, "cin": Interval(8, 12)})


def test_expand_crosses_run_settings():
    cfgs = sample_configs("add", 3, seed=0)
    out = expand(cfgs, threads=[1, 2], utilization=[0.0, 0.5])
    assert len(out) == 12 and len(set(out)) == 12
    with pytest.raises(ValueError, match="utilization=2.0 is out of range"):
        expand(cfgs, utilization=[2.0])
