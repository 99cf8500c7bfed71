"""A new machine, end to end: calibrate within a budget, then check the calibrated predictor on
fresh module configs and on real architectures measured on this machine, against the labels'
own test-retest agreement and beside every shipped predictor uncalibrated.

  python benchmarks/new_machine.py --work runs/new_machine --budget-min 10

Steps (each resumable: run the same command again after an interruption):
1. `jaxlat calibrate --budget-min B --no-register` into WORK/cal, starting only from the shipped
   predictors of other machines (one measured on this CPU model is excluded, so that the figures
   are those of a machine nobody measured);
2. `jaxlat-profile torch`: N fresh module configs over every type (Latin hypercube, a seed the
   calibration does not use, configs the calibration measured dropped), with a sample measured
   again at the end of the run: the labels' test-retest ceiling;
3. `jaxlat-profile zoo`: the zoo's real architectures at batch 1 and 8, in rounds; then the
   zoo once more (`--zoo-retest`, on by default): the whole models' test-retest ceiling;
4. each further `--objectives` entry: the calibration fitted again on a copy of its
   measurements with that objective (`jaxlat calibrate --objective`; nothing measured again);
5. every predictor (calibrated, refitted, and each shipped one as it ships) on both, in its own
   statistic (the zoo against its first pass, and against its second).

Writes WORK/new_machine.json and .md, or `--name` into `--out`. Nothing else should run on the
machine meanwhile: the figures are measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cli, machine, machine_markdown, write_results

import jaxlat
import profilers

#: The acceptance bars of a new machine (see the README's "Calibrate to your machine").
MODULE_SHARE_OF_CEILING = 0.9
ZOO_WITHIN_10 = 22


def objectives_arg(value: str) -> list[str]:
    """`--objectives`: distinct names of `jaxlat calibrate --objective`, at least one."""
    names = [o.strip() for o in value.split(",") if o.strip()]
    allowed = jaxlat.CALIBRATION_OBJECTIVES
    bad = [o for o in names if o not in allowed]
    if not names or bad or len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not valid: expected distinct names among {', '.join(allowed)}, comma-separated")
    return names


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def run(cmd: list[str]) -> None:
    """A measuring command in its own process, in the measurement environment."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "2147483647", "MALLOC_TRIM_THRESHOLD_": "2147483647"}
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def this_machines_shipped() -> list[str]:
    """Shipped predictors measured on this machine's CPU model: left out of the calibration."""
    here = profilers.host_fingerprint()["cpu_model"]
    return [p.name for p in jaxlat.list_predictors(calibrated=False) if p.hardware == here]


def fresh_configs(work: Path, n_per_type: int, seed: int, min_run_time_s: float, retest: int) -> Path:
    """Step 2: module configs of every type the calibration did not measure, with a retest."""
    out = work / "fresh.parquet"
    run([cli("jaxlat-profile"), "torch", "--module", "all", "--n", str(n_per_type), "--sampler", "lhs",
         "--seed", str(seed), "--batch", "1,8", "--threads", "1", "--min-run-time", str(min_run_time_s),
         "--retest", str(retest), "--no-progress", "--out", str(out)])
    return out


def module_scores(pred: Any, df: Any) -> dict[str, Any]:
    """±10 % accuracy of a predictor on module rows, in its own statistic (over all and per
    module type), and the rows' count."""
    truth = df[jaxlat.statistic_column(pred.statistic)].to_numpy(np.float64)
    keep = df["module"].isin(pred.modules).to_numpy()
    out = pred.predict(df[keep])
    latency_ms = out["latency_ms"].to_numpy(np.float64)
    m = jaxlat.evaluate(truth[keep], latency_ms)
    hit = np.abs(latency_ms / truth[keep] - 1) <= 0.10
    types = df["module"].to_numpy()[keep]
    per_type = {t: float(hit[types == t].mean()) for t in sorted(set(types))}
    return {"n": int(keep.sum()), "acc10": m["acc10"], "acc20": m["acc20"], "mape": m["mape"], "per_type": per_type}


def zoo_scores(pred: Any, records: list[Any]) -> dict[str, Any]:
    """Whole models within ±10 % of their measured latency (the predictor's statistic); and, as
    a diagnostic of a common level (the machine as a whole faster or slower than when it was
    calibrated), within ±10 % once every ratio is divided by their median (`level_removed`)."""
    table = pred.predict_models(records)
    ratio = (table["latency_ms"] / table["measured_ms"]).to_numpy(np.float64)
    level = float(np.median(ratio))
    return {"n": len(records), "within10": int(np.sum(np.abs(ratio - 1) <= 0.10)),
            "median_abs_err": float(np.median(np.abs(ratio - 1))),
            "median_ratio": level, "within10_level_removed": int(np.sum(np.abs(ratio / level - 1) <= 0.10)),
            "ratio": {n: float(r) for n, r in zip(table["name"], ratio)}}


def predictor_scores(pred: Any, df: Any, fresh: Path, records: list[Any], records_again: list[Any]) -> dict[str, Any]:
    """One predictor on a run's fresh module rows `df` (from the dataset `fresh`, whose retest
    is the ceiling) and its zoo passes, each in the predictor's statistic."""
    return {"statistic": pred.statistic, "modules": module_scores(pred, df), "zoo": zoo_scores(pred, records),
            "zoo_second_pass": zoo_scores(pred, records_again) if records_again else None,
            "zoo_retest": zoo_retest(records, records_again, pred.statistic),
            "ceiling": profilers.retest_ceiling(fresh, pred.statistic)
            or {"n": 0, "acc10": float("nan"), "acc20": float("nan")}}


def zoo_retest(first: list[Any], second: list[Any], statistic: str) -> dict[str, Any]:
    """How the zoo's second pass repeats its first, in `statistic` (`profilers.retest_agreement`
    over the records measured in both), with the count of records within ±10 %."""
    again = {r.name: r for r in second}
    both = [r for r in first if r.name in again]
    if not both:
        return {"n": 0}
    a = [jaxlat.measured_ms(r, statistic) for r in both]
    b = [jaxlat.measured_ms(again[r.name], statistic) for r in both]
    out = profilers.retest_agreement(a, b)
    return {"n": len(both), "within10": round(out["acc10"] * len(both)), **out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/new_machine", help="measurements and the calibration (resumable)")
    p.add_argument("--budget-min", type=float, default=10.0, help="calibration budget, minutes of measurement")
    p.add_argument("--fresh-per-type", type=int, default=14,
                   help="fresh configs per module type and batch size (11 types x 2 batches: 14 gives 308)")
    p.add_argument("--retest", type=int, default=30, help="fresh configs measured again at the end")
    p.add_argument("--models", default="all", help="zoo models (default: all 12)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per zoo model and batch size")
    p.add_argument("--zoo-retest", action=argparse.BooleanOptionalAction, default=True,
                   help="measure the zoo a second time at the end (its test-retest; default on)")
    p.add_argument("--objectives", default="split,both", type=objectives_arg,
                   help=f"calibration objectives (`jaxlat calibrate --objective`: "
                        f"{', '.join(jaxlat.CALIBRATION_OBJECTIVES)}), comma-separated: the first is the "
                        "run's calibration; each other one is fitted on a copy of its measurements "
                        "(nothing measured again) and scored beside it")
    p.add_argument("--seed", type=int, default=1000, help="seed of the fresh configs (not the calibration's)")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", default="new_machine")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    excluded = this_machines_shipped()
    t0 = time.perf_counter()

    objectives = args.objectives
    cal = work / "cal"
    cmd = [cli("jaxlat"), "calibrate", "--budget-min", str(args.budget_min), "--no-register", "--no-progress"]
    cmd += ["--exclude-base", ",".join(excluded)] if excluded else []
    run(cmd + ["--out", str(cal), "--objective", objectives[0]])
    t_cal = time.perf_counter() - t0
    fresh = fresh_configs(work, args.fresh_per_type, args.seed, 0.1, args.retest)
    zoo, zoo_again = work / "zoo.jsonl", work / "zoo_retest.jsonl"
    for out in [zoo] + ([zoo_again] if args.zoo_retest else []):
        run([cli("jaxlat-profile"), "zoo", "--model", args.models, "--batch", "1,8", "--rounds", str(args.rounds),
             "--threads", "1", "--no-progress", "--out", str(out)])
    t_all = time.perf_counter() - t0
    refits = {}
    for o in objectives[1:]:  # the same measurements, another objective: the calibration fits again
        refits[o] = work / f"cal_{o}"
        if not (refits[o] / "card.json").exists():
            shutil.copytree(cal / "data", refits[o] / "data", dirs_exist_ok=True)
        run(cmd + ["--out", str(refits[o]), "--objective", o])

    df = profilers.read_dataset(fresh)
    calibrated_keys = set(profilers.read_dataset(cal / "data" / "modules.parquet")["config_key"])
    overlap = df["config_key"].isin(calibrated_keys).to_numpy()
    df = df[~overlap].reset_index(drop=True)
    records = profilers.load_records(zoo)
    records_again = profilers.load_records(zoo_again) if args.zoo_retest else []
    card = json.loads((cal / "card.json").read_text())

    rows = {}
    calibrated = jaxlat.load_predictor(cal / "predictor")
    others = [(f"calibrated, objective {o}", jaxlat.load_predictor(d / "predictor"))
              for o, d in refits.items()]
    for label, pred in [("calibrated", calibrated)] + others + [
            (f"{n}, uncalibrated", jaxlat.load_predictor(n)) for n in (i.name for i in
                                                                          jaxlat.list_predictors(calibrated=False))]:
        rows[label] = predictor_scores(pred, df, fresh, records, records_again)
    cal_row = rows["calibrated"]
    share = cal_row["modules"]["acc10"] / cal_row["ceiling"]["acc10"] if cal_row["ceiling"]["acc10"] else float("nan")
    payload = {
        "machine": machine(), "settings": vars(args), "excluded_bases": excluded,
        "wall_s": {"calibrate": t_cal, "all_measurement": t_all},
        "card": {k: card.get(k) for k in ("choice", "statistic", "statistic_reason", "measured", "test_retest", "held_out")
                 if k in card},
        "refits": {o: {k: c.get(k) for k in ("choice", "held_out")} for o, c in
                   ((o, json.loads((d / "card.json").read_text())) for o, d in refits.items())},
        "fresh_dropped_as_calibrated": int(overlap.sum()), "results": rows,
        "acceptance": {"module_share_of_ceiling": share, "module_bar": MODULE_SHARE_OF_CEILING,
                       "zoo_within10": cal_row["zoo"]["within10"], "zoo_bar": ZOO_WITHIN_10,
                       "met": bool(share >= MODULE_SHARE_OF_CEILING and cal_row["zoo"]["within10"] >= ZOO_WITHIN_10)},
    }
    lines = [
        "# A new machine: calibrate, then fresh modules and real architectures\n",
        machine_markdown(payload["machine"]),
        (f"Calibration: `jaxlat calibrate --budget-min {args.budget_min:g} --objective {objectives[0]}` "
         f"({'excluding ' + ', '.join(excluded) if excluded else 'no shipped predictor of this CPU model to exclude'});"
         f" {t_cal / 60:.1f} min wall. Then {len(df)} fresh module configs ({int(overlap.sum())} dropped as "
         f"calibrated) and {len(records)} zoo records ({args.rounds} round{'s' if args.rounds > 1 else ''} each); "
         f"{t_all / 60:.1f} min in all."
         + "".join(f" `calibrated, objective {o}`: the same measurements, fitted with `--objective {o}`."
                   for o in refits)
         + "\n"),
        ("| predictor | statistic | modules ±10 % | test-retest ±10 % (n) | share of ceiling | zoo within ±10 % | "
         "zoo median abs. error | zoo median predicted / measured (within ±10 % with that level removed) | "
         "zoo, second pass | zoo test-retest within ±10 % (ratio) |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        c, z, z2, zr = r["ceiling"], r["zoo"], r["zoo_second_pass"], r["zoo_retest"]
        sh = r["modules"]["acc10"] / c["acc10"] if c["acc10"] else float("nan")
        lines.append(f"| {label} | {r['statistic']} | {r['modules']['acc10']:.3f} | {c['acc10']:.3f} ({c['n']}) | "
                     f"{sh:.2f} | {z['within10']} of {z['n']} | {z['median_abs_err']:.3f} | "
                     f"{z['median_ratio']:.3f} ({z['within10_level_removed']}) | "
                     + (f"{z2['within10']} of {z2['n']} | " if z2 else "- | ")
                     + (f"{zr['within10']} of {zr['n']} ({zr['ratio']:.3f}) |" if zr["n"] else "- |"))
    a = payload["acceptance"]
    lines += ["", (f"Acceptance: modules at {a['module_share_of_ceiling']:.2f} of the ceiling (bar "
                   f"{MODULE_SHARE_OF_CEILING}), zoo {a['zoo_within10']} of {cal_row['zoo']['n']} within ±10 % (bar "
                   f"{ZOO_WITHIN_10} of 24): {'met' if a['met'] else 'not met'}."), "",
              "Per zoo record, calibrated predicted / measured:", ""]
    lines += [f"- {n}: {r:.3f}" for n, r in cal_row["zoo"]["ratio"].items()]
    lines += ["", ("The calibrations' choices and their own held-out part (never fitted or chosen on), "
                   "±10 %:"), ""]
    for o, c in [(objectives[0], card)] + [(o, payload["refits"][o]) for o in refits]:
        held = c["held_out"]["table"][0]
        lines.append(f"- objective {o}: {c['choice']['label']}; held-out modules "
                     f"{_fmt(held['modules']['acc10'])}, networks {_fmt(held['networks']['acc10'])}")
    lines += ["", ("The zoo's test-retest: its second pass against its first, in each predictor's statistic (the "
                   "ratio: second / first, median over records, the machine's drift between the passes).")]
    lines += ["", f"Command: `python benchmarks/new_machine.py {shlex.join(sys.argv[1:] if argv is None else argv)}`\n"]
    print(write_results(args.out, args.name, payload, "\n".join(lines)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
