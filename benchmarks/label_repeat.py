"""Do the labels repeat? Profiling protocols side by side, each re-measured at least 30 minutes
later.

  python benchmarks/label_repeat.py --work runs/label_repeat --gap-min 30

N fresh module configs (Latin hypercube over every type, batch 1 and 8, 1 thread, utilization
0) are measured by `jaxlat-profile torch` in each protocol (pass 1, with its own in-run retest
of a sample at the end), and again into a second file once `--gap-min` minutes have passed
since that protocol's pass 1 began (pass 2). Per protocol and statistic (median, p10): the
share of configs whose pass-2 label lies within ±10 % and ±20 % of pass 1, the median ratio
pass 2 / pass 1 (drift common to all configs) and the seconds of measurement per config.

The protocols (`--protocols`, comma-separated):
- `plain`: one window of 0.1 s per config (`jaxlat calibrate --rounds 1`, its default before 5 rounds);
- `single`: `jaxlat-profile torch --protocol single` (one window of 0.2 s);
- `spread5`: five rounds of 0.05 s, round-robin over all configs, so that a config's rounds lie
  a minute or more apart and a slow spell of the machine touches one of them (what
  `jaxlat-profile torch` does by default);
- `spread`: `jaxlat-profile torch --protocol spread`, the default, as it is.

Resumable: run the same command again after an interruption (each pass resumes its file, and
the pass-1 start times are kept in WORK/state.json). Nothing else should run on the machine
while a pass measures: the figures are measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cli, machine, machine_markdown, write_results

import profilers

PROTOCOLS: dict[str, list[str]] = {
    "plain": ["--protocol", "single", "--min-run-time", "0.1"],
    "single": ["--protocol", "single"],
    "spread5": ["--protocol", "spread", "--min-run-time", "0.25", "--rounds", "5", "--chunk-size", "100000"],
    "spread": ["--protocol", "spread"],
}
STATISTICS = {"median": "latency_ms_median", "p10": "latency_ms_p10"}


def measure(out: Path, protocol: str, n_per_type: int, seed: int, retest: int) -> float:
    """One pass of `protocol` into `out`; returns its wall seconds."""
    cmd = [cli("jaxlat-profile"), "torch", "--module", "all", "--n", str(n_per_type), "--sampler", "lhs",
           "--seed", str(seed), "--batch", "1,8", "--threads", "1", "--retest", str(retest), "--no-progress",
           "--out", str(out), *PROTOCOLS[protocol]]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "2147483647", "MALLOC_TRIM_THRESHOLD_": "2147483647"}
    print(time.strftime("%H:%M:%S"), "+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def agreement(first: Path, second: Path) -> dict[str, Any]:
    """Per statistic, `profilers.retest_agreement` of the second pass against the first, overall
    and its ±10 % share per module type."""
    a = profilers.read_dataset(first).set_index("config_key")
    b = profilers.read_dataset(second).set_index("config_key")
    keys = a.index.intersection(b.index)
    modules = a.loc[keys, "module"].to_numpy()
    out: dict[str, Any] = {"n": int(len(keys))}
    for stat, col in STATISTICS.items():
        x, y = a.loc[keys, col].to_numpy(np.float64), b.loc[keys, col].to_numpy(np.float64)
        out[stat] = {**profilers.retest_agreement(x, y),
                     "per_type_acc10": {m: profilers.retest_agreement(x[modules == m], y[modules == m])["acc10"]
                                        for m in sorted(set(modules))}}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/label_repeat", help="the passes' datasets (resumable)")
    p.add_argument("--protocols", default="plain,spread5", help=f"comma-separated, of {', '.join(PROTOCOLS)}")
    p.add_argument("--per-type", type=int, default=14,
                   help="configs per module type and batch size (11 types x 2 batches: 14 gives 308)")
    p.add_argument("--gap-min", type=float, default=30.0, help="minutes from a pass 1 start to its pass 2 start")
    p.add_argument("--retest", type=int, default=30, help="configs re-measured at the end of each pass 1")
    p.add_argument("--seed", type=int, default=2000)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", default="label_repeat")
    args = p.parse_args(argv)
    protocols = [s for s in args.protocols.split(",") if s]
    unknown = [s for s in protocols if s not in PROTOCOLS]
    if unknown or not protocols:
        p.error(f"--protocols={args.protocols!r}: unknown {unknown}; expected some of {', '.join(PROTOCOLS)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    state_file = work / "state.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}

    def save() -> None:
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, state_file)

    for proto in protocols:  # a pass whose wall time is recorded is complete
        s = state.setdefault(proto, {})
        if "pass1_wall_s" in s:
            continue
        s.setdefault("pass1_start", time.time())
        save()
        s["pass1_wall_s"] = measure(work / f"{proto}_1.parquet", proto, args.per_type, args.seed, args.retest)
        save()
    for proto in protocols:
        s = state[proto]
        if "pass2_wall_s" in s:
            continue
        wait = s["pass1_start"] + 60 * args.gap_min - time.time()
        if wait > 0:
            print(f"{time.strftime('%H:%M:%S')} {proto}: pass 2 waits {wait / 60:.1f} min "
                  f"(until {time.strftime('%H:%M:%S', time.localtime(time.time() + wait))})", flush=True)
            time.sleep(wait)
        s.setdefault("pass2_start", time.time())
        save()
        s["pass2_wall_s"] = measure(work / f"{proto}_2.parquet", proto, args.per_type, args.seed, 0)
        save()

    results = {}
    for proto in protocols:
        s = state[proto]
        first, second = work / f"{proto}_1.parquet", work / f"{proto}_2.parquet"
        n1 = len(profilers.read_dataset(first))
        results[proto] = {
            "flags": PROTOCOLS[proto],
            "gap_min": (s["pass2_start"] - s["pass1_start"]) / 60,
            "s_per_config": s["pass1_wall_s"] / max(n1, 1),
            "later": agreement(first, second),
            "in_run_retest": {k: v for k, v in (profilers.retest_summary(first) or [{}])[-1].items() if k != "run_id"},
        }
    payload = {"machine": machine(), "settings": vars(args), "results": results}
    lines = [
        "# Do the labels repeat? Profiling protocols, re-measured later\n",
        machine_markdown(payload["machine"]),
        (f"{args.per_type} Latin-hypercube configs per module type and batch size (1 and 8), 1 thread, seed "
         f"{args.seed}; each protocol's configs measured, then measured again into a second file from "
         f"{args.gap_min:g} minutes after the first pass began. 'In-run' is the pass's own retest of "
         f"{args.retest} configs at its end.\n"),
        ("Measured " + time.strftime("%Y-%m-%d %H:%M", time.gmtime(min(state[p]["pass1_start"] for p in protocols)))
         + " to " + time.strftime("%H:%M UTC", time.gmtime(max(state[p]["pass2_start"] + state[p]["pass2_wall_s"]
                                                             for p in protocols))) + ".\n"),
        "| protocol | flags | s per config | gap min | n | median ±10 % | median ±20 % | p10 ±10 % | p10 ±20 % | "
        "ratio later/first (median) | median ±10 %, drift removed | p10 ±10 %, drift removed | "
        "in-run median ±10 % | in-run p10 ±10 % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for proto, r in results.items():
        later, rt = r["later"], r["in_run_retest"]
        lines.append(
            f"| {proto} | `{' '.join(r['flags']) or '(defaults)'}` | {r['s_per_config']:.2f} | {r['gap_min']:.0f} | "
            f"{later['n']} | {later['median']['acc10']:.3f} | {later['median']['acc20']:.3f} | "
            f"{later['p10']['acc10']:.3f} | {later['p10']['acc20']:.3f} | {later['median']['ratio']:.3f} | "
            f"{later['median']['acc10_drift_removed']:.3f} | {later['p10']['acc10_drift_removed']:.3f} | "
            f"{rt.get('median_acc10', float('nan')):.3f} | {rt.get('p10_acc10', float('nan')):.3f} |")
    lines += ["", "Per module type, median ±10 % later:", "",
              "| protocol | " + " | ".join(next(iter(results.values()))["later"]["median"]["per_type_acc10"]) + " |",
              "|---|" + "---|" * len(next(iter(results.values()))["later"]["median"]["per_type_acc10"])]
    for proto, r in results.items():
        lines.append(f"| {proto} | " + " | ".join(f"{v:.2f}" for v in r["later"]["median"]["per_type_acc10"].values())
                     + " |")
    lines += ["", f"Command: `python benchmarks/label_repeat.py --work {args.work} --protocols {args.protocols} "
              f"--gap-min {args.gap_min:g}`\n"]
    print(write_results(args.out, args.name, payload, "\n".join(lines)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
