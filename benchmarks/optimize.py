"""Optimizers on the predictor, judged by measurement on this CPU.

Early exits: a multi-exit NAS-Bench-201 network (c=16, 3 cells per stage, 16x16 digits, 5 exits)
trained on digits; exit costs predicted; the learned scheduler (EENet-style) against BranchyNet's
entropy thresholds and MSDNet's geometric schedule at several budgets; the exits' prefixes then
measured end to end, and the measured mean latency per sample compared with each budget.

Design selection: variants of the MobileNet-like space x {torch fp32, LiteRT fp32, LiteRT int8};
a switch table over utilization for several p90 SLOs; every chosen design measured at the
utilization it was chosen for (background load held by the load generator), beside the
hardware-unaware choice (the design best at utilization 0, kept at every level); the switch
lookup timed.

  python benchmarks/optimize.py --tflite-predictor runs/predictors/cpu_tflite_1t

Writes optimize.json and optimize.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import STATISTICS, calibrate_to_records, machine, machine_markdown, write_results

RESULTS = Path(__file__).parent / "results"
EE_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
EE_EXITS = [(0, 3), (1, 1), (1, 3), (2, 1), (2, 3)]
VARIANTS = {  # MobileNet-like space at 128x128: small, medium, large
    "small": "k3_e1-k3_e3-skip-k3_e3-skip-skip-k3_e3-skip-skip-k3_e3-skip-k3_e3-skip@0.5,0.5,0.5,0.5,0.5,0.5",
    "medium": "k3_e3-k3_e3-k3_e3-k5_e3-k3_e3-k3_e3-k5_e3-k3_e3-k3_e3-k5_e3-k3_e3-k5_e3-k3_e3@1,1,1,1,1,1",
    "large": "k5_e6-k5_e6-k5_e6-k5_e6-k5_e6-k5_e6-k7_e6-k5_e6-k5_e6-k7_e6-k5_e6-k7_e6-k5_e6@1.5,1.5,1.5,1.5,1.5,1.5",
}


def _measure(jobs_json: Path, out_jsonl: Path, rounds: int) -> None:
    """Measure the jobs in a subprocess with the measurement environment."""
    from profilers import MEASUREMENT_ENV

    subprocess.run([sys.executable, __file__, "--phase", "measure-jobs", "--jobs", str(jobs_json), "--out",
                    str(out_jsonl), "--rounds", str(rounds)], env={**os.environ, **MEASUREMENT_ENV}, check=True)


def measure_jobs(jobs_json: Path, out_jsonl: Path, rounds: int) -> None:
    """Each job: {name, kind: ee|design, ...}; torch or TFLite at its threads and utilization."""
    import torch

    from profilers import MODEL_TIMER, TFLiteRuntime, TorchRuntime, profile_many
    from profilers.spaces import NB201, decode, mobile_space

    jobs = json.loads(jobs_json.read_text())
    by_setting: dict[tuple, list] = {}
    for j in jobs:
        by_setting.setdefault((j["runtime"], j.get("dtype", "fp32"), j["threads"], j["utilization"]), []).append(j)
    for (runtime, dtype, threads, util), group in by_setting.items():
        built = []
        for j in group:
            if j["kind"] == "ee":
                space = dataclasses.replace(NB201, cells=3, resolution=16)
                arch = space.parse(j["arch"])
                exits = [tuple(e) for e in j["exits"]]

                def build(space=space, arch=arch, exits=exits):
                    return space.prefix_torch_model(arch, exits), (torch.randn(*space.input_shape()),), {}
            else:
                space = mobile_space(resolution=128)
                arch = decode(space, j["arch"])

                def build(space=space, arch=arch):
                    return space.torch_model(arch), (torch.randn(*space.input_shape()),), {}
            built.append((j["name"], build))
        rt = TorchRuntime() if runtime == "torch" else TFLiteRuntime(Path("runs/optimize_models"), dtype=dtype)
        profile_many(out_jsonl, built, threads=threads, utilization=util, timer=MODEL_TIMER, rounds=rounds,
                     chunk_size=len(built), runtime=rt, progress=False)


def calibrate(pred, jobs: list[dict], tag: str, rounds: int):
    """Calibration of `pred` to this machine (`jaxlat.transfer.calibrate`, reuse or affine in
    log latency) from measured jobs; returns the `Calibration`."""
    from profilers import load_records

    jpath, rpath = RESULTS / f"optimize_{tag}_calibration_jobs.json", RESULTS / f"optimize_{tag}_calibration_records.jsonl"
    jpath.write_text(json.dumps(jobs))
    rpath.unlink(missing_ok=True)
    _measure(jpath, rpath, rounds)
    return calibrate_to_records(pred, load_records(rpath), tag)


def _cal_md(cal: dict | None, what: str) -> str:
    if cal is None:
        return ""
    if cal.get("log_affine"):
        a, b = cal["log_affine"]
        form = f"ms = {np.exp(a):.3f} x predicted ** {b:.3f}"
    else:
        form = "scale, bias and per-feature reweighting of the log prediction"
    return (f"{what} calibrated to this machine from K={cal['k']} measured networks (`jaxlat.transfer.adapt`, "
            f"{cal['method']}, chosen by leave-one-out error): {form}, Spearman on the K {cal['spearman']:.3f}.\n\n")


def early_exits(args, pred) -> tuple[dict, list[str]]:
    from jaxlat.nas import digits_data
    from jaxlat.optimize import (
        eenet_policy,
        entropy_policy,
        evaluate_policy,
        exit_costs_ms,
        exit_outputs,
        geometric_policy,
        train_multi_exit,
    )
    from jaxlat.transfer import spanning_archs
    from profilers import load_records
    from profilers.spaces import NB201

    space = dataclasses.replace(NB201, cells=3, resolution=16)
    arch = space.parse(EE_ARCH)
    data = digits_data(16)
    t0 = time.perf_counter()
    model = train_multi_exit(space, arch, EE_EXITS, data, epochs=args.ee_epochs)
    train_s = time.perf_counter() - t0
    val, test = exit_outputs(model, data.x_arch, data.y_arch), exit_outputs(model, data.x_test, data.y_test)
    # The exits, and the calibration networks (cells spanning the space's latency range, a random
    # number of exits) measured in the same rounds of one process: the machine's drift hits both alike.
    jobs = [{"name": f"exit{k}", "kind": "ee", "arch": EE_ARCH, "exits": [list(e) for e in EE_EXITS[: k + 1]],
             "runtime": "torch", "threads": 1, "utilization": 0.0} for k in range(len(EE_EXITS))]
    rng = np.random.default_rng(1)
    cal_jobs = [{"name": f"cal{i}", "kind": "ee", "arch": space.encode(a),
                 "exits": [list(e) for e in EE_EXITS[: int(rng.integers(1, len(EE_EXITS) + 1))]],
                 "runtime": "torch", "threads": 1, "utilization": 0.0}
                for i, a in enumerate(spanning_archs(space, args.calibrate, seed=20_000))]
    jpath, rpath = RESULTS / "optimize_ee_jobs.json", RESULTS / "optimize_ee_records.jsonl"
    jpath.write_text(json.dumps(jobs + cal_jobs))
    rpath.unlink(missing_ok=True)
    _measure(jpath, rpath, args.rounds)
    records = {r.name: r for r in load_records(rpath)}
    mcosts = np.array([records[f"exit{k}"].measured[STATISTICS[args.statistic]] for k in range(len(EE_EXITS))])
    median_costs = np.array([records[f"exit{k}"].measured["latency_ms"] for k in range(len(EE_EXITS))])
    cal = None
    if args.calibrate:
        calibration = calibrate_to_records(pred, [records[j["name"]] for j in cal_jobs], "ee",
                                           methods=("reuse", "affine", "adaproxy"), statistic=args.statistic)
        cal = calibration.as_json()
        costs = calibration.predict([space.prefix_record(arch, EE_EXITS[: k + 1]) for k in range(len(EE_EXITS))])
    else:
        costs = exit_costs_ms(pred, space, arch, EE_EXITS)
    rows = []
    for f in args.budget_fracs:
        budget = float(costs[0] + f * (costs[-1] - costs[0]))
        for make in (eenet_policy, entropy_policy, geometric_policy):
            pol = make(val, costs, budget)
            r = evaluate_policy(pol, test, costs)
            r["measured_mean_ms"] = float(np.asarray(r["exit_distribution"]) @ mcosts)
            rows.append({"budget_ms": budget, **r})
    accs = {(r["budget_ms"], r["policy"]): r["accuracy"] for r in rows}
    budgets = sorted({r["budget_ms"] for r in rows})
    wins = sum(accs[(b, "learned (EENet)")] >= max(accs[(b, "entropy (BranchyNet)")], accs[(b, "geometric (MSDNet)")])
               for b in budgets)
    learned = [r for r in rows if r["policy"] == "learned (EENet)"]
    within = sum(abs(r["measured_mean_ms"] / r["budget_ms"] - 1) <= 0.10 for r in learned)
    statistic = ("median" if args.statistic == "median" else
                 f"10th percentile of the pooled samples; medians {np.round(median_costs, 3).tolist()}")
    md = ["## Early exits\n\n",
          f"Network: NAS-Bench-201 skeleton, c=16, 3 cells per stage, 16x16 inputs, cell `{EE_ARCH}`, exits after "
          f"{EE_EXITS}; trained {args.ee_epochs} epochs on digits ({train_s:.0f} s). " + _cal_md(cal, "Exit costs") +
          "Exit costs (ms): predicted "
          f"{np.round(costs, 3).tolist()}, measured {np.round(mcosts, 3).tolist()} (torch, 1 thread, "
          f"{args.rounds} rounds, the exits and the calibration networks in the same rounds; statistic: {statistic}). "
          f"Exit accuracy on test: {np.round(test.correct.mean(0), 3).tolist()}.\n\n",
          ("| budget ms | policy | test accuracy | predicted mean ms | measured mean ms | measured / budget | exits |\n"
          "|---|---|---|---|---|---|---|\n")]
    for r in rows:
        md.append(f"| {r['budget_ms']:.3f} | {r['policy']} | {r['accuracy']:.3f} | {r['mean_cost_ms']:.3f} | "
                  f"{r['measured_mean_ms']:.3f} | {r['measured_mean_ms'] / r['budget_ms']:.3f} | "
                  f"{np.round(r['exit_distribution'], 2).tolist()} |\n")
    md.append(f"\nThe learned scheduler's accuracy is at least both baselines' at {wins} of {len(budgets)} budgets; "
              f"its measured mean latency lies within 10 % of the budget at {within} of {len(budgets)}.\n\n")
    return {"rows": rows, "calibration": cal, "predicted_costs_ms": costs.tolist(), "measured_costs_ms": mcosts.tolist(),
            "measured_median_costs_ms": median_costs.tolist(), "wins": int(wins), "within_10pct": int(within), "n_budgets": len(budgets)}, md


def designs(args, pred_torch, pred_tflite) -> tuple[dict, list[str]]:
    from jaxlat.optimize import SLO, DesignSpace, Variant, calibrate_table, choose, switch_table
    from profilers import load_records
    from profilers.spaces import decode, mobile_space

    space = mobile_space(resolution=128)
    accuracy = json.loads(args.accuracy) if args.accuracy else {"small": 0.90, "medium": 0.95, "large": 0.97}
    variants = [Variant(n, {1: space.record(decode(space, a), name=n)},
                        {"fp32": accuracy[n], "int8": accuracy[n] - args.int8_drop}) for n, a in VARIANTS.items()]
    predictors = {("torch", "fp32"): pred_torch}
    if pred_tflite is not None:
        predictors |= {("tflite", "fp32"): pred_tflite}
        if args.tflite_int8:
            predictors |= {("tflite", "int8"): pred_tflite}
    ds = DesignSpace(variants, predictors, threads=(1,), batch_sizes=(1,))
    grid = np.round(np.linspace(0, 1, 21), 3)
    table = ds.evaluate(grid)
    cal = None
    if args.calibrate:  # the torch predictor was trained on another CPU
        cal_jobs = [{"name": f"cal{i}", "kind": "design", "arch": space.encode(space.random_arch(30_000 + i)),
                     "runtime": "torch", "dtype": "fp32", "threads": 1, "utilization": 0.0} for i in range(args.calibrate)]
        calibration = calibrate(pred_torch, cal_jobs, "design", args.rounds)
        table = calibrate_table(table, calibration.log_affine, backend="torch")
        cal = calibration.as_json()
    slos = {f"p90<={x:g}ms": SLO(max_p90_ms=x) for x in args.slo_ms}
    sw = switch_table(table, slos)
    sw.save(RESULTS / "optimize_switch.json")
    # Switch time: a lookup per utilization change.
    us = np.random.default_rng(0).uniform(0, 1, 20000)
    t0 = time.perf_counter()
    for u in us:
        sw.lookup(next(iter(slos)), u)
    lookup_us = (time.perf_counter() - t0) / len(us) * 1e6
    # Cases: each SLO at each evaluation level; aware choice vs the choice made at utilization 0.
    cases, jobs = [], []
    for name, slo in slos.items():
        unaware = choose(table, slo, utilization=0.0)
        for u in args.levels:
            aware_key = sw.lookup(name, u)
            aware = sw.designs[aware_key] if aware_key else None
            for kind, d in (("aware", aware), ("unaware", unaware)):
                if d is None:
                    cases.append({"slo": name, "utilization": u, "kind": kind, "design": None})
                    continue
                jname = f"{d['variant']}|{d['backend']}|{d['precision']}|t{d['threads']}|u{u:g}"
                cases.append({"slo": name, "slo_ms": slo.max_p90_ms, "utilization": u, "kind": kind, "job": jname,
                              "design": {k: d[k] for k in ("variant", "backend", "precision", "threads")}})
                jobs.append({"name": jname, "kind": "design", "arch": VARIANTS[d["variant"]], "runtime": d["backend"],
                             "dtype": d["precision"], "threads": int(d["threads"]), "utilization": float(u)})
    uniq = list({j["name"]: j for j in jobs}.values())
    jpath, rpath = RESULTS / "optimize_design_jobs.json", RESULTS / "optimize_design_records.jsonl"
    jpath.write_text(json.dumps(uniq))
    rpath.unlink(missing_ok=True)
    _measure(jpath, rpath, args.rounds)
    measured = {r.name: r.measured for r in load_records(rpath)}
    for c in cases:
        if c.get("job"):
            m = measured[c["job"]]
            c["measured_median_ms"], c["measured_p90_ms"] = m["latency_ms"], m["p90_ms"]
            c["met"] = bool(m["p90_ms"] <= c["slo_ms"])
            row = table[(table.variant == c["design"]["variant"]) & (table.backend == c["design"]["backend"]) &
                        (table.precision == c["design"]["precision"]) & np.isclose(table.utilization, c["utilization"])]
            c["predicted_p90_ms"] = float(row["p90_ms"].iloc[0]) if len(row) else None
    aware = [c for c in cases if c["kind"] == "aware"]
    unaware = [c for c in cases if c["kind"] == "unaware"]
    met_aware = sum(c.get("met", False) for c in aware)
    met_unaware = sum(c.get("met", False) for c in unaware)
    md = ["## Design selection under SLOs\n\n",
          (f"Variants (MobileNet-like space, 128x128, accuracies as given: {accuracy}; int8 = fp32 - {args.int8_drop}) x "
          f"{', '.join('/'.join(k) for k in predictors)}, 1 thread, batch 1. Switch table over {len(grid)} utilization "
          f"levels for {len(slos)} SLO sets; lookup {lookup_us:.2f} us per utilization change (median of "
          f"{len(us)} calls' mean).\n\n"), _cal_md(cal, "Torch latencies"),
          "| SLO | utilization | choice | design | predicted p90 ms | measured p90 ms | met |\n|---|---|---|---|---|---|---|\n"]
    for c in cases:
        d = c.get("design")
        md.append(f"| {c['slo']} | {c['utilization']:g} | {c['kind']} | "
                  f"{'none feasible' if d is None else '/'.join(str(v) for v in d.values())} | "
                  f"{c.get('predicted_p90_ms') or float('nan'):.3f} | {c.get('measured_p90_ms', float('nan')):.3f} | "
                  f"{c.get('met', '')} |\n")
    md.append(f"\nUtilization-aware choices met their SLO in {met_aware} of {len(aware)} cases "
              f"({met_aware / max(1, len(aware)):.2f}); the hardware-unaware choice (best at utilization 0, kept) in "
              f"{met_unaware} of {len(unaware)}.\n\n")
    return {"cases": cases, "calibration": cal, "lookup_us": lookup_us, "met_aware": met_aware, "met_unaware": met_unaware,
            "n_cases": len(aware)}, md


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", choices=("all", "measure-jobs"), default="all")
    ap.add_argument("--part", choices=("all", "ee", "designs"), default="all",
                    help="run one part; the other part's results are kept from optimize.json")
    ap.add_argument("--jobs")
    ap.add_argument("--out")
    ap.add_argument("--tflite-predictor", help="a LiteRT predictor directory (adds the tflite designs)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ee-epochs", type=int, default=15)
    ap.add_argument("--budget-fracs", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8])
    ap.add_argument("--slo-ms", type=float, nargs="+", default=[4.0, 8.0, 16.0])
    ap.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    ap.add_argument("--accuracy", help="JSON variant -> fp32 accuracy")
    ap.add_argument("--int8-drop", type=float, default=0.005)
    ap.add_argument("--tflite-int8", action="store_true", help="add LiteRT int8 designs (the predictor must know int8)")
    ap.add_argument("--statistic", choices=tuple(STATISTICS), default="median",
                    help="early exits: what a measured latency is (median, or p10 where the machine's speed wanders)")
    ap.add_argument("--calibrate", type=int, default=0, metavar="K",
                    help="adapt the torch predictor to this machine from K measured networks first (0: as is)")
    args = ap.parse_args()
    if args.phase == "measure-jobs":
        measure_jobs(Path(args.jobs), Path(args.out), args.rounds)
        return
    from jaxlat import LatencyPredictor, load_predictor

    pred = load_predictor("cpu_torch_1t")
    tfl = LatencyPredictor.load(args.tflite_predictor) if args.tflite_predictor else None
    previous = json.loads((RESULTS / "optimize.json").read_text()) if (RESULTS / "optimize.json").exists() else {}
    if args.part in ("all", "ee"):
        ee, md_ee = early_exits(args, pred)
    else:  # keep the earlier part's results and text
        ee, md_ee = previous.get("early_exits"), previous.get("markdown_ee", [])
    if args.part in ("all", "designs"):
        ds, md_ds = designs(args, pred, tfl)
    else:
        ds, md_ds = previous.get("designs"), previous.get("markdown_designs", [])
    meta = {"machine": machine(), "args": vars(args)}
    md = ["# Optimizers on the predictor, measured\n\n", machine_markdown(meta["machine"]), "\n", *md_ee, *md_ds]
    path = write_results(RESULTS, "optimize", {"meta": meta, "early_exits": ee, "designs": ds, "markdown_ee": md_ee,
                                               "markdown_designs": md_ds}, "".join(md))
    print(path.read_text())


if __name__ == "__main__":
    main()
