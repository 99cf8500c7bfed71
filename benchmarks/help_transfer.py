"""Few-shot transfer on NAS-Bench-201 across 23 devices (HELP's latency tables), leave one device out.

HELP's 9 meta-training devices are the proxies (table proxies over the 15,625 architectures); each
of the other 14 devices in turn is the target. For K = 5, 10 and 20 and several random draws of K
architectures, `jaxlat.transfer.adapt` adapts the proxies from the K measured latencies and
predicts every other architecture; beside it, on the same draws, a plain ridge (alpha 1) over the
proxies' standardized log latencies. Architectures without a path from the cell input to its
output (341, measured near 0 ms on some devices) are left out. No latency is measured here.

  python benchmarks/help_transfer.py [--data ../shared/data/help_nb201/nb201_latency_ms.csv] [--repeats 10]

Writes benchmarks/results/help_transfer.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, machine_markdown, write_results

from jaxlat.transfer import adapt, table_proxy
import profilers
from profilers.spaces import NB201

RESULTS = Path(__file__).parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "help_nb201" / "nb201_latency_ms.csv"
#: HELP's meta-training devices (its README): the proxies.
PROXIES = ("1080ti_1", "1080ti_32", "1080ti_256", "silver_4114", "silver_4210r", "samsung_a50", "pixel3",
           "essential_ph_1", "samsung_s7")


def has_path(arch: str) -> bool:
    """Whether the cell's output is reachable from its input through operations other than `none`."""
    nodes = [[e.split("~") for e in part.strip("|").split("|")] for part in arch.split("+")]
    reach = [True]
    for incoming in nodes:
        reach.append(any(op != "none" and reach[int(src)] for op, src in incoming))
    return reach[-1]


def ridge_baseline(q_k: np.ndarray, t_k: np.ndarray, q_all: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Ridge (alpha, intercept unpenalized) of target log latency on the proxies' log latencies,
    each standardized over the K samples; predicted log latency of `q_all`."""
    mean, sd = q_k.mean(0), q_k.std(0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    x = np.concatenate([np.ones((len(q_k), 1)), (q_k - mean) / sd], axis=1)
    pen = np.diag([0.0] + [alpha] * q_k.shape[1])
    coef = np.linalg.solve(x.T @ x + pen, x.T @ t_k)
    xa = np.concatenate([np.ones((len(q_all), 1)), (q_all - mean) / sd], axis=1)
    return xa @ coef


def scores(pred_ms: np.ndarray, true_ms: np.ndarray) -> tuple[float, float]:
    rel = pred_ms / true_ms - 1
    return float(stats.spearmanr(pred_ms, true_ms).statistic), float(np.mean(np.abs(rel) <= 0.10))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HELP's NAS-Bench-201 latency table (CSV)")
    ap.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20], help="numbers of target samples")
    ap.add_argument("--repeats", type=int, default=10, help="random draws of K architectures per target and K")
    ap.add_argument("--seed", type=int, default=0, help="seed of the draws")
    ap.add_argument("--targets", nargs="*", help="target devices (default: every non-proxy device)")
    ap.add_argument("--name", default="help_transfer", help="results file name")
    args = ap.parse_args()

    table = pd.read_csv(args.data)
    table = table[table["arch_str"].map(has_path)].reset_index(drop=True)
    devices = [c for c in table.columns if c not in ("nb201_index", "arch_str")]
    targets = args.targets or [d for d in devices if d not in PROXIES]
    t0 = time.perf_counter()
    records = [NB201.record(NB201.parse(a), name=a) for a in table["arch_str"]]
    profilers.module_cost_totals(records)  # their analytic costs, all in one vectorized pass, kept on them
    build_s = time.perf_counter() - t0
    print(f"{len(records)} records built in {build_s:.0f} s", flush=True)
    keyed = table.set_index("arch_str")
    proxies = [table_proxy(keyed[d], name=d) for d in PROXIES]
    q_all = np.log(keyed[list(PROXIES)].to_numpy(float))
    rng = np.random.default_rng(args.seed)
    rows, predict_s = [], []
    for target in targets:
        y = keyed[target].to_numpy(float)
        for k in args.ks:
            for rep in range(args.repeats):
                idx = rng.permutation(len(records))
                tr, te = idx[:k], idx[k:]
                a = adapt([records[i] for i in tr], y[tr], proxies)
                t1 = time.perf_counter()
                full = a.predict(records)
                predict_s.append(time.perf_counter() - t1)
                rho, acc = scores(full[te], y[te])
                b_rho, b_acc = scores(np.exp(ridge_baseline(q_all[tr], np.log(y[tr]), q_all))[te], y[te])
                rows.append({"target": target, "k": k, "repeat": rep, "method": a.method, "primary": a.report["primary"],
                             "spearman": rho, "acc10": acc, "ridge_spearman": b_rho, "ridge_acc10": b_acc})
        done = pd.DataFrame(rows)
        last = done[done["target"] == target].groupby("k")[["spearman", "acc10", "ridge_spearman", "ridge_acc10"]].mean()
        print(f"{target}:\n{last.round(3).to_string()}", flush=True)
    df = pd.DataFrame(rows)
    per_k = df.groupby("k")[["spearman", "acc10", "ridge_spearman", "ridge_acc10"]].mean()
    per_target = df[df["k"] == 10].groupby("target")[["spearman", "acc10", "ridge_spearman", "ridge_acc10"]].mean()
    methods = df.groupby(["k", "method"]).size().unstack(fill_value=0)
    m = machine()
    payload = {"machine": m, "data": str(args.data.name), "n_architectures": len(records), "proxies": list(PROXIES),
               "targets": targets, "repeats": args.repeats, "seed": args.seed,
               "records_build_s": build_s, "predict_all_s_median": float(np.median(predict_s)),
               "predict_all_s_max": float(np.max(predict_s)), "rows": rows}
    md = [f"# Few-shot transfer on NAS-Bench-201 (HELP tables), leave one device out\n",
          machine_markdown(m),
          f"\n{len(records)} architectures with a path through the cell; proxies: HELP's 9 meta-training devices "
          f"({', '.join(PROXIES)}); targets: the other {len(targets)}; {args.repeats} random draws of K per target. "
          "`adapt` against a plain ridge (alpha 1) over the proxies' standardized log latencies, on the same draws; "
          "scores on every architecture not drawn.\n",
          "\n## Mean over targets and draws\n", "| K | adapt Spearman | ridge Spearman | adapt ±10 % | ridge ±10 % |",
          "|---|---|---|---|---|"]
    for k, r in per_k.iterrows():
        md.append(f"| {k} | {r['spearman']:.3f} | {r['ridge_spearman']:.3f} | {r['acc10']:.3f} | {r['ridge_acc10']:.3f} |")
    md += ["\n## K = 10 per target\n", "| target | adapt Spearman | ridge Spearman | adapt ±10 % | ridge ±10 % |",
           "|---|---|---|---|---|"]
    for t, r in per_target.iterrows():
        md.append(f"| {t} | {r['spearman']:.3f} | {r['ridge_spearman']:.3f} | {r['acc10']:.3f} | {r['ridge_acc10']:.3f} |")
    md += ["\n## Methods chosen (count of draws)\n", methods.to_markdown(),
           f"\nPredicting all {len(records)} architectures after adaptation: median {np.median(predict_s):.3f} s, "
           f"max {np.max(predict_s):.3f} s per call (records built once with their cost totals, {build_s:.0f} s).\n"]
    path = write_results(RESULTS, args.name, payload, "\n".join(md))
    print(per_k.round(3).to_string())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
