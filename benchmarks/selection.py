"""Does per-type auto-selection pay? On held-out configs of each CPU dataset, a predictor whose
regressor per module type is chosen by cross-validation (`regressor="auto"`) against MEDN for
every type, both trained on the same rows with the same settings.

  python benchmarks/selection.py --data cpu_torch_1t=data/cpu_torch_1t.parquet \
      --data epyc_torch_1t=data/epyc_torch_1t.parquet:p10 --epochs 150

Per dataset: a test split by config group (20 %, neither predictor sees it); the selection runs
its K folds on the rest, and both predictors are then fitted on all of the rest. Reports ±10 %
accuracy per module type and overall on the test rows, the gain in points, the selection's own
out-of-fold figures beside them (optimistic: chosen on those folds), and the labels' test-retest
agreement where the dataset recorded one. Every candidate is also fitted for every type on all
the rest, which bounds what any per-type choice among them can gain on the test rows: each
type's best candidate picked on the test rows themselves (an upper bound), and picked on half
of the test configs and scored on the other half. Writes selection.json and selection.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, machine_markdown, write_results

import jaxlat
import profilers

CANDIDATES = ("medn", "mlp", "poly2", "ridge", "roofline")


def hits10(pred: jaxlat.LatencyPredictor, df: Any, column: str) -> np.ndarray:
    """Per row of `df`: is `pred` within ±10 % of the measured latency?"""
    out = pred.predict(df)["latency_ms"].to_numpy(np.float64)
    return np.abs(out / df[column].to_numpy(np.float64) - 1) <= 0.10


def per_type_acc10(ok: np.ndarray, df: Any) -> dict[str, float]:
    """±10 % accuracy from per-row hits `ok`, per module type and over all (`all`)."""
    acc = {m: float(ok[(df["module"] == m).to_numpy()].mean()) for m in sorted(set(df["module"]))}
    return {**acc, "all": float(ok.mean())}


def _best(hits: dict[str, np.ndarray], rows: np.ndarray) -> str:
    """The candidate with the most hits on `rows` (MEDN on ties)."""
    return max(hits, key=lambda c: (int(hits[c][rows].sum()), c == "medn"))


def selection_bounds(hits: dict[str, np.ndarray], test: Any, seed: int) -> dict[str, Any]:
    """What a per-type choice among the candidates (`hits`: per-row test hits of each, fitted
    on all the training rows) can gain over MEDN for every type, in points on all test rows:

    - `oracle`: each type's best candidate chosen on the test rows themselves: an upper bound
      for any per-type selection over these candidates (biased up: the best of noisy estimates);
    - `split_half`: each type's choice made on half of its test configs and scored on the
      other half (both ways, 20 random halvings, averaged): what a choice made with that many
      independent rows per type, and no training-fold shift, gains."""
    modules = test["module"].to_numpy()
    oracle = {m: _best(hits, modules == m) for m in sorted(set(modules))}
    oracle_ok = np.concatenate([hits[oracle[m]][modules == m] for m in oracle])
    medn_ok = np.concatenate([hits["medn"][modules == m] for m in oracle])
    gains = []
    for k in range(20):  # halves by config group, as the test split itself
        _, first = jaxlat.split_by_config(test.assign(_row=np.arange(len(test))), test_frac=0.5, seed=seed + 1 + k)
        half = np.isin(np.arange(len(test)), first["_row"].to_numpy())
        for a, b in ((half, ~half), (~half, half)):
            got = sum(int(hits[_best(hits, (modules == m) & a)][(modules == m) & b].sum())
                      - int(hits["medn"][(modules == m) & b].sum()) for m in oracle)
            gains.append(100 * got / max(int(b.sum()), 1))
    return {"oracle_choice": oracle, "oracle_gain_points": 100 * (oracle_ok.mean() - medn_ok.mean()),
            "split_half_gain_points": float(np.mean(gains)), "split_half_gain_sd": float(np.std(gains))}


def one_dataset(name: str, path: str, statistic: str, args: argparse.Namespace) -> dict[str, Any]:
    df = profilers.read_dataset(path)
    if args.rows_per_type:
        df = df.groupby("module", group_keys=False).head(args.rows_per_type)
    train, test = jaxlat.split_by_config(df, test_frac=0.2, seed=args.seed)
    settings = jaxlat.TrainConfig(epochs=args.epochs)
    column = jaxlat.statistic_column(statistic)
    t0 = time.perf_counter()
    selected = jaxlat.train_predictor(
        train, regressor="auto", train=settings, statistic=statistic, seed=args.seed,
        select={"mode": "accuracy", "folds": args.folds, "candidates": CANDIDATES, "progress": False})
    t_sel = time.perf_counter() - t0
    # The same folds and candidates, chosen by the out-of-fold leader alone (min_gain_se=0).
    leader = jaxlat.train_predictor(
        train, regressor="auto", train=settings, statistic=statistic, seed=args.seed,
        select={"mode": "accuracy", "folds": args.folds, "candidates": CANDIDATES, "progress": False,
                "min_gain_se": 0.0})
    t1 = time.perf_counter()
    medn = jaxlat.train_predictor(train, regressor="medn", train=settings, statistic=statistic, seed=args.seed)
    t_medn = time.perf_counter() - t1
    a_sel = per_type_acc10(hits10(selected, test, column), test)
    a_lead = per_type_acc10(hits10(leader, test, column), test)
    # Every candidate for every type, fitted on all the training rows: the per-type best of
    # them on the test rows bounds what any per-type selection over them can reach.
    hits = {"medn": hits10(medn, test, column)}
    for c in CANDIDATES:
        if c != "medn":
            fit = jaxlat.train_predictor(train, regressor=c, train=settings, statistic=statistic, seed=args.seed)
            hits[c] = hits10(fit, test, column)
    per_candidate = {c: per_type_acc10(h, test) for c, h in hits.items()}
    a_medn = per_candidate["medn"]
    bounds = selection_bounds(hits, test, args.seed)
    report = selected.selection or {}

    def chosen(pred: jaxlat.LatencyPredictor) -> dict[str, str]:
        return {m: pred.models[m].regressor.name.split("[")[0] for m in pred.modules}

    return {
        "path": path, "statistic": statistic, "train_rows": len(train), "test_rows": len(test),
        "choice": chosen(selected), "leader_choice": chosen(leader),
        "test_acc10": {"selected": a_sel, "leader": a_lead, "medn_all": a_medn},
        "gain_points": {m: 100 * (a_sel[m] - a_medn[m]) for m in a_sel},
        "leader_gain_points": {m: 100 * (a_lead[m] - a_medn[m]) for m in a_lead},
        "out_of_fold": {k: report.get("overall", {}).get(k, {}).get("acc10") for k in ("selected", "medn_all")},
        "candidates_test_acc10": per_candidate, "bounds": bounds,
        "retest": profilers.retest_ceiling(path, statistic),
        "fit_s": {"selection_and_fit": t_sel, "medn": t_medn},
    }


def markdown(results: dict[str, Any], args: argparse.Namespace, m: dict[str, Any]) -> str:
    lines = ["# Auto-selection against MEDN for every type\n", machine_markdown(m),
             (f"Training: {args.epochs} epochs at most for MLPs and MEDN; selection by {args.folds}-fold "
              f"cross-validation over {', '.join(CANDIDATES)}; test: 20 % of config groups, seed {args.seed}. "
              "'Selected' is the default rule (the out-of-fold leader only where it leads MEDN by more than 2 "
              "standard errors of the paired difference); 'leader' takes the out-of-fold leader always "
              "(`min_gain_se=0`), from the same folds.\n")]
    for name, r in results.items():
        lines += [f"## {name} ({r['statistic']}; {r['train_rows']} training rows, {r['test_rows']} test rows)\n",
                  "| module | chosen | selected ±10 % | MEDN-for-all ±10 % | gain (points) | out-of-fold leader | "
                  "leader ±10 % | leader gain (points) | best on the test rows | its ±10 % |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        bounds, cand = r["bounds"], r["candidates_test_acc10"]
        for mod, gain in r["gain_points"].items():
            chosen, lead = r["choice"].get(mod, ""), r["leader_choice"].get(mod, "")
            best = bounds["oracle_choice"].get(mod, "")
            best_acc = f"{cand[best][mod]:.3f}" if best else f"{cand['medn']['all'] + bounds['oracle_gain_points'] / 100:.3f}"
            lines.append(f"| {'**all**' if mod == 'all' else mod} | {chosen} | {r['test_acc10']['selected'][mod]:.3f} | "
                         f"{r['test_acc10']['medn_all'][mod]:.3f} | {gain:+.1f} | {lead} | "
                         f"{r['test_acc10']['leader'][mod]:.3f} | {r['leader_gain_points'][mod]:+.1f} | {best} | {best_acc} |")
        lines.append(f"\nWhat a per-type choice among these candidates can gain over MEDN-for-all on these test rows: "
                     f"each type's best chosen on the test rows themselves (an upper bound, biased up) "
                     f"**{bounds['oracle_gain_points']:+.1f}** points; chosen on half of each type's test configs and "
                     f"scored on the other half (20 halvings, both ways) {bounds['split_half_gain_points']:+.1f} "
                     f"(sd {bounds['split_half_gain_sd']:.1f}) points.")
        oof = r["out_of_fold"]
        if oof["selected"] is not None and oof["medn_all"] is not None:
            lines.append(f"\nOut of fold on the training rows (the folds the choice was made on): selected "
                         f"{oof['selected']:.3f}, MEDN-for-all {oof['medn_all']:.3f}.")
        rt = r["retest"]
        lines.append(f"\nTest-retest of the labels: {rt['acc10']:.3f} within ±10 % ({rt['n']} configs)." if rt else
                     "\nTest-retest of the labels: not recorded in this dataset.")
        lines.append(f"Fit time: {r['fit_s']['selection_and_fit']:.0f} s with selection, {r['fit_s']['medn']:.0f} s "
                     "MEDN alone.\n")
    lines.append(f"Command: `python benchmarks/selection.py {' '.join(sys.argv[1:])}`\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", required=True, metavar="NAME=PATH[:STATISTIC]",
                   help="a dataset (statistic median or p10; default median); repeatable")
    p.add_argument("--epochs", type=int, default=150, help="most epochs of the MLPs and MEDN")
    p.add_argument("--folds", type=int, default=3, help="selection folds")
    p.add_argument("--rows-per-type", type=int, default=None, help="at most this many rows per type (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", default="selection")
    args = p.parse_args(argv)
    results = {}
    for spec in args.data:
        name, _, rest = spec.partition("=")
        path, _, statistic = rest.partition(":")
        if not name or not path or statistic not in ("", "median", "p10"):
            p.error(f"--data {spec!r}: expected NAME=PATH or NAME=PATH:median|p10")
        results[name] = one_dataset(name, path, statistic or "median", args)
    m = machine()
    print(write_results(args.out, args.name, {"machine": m, "settings": vars(args), "results": results},
                        markdown(results, args, m)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
