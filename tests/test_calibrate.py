"""`jaxlat calibrate`: a small real calibration on this CPU, its card, the registry that makes
`load_predictor()` prefer it, resuming without measuring again, and the errors of bad input."""

import contextlib
import copy
import dataclasses
import functools
import json
import logging
import math
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxlat
import profilers
from jaxlat import _calibrate as cal
from jaxlat._cli import main as jaxlat_main
from jaxlat._shipped import (
    calibrated_entries,
    matching_reference,
    reference_names,
    reference_path,
    register_calibrated,
)
from jaxlat._shipped import default_predictor as jaxlat_default_predictor

#: A calibration that fits in a test: two module types, two cheap network families, short
#: timings and a budget far below the smallest suite (which then overruns, with a warning).
SMALL = {
    "budget_min": 0.2,
    "modules": ("conv2d", "linear"),
    "families": ("mbconv", "text"),
    "min_run_time_s": 0.01,
    "network_min_run_time_s": 0.02,
    "seed": 0,
}
CPU = profilers.host_fingerprint()["cpu_model"]


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def _captured():
    """The messages of jaxlat's loggers (INFO and up) inside the block (caplog sees none once a CLI
    run in this process has set `propagate = False` on them)."""
    handler, logger = _Messages(), logging.getLogger("jaxlat")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """One real calibration on this machine (JAXLAT_HOME in a temporary folder); its messages."""
    root = tmp_path_factory.mktemp("calibrate")
    with _captured() as messages, pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAXLAT_HOME", str(root / "home"))
        result = cal.calibrate_machine(root / "out", progress=False, **SMALL)
    return result, root / "home", messages


@pytest.fixture
def home(calibrated, monkeypatch):
    monkeypatch.setenv("JAXLAT_HOME", str(calibrated[1]))
    return calibrated[1]


def test_a_small_real_calibration_writes_a_predictor_and_a_card(calibrated):
    result, _, messages = calibrated
    card = json.loads((result.out / "card.json").read_text())
    assert card == result.card
    assert card["machine"]["cpu_model"] == CPU and card["machine"]["libraries"]["torch"].startswith("2.")
    measured = card["measured"]
    assert set(measured["modules"]) == {"conv2d", "linear"}
    assert all(
        c["b1"] >= cal.MIN_CONFIGS_PER_TYPE_BATCH and c["b8"] >= cal.MIN_CONFIGS_PER_TYPE_BATCH
        for c in measured["modules"].values()
    )
    nets = measured["networks"]
    assert nets["architectures"] >= cal.MIN_NETWORKS and nets["records"] == 2 * nets["architectures"]
    assert set(nets["per_family"]) == {"mbconv", "text"} and nets["with_pad_operators"] >= 2
    assert measured["measure_s"] > 0 and measured["fit_s"] > 0
    # The budget was far too small: said before measuring, with the overrun.
    assert any("is below the smallest calibration suite" in m and "overrun by about" in m for m in messages)
    # Test-retest: a sample measured again, both statistics compared.
    for what in ("modules", "networks"):
        for stat in ("median", "p10"):
            r = card["test_retest"][what][stat]
            assert r["n"] >= 1 and 0 <= r["acc10"] <= r["acc20"] <= 1 and 0.3 < r["median_ratio"] < 3
    assert card["statistic"] in ("median", "p10")
    # The choice: every candidate scored or explained; the held-out part beside every base, uncalibrated.
    choice = card["choice"]
    assert sum(c["chosen"] for c in choice["candidates"]) == 1
    # Every shipped base, each also fine-tuned on the module rows (all have network regressors).
    shipped = reference_names()
    assert len(shipped) >= 2
    assert len(choice["candidates"]) == 2 * len(shipped) * len(cal.MODULE_CORRECTIONS) * len(cal.COMPOSITIONS)
    assert {c["base"] for c in choice["candidates"]} == {*shipped, *(f"{n}{cal.TUNED}" for n in shipped)}
    assert all(c["score"] is not None or c["note"] for c in choice["candidates"])
    assert choice["objective"] == "split" and set(choice["by_objective"]) == set(cal._SCORED_OBJECTIVES)
    assert choice["by_objective"]["modules"]["base"] == choice["base"]
    # Whole models: the networks' leader and the next best of its base, averaged.
    whole = choice["whole_models"]
    leader = choice["by_objective"]["networks"]
    assert whole is not None and cal.whole_key(whole) == cal.whole_key(leader)
    members = cal.part_members(whole)
    assert 1 < len(members) <= cal.WHOLE_MEMBERS and members[0] == (leader["modules"], leader["composition"])
    inside = [c for c in choice["candidates"] if c["chosen_whole"]]
    assert {c["base"] for c in inside} == {leader["base"]} and len(inside) == len(members)
    others = sorted((c for c in choice["candidates"] if c["base"] == leader["base"] and c["score"] is not None
                     and cal.whole_key(c) != cal.whole_key(leader)), key=lambda c: c["network_mean_abs_log_err"])
    assert members[1:] == [(c["modules"], c["composition"]) for c in others[: len(members) - 1]]
    assert result.predictor().whole_models.device["calibration"]["members"] == [list(m) for m in members]
    card_text = (result.out / "card.md").read_text()
    assert card_text.count("in the whole-model mean") == len(members)
    assert sum("(chosen" in line for line in card_text.splitlines()) == 1  # kept beside a mean's mark
    assert "(leads this calibration's whole-model mean)" in card_text
    table = card["held_out"]["table"]
    assert [r["predictor"] for r in table[1:]] == [f"{n}, uncalibrated" for n in shipped]
    assert table[0]["predictor"] == f"calibrated ({choice['label']})"
    assert choice["label"].startswith(f"modules: {choice['base']} + " if whole else f"{choice['base']} + ")
    assert all(r["modules"]["n"] == card["held_out"]["rows"] > 0 for r in table)
    assert all(r["networks"]["n"] == card["held_out"]["networks"] > 0 for r in table)
    text = (result.out / "card.md").read_text()
    for heading in (
        "## Machine",
        "## What was measured",
        "## Test-retest ceiling",
        "## Choice",
        "## Held-out accuracy",
    ):
        assert heading in text
    assert CPU in text and "(chosen)" in text and "What each objective would choose" in text
    assert "calibrated on" in result.summary() and "held-out within ±10 %" in result.summary()


def test_the_summary_points_to_the_networks_objective_only_where_it_would_choose_otherwise(calibrated):
    result, _, _ = calibrated
    card = copy.deepcopy(result.card)
    choice = card["choice"]
    choice["objective"] = "both"  # one candidate for both parts (`split` takes the networks' anyway)
    chosen = next(c for c in choice["candidates"] if c["chosen"])
    other = next(c for c in choice["candidates"] if c["score"] is not None and not c["chosen"])
    keys = ("base", "modules", "composition", "module_mean_abs_log_err", "network_mean_abs_log_err")
    for pick, hinted in [(chosen, False), (other, True)]:
        choice["by_objective"]["networks"] = {k: pick[k] for k in keys}
        text = cal.Calibrated(result.out, result.predictor_dir, card, None).summary()
        assert ("--objective networks would choose" in text) == hinted, text
        if hinted:
            label = cal.candidate_label(other["base"], other["modules"], other["composition"])
            assert f"choose {label}: cross-validated network error" in text
    # A card written before objectives were recorded still renders, without that section.
    del choice["objective"], choice["by_objective"]
    text = cal.card_markdown(card)
    assert "## Choice" in text and "What each objective would choose" not in text
    assert "--objective" not in cal.Calibrated(result.out, result.predictor_dir, card, None).summary()


def test_the_calibrated_predictor_describes_this_machine_and_predicts_its_networks(calibrated):
    result, _, _ = calibrated
    pred = result.predictor()
    assert pred.device["fingerprint"]["cpu_model"] == CPU
    assert pred.device["calibration"]["base"] == result.card["choice"]["base"]
    assert pred.statistic == result.card["statistic"] and pred.composition is not None
    records = [r for r in cal.read_records(result.out / "data" / "networks.jsonl")]
    out = pred.predict_models(records)
    ratio = out["latency_ms"] / out["measured_ms"]
    assert np.all(np.isfinite(ratio)) and 0.2 < float(np.median(ratio)) < 5  # fitted on these very networks


def test_load_predictor_prefers_the_one_calibrated_on_this_cpu_model(calibrated, home, capsys, tmp_path):
    result, _, _ = calibrated
    (entry,) = calibrated_entries(CPU)
    assert (
        entry["path"] == str(result.predictor_dir.resolve())
        and entry["base"] == result.card["choice"]["base"]
    )
    assert matching_reference() == entry["path"]
    assert matching_reference(calibrated=False) in reference_names()
    with _captured() as messages:
        pred = jaxlat.load_predictor()
    assert pred.device == result.predictor().device
    assert any("calibrated on this CPU model" in m for m in messages)
    listed = [p for p in jaxlat.list_predictors() if p.calibrated]
    assert [p.path for p in listed] == [result.predictor_dir.resolve()] and listed[0].hardware == CPU
    assert [p.name for p in jaxlat.list_predictors(calibrated=False)] == list(reference_names())
    # `jaxlat predict` without --predictor takes it, and says so on each line.
    rec = cal.read_records(result.out / "data" / "networks.jsonl")[0]
    rec.save(tmp_path / "net.json")
    assert jaxlat_main(["predict", "--arch", str(tmp_path / "net.json")]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(f"; predictor {entry['path']}")
    assert jaxlat_main(["predictors"]) == 0
    out = capsys.readouterr().out
    assert f"path: {entry['path']}" in out
    assert f"{entry['path']} (calibrated, this CPU)\n" in out  # what `jaxlat predict` takes


def test_an_interrupted_calibration_resumes_without_measuring_again(calibrated, monkeypatch, capsys):
    result, _, _ = calibrated
    data = result.out / "data"
    modules_before = (data / "modules.parquet").stat().st_mtime_ns
    lines = (data / "networks.jsonl").read_text().splitlines()
    # As if the run had stopped while measuring the last network: its record and block not written.
    (data / "networks.jsonl").write_text("".join(f"{ln}\n" for ln in lines[:-1]) + lines[-1][:100])
    progress = json.loads((data / "progress.json").read_text())
    last_block = f"networks_{len(json.loads((data / 'plan.json').read_text())['blocks']) - 1}"
    del progress["steps"][last_block]
    (data / "progress.json").write_text(json.dumps(progress))
    monkeypatch.setenv("JAXLAT_HOME", str(result.out / "elsewhere"))
    argv = [
        "calibrate",
        "--out",
        str(result.out),
        "--budget-min",
        str(SMALL["budget_min"]),
        "--module",
        "conv2d,linear",
        "--family",
        "mbconv",
        "--family",
        "text",
        "--min-run-time",
        "0.01",
        "--network-min-run-time",
        "0.02",
        "--base",
        "epyc_torch_1t",  # a fit-time setting: it may differ from the first run's
        "--no-register",
        "--no-progress",
    ]
    assert jaxlat_main(argv) == 0
    assert "chosen:" in capsys.readouterr().out
    after = (data / "networks.jsonl").read_text().splitlines()
    assert after[:-1] == lines[:-1] and json.loads(after[-1])["name"] == json.loads(lines[-1])["name"]
    assert (data / "modules.parquet").stat().st_mtime_ns == modules_before  # no module measured again
    assert json.loads((data / "progress.json").read_text())["sessions"] == 2
    assert not (result.out / "elsewhere").exists()  # --no-register
    # Other settings are not a resume: refused, naming them.
    with pytest.raises(ValueError, match=r"planned with seed=0 \(now 1\).*another --out"):
        cal.calibrate_machine(result.out, **{**SMALL, "seed": 1})


def test_a_truncated_records_file_loses_only_its_last_line(tmp_path):
    src = Path(__file__).parents[1] / "data" / "cpu_generated_models.jsonl"
    lines = src.read_text().splitlines()[:3]
    path = tmp_path / "n.jsonl"
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:50])
    assert [r.name for r in cal.read_records(path)] == [json.loads(x)["name"] for x in lines[:2]]
    assert path.read_text().splitlines() == lines[:2]
    assert cal.read_records(tmp_path / "missing.jsonl") == []


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--budget-min", "0"], "budget_min=0.0 is not valid (--budget-min): expected minutes > 0"),
        (["--budget-min", "nan"], "budget_min=nan is not valid (--budget-min)"),
        (["--module", "conv3d"], "module 'conv3d' is not valid (--module): expected some of conv2d"),
        (
            ["--family", "cnn"],
            "family 'cnn' is not valid (--family): expected some of resnet, mbconv, vit, text",
        ),
        (["--base", "tpu_v9"], "base 'tpu_v9' is not valid (--base): predictor 'tpu_v9' is neither"),
        (
            ["--exclude-base", "tpu_v9"],
            "exclude_base 'tpu_v9' is not valid (--exclude-base): it is not among the bases",
        ),
        (["--base", "cpu_torch_1t", "--exclude-base", "cpu_torch_1t"], "base: no base predictor left"),
        (["--min-run-time", "-1"], "min_run_time_s=-1.0 is not valid (--min-run-time): expected seconds > 0"),
        (["--rounds", "0"], "rounds=0 is not valid (--rounds): expected an int from 1 to 20"),
        (["--seed", "-2"], "seed=-2 is not valid (--seed): expected an int >= 0"),
        (["--out", "{tmp}/file"], "--out {tmp}/file: is an existing file"),
    ],
)
def test_bad_arguments_end_in_one_clear_line(tmp_path, capsys, monkeypatch, argv, expected):
    monkeypatch.setenv("JAXLAT_HOME", str(tmp_path / "home"))
    (tmp_path / "file").write_text("")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    out = [] if "--out" in argv else ["--out", str(tmp_path / "cal")]
    status = jaxlat_main(["calibrate", *out, *argv])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("jaxlat: error: ") and expected.replace("{tmp}", str(tmp_path)) in last, err
    assert not (tmp_path / "cal" / "data").exists()  # nothing measured


def test_the_cli_offers_the_objectives_the_library_knows(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        jaxlat_main(["calibrate", "--out", str(tmp_path / "cal"), "--objective", "whole"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--objective: invalid choice: 'whole'" in err
    assert all(f"'{o}'" in err for o in jaxlat.CALIBRATION_OBJECTIVES) and not (tmp_path / "cal").exists()


def test_bad_python_arguments_name_the_argument(tmp_path):
    for kwargs, expected in [
        ({"statistic": "mean"}, "statistic='mean' is not valid (--statistic): expected auto"),
        ({"register": "yes"}, "register='yes' is not valid"),
        ({"modules": "conv2d,nope"}, "module 'nope' is not valid"),
        ({"budget_min": True}, "budget_min=True is not valid"),
        ({"objective": "whole"}, "objective='whole' is not valid (--objective): expected one of split, both"),
    ]:
        with pytest.raises(ValueError, match=re.escape(expected)):
            cal.calibrate_machine(tmp_path / "cal", **kwargs)


# -- the parts, on planted data ----------------------------------------------------------------


def test_the_suite_grows_with_the_budget_and_never_below_the_minimum():
    cost = {"s_per_config": 0.3, "s_per_network": 2.5, "s_startup": 3.0}
    sizes = [cal.size_suite(cal.check_settings(budget_min=b), cost, 20.0) for b in (0.1, 5, 10, 30)]
    assert (
        sizes[0].per_type_batch == cal.MIN_CONFIGS_PER_TYPE_BATCH and sizes[0].n_networks == cal.MIN_NETWORKS
    )
    assert sizes[0].minimum_s > 6 and sizes[0].estimate_s == pytest.approx(sizes[0].minimum_s)
    assert [s.per_type_batch for s in sizes] == sorted(s.per_type_batch for s in sizes)
    assert [s.n_networks for s in sizes] == sorted(s.n_networks for s in sizes)
    ten = sizes[2]
    assert ten.estimate_s == pytest.approx(600, rel=0.05) and 2 <= ten.n_blocks <= 8
    assert 8 <= ten.retest_configs <= 60 and 1 <= ten.retest_networks <= 4


def test_the_networks_cover_every_family_with_pads_early():
    specs = cal.arch_specs(cal.check_settings(), 8)
    assert [s["family"] for s in specs[:4]] == list(cal.NETWORK_FAMILIES)
    assert {s["family"] for s in specs[:4] if s["explicit_padding"]} == {"mbconv"}
    assert {s["family"] for s in specs[4:] if s["explicit_padding"]} == {"resnet"}
    assert cal.network_name(specs[1], 8) == f"gen{specs[1]['seed']}_mbconv_pad_b8_t1_u0"


def _planted(n_rows=80, n_archs=12, seed=0):
    """A suite whose machine runs conv2d at twice the base's prediction and everything else as
    predicted, with networks composed by the base's own formula, and 2 % noise."""
    rng = np.random.default_rng(seed)
    module = np.array(["conv2d", "linear"] * (n_rows // 2), object)
    log_pred = rng.normal(0, 1, n_rows)
    log_y = log_pred + np.where(module == "conv2d", math.log(2), 0) + rng.normal(0, 0.02, n_rows)
    archs = np.repeat([f"a{i}" for i in range(n_archs)], 2)
    sums = rng.uniform(1, 10, (2 * n_archs, 2))
    counts = np.column_stack([rng.integers(10, 50, 2 * n_archs), np.zeros((2 * n_archs, 4))])
    coef = np.array([1.0, 0.01, 0, 0, 0, 0])
    true = sums @ np.array([2.0, 1.0]) + counts[:, 0] * 0.01
    suite = cal.Suite(
        module,
        log_y,
        np.array([f"k{i}" for i in range(n_rows)], object),
        np.log(true) + rng.normal(0, 0.02, len(true)),
        counts,
        archs,
    )
    return suite, cal.BaseArrays("base", log_pred, ("conv2d", "linear", "pool2d"), ("conv2d", "linear"), sums, coef)


def test_a_per_type_factor_is_found_and_chosen_on_planted_data():
    suite, base = _planted()
    report_rows, report_nets, row_fold, net_fold = cal.split_suite(suite, 0)
    choice = cal.choose([base], suite, row_fold, net_fold)
    assert (choice.correction, choice.composition) == ("per_type", "kept")
    fit = cal.fit_candidate(base, suite, ~report_rows, ~report_nets, "per_type", "kept")
    assert fit.shift["conv2d"] == pytest.approx(math.log(2), abs=0.02) and abs(fit.shift["linear"]) < 0.02
    # A type the base predicts but the suite never measured (pool2d) gets the overall factor.
    one = cal.fit_candidate(base, suite, ~report_rows, ~report_nets, "global", "kept").shift
    assert set(one) == {"conv2d", "linear", "pool2d"} and len(set(one.values())) == 1
    assert fit.shift["pool2d"] == pytest.approx(one["pool2d"])
    rows, nets = cal.predict_log(base, suite, fit)
    assert cal.accuracy(rows[report_rows], suite.log_y[report_rows])["acc10"] == 1.0
    assert cal.accuracy(nets[report_nets], suite.net_log_y[report_nets])["acc10"] == 1.0


def test_the_objective_decides_between_a_base_for_modules_and_one_for_networks():
    # "modules": predicts every module row, but its networks' module sums are off by a
    # different factor per network (no composition fixes that); "networks": its module rows are
    # off by noise no factor fixes, its networks' sums are the true ones.
    suite, base = _planted()
    rng = np.random.default_rng(1)
    truth_sums = base.net_sums * np.array([2.0, 1.0])
    good_modules = dataclasses.replace(
        base,
        name="modules",
        log_pred=suite.log_y.copy(),
        net_sums=truth_sums * np.exp(rng.normal(0, 0.3, (len(truth_sums), 1))),
    )
    noisy = suite.log_y + rng.normal(0, 0.3, len(suite.log_y))
    good_networks = dataclasses.replace(base, name="networks", log_pred=noisy, net_sums=truth_sums)
    _, _, row_fold, net_fold = cal.split_suite(suite, 0)
    bases = [good_modules, good_networks]
    choices = {o: cal.choose(bases, suite, row_fold, net_fold, o) for o in jaxlat.CALIBRATION_OBJECTIVES}
    assert choices["networks"].base == "networks" and choices["modules"].base == "modules"
    for o, ch in choices.items():  # each candidate's score is its error under the objective
        for c in ch.candidates:
            m, n = c["module_mean_abs_log_err"], c["network_mean_abs_log_err"]
            assert c["score"] == pytest.approx({"both": (m + n) / 2, "networks": n, "modules": m, "split": m}[o])
    # `split` takes both: the modules' leader, and the networks' to compose whole models.
    split = choices["split"]
    assert split.base == "modules" and split.whole["base"] == "networks"
    assert cal.whole_key(split.whole) == (choices["networks"].base, choices["networks"].correction,
                                          choices["networks"].composition)
    assert [c["base"] for c in split.candidates if c["chosen_whole"]] == ["networks"] * cal.WHOLE_MEMBERS
    assert split.label == f"modules: {choices['modules'].label}; whole models: {cal.part_label(split.whole)}"
    assert cal.part_label(split.whole).startswith("networks, the mean of 3: module predictions kept + ")
    assert all(ch.whole is None for o, ch in choices.items() if o != "split")
    # Whatever the objective, the choice records what each would take; the card lists them.
    both = choices["both"]
    assert {o: c["base"] for o, c in both.by_objective.items()} == {
        o: ch.base for o, ch in choices.items() if o != "split"}
    lines = cal.objective_lines({"by_objective": both.by_objective, "objective": "both"})
    assert any(line.startswith("- `--objective networks`: networks + ") for line in lines)
    assert sum("(this calibration's)" in line for line in lines) == 1
    expected = r"objective='whole' is not valid \(--objective\): expected one of split, both, "
    with pytest.raises(ValueError, match=expected):
        cal.choose([base], suite, row_fold, net_fold, "whole")


def test_the_held_out_part_is_never_in_a_fold_and_keeps_an_architecture_together():
    suite, _ = _planted(n_rows=40, n_archs=8)
    report_rows, report_nets, row_fold, net_fold = cal.split_suite(suite, 3)
    assert np.all(row_fold[report_rows] == -1) and np.all(row_fold[~report_rows] >= 0)
    assert np.all(net_fold[report_nets] == -1) and np.all(net_fold[~report_nets] >= 0)
    assert report_rows.sum() == 10 and report_nets.sum() == 4  # a quarter per type, 2 of 8 architectures
    for a in set(suite.net_arch):
        assert len(set(net_fold[suite.net_arch == a])) == 1


def test_refitting_the_composition_needs_six_networks():
    suite, base = _planted(n_archs=3)
    _, _, row_fold, net_fold = cal.split_suite(suite, 0)
    assert cal.cross_validate(base, suite, row_fold, net_fold, [("none", "refitted")]) is None
    table = cal.choose([base], suite, row_fold, net_fold).candidates
    assert all(
        c["score"] is None and "fewer than 6" in c["note"] for c in table if c["composition"] == "refitted"
    )


def test_the_statistic_is_the_one_that_repeated_better():
    retest = {"modules": {"median": {"acc10": 0.6}, "p10": {"acc10": 0.8}}}
    assert cal.choose_statistic(retest, "auto") == "p10"
    assert (
        cal.choose_statistic({"modules": {"median": {"acc10": 0.8}, "p10": {"acc10": 0.8}}}, "auto")
        == "median"
    )
    assert cal.choose_statistic({}, "auto") == "median" and cal.choose_statistic(retest, "median") == "median"


@pytest.mark.parametrize("name", ["cpu_torch_1t", "epyc_torch_1t"])
def test_a_per_type_scale_multiplies_exactly_that_types_predictions(name):
    pred = jaxlat.load_predictor(name)
    factors = {"conv2d": 2.0, "add": 0.5, "layernorm": 1.25, "batchnorm2d": 0.8, "matmul": 1.0}
    scaled = cal.with_module_log_scale(pred, {t: math.log(f) for t, f in factors.items()})
    configs = [profilers.make_config(t) for t in (*factors, "linear")]
    ratio = scaled.predict(configs)["latency_ms"] / pred.predict(configs)["latency_ms"]
    np.testing.assert_allclose(ratio, [*factors.values(), 1.0], rtol=1e-4)
    # Whatever the regressor: MLP, MEDN task and roofline among these.
    assert {"mlp", "roofline", "medn[conv2d]"} & {pred.models[t].regressor.name for t in factors}


def test_the_registry_keeps_one_entry_per_directory_and_the_newest_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXLAT_HOME", str(tmp_path / "home"))
    a, b = (shutil.copytree(reference_path("epyc_torch_1t"), tmp_path / n) for n in ("a", "b"))
    register_calibrated("Some CPU", a, base="x")
    register_calibrated("Some CPU", b, base="y")
    register_calibrated("Some CPU", a, base="z")  # again: replaces its entry, and is now the newest
    assert [e["base"] for e in calibrated_entries("Some CPU")] == ["z", "y"]
    assert matching_reference("Some CPU") == str(a.resolve())
    assert matching_reference("Other CPU") in reference_names()
    shutil.rmtree(a)  # a calibration deleted: skipped
    assert matching_reference("Some CPU") == str(b.resolve())
    registry = json.loads((tmp_path / "home" / "calibrated.json").read_text())
    registry["predictors"]["Some CPU"][0]["registered_unix"] = "yesterday"  # hand-edited: skipped
    (tmp_path / "home" / "calibrated.json").write_text(json.dumps(registry))
    assert [e["base"] for e in calibrated_entries("Some CPU")] == []
    (tmp_path / "home" / "calibrated.json").write_text("{not json")
    assert calibrated_entries() == []  # an unreadable registry is ignored, with a warning
    with pytest.raises(ValueError, match="holds no predictor.json"):
        register_calibrated("Some CPU", tmp_path)


def test_a_broken_calibrated_predictor_falls_back_to_a_shipped_one(tmp_path, monkeypatch, capsys):
    """`load_predictor()` and `jaxlat predict` without --predictor: a registered calibration whose
    files are damaged is reported and a shipped predictor predicts instead."""
    monkeypatch.setenv("JAXLAT_HOME", str(tmp_path / "home"))
    broken = shutil.copytree(reference_path("epyc_torch_1t"), tmp_path / "broken")
    register_calibrated(CPU, broken, base="x")
    (broken / "medn.npz").write_bytes(b"not an npz")  # damaged: its checksum no longer matches
    with _captured() as messages:
        name, pred = jaxlat_default_predictor()
    assert name in reference_names() and pred.modules
    assert any("cannot be loaded" in m for m in messages)
    rec = profilers.load_records(Path(__file__).parents[1] / "data" / "epyc_generated_models.jsonl")[0]
    rec.save(tmp_path / "net.json")
    assert jaxlat_main(["predict", "--arch", str(tmp_path / "net.json")]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(f"; predictor {name}")


def test_agreement_of_two_measurements():
    r = cal.agreement(np.array([1.0, 2.0, 4.0, 10.0]), np.array([1.05, 2.3, 4.0, 7.0]))
    assert r == {"n": 4, "acc10": 0.5, "acc20": 0.75, "median_ratio": pytest.approx(1.025), "acc10_drift_removed": 0.5}
    assert cal.agreement(np.array([]), np.array([]))["n"] == 0


def test_settings_are_plain_data():
    s = cal.check_settings(modules="conv2d, linear", families=["text"])
    assert s.modules == ("conv2d", "linear") and s.families == ("text",) and s.batch_sizes == (1, 8)
    assert json.loads(json.dumps(s.as_json())) == s.as_json()
    assert dataclasses.replace(s, seed=1).as_json()["seed"] == 1


def test_configs_predicted_too_slow_to_time_are_left_out_of_the_suite():
    def screen(configs):  # a stand-in for a predictor: 1 ms per MFLOP
        return np.array([c.costs().flops / 1e6 for c in configs])

    kept = cal._sample("pool2d", 6, batch=8, seed=3, method="lhs", screen=screen)
    assert len(kept) == 6 and all(screen(kept) <= cal._MAX_PREDICTED_MS)
    unscreened = cal._sample("pool2d", 6, batch=8, seed=3, method="lhs")
    assert max(screen(unscreened)) > cal._MAX_PREDICTED_MS  # this draw has slow ones


@pytest.mark.parametrize("module", ["conv2d", "conv_bn_act"])
def test_the_suite_measures_every_family_of_a_type_in_about_its_share(module):
    # `sample_configs` returns a type's families in blocks; the suite must not keep only the first.
    weights = {f: w for f, (w, _) in profilers._catalogue.get_spec(module).families.items()}
    assert set(weights) == {"regular", "depthwise", "grouped"}
    for batch in (1, 8):
        kept = cal._sample(module, 24, batch=batch, seed=5, method="lhs")
        groups = np.array([c["groups"] for c in kept])
        cin = np.array([c["cin"] for c in kept])
        found = {"regular": np.sum(groups == 1), "depthwise": np.sum((groups > 1) & (groups == cin)),
                 "grouped": np.sum((groups > 1) & (groups != cin))}
        assert len(kept) == len({c.key for c in kept}) == 24
        for f, w in weights.items():
            assert abs(found[f] - w * 24) <= 2, (batch, found)


def test_a_chosen_fine_tuned_base_is_tuned_again_on_every_row(calibrated, monkeypatch):
    """Whatever the scores, a fine-tuned candidate that is chosen becomes a predictor whose
    networks were tuned on every module row and whose whole-model predictions are its fit's
    (`adapt` checks that itself)."""
    result, _, _ = calibrated
    df = profilers.read_dataset(result.out / "data" / "modules.parquet")
    records = [r for r in cal.read_records(result.out / "data" / "networks.jsonl") if r.measured]
    choose = cal.choose

    def tuned_first(arrays, *args):
        return choose([a for a in arrays if a.name.endswith(cal.TUNED)], *args)

    monkeypatch.setattr(cal, "choose", tuned_first)
    base = jaxlat.load_predictor("epyc_torch_1t")
    out = cal.adapt({"epyc_torch_1t": base}, df, records, statistic="median", seed=0)
    assert out.choice.base == f"epyc_torch_1t{cal.TUNED}"
    assert [r["predictor"] for r in out.held_out["table"][1:]] == ["epyc_torch_1t, uncalibrated"]
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), out.predictor.params.regressors["medn"],
                         base.params.regressors["medn"])
    assert any(jax.tree.leaves(moved))
    monkeypatch.setattr(cal, "choose", choose)
    untuned = cal.adapt({"epyc_torch_1t": base}, df, records, statistic="median", seed=0, tune=False)
    assert not any(c["base"].endswith(cal.TUNED) for c in untuned.choice.candidates)


def test_a_network_record_is_never_planned_below_what_its_timer_spends():
    """The probe's network cost is a difference of two process times; the plan never takes it
    below each round's warm-up plus the timing (5 rounds x 0.2 s + 0.5 s by default)."""
    settings = cal.check_settings()
    assert settings.rounds == 5
    assert cal.network_floor_s(settings) == pytest.approx(5 * 0.4 * 0.5 + 0.5)
    assert cal.network_floor_s(cal.check_settings(rounds=1)) == pytest.approx(0.4 * 0.5 + 0.5)


def test_a_network_block_keeps_what_fits_its_share_of_the_budget_left():
    """Two blocks left, 300 s of budget of which 100 are spent and 80 still go to modules and
    retests: this block's share is 60 s, less a 4 s start: 14 networks at 2 x 2 s per network."""
    cost = {"s_per_config": 0.5, "s_per_network": 2.0, "s_startup": 4.0}
    fit = functools.partial(
        cal.networks_that_fit, n_batch_sizes=2, cost=cost, budget_s=300.0, rest_s=80.0, blocks_left=2
    )
    assert fit(20, spent_s=100.0, have_networks=10) == 14
    assert fit(5, spent_s=100.0, have_networks=10) == 5  # all of a small block
    assert fit(20, spent_s=400.0, have_networks=10) == 0  # the budget is spent
    assert fit(20, spent_s=400.0, have_networks=1) == cal.MIN_NETWORKS - 1  # the smallest suite first
    assert fit(2, spent_s=400.0, have_networks=0) == 2


def test_the_costs_are_re_estimated_from_what_was_measured():
    """A block of 20 records took 70 s with one 4 s start: 3.3 s per record, as the fourth
    acceptance run saw (3 s against the 1.5 s planned); never below the timer's floor."""
    settings = cal.check_settings()
    probe = {"s_per_config": 0.6, "s_per_network": 1.5, "s_startup": 4.0}
    seen = cal.observed_cost(
        probe, settings, module_s=100.0, n_rows=192, network_s=70.0, n_records=20, n_processes=1
    )
    assert seen["s_per_network"] == pytest.approx(3.3)
    assert seen["s_per_config"] == pytest.approx(96 / 192)
    fast = cal.observed_cost(
        probe, settings, module_s=0.0, n_rows=10, network_s=5.0, n_records=20, n_processes=1
    )
    assert fast["s_per_network"] == cal.network_floor_s(settings)
    assert fast["s_per_config"] == probe["s_per_config"]  # too few rows to tell
    nothing = {"module_s": 0.0, "n_rows": 0, "network_s": 0.0, "n_records": 0, "n_processes": 0}
    assert cal.observed_cost(probe, settings, **nothing) == probe


def test_a_split_calibration_keeps_module_queries_and_composes_with_the_other_part(calibrated, monkeypatch, tmp_path):
    """`objective="split"` on real measurements: the module part is the modules' leader among one
    base's candidates, the whole-model part the networks' leader among another's (forced apart
    here by giving each objective one base); the predictor answers each query from its part, the
    card and the saved predictor say so."""
    result, _, _ = calibrated
    choose = cal.choose

    def apart(arrays, suite, row_fold, net_fold, objective):
        assert objective == "split"
        mods = choose([a for a in arrays if a.name == "epyc_torch_1t"], suite, row_fold, net_fold, "modules")
        nets = choose([a for a in arrays if a.name == "cpu_torch_1t"], suite, row_fold, net_fold, "networks")
        keys = ("base", "modules", "composition", "module_mean_abs_log_err", "network_mean_abs_log_err")
        whole = next(c for c in nets.candidates if c["chosen"])
        table = [{**c, "chosen_whole": False} for c in mods.candidates]
        table += [{**c, "chosen": False, "chosen_whole": c["chosen"]} for c in nets.candidates]
        return dataclasses.replace(mods, candidates=table, whole={k: whole[k] for k in keys})

    monkeypatch.setattr(cal, "choose", apart)
    monkeypatch.setattr(cal, "LOCAL_WEIGHTS", (0.0,))  # the module part's own predictions, unblended
    out = tmp_path / "cal"
    shutil.copytree(result.out / "data", out / "data")
    split = cal.calibrate_machine(out, progress=False, register=False, tune=False, objective="split",
                                  base="epyc_torch_1t,cpu_torch_1t", **SMALL)
    choice = split.card["choice"]
    assert choice["objective"] == "split" and choice["base"] == "epyc_torch_1t"
    assert choice["whole_models"]["base"] == "cpu_torch_1t" and "; whole models: cpu_torch_1t + " in choice["label"]
    pred = split.predictor()
    assert pred.is_split and pred.device["calibration"]["base"] == "epyc_torch_1t"
    assert pred.whole_models.device["calibration"]["base"] == "cpu_torch_1t"
    assert pred.statistic == pred.whole_models.statistic == split.card["statistic"]
    df = profilers.read_dataset(out / "data" / "modules.parquet")
    epyc = jaxlat.load_predictor("epyc_torch_1t").with_type_scales(choice["module_scale"])
    np.testing.assert_allclose(pred.predict(df)["latency_ms"], epyc.predict(df)["latency_ms"], rtol=1e-5)
    records = [r for r in cal.read_records(out / "data" / "networks.jsonl") if r.measured]
    np.testing.assert_allclose(pred.predict_models(records)["latency_ms"],
                               pred.whole_models.predict_models(records)["latency_ms"])
    # The whole-model part is cpu_torch_1t with its own factors; its composition is what composes.
    cpu = jaxlat.load_predictor("cpu_torch_1t").with_type_scales(choice["whole_models"]["module_scale"])
    np.testing.assert_allclose(pred.whole_models.predict(df)["latency_ms"], cpu.predict(df)["latency_ms"], rtol=1e-5)
    assert dict(pred.composition.coef) == choice["whole_models"]["composition_coef"]
    assert dict(pred.with_whole_models(None).composition.coef) == choice["composition_coef"]
    assert choice["composition_coef"] != choice["whole_models"]["composition_coef"]
    text = (out / "card.md").read_text()
    assert "Whole models are composed by a second predictor, **cpu_torch_1t + " in text
    assert "(chosen for whole models)" in text and "(chosen)" in text
    assert "Composition (of the second predictor): scale " in text
    held = split.card["held_out"]["table"][0]
    assert held["predictor"].startswith("calibrated (modules: epyc_torch_1t + ")


def test_per_type_factors_fitted_on_the_networks_win_where_networks_run_types_differently():
    # The module rows say conv2d runs 2x its prediction; inside the networks it runs 1.3x (a
    # context the isolated timing does not have). Only the network-fitted factors compose them.
    suite, base = _planted(n_archs=20)
    true = base.net_sums @ np.array([1.3, 1.0]) + suite.net_counts[:, 0] * 0.01
    rng = np.random.default_rng(2)
    suite = dataclasses.replace(suite, net_log_y=np.log(true) + rng.normal(0, 0.02, len(true)))
    report_rows, report_nets, row_fold, net_fold = cal.split_suite(suite, 0)
    choice = cal.choose([base], suite, row_fold, net_fold, "split")
    assert (choice.correction, choice.composition) == ("per_type", "kept")
    assert choice.whole is not None and choice.whole["modules"] == "per_type_networks"
    fit = cal.fit_candidate(base, suite, ~report_rows, ~report_nets, "per_type_networks", "kept")
    # Near the networks' 1.3x, a little toward the rows' 2x (its prior).
    assert math.log(1.3) <= fit.shift["conv2d"] < math.log(1.5)
    assert fit.shift["pool2d"] == pytest.approx(cal.fit_candidate(base, suite, ~report_rows, ~report_nets, "per_type",
                                                                  "kept").shift["pool2d"])  # no network has it
    nets = cal.predict_log(base, suite, fit)[1]
    assert cal.accuracy(nets[report_nets], suite.net_log_y[report_nets])["acc10"] == 1.0
    assert "per-type scale fitted on the networks" in cal.candidate_label("b", "per_type_networks", "kept")


def test_whole_models_are_the_exact_mean_of_the_networks_leader_and_the_next_of_its_base():
    # A mean of candidates of one base is one candidate: the composition is linear in its
    # coefficients, and the module sum's coefficient folds into the per-type factors.
    suite, base = _planted(n_archs=20)
    report_rows, report_nets, row_fold, net_fold = cal.split_suite(suite, 0)
    members = [("per_type", "kept"), ("global", "refitted"), ("none", "rescaled")]
    fits = [cal.fit_candidate(base, suite, ~report_rows, ~report_nets, *m) for m in members]
    mean_ms = np.mean([np.exp(cal.predict_log(base, suite, f)[1]) for f in fits], axis=0)
    blended = cal.fit_members(base, suite, ~report_rows, ~report_nets, members)
    np.testing.assert_allclose(np.exp(cal.predict_log(base, suite, blended)[1]), mean_ms, rtol=1e-6)
    # Members that all leave the module sum out: their shifts count for nothing.
    flat = cal.blend([cal.Fitted({"conv2d": 1.0}, np.array([0, 1.0, 0, 0, 0, 0])),
                      cal.Fitted({"conv2d": -1.0}, np.array([0, 3.0, 0, 0, 0, 0]))])
    assert flat.shift == {"conv2d": 0.0} and flat.coef.tolist() == [0, 2.0, 0, 0, 0, 0]
    # `split`: the networks' leader first, then its base's next best by held-out network error;
    # the mean's own held-out error is that of the mean fitted fold by fold.
    other = dataclasses.replace(base, name="other", net_sums=base.net_sums * 1.5)
    choice = cal.choose([other, base], suite, row_fold, net_fold, "split")
    lead = choice.by_objective["networks"]
    assert choice.whole["base"] == lead["base"] == "base"
    ranked = sorted((c for c in choice.candidates if c["base"] == "base" and c["score"] is not None
                     and cal.whole_key(c) != cal.whole_key(lead)), key=lambda c: c["network_mean_abs_log_err"])
    expected = [(lead["modules"], lead["composition"])] + [(c["modules"], c["composition"]) for c in ranked[:2]]
    assert cal.part_members(choice.whole) == expected
    # ... computed independently: each member out of fold alone, their latencies averaged.
    each = [cal.cross_validate(base, suite, row_fold, net_fold, [m])[1] for m in expected]
    sel = net_fold >= 0
    mean_log = np.log(np.mean(np.exp(each), axis=0))
    assert choice.whole["network_mean_abs_log_err"] == pytest.approx(
        float(np.mean(np.abs(mean_log[sel] - suite.net_log_y[sel]))), rel=1e-6)
    same = {"base": "b", "members": [["per_type", "kept"], ["per_type", "refitted"]]}
    assert cal.part_label(same) == "b + per-type scale + composition kept and refitted, averaged"
    assert cal.part_label({"base": "b", "modules": "global", "composition": "kept"}) == cal.candidate_label(
        "b", "global", "kept")


def test_a_type_whose_pick_errs_with_size_takes_the_roofline_fitted_here():
    """Planted: this machine's linear latency is a roofline of the config, and the module pick
    errs by a factor that grows with size (a base from another machine), while conv2d latency
    departs from any roofline (a factor per config) and the pick has it right to 1 %. Out of fold, linear takes the roofline alone and conv2d keeps
    the pick; the blend of the held-out rows is what the weights say."""
    from .helpers import synthetic_arrays

    _, x_l, y_l, names_l = synthetic_arrays("linear", 60, seed=1)
    _, x_c, y_c, names_c = synthetic_arrays("conv2d", 60, seed=2)
    module = np.array(["linear"] * 60 + ["conv2d"] * 60, object)
    rng = np.random.default_rng(0)
    log_y = np.concatenate([y_l, y_c + rng.normal(0, 0.3, 60)]).astype(float)
    pick = log_y + np.concatenate([0.3 * (y_l - y_l.mean()), rng.normal(0, 0.01, 60)])
    suite = cal.Suite(module, log_y, np.array([f"k{i}" for i in range(120)], object), np.zeros(0),
                      np.zeros((0, 5)), np.zeros(0))
    row_fold = np.where(np.arange(120) % 4 == 0, -1, np.arange(120) % 5)
    x, names = {"linear": x_l, "conv2d": x_c}, {"linear": names_l, "conv2d": names_c}
    oof = cal.local_oof(x, names, suite, row_fold)
    assert np.isnan(oof[row_fold < 0]).all() and np.isfinite(oof[row_fold >= 0]).all()
    weights, errors = cal.local_weights(pick, oof, suite, row_fold >= 0)
    assert weights == {"conv2d": 0.0, "linear": 1.0}
    assert errors["linear"][-1] < 0.01 < errors["linear"][0]
    blended = cal.roofline_share_log(pick, cal.local_predict(x, names, suite, row_fold >= 0), module, weights)
    held = row_fold < 0
    np.testing.assert_allclose(blended[held & (module == "conv2d")], pick[held & (module == "conv2d")])
    assert np.abs(blended[held & (module == "linear")] - log_y[held & (module == "linear")]).max() < 0.02
    # A type is scored from `_MIN_LOCAL_ROWS` selection rows on (spread over the folds); below, weight 0.
    for n_rows, scored in ((cal._MIN_LOCAL_ROWS - 1, False), (cal._MIN_LOCAL_ROWS, True)):
        some = np.where(module == "linear", np.where(np.arange(120) < n_rows, np.arange(120) % 5, -1), row_fold)
        w_some, e_some = cal.local_weights(pick, cal.local_oof(x, names, suite, some), suite, some >= 0)
        assert ("linear" in e_some) == scored and (w_some["linear"] == 1.0) == scored, n_rows


def test_roofline_shares_scale_the_types_factor_and_take_the_rows_range():
    """On a predictor whose types carry factors: a type at share 0.5 predicts the mean of its
    factored pick and the roofline (log), its factor halved; at share 1 the roofline alone, its
    factor dropped, its training range that of the rows the roofline was fitted on."""
    import pandas as pd

    from .helpers import synthetic_rows

    base = jaxlat.load_predictor("xeon_amx_torch_1t").with_type_scales({"activation": 1.5, "linear": 2.0})
    df = pd.DataFrame(synthetic_rows(["activation", "linear"], 30, seed=4))
    suite = cal._suite(df, [], base.statistic)
    x = cal.local_features(base, df)
    weights = {"activation": 0.5, "linear": 1.0}
    shared = cal.with_roofline_shares(base, x, suite, weights)
    roof = cal.local_predict(x, {t: base.models[t].feature_names for t in x}, suite, np.ones(len(df), bool))
    want = cal.roofline_share_log(np.log(base.predict(df)["latency_ms"].to_numpy(float)), roof, suite.module, weights)
    np.testing.assert_allclose(np.log(shared.predict(df)["latency_ms"].to_numpy(float)), want, rtol=1e-5, atol=1e-5)
    assert shared.log_scale == {"activation": pytest.approx(0.5 * math.log(1.5))}
    assert cal.shares_applied({"activation": math.log(1.5), "linear": math.log(2.0), "add": 0.1}, weights) == {
        "activation": pytest.approx(0.5 * math.log(1.5)), "linear": 0.0, "add": 0.1}
    np.testing.assert_allclose(shared.models["linear"].feature_min, x["linear"].min(axis=0))
    assert not np.array_equal(base.models["linear"].feature_min, shared.models["linear"].feature_min)


def test_the_card_says_when_no_type_was_scored_or_none_improved():
    held = {"table": [{"modules": {"acc10": 0.5}}]}
    unscored = cal.roofline_share_lines({"weights": {"conv2d": 0.0}, "errors": {}, "held_out_without": {"acc10": 0.5}},
                                        held)
    assert "No module type had the 10 selection rows" in unscored[-1]
    none = cal.roofline_share_lines({"weights": {"conv2d": 0.0}, "errors": {"conv2d": [0.1] * 5},
                                     "held_out_without": {"acc10": 0.5}}, held)
    assert "it improved no type out of fold, so none is blended" in none[-1] and "0.50 without" in none[-1]
    assert cal.roofline_share_lines(None, held) == []


def test_a_real_calibration_blends_the_roofline_into_the_types_it_weighs(calibrated, monkeypatch, tmp_path):
    """On the small real calibration's measurements (refitted, one base, no fine-tuning), with
    weights set for both types: each type's saved model predicts `(1 - w) * the pick's + w *
    a piecewise roofline fitted on all its rows` (the pick: the same calibration without the
    blend), and the card and the predictor say which types and how much."""
    from jaxlat.regressors import piecewise_roofline_regressor

    result, _, _ = calibrated
    runs = {}
    for name, weights in (("plain", (0.0,)), ("blend", cal.LOCAL_WEIGHTS)):
        out = tmp_path / name
        shutil.copytree(result.out / "data", out / "data")
        with monkeypatch.context() as mp:
            mp.setattr(cal, "LOCAL_WEIGHTS", weights)
            mp.setattr(cal, "_MIN_LOCAL_ROWS", 3)
            if name == "blend":
                mp.setattr(cal, "local_weights", lambda *a: ({"conv2d": 0.5, "linear": 1.0}, {"conv2d": [0.2] * 5,
                                                                                                  "linear": [0.2] * 5}))
            runs[name] = cal.calibrate_machine(out, progress=False, register=False, tune=False,
                                               base="cpu_torch_1t", **SMALL)
    plain, blend = runs["plain"].predictor(), runs["blend"].predictor()
    df = profilers.read_dataset(tmp_path / "blend" / "data" / "modules.parquet")
    column = jaxlat.statistic_column(blend.statistic)
    for t, w in (("conv2d", 0.5), ("linear", 1.0)):
        rows = df[df["module"] == t]
        x = plain._encode(t, rows)
        reg = piecewise_roofline_regressor()
        params = reg.fit(None, x, np.log(rows[column].to_numpy(float)), names=plain.models[t].feature_names)
        want = (1 - w) * np.log(plain.predict(rows)["latency_ms"].to_numpy(float)) + w * jaxlat.predict_batch(reg, params, x)[:, 0]
        np.testing.assert_allclose(np.log(blend.predict(rows)["latency_ms"].to_numpy(float)), want, rtol=1e-4, atol=1e-4)
    assert blend.models["linear"].regressor.name == "roofline_pw" and blend.models["conv2d"].regressor.name == "blend"
    assert blend.device["calibration"]["roofline_shares"] == {"conv2d": 0.5, "linear": 1.0}
    assert "roofline_shares" not in plain.device["calibration"]
    # Whole models are not touched: the other part composes them.
    records = [r for r in cal.read_records(tmp_path / "blend" / "data" / "networks.jsonl") if r.measured]
    np.testing.assert_allclose(blend.predict_models(records)["latency_ms"], plain.predict_models(records)["latency_ms"])
    card = runs["blend"].card["choice"]["roofline"]
    assert card["weights"] == {"conv2d": 0.5, "linear": 1.0} and card["held_out_without"]["n"] > 0
    text = (tmp_path / "blend" / "card.md").read_text()
    assert "blended with a piecewise roofline fitted on this machine's rows of the type" in text
    assert "conv2d 0.5, linear 1" in text and " without the blend, " in text
