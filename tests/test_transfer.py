"""Cross-device: rank agreement, few-shot adaptation, the device-aware MEDN."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import profilers
from jaxlat import TrainConfig
from jaxlat._shipped import reference_predictor
from jaxlat.transfer import (
    adapt,
    embedding_method,
    few_shot_curve,
    fit_device_medn,
    model_table,
    monotonicity_matrix,
    predictor_proxy,
    rank_agreement,
    rank_agreement_by_module,
    settings_tables,
    table_proxy,
)
from profilers.spaces import NB201

from .helpers import synthetic_rows


def _frame(scale_conv=1.0, seed=0, n_per=60, utilization=0.0):
    rows = synthetic_rows(["conv2d", "linear", "add"], n_per, seed)
    df = pd.DataFrame(rows)
    df["utilization"] = utilization
    conv = df["module"] == "conv2d"
    for c in ("latency_ms_median", "latency_ms_mean", "latency_ms_p10", "latency_ms_p90"):
        df.loc[conv, c] *= scale_conv
    return df


def test_rank_agreement_and_the_matrix():
    a = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0], index=list("abcde"))
    assert rank_agreement(a, a**2 * 3)["spearman"] == pytest.approx(1.0)
    assert rank_agreement(a, -a)["spearman"] == pytest.approx(-1.0)
    assert rank_agreement(a, a * 2)["ratio_median"] == pytest.approx(2.0)
    m = monotonicity_matrix({"x": a, "y": a * 2, "z": -a})
    assert m.loc["x", "y"] == pytest.approx(1.0) and m.loc["x", "z"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="2 common keys; at least 3"):
        rank_agreement(a, pd.Series([1.0, 2.0], index=["a", "b"]))


def test_settings_tables_and_per_module_agreement():
    df = pd.concat([_frame(utilization=0.0), _frame(scale_conv=3.0, utilization=0.5)], ignore_index=True)
    tables = settings_tables(df)
    assert set(tables) == {"torch t1 u0", "torch t1 u0.5"}
    per = rank_agreement_by_module(df[df.utilization == 0], df[df.utilization == 0.5]).set_index("module")
    assert per.loc["conv2d", "spearman"] == pytest.approx(1.0)
    assert per.loc["conv2d", "ratio_median"] == pytest.approx(3.0)
    assert per.loc["linear", "ratio_median"] == pytest.approx(1.0)


def test_model_table_reads_the_chosen_statistic():
    cfg = profilers.ArchModule(profilers.make_config("add", channels=8), "add")
    recs = [profilers.ArchRecord(f"n{i}", ((1, 8, 4, 4),), (cfg,), info={"arch": f"a{i}"}).with_measured(
        {"latency_ms": 2.0 + i, "p10_ms": 1.0 + i}) for i in range(3)]
    assert model_table(recs, key="arch").to_dict() == {"a0": 2.0, "a1": 3.0, "a2": 4.0}
    assert model_table(recs, field="p10_ms").to_dict() == {"n0": 1.0, "n1": 2.0, "n2": 3.0}
    with pytest.raises(KeyError, match="no measured 'p90_ms'; it has latency_ms, p10_ms"):
        model_table(recs, field="p90_ms")


def _planted(n=60, seed=0, noise=0.02):
    rng = np.random.default_rng(seed)
    proxy = pd.Series(np.exp(rng.uniform(0, 3, n)), index=[f"m{i}" for i in range(n)])
    target = 0.5 * proxy**1.1 * np.exp(rng.normal(0, noise, n))
    records = [profilers.ArchRecord(k, ((1, 3, 8, 8),), (profilers.ArchModule(profilers.make_config("add", channels=8 + i), "add"),))
               for i, k in enumerate(proxy.index)]
    return records, proxy, target


def test_adapt_reuses_a_well_ranked_proxy_and_corrects_it():
    records, proxy, target = _planted()
    k = 10
    a = adapt(records[:k], target.iloc[:k].to_numpy(), [table_proxy(proxy)])
    assert a.report["spearman_primary"] > 0.9 and a.method in ("reuse", "affine")
    rel = a.predict(records[k:]) / target.iloc[k:].to_numpy() - 1
    assert np.mean(np.abs(rel) <= 0.10) >= 0.9
    assert a.method == "affine"  # the planted exponent 1.1 is worth its parameter
    la, lb = a.log_affine()
    assert lb == pytest.approx(1.1, abs=0.05) and np.exp(la) == pytest.approx(0.5, rel=0.1)
    np.testing.assert_allclose(np.exp(la) * proxy.iloc[k:].to_numpy() ** lb, a.predict(records[k:]), rtol=1e-9)


def test_a_poorly_ranked_proxy_is_not_reused():
    records, proxy, target = _planted()
    shuffled = pd.Series(np.random.default_rng(1).permutation(proxy.to_numpy()), index=proxy.index)
    a = adapt(records[:20], target.iloc[:20].to_numpy(), [table_proxy(shuffled)])
    assert a.report["spearman_primary"] < 0.9
    assert a.method in ("affine", "adaproxy", "scratch") and not a.report["reused"]
    # Every candidate is scored on the same folds; none is gated by the proxy's rank.
    assert set(a.report["candidates"]) == {"reuse", "affine", "adaproxy", "scratch"}
    assert a.report["candidates"]["reuse"]["log_rmse"] > a.report["candidates"][a.method]["log_rmse"]
    if a.method != "affine":
        with pytest.raises(ValueError, match="not a map of the proxy latency alone"):
            a.log_affine()


def test_several_proxies_combine_and_bad_input_is_rejected():
    records, proxy, target = _planted()
    half = pd.Series(np.sqrt(proxy.to_numpy()), index=proxy.index)
    a = adapt(records[:15], target.iloc[:15].to_numpy(), [table_proxy(half, name="a"), table_proxy(proxy, name="b")],
              methods=("multi_proxy",))
    assert a.method == "multi_proxy"
    assert np.mean(np.abs(a.predict(records[15:]) / target.iloc[15:].to_numpy() - 1) <= 0.10) >= 0.9
    with pytest.raises(KeyError, match="has no latency for 1 item"):
        table_proxy(proxy.iloc[:3], name="short").fn(records[:4])
    with pytest.raises(ValueError, match="at least 3 are needed"):
        adapt(records[:2], target.iloc[:2].to_numpy(), [table_proxy(proxy)])
    with pytest.raises(ValueError, match="not valid: expected some of"):
        adapt(records[:5], target.iloc[:5].to_numpy(), [table_proxy(proxy)], methods=("magic",))


def test_adapt_does_not_depend_on_the_order_of_the_proxies():
    records, proxy, target = _planted()
    noisy = pd.Series(proxy.to_numpy() * np.exp(np.random.default_rng(2).normal(0, 0.5, len(proxy))), index=proxy.index)
    good, bad = table_proxy(proxy, name="good"), table_proxy(noisy, name="noisy")
    one = adapt(records[:10], target.iloc[:10].to_numpy(), [bad, good])
    two = adapt(records[:10], target.iloc[:10].to_numpy(), [good, bad])
    assert one.report["primary"] == two.report["primary"] == "good"
    assert one.method == two.method
    np.testing.assert_allclose(one.predict(records[10:]), two.predict(records[10:]), rtol=1e-9)


def test_adapt_names_what_is_wrong_with_its_inputs():
    records, proxy, target = _planted()
    with pytest.raises(ValueError, match="wrap a single proxy in a list"):
        adapt(records[:5], target.iloc[:5].to_numpy(), table_proxy(proxy))
    with pytest.raises(ValueError, match="is not an architecture record"):
        adapt([r.name for r in records[:5]], target.iloc[:5].to_numpy(), [table_proxy(proxy)])
    nan_table = proxy.copy()
    nan_table.iloc[3] = np.nan
    with pytest.raises(ValueError, match="'m3'"):
        table_proxy(nan_table)


def test_few_shot_curve_beats_scratch_with_an_informative_proxy():
    records, proxy, target = _planted(n=80)
    curve = few_shot_curve(records, target.to_numpy(), [table_proxy(proxy)], ks=(5, 10), repeats=4)
    mean = curve.groupby(["k", "approach"])[["spearman", "acc10"]].mean()
    assert mean.loc[(10, "adapted"), "spearman"] > 0.95 and mean.loc[(10, "adapted"), "acc10"] >= 0.8
    assert mean.loc[(10, "adapted"), "acc10"] > mean.loc[(10, "scratch"), "acc10"]


def test_device_aware_medn_learns_devices_and_fits_a_new_embedding():
    small = TrainConfig(epochs=60, batch_size=64, learning_rate=3e-3, patience=0)
    frames = {"fast": _frame(1.0, seed=0), "slow": _frame(4.0, seed=1)}
    dm = fit_device_medn(frames, train=small, medn={"encoder": (64, 64), "latent": 32, "decoder": (32,)})
    test = _frame(4.0, seed=5, n_per=20)
    conv = test[test.module == "conv2d"]
    ratio = dm.predictor("slow").predict(conv)["latency_ms"].to_numpy() / dm.predictor("fast").predict(conv)["latency_ms"].to_numpy()
    assert 2.5 < np.median(ratio) < 6.0  # it learned that 'slow' convolutions take about 4x
    # A new device like 'slow', from 15 module samples: the embedding alone moves towards it.
    k = test.sample(15, random_state=0)
    start = dm.predictor(dm.embeddings.mean(0)).predict(test)["latency_ms"].to_numpy()
    vec = dm.fit_embedding(k, k["latency_ms_median"].to_numpy(), steps=150)
    after = dm.predictor(vec).predict(test)["latency_ms"].to_numpy()
    y = test["latency_ms_median"].to_numpy()
    assert np.mean(np.abs(np.log(after / y))) < np.mean(np.abs(np.log(start / y)))
    # As a learned candidate of adapt (modules as items).
    a = adapt(k, k["latency_ms_median"].to_numpy(), [predictor_proxy(dm.predictor("fast"))], threshold=1.0,
              learned={"embedding": embedding_method(dm, steps=100)})
    assert "embedding" in a.report["candidates"]


def test_cli_adapts_a_latency_table_over_nb201(tmp_path):
    pred = reference_predictor()
    archs = [NB201.random_arch(s) for s in range(24)]
    codes = [NB201.encode(a) for a in archs]
    proxy_ms = pred.predict_models([NB201.record(a) for a in archs])["latency_ms"].to_numpy()
    target_ms = 0.3 * proxy_ms**1.05
    pd.DataFrame({"arch": codes, "latency_ms": proxy_ms}).to_csv(tmp_path / "proxy.csv", index=False)
    pd.DataFrame({"arch": codes[:8], "latency_ms": target_ms[:8]}).to_csv(tmp_path / "k.csv", index=False)
    pd.DataFrame({"arch": codes[8:]}).to_csv(tmp_path / "want.csv", index=False)
    r = subprocess.run([sys.executable, "-m", "jaxlat._cli", "transfer", "adapt", "--space", "nb201", "--samples",
                        str(tmp_path / "k.csv"), "--proxy-table", str(tmp_path / "proxy.csv"), "--predict",
                        str(tmp_path / "want.csv"), "--out", str(tmp_path / "out.csv")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["k"] == 8 and report["chosen"] in ("reuse", "affine")
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out["arch"]) == codes[8:]
    assert np.mean(np.abs(out["latency_ms"].to_numpy() / target_ms[8:] - 1) <= 0.10) >= 0.9


def test_recompose_refits_the_composition_and_gives_a_predictor_for_gradients():
    """Targets planted as another composition of the same module predictions (scale 0.5, 0.08 ms
    per operator): adapt chooses recompose, recovers the terms, and the adapted predictor drives
    the NAS expected latency."""
    import jax

    from jaxlat._composition import design_rows
    from jaxlat.nas import expected_latency_fn
    from jaxlat.transfer import recomposed
    from profilers.spaces import mobile_space

    pred = reference_predictor()
    space = mobile_space(resolution=64)
    archs = [space.random_arch(s) for s in range(16)]
    records = [space.record(a) for a in archs]
    plain = pred.predict_models(records)["plain_sum_ms"].to_numpy()
    n_ops = np.array([r.counts()["n_modules"] for r in records], float)
    target = 0.5 * plain + 0.08 * n_ops
    a = adapt(records[:12], target[:12], [predictor_proxy(pred)])
    assert a.method == "recompose" and a.report["candidates"]["recompose"]["log_rmse"] < 1e-3
    np.testing.assert_allclose(a.predict(records[12:]), target[12:], rtol=1e-3)
    coef = a.predictor().composition.coef
    assert coef["scale"] == pytest.approx(0.5, rel=1e-3) and coef["per_module_ms"] == pytest.approx(0.08, rel=1e-2)
    # Terms absent from the networks (no unmapped compute here) keep the original predictor's values.
    assert coef["per_unmapped_ms"] == pytest.approx(pred.composition.coef["per_unmapped_ms"])
    assert pred.composition.coef["scale"] != pytest.approx(0.5)  # the original is left as it was
    lat = expected_latency_fn(a.predictor(), space)
    probs = np.full((len(space.layers()), len(space.ops)), 1.0 / len(space.ops))
    g = jax.grad(lambda p: lat(p, np.ones(len(space.stages))))(probs)
    assert np.all(np.isfinite(np.asarray(g))) and np.any(np.asarray(g) != 0)
    direct = recomposed(pred, records[:12], target[:12])
    np.testing.assert_allclose(direct.predict_models(records[12:])["latency_ms"], target[12:], rtol=1e-3)
    assert design_rows(plain, [r.counts() for r in records]).shape == (16, 6)


def test_recompose_needs_networks_a_predictor_and_enough_samples():
    pred = reference_predictor()
    archs = [NB201.random_arch(s) for s in range(8)]
    records = [NB201.record(a) for a in archs]
    ms = pred.predict_models(records)["latency_ms"].to_numpy()
    table = pd.Series(ms, index=[NB201.encode(a) for a in archs])
    with pytest.raises(ValueError, match="'recompose' needs whole networks, a predictor as a proxy"):
        adapt(records, ms, [table_proxy(table, key="arch")], methods=("recompose",))
    with pytest.raises(ValueError, match="at least 7 samples"):
        adapt(records[:5], ms[:5], [predictor_proxy(pred)], methods=("recompose",))
    with pytest.raises(ValueError, match="does not give a predictor; only 'recompose'"):
        adapt(records, ms * 2, [predictor_proxy(pred)], methods=("reuse",)).predictor()
