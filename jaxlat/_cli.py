"""`jaxlat`: train a predictor from datasets, evaluate it, plot predicted against measured.

Examples:
  jaxlat train --data data/cpu.parquet --out predictors/cpu
  jaxlat train --data data/cpu.parquet --regressor conv2d=mlp --regressor medn --out predictors/cpu
  jaxlat train --data data/cpu.parquet --select accuracy --max-query-us 500 --require-differentiable \
      --archs data/cpu_generated_models.jsonl --out predictors/cpu
  jaxlat evaluate --predictor predictors/cpu --data data/cpu_test.parquet --json
  jaxlat predict --arch resnet50.json                 # the shipped reference predictor (this CPU)
  jaxlat predict --predictor epyc_torch_1t --arch resnet50.json   # another shipped predictor, by name
  jaxlat predict --predictor predictors/cpu --arch models.jsonl --breakdown 10
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _regressors(values: Sequence[str] | None) -> str | dict[str, str]:
    if not values:
        return "medn"
    default, per = None, {}
    for v in values:
        if "=" in v:
            m, name = v.split("=", 1)
            per[m] = name
        else:
            default = v
    if not per:
        return default
    return {"__default__": default or "medn", **per}


def _cmd_train(args: argparse.Namespace) -> int:
    import profilers

    from ._predictor import train_predictor
    from ._train import TrainConfig

    df = profilers.read_dataset(args.data, allow_mixed_devices=args.allow_mixed_devices)
    choice = _regressors(args.regressor)
    if isinstance(choice, dict):
        default = choice.pop("__default__")
        choice = {m: choice.get(m, default) for m in sorted(set(df["module"]))}
    train = TrainConfig(epochs=args.epochs) if args.epochs else None
    select = None
    if args.select:
        from ._select import Budgets

        if args.regressor:
            raise ValueError("--select and --regressor exclude each other: selection picks the regressors")
        choice = "auto"
        budgets = Budgets(args.max_query_us, args.max_bytes, args.require_differentiable)
        select = {"mode": args.select, "budgets": budgets, "folds": args.folds}
        if args.candidates:
            select["candidates"] = tuple(c.strip() for c in args.candidates.split(","))
    elif args.require_differentiable or args.max_query_us or args.max_bytes:
        raise ValueError("--require-differentiable, --max-query-us and --max-bytes need --select")
    archs = [r for f in (args.archs or []) for r in profilers.load_records(f)]
    print(f"training on {len(df)} rows of {df['module'].nunique()} module types", file=sys.stderr)
    pred = train_predictor(df, regressor=choice, seed=args.seed, train=train, select=select, archs=archs or None,
                           statistic=args.statistic)
    pred.save(args.out)
    print(f"saved {args.out}: " + ", ".join(f"{m}={_reg_name(pred, m)}" for m in pred.modules))
    if pred.composition is not None:
        c = pred.composition
        print(f"composition fitted on {c.info['n_networks']} networks: "
              + ", ".join(f"{k}={v:.4g}" for k, v in c.coef.items())
              + f"; within ±10%: plain sum {c.info['plain_sum_acc10']:.2f}, corrected {c.info['fit_acc10']:.2f}")
    return 0


def _reg_name(pred, module: str) -> str:
    m = pred.models[module]
    return "medn" if m.shared == "medn" else m.regressor.name


def _cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    import profilers

    from ._shipped import load_predictor, matching_reference

    if args.predictor is None:
        print(f"predictor: the shipped {matching_reference()!r} (the one measured on this machine's CPU model, "
              "else the default; --predictor picks another)", file=sys.stderr)
    pred = load_predictor(args.predictor)
    records = [r for f in args.arch for r in profilers.load_records(f)]
    if args.threads is not None:
        records = [r.with_settings(threads=args.threads) for r in records]
    if args.utilization is not None:
        records = [r.with_settings(utilization=args.utilization) for r in records]
    out = pred.predict_models(records)
    if args.json:
        rows = out.to_dict("records")
        for row, r in zip(rows, records):
            if args.breakdown:
                row["breakdown"] = pred.breakdown(r).to_dict("records")
        print(json.dumps(rows, indent=1, default=float))
        return 0
    if pred.composition is None:
        print("note: this predictor has no composition correction; latency is the plain sum of modules", file=sys.stderr)
    if pred.statistic != "median":
        print(f"note: this predictor learned the {pred.statistic} of each measurement's samples (the machine's "
              "undisturbed speed); a measured figure below is the same statistic", file=sys.stderr)
    for row, r in zip(out.to_dict("records"), records):
        line = (f"{row['name']}: {row['latency_ms']:.3f} ms (80% interval {row['lo_ms']:.3f} to {row['hi_ms']:.3f}); "
                f"plain sum {row['plain_sum_ms']:.3f} ms; {row['n_modules']} modules")
        if row["n_extrapolated"]:
            line += f", {row['n_extrapolated']} outside the training ranges"
        if not pd.isna(row["measured_ms"]):
            line += f"; measured {row['measured_ms']:.3f} ms (ratio {row['latency_ms'] / row['measured_ms']:.3f})"
        print(line)
        if args.breakdown:
            b = pred.breakdown(r).sort_values("latency_ms", ascending=False).head(args.breakdown)
            with pd.option_context("display.width", 160, "display.max_columns", 20):
                print(b.round(4).to_string(index=False))
        unmapped = [u for u in r.unmapped if u.kind == "compute"]
        if unmapped:
            print("  not in the catalogue (covered by the correction): "
                  + ", ".join(f"{u.op} x{u.count}" for u in unmapped))
    return 0


def scatter_plot(table_df, path: Path, *, title: str = "") -> Path:
    """Log-log predicted against measured latency, one panel per module type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    mods = sorted(table_df["module"].unique())
    cols = min(4, len(mods))
    rows = -(-len(mods) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax, m in zip(axes.ravel(), mods):
        sub = table_df[table_df["module"] == m]
        t, p = sub["measured_ms"].to_numpy(), sub["predicted_ms"].to_numpy()
        lo, hi = min(t.min(), p.min()) * 0.8, max(t.max(), p.max()) * 1.25
        ax.fill_between([lo, hi], [lo / 1.1, hi / 1.1], [lo * 1.1, hi * 1.1], color="tab:green", alpha=0.15, label="±10 %")
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.6)
        ax.scatter(t, p, s=4, alpha=0.5)
        acc = np.mean(np.abs(p / t - 1) <= 0.1)
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), title=f"{m}  (±10 %: {acc:.2f})")
        ax.set_xlabel("measured ms", fontsize=8)
        ax.set_ylabel("predicted ms", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(mods):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    import profilers

    from ._data import statistic_column
    from ._metrics import evaluate_table
    from ._predictor import LatencyPredictor

    pred = LatencyPredictor.load(args.predictor)
    df = profilers.read_dataset(args.data, allow_mixed_devices=args.allow_mixed_devices)
    df = df[df["module"].isin(pred.modules)].reset_index(drop=True)
    out = pred.predict(df)
    truth = df[statistic_column(pred.statistic)]  # the statistic the predictor learned
    table = evaluate_table(
        df["module"].to_numpy(), truth.to_numpy(), out["latency_ms"].to_numpy(),
        lo_ms=out["lo_ms"].to_numpy(), hi_ms=out["hi_ms"].to_numpy(),
    )
    plot = Path(args.plot) if args.plot else Path(args.predictor) / "evaluate.png"
    scatter_plot(
        pd.DataFrame({"module": df["module"], "measured_ms": truth, "predicted_ms": out["latency_ms"]}),
        plot,
        title=f"{args.predictor} on {', '.join(map(str, args.data))}",
    )
    if args.json:
        print(json.dumps({"metrics": table.to_dict(orient="index"), "plot": str(plot)}, indent=1))
    else:
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            print(table.round(3).to_string())
        print(f"plot: {plot}")
    return 0


def _read_table(path: str, *, latency: bool = True):
    """A latency table file: CSV with columns `arch` (or `name`) and `latency_ms`; with
    `latency=False` only the keys are read (an `Index`)."""
    import pandas as pd

    df = pd.read_csv(path)
    key = "arch" if "arch" in df.columns else "name"
    missing = [c for c in (key, "latency_ms")[: 2 if latency else 1] if c not in df.columns]
    if missing:
        what = "arch (or name) and latency_ms" if latency else "arch (or name)"
        raise ValueError(f"{path}: missing columns {missing}; this table needs {what}")
    if not latency:
        return pd.Index(df[key].astype(str))
    return pd.Series(df["latency_ms"].to_numpy(float), index=df[key].astype(str))


def _cmd_transfer_monotonicity(args: argparse.Namespace) -> int:
    import pandas as pd

    import profilers

    from .transfer import monotonicity_matrix, settings_tables

    tables = {}
    for path in args.data:
        df = profilers.read_dataset(path, allow_mixed_devices=True)
        tables.update(settings_tables(df))
    out = {m: monotonicity_matrix(tables, metric=m) for m in ("spearman", "kendall")}
    if args.json:
        print(json.dumps({m: v.to_dict() for m, v in out.items()}, indent=1))
        return 0
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        for m, v in out.items():
            print(f"{m}:")
            print(v.round(3).to_string())
    return 0


def _cmd_transfer_adapt(args: argparse.Namespace) -> int:
    import pandas as pd

    from profilers.spaces import decode, space_by_name

    from .transfer import adapt, predictor_proxy, table_proxy

    space = space_by_name(args.space)
    samples = _read_table(args.samples)
    wanted = _read_table(args.predict, latency=False) if args.predict.endswith(".csv") else pd.Index(
        [x.strip() for x in Path(args.predict).read_text().splitlines() if x.strip()])

    def records(keys):
        return [space.record(decode(space, k), name=k) for k in keys]

    proxies = [table_proxy(_read_table(p), name=Path(p).stem) for p in args.proxy_table or []]
    if args.proxy_predictor:
        from ._shipped import load_predictor

        pred = load_predictor(None if args.proxy_predictor == "shipped" else args.proxy_predictor)
        proxies.append(predictor_proxy(pred, name=str(args.proxy_predictor)))
    if not proxies:
        raise ValueError("give at least one --proxy-table or --proxy-predictor")
    adapted = adapt(records(samples.index), samples.to_numpy(float), proxies, threshold=args.threshold)
    out = pd.DataFrame({"arch": wanted, "latency_ms": adapted.predict(records(wanted))})
    out.to_csv(args.out, index=False)
    print(json.dumps(adapted.report, indent=1, default=float))
    print(f"wrote {len(out)} predictions to {args.out}; method {adapted.method}", file=sys.stderr)
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jaxlat")
    except PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    from ._data import STATISTICS

    p = argparse.ArgumentParser(prog="jaxlat", description="Train and evaluate latency predictors.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="fit a predictor on dataset files")
    t.add_argument("--data", action="append", required=True, help="dataset file (repeatable)")
    t.add_argument("--out", required=True, help="predictor directory to write")
    t.add_argument("--regressor", action="append",
                   help="NAME for all types or MODULE=NAME (medn, mlp, ridge, poly2, poly3, roofline); default medn")
    t.add_argument("--epochs", type=int, default=None, help="training epochs for MLP/MEDN")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--statistic", choices=tuple(STATISTICS), default="median",
                   help="latency statistic to learn: median (default), or p10 for data measured with "
                        "--rounds on a machine whose speed wanders (the undisturbed state's latency)")
    t.add_argument("--allow-mixed-devices", action="store_true")
    t.add_argument("--select", choices=("accuracy", "time", "space"),
                   help="choose a regressor per module type by cross-validation (instead of --regressor)")
    t.add_argument("--require-differentiable", action="store_true", help="selection: only differentiable regressors")
    t.add_argument("--max-query-us", type=float, help="selection: at most this many microseconds per single query")
    t.add_argument("--max-bytes", type=int, help="selection: at most this many parameter bytes per regressor")
    t.add_argument("--folds", type=int, default=3, help="selection: cross-validation folds (default 3)")
    t.add_argument("--candidates", help="selection: comma-separated regressors (default medn,mlp,poly2,ridge,roofline)")
    t.add_argument("--archs", action="append",
                   help="profiled architecture records (.jsonl) to fit the whole-model composition correction")
    t.set_defaults(func=_cmd_train)
    r = sub.add_parser("predict", help="predict whole-model latency from architecture records")
    r.add_argument("--arch", action="append", required=True, help="architecture record (.json or .jsonl)")
    r.add_argument("--predictor", help="predictor directory or shipped name (default: the shipped predictor of this "
                                       "machine's CPU model, else cpu_torch_1t)")
    r.add_argument("--breakdown", type=int, nargs="?", const=10, default=0,
                   help="also print the N slowest modules (default 10)")
    r.add_argument("--threads", type=int, help="predict at this thread count instead of the record's")
    r.add_argument("--utilization", type=float, help="predict at this device utilization instead of the record's")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_cmd_predict)
    e = sub.add_parser("evaluate", help="metrics table and predicted-vs-measured plot")
    e.add_argument("--predictor", required=True)
    e.add_argument("--data", action="append", required=True)
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.add_argument("--plot", default=None, help="PNG path (default: PREDICTOR/evaluate.png)")
    e.add_argument("--allow-mixed-devices", action="store_true")
    e.set_defaults(func=_cmd_evaluate)
    tr = sub.add_parser("transfer", help="cross-device: rank agreement, few-shot adaptation")
    tsub = tr.add_subparsers(dest="transfer_command", required=True)
    mo = tsub.add_parser("monotonicity", help="Spearman and Kendall between every device and setting in datasets")
    mo.add_argument("--data", action="append", required=True, help="dataset file (repeatable; devices may differ)")
    mo.add_argument("--json", action="store_true")
    mo.set_defaults(func=_cmd_transfer_monotonicity)
    ad = tsub.add_parser("adapt", help="predict a new device's latency over a NAS space from K measured architectures")
    ad.add_argument("--space", required=True, help="nb201, fbnet or mobile (architectures as their encodings)")
    ad.add_argument("--samples", required=True, help="CSV arch,latency_ms: the K measurements on the target")
    ad.add_argument("--predict", required=True, help="CSV with an arch column, or a text file of one arch per line")
    ad.add_argument("--proxy-table", action="append", help="CSV arch,latency_ms measured on another device (repeatable)")
    ad.add_argument("--proxy-predictor", help="a predictor directory, a shipped predictor's name, or 'shipped' (the default one), as a proxy")
    ad.add_argument("--threshold", type=float, default=0.9, help="rank correlation above which the proxy is reused")
    ad.add_argument("--out", required=True, help="CSV arch,latency_ms of the predictions")
    ad.set_defaults(func=_cmd_transfer_adapt)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:  # bad input (DatasetError, ArtifactError): one clear line
        print(f"jaxlat: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
