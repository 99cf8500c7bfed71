"""How the whole-model correction was chosen: 4-fold cross-validation over generated networks
(folds by seed, so batch 1 and 8 of one network stay together), never on real architectures.

  python benchmarks/composition_cv.py --predictor jaxlat/predictors/cpu_torch_1t \
      --records data/cpu_generated_models.jsonl --out benchmarks/results

Compares the plain module sum, a single scale, the linear correction of `jaxlat.Composition`
(unmapped copies' bytes and the other unmapped operators' bytes at separate rates), the same with
one rate for all unmapped bytes, the linear correction followed by a power law, and per-group
scales (convolutions; linear and matmul; the rest). Writes composition_cv.json and
composition_cv.md. Several record files may be given (e.g. the networks with explicit padding).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import lsq_linear

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, machine_markdown, write_results

import profilers
from jaxlat import LatencyPredictor, design_rows, fit_composition

GROUPS = {"conv2d": 0, "conv_bn_act": 0, "linear": 1, "matmul": 1, "mhsa": 1}


def _linear(a, b, c):
    return fit_composition(a, b).apply(c)


def _power(a, b, c):
    comp = fit_composition(a, b)
    coef = np.linalg.lstsq(np.stack([np.ones(len(a)), np.log(comp.apply(a))], 1), np.log(b), rcond=None)[0]
    return np.exp(coef[0] + coef[1] * np.log(comp.apply(c)))


def _grouped(a, b, c):
    lo = np.array([0, 0, 0, -np.inf, 0, 0, 0, 0])
    w = 1 / b
    return c @ lsq_linear(a * w[:, None], b * w, bounds=(lo, np.full(len(lo), np.inf))).x


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictor", default="jaxlat/predictors/cpu_torch_1t")
    p.add_argument("--records", nargs="+", default=["data/cpu_generated_models.jsonl"])
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", default="composition_cv", help="results file stem")
    args = p.parse_args(argv)
    pred = LatencyPredictor.load(args.predictor).with_composition(None)  # module sums only
    recs = [r for f in args.records for r in profilers.load_records(f)]
    pm = pred.predict_models(recs)
    x = design_rows(pm["plain_sum_ms"].to_numpy(), [r.counts() for r in recs])
    y = pm["measured_ms"].to_numpy()
    fold = np.array([r.info["seed"] for r in recs]) % args.folds
    frames = [r.frame().drop(columns=["op", "approx"]) for r in recs]
    owner = np.concatenate([np.full(len(f), i) for i, f in enumerate(frames)])
    allf = pd.concat(frames, ignore_index=True)
    lat = pred.predict(allf)["latency_ms"].to_numpy()
    by_group = np.zeros((len(recs), 3))
    np.add.at(by_group, (owner, np.array([GROUPS.get(m, 2) for m in allf["module"]])), lat)
    x_grouped = np.concatenate([by_group, x[:, 1:]], 1)
    x_one_rate = x.copy()
    x_one_rate[:, 4], x_one_rate[:, 5] = x[:, 4] + x[:, 5], 0.0  # all unmapped bytes at ms_per_mb
    variants = {
        "plain sum": (x, lambda a, b, c: c[:, 0]),
        "single scale": (x, lambda a, b, c: np.median(b / a[:, 0]) * c[:, 0]),
        "linear correction (shipped: copies at their own rate)": (x, _linear),
        "linear correction, one rate for all unmapped bytes": (x_one_rate, _linear),
        "linear + power law": (x, _power),
        "per-group scales": (x_grouped, _grouped),
    }
    rows = {}
    for name, (design, fn) in variants.items():
        err = np.empty(len(y))
        for k in range(args.folds):
            te = fold == k
            err[te] = fn(design[~te], y[~te], design[te]) / y[te] - 1
        rows[name] = {"acc10": float(np.mean(np.abs(err) <= 0.10)), "median_abs_err": float(np.median(np.abs(err)))}
    m = machine()
    lines = ["# Choosing the whole-model correction: cross-validation over generated networks\n", machine_markdown(m),
             (f"{len(recs)} records of {', '.join(f'`{f}`' for f in args.records)}, {args.folds} folds by seed; module predictions from "
             f"`{args.predictor}`.\n"), "| correction | within ±10 % | median abs. error |", "|---|---|---|"]
    lines += [f"| {k} | {v['acc10']:.3f} | {v['median_abs_err']:.3f} |" for k, v in rows.items()]
    path = write_results(args.out, args.name, {"machine": m, "records": args.records, "rows": rows},
                         "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
