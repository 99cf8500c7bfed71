"""Optimizers on the predictor: SLO design selection, switch tables, joint choices, early exits."""

import dataclasses
import time

import numpy as np
import pytest

from jaxlat._shipped import reference_predictor
from jaxlat.nas import digits_data
from jaxlat.optimize import (
    SLO,
    DesignSpace,
    SwitchTable,
    Variant,
    choose,
    choose_jointly,
    eenet_policy,
    entropy_policy,
    evaluate_policy,
    exit_costs_ms,
    exit_outputs,
    geometric_policy,
    pareto_front,
    switch_table,
    train_multi_exit,
)
from profilers.spaces import NB201


@pytest.fixture(scope="module")
def table():
    pred = reference_predictor()
    small = dataclasses.replace(NB201, cells=1)
    variants = [Variant(f"v{i}", {1: small.record(small.parse(a))}, {"fp32": acc})
                for i, (a, acc) in enumerate([
                    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|", 0.94),
                    ("|nor_conv_1x1~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|", 0.90),
                    ("|skip_connect~0|+|skip_connect~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~2|", 0.70)])]
    space = DesignSpace(variants, {("torch", "fp32"): pred}, threads=(1, 2))
    return space.evaluate(utilization=np.linspace(0, 1, 11))


def test_every_design_at_every_level(table):
    assert len(table) == 3 * 2 * 11
    assert (table["p90_ms"] > table["median_ms"]).all() and (table["memory_mb"] > 0).all()
    one = table[(table.variant == "v0") & (table.threads == 1)].sort_values("utilization")
    assert one["median_ms"].iloc[-1] > one["median_ms"].iloc[0]  # contention costs time


def test_choice_meets_the_slo_and_prefers_accuracy_when_it_can(table):
    fastest = table[table.utilization == 0.5]["p90_ms"].min()
    loose = choose(table, SLO(max_p90_ms=1e6), utilization=0.5)
    tight = choose(table, SLO(max_p90_ms=fastest * 1.01), utilization=0.5)
    assert tight["p90_ms"] <= fastest * 1.01
    assert loose["accuracy"] >= tight["accuracy"]
    assert choose(table, SLO(max_p90_ms=fastest * 0.5), utilization=0.5) is None
    front = pareto_front(table[table.utilization == 0.0])
    assert 1 <= len(front) <= 6 and table[table.utilization == 0.0]["accuracy"].max() in set(front["accuracy"])


def test_switch_table_round_trips_and_looks_up_fast(table, tmp_path):
    slos = {"loose": SLO(max_p90_ms=1e6), "tight": SLO(max_p90_ms=float(table["p90_ms"].median()))}
    sw = switch_table(table, slos)
    assert len(sw.levels) == 11 and all(len(v) == 11 for v in sw.choices.values())
    again = SwitchTable.load(sw.save(tmp_path / "switch.json"))
    assert again.choices == sw.choices
    assert again.lookup("tight", 0.37) == sw.choices["tight"][4]  # next level up: 0.4
    t0 = time.perf_counter()
    for u in np.linspace(0, 1, 1000):
        again.lookup("tight", u)
    assert (time.perf_counter() - t0) / 1000 < 1e-3  # the benchmark times it; here: no search
    (tmp_path / "bad.json").write_text('{"format_version": 9}')
    with pytest.raises(ValueError, match="format_version=9 is unknown"):
        SwitchTable.load(tmp_path / "bad.json")


def test_two_models_share_the_device(table):
    tables = {"a": table, "b": table}
    alone = choose(table, SLO(max_p90_ms=1e6), utilization=0.0)
    joint = choose_jointly(tables, {"a": SLO(max_p90_ms=1e6), "b": SLO(max_p90_ms=1e6)}, {"a": 20.0, "b": 20.0}, cores=2)
    assert set(joint) == {"a", "b"} and all(joint[n]["utilization"] > 0 for n in joint)
    assert joint["a"]["median_ms"] >= alone["median_ms"] * 0.99
    impossible = {"a": SLO(max_p90_ms=1e-3), "b": SLO(max_p90_ms=1e6)}
    assert choose_jointly(tables, impossible, {"a": 1.0, "b": 1.0}, cores=2) is None


def test_early_exit_policies_meet_their_budget():
    space = dataclasses.replace(NB201, c=8, cells=1, resolution=8)
    arch = space.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
    exits = [(0, 1), (1, 1), (2, 1)]
    data = digits_data(8)
    model = train_multi_exit(space, arch, exits, data, epochs=3)
    val, test = exit_outputs(model, data.x_arch, data.y_arch), exit_outputs(model, data.x_test, data.y_test)
    costs = exit_costs_ms(reference_predictor(), space, arch, exits)
    assert np.all(np.diff(costs) > 0)
    budget = costs[0] + 0.5 * (costs[-1] - costs[0])
    for make in (eenet_policy, entropy_policy, geometric_policy):
        policy = make(val, costs, budget) if make is not eenet_policy else make(val, costs, budget, steps=300)
        r = evaluate_policy(policy, val, costs)
        assert r["mean_cost_ms"] == pytest.approx(budget, rel=0.05), policy.name
        assert sum(r["exit_distribution"]) == pytest.approx(1.0)
        t = evaluate_policy(policy, test, costs)
        assert 0.0 <= t["accuracy"] <= 1.0
