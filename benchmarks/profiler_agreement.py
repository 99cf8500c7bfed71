"""The profiler's figure against an independent `torch.utils.benchmark.Timer.blocked_autorange()`
in the same process, for 20 sampled configs (1 thread). Alternates the two, 3 rounds each,
and compares the medians of the rounds.

  MALLOC_MMAP_THRESHOLD_=2147483647 MALLOC_TRIM_THRESHOLD_=2147483647 python benchmarks/profiler_agreement.py
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.utils.benchmark as tb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_markdown, write_results

import profilers
from profilers import build_torch_module, time_torch_module


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        print("warning: MALLOC_MMAP_THRESHOLD_ is not set; timings may flip between processes", file=sys.stderr)
    torch.set_num_threads(1)
    mods = list(profilers.ModuleType)
    cfgs = [profilers.sample_configs(mods[i % len(mods)], 1, seed=100 + i, max_flops=3e8)[0] for i in range(args.n)]
    rows = []
    for cfg in cfgs:
        ours, theirs = [], []
        module, inputs = build_torch_module(cfg)
        for _ in range(3):
            ours.append(time_torch_module(cfg, config=profilers.TimerConfig(min_run_time_s=0.2)).stats.median_ms)
            with torch.inference_mode():
                t = tb.Timer("m(*x)", globals={"m": module, "x": inputs}, num_threads=1)
                theirs.append(t.blocked_autorange(min_run_time=0.2).median * 1e3)
        r = float(np.median(ours) / np.median(theirs))
        rows.append({"config": cfg.as_dict(), "profiler_ms": float(np.median(ours)), "torch_benchmark_ms": float(np.median(theirs)), "ratio": r})
        print(f"{cfg.module:<14} {np.median(ours):9.4f} ms  torch.utils.benchmark {np.median(theirs):9.4f} ms  ratio {r:.3f}", flush=True)
    ratios = np.array([r["ratio"] for r in rows])
    from _common import machine

    meta = machine()
    summary = {"median_ratio": float(np.median(ratios)), "p10": float(np.percentile(ratios, 10)), "p90": float(np.percentile(ratios, 90))}
    md = ["# Profiler against torch.utils.benchmark\n\n", machine_markdown(meta), "\n",
          (f"{len(rows)} configs, 1 thread, same process, alternating, 3 rounds each: median ratio "
          f"{summary['median_ratio']:.3f} (p10 {summary['p10']:.3f}, p90 {summary['p90']:.3f}).\n\n"),
          "| module | profiler ms | torch.utils.benchmark ms | ratio |\n|---|---|---|---|\n"]
    md += [f"| {r['config']['module']} | {r['profiler_ms']:.4f} | {r['torch_benchmark_ms']:.4f} | {r['ratio']:.3f} |\n" for r in rows]
    print(write_results(args.out, "profiler_agreement", {"meta": meta, "summary": summary, "rows": rows}, "".join(md)).read_text())


if __name__ == "__main__":
    main()
