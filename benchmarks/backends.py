"""Backends side by side on the same module configs: TFLite (LiteRT) against torch, and the
TFLite precisions against fp32. Per module type: the latency ratio's distribution (p10, median,
p90) and the Spearman and Kendall rank correlations between the two.

  python benchmarks/backends.py --base torch=data/cpu_torch_1t.parquet \\
      --other tflite=data/cpu_tflite_1t.parquet --other tflite_quant=data/cpu_tflite_1t_quant.parquet
  # the torch side measured here, now, on a seeded sample of the other dataset's configs:
  python benchmarks/backends.py --measure-base 100 --base torch=runs/torch_same_configs.parquet \\
      --other tflite=data/cpu_tflite_1t.parquet

Both sides must come from the same CPU (the files' fingerprints are compared; a mismatch is an
error). `--measure-base N` first measures N configs per module type of the first `--other`
file with torch (fp32, at the threads and utilization of those rows; resumable) into `--base`.

Rows are joined on the module config with `dtype` set aside (so an int8 row meets the fp32 row
of the same module), at the same threads and utilization. Writes backends.json and backends.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

import profilers  # noqa: E402
from _common import machine, machine_markdown, write_results  # noqa: E402


def _keyed(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with a `join_key`: the config with dtype set to fp32 (threads, utilization kept)."""
    keys = [profilers.config_from_row(r).replace(dtype="fp32").key for r in df.to_dict("records")]
    return df.assign(join_key=keys)


def compare(base: pd.DataFrame, other: pd.DataFrame, base_name: str, other_name: str) -> list[dict]:
    a = _keyed(base)[["join_key", "module", "utilization", "latency_ms_median"]]
    b = _keyed(other)[["join_key", "dtype", "delegate", "latency_ms_median"]]
    j = a.merge(b, on="join_key", suffixes=("_base", "_other"))
    rows = []
    for (dtype, util), sub in j.groupby(["dtype", "utilization"]):
        for module, s in list(sub.groupby("module")) + [("all", sub)]:
            r = s["latency_ms_median_other"].to_numpy() / s["latency_ms_median_base"].to_numpy()
            rho = stats.spearmanr(s["latency_ms_median_base"], s["latency_ms_median_other"]).statistic
            tau = stats.kendalltau(s["latency_ms_median_base"], s["latency_ms_median_other"]).statistic
            rows.append({"base": base_name, "other": other_name, "dtype": dtype, "utilization": float(util),
                         "module": module, "n": len(s), "ratio_p10": float(np.quantile(r, 0.1)),
                         "ratio_median": float(np.median(r)), "ratio_p90": float(np.quantile(r, 0.9)),
                         "spearman": float(rho), "kendall": float(tau)})
    return rows


def markdown(rows: pd.DataFrame, meta: dict) -> str:
    out = ["# Backends on the same module configs\n\n", machine_markdown(meta["machine"]), "\n",
           f"Both sides measured on: {meta.get('data_cpu')}, 1 thread unless stated.\n\n",
           "Ratio: other / base latency (median per config), its 10th, 50th and 90th percentiles over the "
           "configs; rank correlations between the two backends' latencies.\n\n"]
    for (b, o, dt, u), sub in rows.groupby(["base", "other", "dtype", "utilization"], sort=False):
        out.append(f"## {o} ({dt}) against {b}, utilization {u:g}\n\n")
        out.append("| module | n | ratio p10 | ratio median | ratio p90 | Spearman | Kendall |\n|---|---|---|---|---|---|---|\n")
        for _, r in sub.iterrows():
            name = "**all**" if r.module == "all" else r.module
            out.append(f"| {name} | {r.n} | {r.ratio_p10:.2f} | {r.ratio_median:.2f} | {r.ratio_p90:.2f} | "
                       f"{r.spearman:.3f} | {r.kendall:.3f} |\n")
        out.append("\n")
    return "".join(out)


def _cpu(path: str) -> str | None:
    return profilers.read_metadata(path).get("fingerprint", {}).get("cpu_model")


def measure_base(other_path: str, out: str, n_per_type: int, seed: int = 0) -> None:
    """Measure with torch a seeded sample of `n_per_type` configs per module type of `other_path`
    (fp32, utilization 0), in the measurement environment."""
    import os

    df = profilers.read_dataset(other_path)
    df = df[(df["status"] == "ok") & (df["utilization"] == 0.0)]
    picked = df.groupby("module").sample(n=min(n_per_type, int(df["module"].value_counts().min())), random_state=seed)
    configs = list({c.key: c for c in (profilers.config_from_row(r).replace(dtype="fp32")
                                       for r in picked.to_dict("records"))}.values())
    missing = {k: v for k, v in profilers.MEASUREMENT_ENV.items() if os.environ.get(k) != v}
    if missing:
        raise SystemExit(f"--measure-base: run in the measurement environment; set {missing}")
    profilers.run_profile(configs, out, run_info={"command": "benchmarks/backends.py --measure-base",
                                                  "sampled_from": other_path, "seed": seed})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, metavar="NAME=PATH")
    ap.add_argument("--other", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--name", default="backends")
    ap.add_argument("--measure-base", type=int, metavar="N",
                    help="measure N configs per type of the first --other with torch into --base first")
    args = ap.parse_args()
    bname, bpath = args.base.split("=", 1)
    if args.measure_base:
        measure_base(args.other[0].split("=", 1)[1], bpath, args.measure_base)
    base = profilers.read_dataset(bpath)
    rows = []
    for spec in args.other:
        oname, opath = spec.split("=", 1)
        if _cpu(bpath) != _cpu(opath):
            raise SystemExit(f"{bpath} was measured on {_cpu(bpath)!r}, {opath} on {_cpu(opath)!r}: "
                             "compare backends on one CPU (--measure-base measures the torch side here)")
        rows += compare(base, profilers.read_dataset(opath), bname, oname)
    table = pd.DataFrame(rows)
    meta = {"machine": machine(), "args": vars(args), "data_cpu": _cpu(bpath)}
    path = write_results(args.out, args.name, {"meta": meta, "rows": rows}, markdown(table, meta))
    print(path.read_text())


if __name__ == "__main__":
    main()
