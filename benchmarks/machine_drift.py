"""How steady is this machine? A speed trace: a basket of small modules and two real models,
timed alternately for a while, one short window each.

  python benchmarks/machine_drift.py --seconds 240 --out benchmarks/results

On a shared host (a VM whose neighbours come and go) the speed switches between states within
seconds. A single timing window then lands in one state or the other, so the median of one window
is a random draw, while a low percentile of samples pooled over rounds spread in time is the
undisturbed state's latency. The report gives, per series, the spread over the trace, how often a
window ran within 10 % of the series' fastest tenth, and what a 3-round measurement
(rounds drawn from the trace) would report as its median and its 10th percentile.

Writes machine_drift.json and machine_drift.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, machine_markdown, write_results

#: (name, module, fields): small modules, about 0.04 to 0.8 ms each at 1 thread.
BASKET = (
    ("conv3x3_64", "conv2d", dict(cin=64, cout=64, h=28, w=28, kernel=3, stride=1, groups=1, bias=False)),
    ("dwconv3x3_128", "conv2d", dict(cin=128, cout=128, h=28, w=28, kernel=3, stride=1, groups=128, bias=False)),
    ("linear_512", "linear", dict(batch_size=8, in_features=512, out_features=512, tokens=1, bias=True)),
    ("add_64x56", "add", dict(channels=64, h=56, w=56)),
)
MODELS = ("resnet18", "mobilenet_v2")


def trace(seconds: float) -> dict[str, list[float]]:
    """Time the basket and the models in turn until `seconds` have passed: per series, one
    median per window (ms), plus the wall time of each pass."""
    import torch

    import profilers
    from profilers import TimerConfig, build_torch_module, flush_denormals, time_function, torch_threads, zoo

    small = TimerConfig(warmup_s=0.01, min_run_time_s=0.05, min_repeats=5)
    large = TimerConfig(warmup_s=0.05, min_run_time_s=0.3, min_repeats=3)
    fns = {}
    with torch.inference_mode():
        for name, module, fields in BASKET:
            cfg = profilers.make_config(module, threads=1, **fields)
            m, x = build_torch_module(cfg, torch.device("cpu"))
            fns[name] = (lambda m=m, x=x: m(*x), small)
        for name in MODELS:
            m, x = zoo.build(name, batch_size=1)
            m.eval()
            fns[name] = (lambda m=m, x=x: m(*x), large)
    out: dict[str, list[float]] = {k: [] for k in (*fns, "t_s")}
    t0 = time.monotonic()
    with torch.inference_mode(), torch_threads(1), flush_denormals():
        while time.monotonic() - t0 < seconds:
            out["t_s"].append(time.monotonic() - t0)
            for name, (fn, timer) in fns.items():
                out[name].append(time_function(fn, config=timer).stats.median_ms)
            print(f"\r{out['t_s'][-1]:6.0f} / {seconds:.0f} s", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out


def summarize_series(ms: np.ndarray, rounds: int = 3, draws: int = 2000, seed: int = 0) -> dict[str, float]:
    """Spread of one series of window medians, and what `rounds` windows drawn from it report."""
    fast = float(np.percentile(ms, 10))
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(ms), size=(draws, rounds))
    med = np.median(ms[pick], axis=1) / fast
    low = ms[pick].min(axis=1) / fast  # the pooled p10 of `rounds` windows lies near their fastest
    return {
        "n_windows": int(len(ms)),
        "fastest_tenth_ms": fast,
        "max_over_fastest": float(ms.max() / fast),
        "log_sd": float(np.std(np.log(ms))),
        "share_within_10pct_of_fastest": float(np.mean(ms <= 1.1 * fast)),
        f"median_of_{rounds}_rounds_within_10pct": float(np.mean(np.abs(med - 1) <= 0.1)),
        f"min_of_{rounds}_rounds_within_10pct": float(np.mean(np.abs(low - 1) <= 0.1)),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--rounds", type=int, default=3, help="rounds of the simulated measurement (default 3)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    if args.seconds <= 0:
        raise ValueError(f"--seconds {args.seconds} is not valid: expected a positive number")
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        print("note: MALLOC_MMAP_THRESHOLD_ is not set; oneDNN output copies add their own noise", file=sys.stderr)
    series = trace(args.seconds)
    t = series.pop("t_s")
    stats = {k: summarize_series(np.asarray(v), args.rounds) for k, v in series.items()}
    logs = np.log(np.array([series[k] for k, _, _ in BASKET]))
    basket = logs.mean(axis=0)
    corr = {k: float(np.corrcoef(basket, np.log(series[k]))[0, 1]) for k in MODELS}
    m = machine()
    payload = {"machine": m, "seconds": args.seconds, "rounds": args.rounds, "stats": stats,
               "model_corr_with_basket": corr, "series": {**series, "t_s": t}}
    r = args.rounds
    lines = [
        "# How steady is this machine? (PyTorch, 1 thread)\n",
        machine_markdown(m),
        (f"`python benchmarks/machine_drift.py --seconds {args.seconds:g}`: {len(t)} passes over {args.seconds:g} s, "
        "each timing every series below in one short window (modules 0.05 s, models 0.3 s). 'Fastest tenth': the "
        "10th percentile of a series' window medians. The last two columns draw "
        f"{r} windows at random from the trace, as a {r}-round measurement would, and give how often their "
        "median, or their minimum (what a pooled 10th percentile comes close to), lies within 10 % of the "
        "fastest tenth.\n"),
        ("| series | fastest tenth ms | max / fastest | log sd | windows within 10 % | "
        f"median of {r} within 10 % | min of {r} within 10 % |"),
        "|---|---|---|---|---|---|---|",
    ]
    for k, s in stats.items():
        lines.append(f"| {k} | {s['fastest_tenth_ms']:.3f} | {s['max_over_fastest']:.2f} | {s['log_sd']:.3f} | "
                     f"{s['share_within_10pct_of_fastest']:.2f} | {s[f'median_of_{r}_rounds_within_10pct']:.2f} | "
                     f"{s[f'min_of_{r}_rounds_within_10pct']:.2f} |")
    lines.append("\nCorrelation of a model's log latency with the basket's (same pass): "
                 + ", ".join(f"{k} {v:.2f}" for k, v in corr.items()) + ".")
    path = write_results(args.out, "machine_drift", payload, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
