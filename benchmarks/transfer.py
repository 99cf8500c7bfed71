"""Cross-device transfer on this CPU's settings: whole networks of NAS-Bench-201 and FBNet measured
under several settings (torch at 1 and 2 threads, at utilization 0 and 0.5; LiteRT with XNNPACK
in fp32 and int8), then

- monotonicity: Spearman and Kendall between every pair of settings (networks and modules);
- few-shot adaptation: for each setting held out as the target, K measured networks adapt a
  proxy (the other settings' tables and the shipped predictor); Spearman and ±10 % accuracy on
  the remaining networks against K, beside training from scratch on the same K.

  python benchmarks/transfer.py --phase convert  # LiteRT conversions only (no timing; any load)
  python benchmarks/transfer.py                 # measure what is missing, then analyze
  python benchmarks/transfer.py --phase analyze

Writes transfer.json, transfer.md and transfer.png; measurements go to
benchmarks/results/transfer_records/<space>_<setting>.jsonl (resumable).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import STATISTIC_WORDS, STATISTICS, machine, machine_markdown, write_results

RESULTS = Path(__file__).parent / "results"
RECORDS = RESULTS / "transfer_records"
#: name -> (runtime, dtype, threads, utilization)
SETTINGS = {
    "torch_t1_u0": ("torch", "fp32", 1, 0.0),
    "torch_t1_u0.5": ("torch", "fp32", 1, 0.5),
    "torch_t2_u0": ("torch", "fp32", 2, 0.0),
    "tflite_t1_u0": ("tflite", "fp32", 1, 0.0),
    "tflite_int8_t1_u0": ("tflite", "int8", 1, 0.0),
}


def archs(space_name: str, n: int, seed: int):
    from profilers.spaces import space_by_name

    space = space_by_name(space_name)
    rng = np.random.default_rng(seed)
    out, seen = [], set()
    while len(out) < n:
        a = space.random_arch(int(rng.integers(1 << 31)))
        code = space.encode(a)
        if code not in seen:
            seen.add(code)
            out.append(a)
    return space, out


def _settings(args) -> dict:
    bad = [s for s in args.settings if s not in SETTINGS]
    if bad:
        raise SystemExit(f"--settings {bad} not valid: expected some of {', '.join(SETTINGS)}")
    return {s: SETTINGS[s] for s in args.settings}


def convert(args) -> None:
    """Convert the networks of the LiteRT settings (cached by name in --models), so that the
    measurement phase only times them; conversions need no quiet machine."""
    import torch

    from profilers import TFLiteRuntime

    for space_name, n in (("nb201", args.n_nb201), ("fbnet", args.n_fbnet)):
        space, arch_list = archs(space_name, n, args.seed)
        for setting, (runtime, dtype, _, _) in _settings(args).items():
            if runtime != "tflite":
                continue
            rt = TFLiteRuntime(Path(args.models) / space_name, dtype=dtype)
            for i, a in enumerate(arch_list):
                rt.prepare(f"{space_name}:{space.encode(a)}", space.torch_model(a), (torch.randn(*space.input_shape()),))
                print(f"{space_name} {setting}: converted {i + 1}/{len(arch_list)}", file=sys.stderr, flush=True)


def measure(args) -> None:
    import dataclasses

    import torch

    from profilers import MODEL_TIMER, TFLiteRuntime, TorchRuntime, profile_many

    RECORDS.mkdir(parents=True, exist_ok=True)
    timer = dataclasses.replace(MODEL_TIMER, min_run_time_s=args.min_run_time)
    for space_name, n in (("nb201", args.n_nb201), ("fbnet", args.n_fbnet)):
        space, arch_list = archs(space_name, n, args.seed)
        for setting, (runtime, dtype, threads, util) in _settings(args).items():
            jobs = []
            for a in arch_list:
                code = space.encode(a)

                def build(a=a, code=code):
                    return space.torch_model(a), (torch.randn(*space.input_shape()),), {"arch": code, "space": space.name}

                jobs.append((f"{space_name}:{code}", build))
            rt = TorchRuntime() if runtime == "torch" else TFLiteRuntime(Path(args.models) / space_name, dtype=dtype)
            print(f"{space_name} {setting}: {len(jobs)} networks", file=sys.stderr, flush=True)
            profile_many(RECORDS / f"{space_name}_{setting}.jsonl", jobs, threads=threads, utilization=util,
                         timer=timer, rounds=args.rounds, chunk_size=len(jobs), runtime=rt, progress=False)


def analyze(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import profilers
    from jaxlat import load_predictor
    from jaxlat.transfer import few_shot_curve, model_table, monotonicity_matrix, predictor_proxy, table_proxy

    pred = load_predictor("cpu_torch_1t")
    out = {"monotonicity": {}, "curves": {}, "k10": {}}
    field = STATISTICS[args.statistic]
    md = ["# Cross-device transfer on this CPU's settings\n\n", machine_markdown(machine()), "\n",
          (f"A network's latency: the {STATISTIC_WORDS[args.statistic]} of its samples, "
          f"pooled over its measurement rounds (`--statistic {args.statistic}`).\n\n")]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for si, space_name in enumerate(("nb201", "fbnet")):
        recs = {s: profilers.load_records(RECORDS / f"{space_name}_{s}.jsonl") for s in SETTINGS
                if (RECORDS / f"{space_name}_{s}.jsonl").exists()}
        tables = {s: model_table(r, key="arch", field=field) for s, r in recs.items()}
        mono = monotonicity_matrix(tables)
        out["monotonicity"][space_name] = {"spearman": mono.to_dict(),
                                           "kendall": monotonicity_matrix(tables, metric="kendall").to_dict()}
        rounds = sorted({r.measured.get("rounds", 1) for rs in recs.values() for r in rs if r.measured})
        md.append(f"## {space_name}: {len(next(iter(tables.values())))} networks, {'/'.join(map(str, rounds))} rounds "
                  "each\n\nSpearman between settings:\n\n")
        md.append(mono.round(3).to_markdown() + "\n\n")
        ax = axes[si, 0]
        im = ax.imshow(mono.to_numpy(), vmin=0.5, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(mono)), mono.columns, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(mono)), mono.index, fontsize=7)
        for i in range(len(mono)):
            for j in range(len(mono)):
                ax.text(j, i, f"{mono.iloc[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w")
        ax.set_title(f"{space_name}: Spearman between settings")
        fig.colorbar(im, ax=ax, fraction=0.046)
        md.append("Few-shot adaptation, target held out; proxies: the other settings' tables and the shipped "
                  f"predictor (first proxy: the most correlated other setting on the K samples is not known in "
                  f"advance, so it is the shipped predictor). Mean over {args.repeats} random draws of K.\n\n")
        md.append("| target | K | adapted Spearman | adapted ±10 % | scratch Spearman | scratch ±10 % | methods chosen |\n"
                  "|---|---|---|---|---|---|---|\n")
        for target, trecs in recs.items():
            others = [table_proxy(tables[s], key="arch", name=s) for s in tables if s != target]
            proxies = [predictor_proxy(pred, "shipped predictor")] + others
            y = np.array([r.measured[field] for r in trecs])
            curve = few_shot_curve(trecs, y, proxies, ks=tuple(args.ks), repeats=args.repeats, seed=args.seed)
            mean = curve.groupby(["k", "approach"])[["spearman", "acc10", "mape"]].mean()
            out["curves"][f"{space_name}/{target}"] = curve.to_dict("records")
            for k in sorted(set(curve.k)):
                a, s = mean.loc[(k, "adapted")], mean.loc[(k, "scratch")]
                methods = curve[(curve.k == k) & (curve.approach == "adapted")]["method"].value_counts().to_dict()
                md.append(f"| {target} | {k} | {a.spearman:.3f} | {a.acc10:.3f} | {s.spearman:.3f} | {s.acc10:.3f} | "
                          f"{', '.join(f'{m} {c}' for m, c in methods.items())} |\n")
                if k == 10:
                    out["k10"][f"{space_name}/{target}"] = {"spearman": float(a.spearman), "acc10": float(a.acc10),
                                                            "scratch_spearman": float(s.spearman),
                                                            "scratch_acc10": float(s.acc10)}
            for j, (metric, ylabel) in enumerate((("spearman", "Spearman"), ("acc10", "±10 % accuracy"))):
                ax = axes[si, 1 + j]
                ks = sorted(set(curve.k))
                ax.plot(ks, [mean.loc[(k, "adapted"), metric] for k in ks], "o-", label=f"{target}")
                ax.plot(ks, [mean.loc[(k, "scratch"), metric] for k in ks], "x--", color=ax.lines[-1].get_color(), alpha=0.5)
                ax.set_xscale("log")
                ax.set_xlabel("K measured networks on the target")
                ax.set_ylabel(ylabel)
                ax.set_title(f"{space_name}: adapted (solid) vs scratch (dashed)")
        axes[si, 2].legend(fontsize=6)
        md.append("\n")
    k10 = out["k10"]
    ok = {k: v["spearman"] >= 0.95 and v["acc10"] >= 0.8 for k, v in k10.items()}
    md.append(f"At K = 10: Spearman >= 0.95 and ±10 % >= 0.8 on {sum(ok.values())} of {len(ok)} held-out targets "
              f"({', '.join(k for k, v in ok.items() if not v) or 'all met'} {'missed' if not all(ok.values()) else ''}).\n")
    fig.tight_layout()
    fig.savefig(RESULTS / "transfer.png", dpi=100)
    write_results(RESULTS, "transfer", {"meta": {"machine": machine(), "args": vars(args)}, **out}, "".join(md))
    print("".join(md))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", choices=("all", "convert", "measure", "analyze"), default="all")
    ap.add_argument("--n-nb201", type=int, default=60)
    ap.add_argument("--n-fbnet", type=int, default=30)
    ap.add_argument("--settings", nargs="+", default=[s for s in SETTINGS if "int8" not in s],
                    help=f"settings to measure (default: all but int8); of {', '.join(SETTINGS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=6,
                    help="rounds over all networks of a setting; a network's latency pools its rounds, so "
                         "a slow spell of the machine touches few of them")
    ap.add_argument("--min-run-time", type=float, default=0.6, help="seconds of timing per network and setting")
    ap.add_argument("--models", default="runs/transfer_models", help="converted .tflite networks (cache)")
    ap.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20, 50])
    ap.add_argument("--statistic", choices=tuple(STATISTICS), default="median",
                    help="analysis: a network's latency is the median of its samples, or their 10th percentile "
                         "(repeatable where the machine's speed wanders)")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    if args.phase == "convert":
        convert(args)
        return
    if args.phase in ("all", "measure"):
        from profilers import MEASUREMENT_ENV

        if all(os.environ.get(k) == v for k, v in MEASUREMENT_ENV.items()):
            measure(args)
        else:
            cmd = [sys.executable, __file__, "--phase", "measure", "--n-nb201", str(args.n_nb201), "--n-fbnet",
                   str(args.n_fbnet), "--seed", str(args.seed), "--rounds", str(args.rounds), "--min-run-time",
                   str(args.min_run_time), "--models", args.models, "--settings", *args.settings]
            subprocess.run(cmd, env={**os.environ, **MEASUREMENT_ENV}, check=True)
    if args.phase in ("all", "analyze"):
        analyze(args)


if __name__ == "__main__":
    main()
