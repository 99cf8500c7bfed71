"""Whole-model latency on this CPU: real architectures (`profilers.zoo`: Hugging Face models built
from their configs, random weights) at batch 1 and 8, measured end to end, against the
predictor's corrected prediction and the plain sum of module predictions.

  python benchmarks/whole_models.py --records benchmarks/results/zoo_cpu_records.jsonl \
      --predictor jaxlat/predictors/cpu_torch_1t --out benchmarks/results

Measuring is resumable (records already in `--records` are kept); `--measure-only` stops there.
Writes whole_models_cpu.json and whole_models_cpu.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import STATISTIC_WORDS, cli, machine, machine_markdown, write_results

import profilers


def measure(records: Path, models: list[str], batches: list[int], rounds: int, min_run_time_s: float) -> None:
    """Run the zoo profiler in a fresh process (measurement environment, nothing else running)."""
    cmd = [cli("jaxlat-profile"), "zoo", "--model", ",".join(models),
           "--batch", ",".join(map(str, batches)), "--rounds", str(rounds), "--min-run-time", str(min_run_time_s),
           "--out", str(records)]
    subprocess.run(cmd, check=True)


def main(argv=None) -> int:
    from profilers import zoo

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", default="benchmarks/results/zoo_cpu_records.jsonl")
    p.add_argument("--predictor", default="cpu_torch_1t", help="predictor directory or shipped name")
    p.add_argument("--models", default=",".join(zoo.ZOO))
    p.add_argument("--batch", default="1,8")
    p.add_argument("--rounds", type=int, default=6,
                   help="rounds per model, interleaved with the other models (default 6)")
    p.add_argument("--min-run-time", type=float, default=1.5, help="seconds of timing per model, all rounds")
    p.add_argument("--measure-only", action="store_true")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", default="whole_models_cpu")
    args = p.parse_args(argv)
    records = Path(args.records)
    measure(records, args.models.split(","), [int(b) for b in args.batch.split(",")], args.rounds, args.min_run_time)
    if args.measure_only:
        return 0

    from jaxlat import load_predictor

    pdir = args.predictor
    pred = load_predictor(pdir)
    recs = profilers.load_records(records)
    out = pred.predict_models(recs)
    out["ratio"] = out["latency_ms"] / out["measured_ms"]
    out["plain_ratio"] = out["plain_sum_ms"] / out["measured_ms"]
    out["inside_80"] = (out["lo_ms"] <= out["measured_ms"]) & (out["measured_ms"] <= out["hi_ms"])
    out["measured_cov"] = [r.measured["cov"] for r in recs]
    acc = float(np.mean(np.abs(out["ratio"] - 1) <= 0.10))
    acc_plain = float(np.mean(np.abs(out["plain_ratio"] - 1) <= 0.10))
    # The same predictions against the records' median, for a predictor that learned another statistic.
    vs_median = out["latency_ms"].to_numpy() / np.array([r.measured["latency_ms"] for r in recs])
    acc_vs_median = float(np.mean(np.abs(vs_median - 1) <= 0.10))
    m = machine()
    payload = {
        "machine": m,
        "predictor": str(pdir),
        "predictor_device": pred.device,
        "statistic": pred.statistic,
        "composition": pred.composition.as_json() if pred.composition else None,
        "acc10_corrected": acc,
        "acc10_plain_sum": acc_plain,
        "median_abs_err_corrected": float(np.median(np.abs(out["ratio"] - 1))),
        "median_abs_err_plain_sum": float(np.median(np.abs(out["plain_ratio"] - 1))),
        "interval_coverage_80": float(out["inside_80"].mean()),
        "acc10_corrected_vs_median": acc_vs_median,
        "corrected_over_median_median": float(np.median(vs_median)),
        "rows": out.to_dict("records"),
    }
    lines = [
        "# Whole-model latency on this CPU (PyTorch, 1 thread)\n",
        machine_markdown(m),
        (f"Predictor: `{pdir}`. Records: `{records}` (measured end to end in rounds interleaved with the other "
        f"models; a model's latency is the {STATISTIC_WORDS[pred.statistic]} of its pooled samples, the "
        f"statistic the predictor learned).\n"),
        f"**Within ±10 % of measured: corrected {acc:.2f}, plain sum of modules {acc_plain:.2f}** "
        f"({len(out)} model/batch pairs); median |error| {payload['median_abs_err_corrected']:.3f} corrected, "
        f"{payload['median_abs_err_plain_sum']:.3f} plain; measured inside the 80 % interval: "
        f"{payload['interval_coverage_80']:.2f}."
        + (f" Against the records' median instead: corrected within ±10 % {acc_vs_median:.2f} "
           f"(predicted / median, median {np.median(vs_median):.3f})." if pred.statistic != "median" else "") + "\n",
        "| model | measured ms (CoV) | predicted ms | 80 % interval | ratio | plain sum ms | plain ratio | unmapped ops |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in out.to_dict("records"):
        lines.append(f"| {r['name']} | {r['measured_ms']:.2f} ({r['measured_cov']:.2f}) | {r['latency_ms']:.2f} | "
                     f"{r['lo_ms']:.1f} to {r['hi_ms']:.1f} | {r['ratio']:.3f} | {r['plain_sum_ms']:.2f} | "
                     f"{r['plain_ratio']:.3f} | {r['n_unmapped_compute']} |")
    if pred.composition:
        c = pred.composition
        lines.append("\nComposition correction: " + ", ".join(f"{k} = {v:.4g}" for k, v in c.coef.items())
                     + f"; fitted on {c.info.get('n_networks')} generated networks.")
    path = write_results(args.out, args.name, payload, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
