r"""`jaxlat`: predict a model's latency, train a predictor from datasets, evaluate it.

Examples:
  jaxlat predict --model profilers.zoo:resnet50 --input-shape 1,3,224,224   # a torch model, one step
  jaxlat predict --onnx model.onnx                    # an ONNX model (needs the onnx extra)
  jaxlat predictors --dir runs/                       # shipped predictors, and those under runs/
  jaxlat train --data data/cpu.parquet --out predictors/cpu
  jaxlat train --data data/cpu.parquet --regressor conv2d=mlp --regressor medn --out predictors/cpu
  jaxlat train --data data/cpu.parquet --select accuracy --max-query-us 500 --archs data/cpu_generated_models.jsonl \
      --out predictors/cpu
  jaxlat evaluate --predictor predictors/cpu --data data/cpu_test.parquet --json
  jaxlat predict --arch resnet50.json                 # the shipped reference predictor (this CPU)
  jaxlat predict --predictor epyc_torch_1t --arch resnet50.json   # another shipped predictor, by name
  jaxlat predict --predictor predictors/cpu --arch models.jsonl --breakdown 10
  jaxlat calibrate --out runs/cal --budget-min 10      # measure this machine, write and register its predictor
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from profilers._cli import (
    CommandError,
    HelpFormatter,
    check_output_file,
    csv_list,
    existing_file,
    output_options,
    run_main,
)

_log = logging.getLogger("jaxlat.cli")


def _regressors(values: Sequence[str] | None) -> str | dict[str, str]:
    """`--regressor` values: one name for every module type, or a dict of MODULE -> name with
    the default under `__default__`; a module type given twice, or two defaults, is an error
    (the last one would win without a word)."""
    import profilers

    if not values:
        return "medn"
    default, per = None, {}
    for v in values:
        if "=" in v:
            m, name = (t.strip() for t in v.split("=", 1))
            try:
                profilers.get_spec(m)
            except ValueError as e:
                raise CommandError(f"--regressor {v}: {e}") from None
            if m in per and per[m] != name:
                raise CommandError(
                    f"--regressor: {m} is given two regressors, {per[m]} and {name}; expected one"
                )
            per[m] = name
        else:
            if default is not None and default != v:
                raise CommandError(
                    f"--regressor: two regressors for every module type, {default} and {v}; expected one "
                    "(and MODULE=NAME for the types that differ)"
                )
            default = v
    if not per:
        return default
    return {"__default__": default or "medn", **per}


def _positive(value: float | None, *, name: str) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise CommandError(f"{name}={value!r} is not valid: expected a finite number > 0")
    return value


def _cmd_train(args: argparse.Namespace) -> int:
    from ._data import check_count
    from ._io import check_output_dir
    from ._train import TrainConfig

    epochs = check_count(args.epochs, name="--epochs")  # 0 must not mean "the default"
    train = TrainConfig(epochs=epochs) if epochs is not None else None
    choice = _regressors(args.regressor)
    select = None
    if args.select:
        from ._select import Budgets

        if args.regressor:
            raise CommandError("--select and --regressor exclude each other: selection picks the regressors")
        choice = "auto"
        budgets = Budgets(
            _positive(args.max_query_us, name="--max-query-us"),
            check_count(args.max_bytes, name="--max-bytes"),
            args.require_differentiable,
        )
        select = {"mode": args.select, "budgets": budgets, "folds": args.folds}
        if args.candidates:
            select["candidates"] = tuple(args.candidates)
    elif args.require_differentiable or args.max_query_us is not None or args.max_bytes is not None:
        raise CommandError("--require-differentiable, --max-query-us and --max-bytes need --select")
    # The output is checked (and created) before the training, which may take long: a path
    # that is a file, under a file or read-only fails now. If the run fails, a directory made
    # here is removed again while it is still empty.
    created = not os.path.lexists(args.out)
    check_output_dir(args.out)
    try:
        pred = _train(args, choice, train, select)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                Path(args.out).rmdir()  # only when empty
        raise
    print(f"saved {args.out}: " + ", ".join(f"{m}={_reg_name(pred, m)}" for m in pred.modules))
    if pred.composition is not None:
        c = pred.composition
        print(
            f"composition fitted on {c.info['n_networks']} networks: "
            + ", ".join(f"{k}={v:.4g}" for k, v in c.coef.items())
            + f"; within ±10%: plain sum {c.info['plain_sum_acc10']:.2f}, corrected {c.info['fit_acc10']:.2f}"
        )
    return 0


def _train(args: argparse.Namespace, choice, train, select):
    """Read the data and records, train, save to `args.out` (checked); the predictor."""
    import profilers

    from ._data import check_count
    from ._predictor import train_predictor

    df = profilers.read_dataset(args.data, allow_mixed_devices=args.allow_mixed_devices)
    in_data = sorted(set(df["module"]))
    if isinstance(choice, dict):
        default = choice.pop("__default__")
        absent = sorted(set(choice) - set(in_data))
        if absent:
            raise CommandError(
                f"--regressor {absent[0]}={choice[absent[0]]}: the data has no {absent[0]} rows "
                f"(its module types: {', '.join(in_data)})"
            )
        choice = {m: choice.get(m, default) for m in in_data}
    archs = [r for f in (args.archs or []) for r in profilers.load_records(f)]
    _log.info("training on %d rows of %d module types", len(df), len(in_data))
    pred = train_predictor(
        df,
        regressor=choice,
        seed=args.seed,
        train=train,
        select=select,
        archs=archs or None,
        statistic=args.statistic,
        members=check_count(args.members, name="--members"),
        recipe=_recipe_args(args),
    )
    pred.save(args.out)
    return pred


def _recipe_args(args: argparse.Namespace):
    """The recipe fields `--edge`, `--clip-inputs` and `--bins` ask for (None: the default
    recipe)."""
    from ._data import check_count

    fields = {}
    if args.bins is not None:
        fields["bins"] = check_count(args.bins, name="--bins", minimum=0)
    if args.edge:
        fields["edge"] = {"all": "all", "none": ()}.get(",".join(args.edge), tuple(args.edge))
    if args.clip_inputs:
        fields["clip"] = True
    return fields or None


def _reg_name(pred, module: str) -> str:
    m = pred.models[module]
    return "medn" if m.shared == "medn" else m.regressor.name


def _model_records(args: argparse.Namespace) -> list:
    """Architecture records of `predict`'s source: record files, a torch factory or an ONNX file."""
    import profilers

    if args.arch:
        return [r for f in args.arch for r in profilers.load_records(_record_file(f))]
    if args.onnx:
        shapes = [args.input_shape] if args.input_shape else None
        return [profilers.capture_onnx(args.onnx, name=args.name, input_shapes=shapes)]
    if not args.input_shape:
        raise CommandError("--model needs --input-shape (e.g. --input-shape 1,3,224,224)")
    from profilers._cli import model_inputs
    from profilers._models import build_model, factory_kwargs

    kwargs = factory_kwargs(args.kwargs)
    import torch

    torch.manual_seed(0)
    model = build_model(args.model, kwargs)
    inputs = model_inputs(args.input_shape, args.input_dtype, args.vocab)
    name = args.name or args.model.split(":")[-1]
    try:
        return [
            profilers.capture_torch(model, inputs, name=name, info={"factory": args.model, "kwargs": kwargs})
        ]
    except RuntimeError as e:  # torch.export could not capture the model: the user's model, not a bug here
        raise CommandError(f"--model {args.model}: {e}") from e


_NOT_RECORDS = {
    ".onnx": "an ONNX model: give it as --onnx",
    ".tflite": "a TFLite model, which jaxlat cannot read: "
    "give the model as ONNX (--onnx) or as a torch factory (--model)",
    ".pt": "a torch checkpoint: give the model as a factory (--model package.module:factory)",
    ".pth": "a torch checkpoint: give the model as a factory (--model package.module:factory)",
}


def _record_file(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in _NOT_RECORDS:
        raise CommandError(f"--arch {path}: {_NOT_RECORDS[suffix]}")
    if suffix not in (".json", ".jsonl"):
        raise CommandError(f"--arch {path}: expected an architecture record file (.json or .jsonl)")
    return path


def _cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from ._data import check_count
    from ._metrics import metrics_for_json
    from ._shipped import default_predictor, load_predictor, reference_names

    check_count(args.breakdown, name="--breakdown")

    if args.onnx and Path(args.onnx).suffix.lower() != ".onnx":
        suffix = Path(args.onnx).suffix.lower()
        what = _NOT_RECORDS.get(
            suffix, f"not an ONNX model (expected a .onnx file, got {suffix or 'no extension'})"
        )
        raise CommandError(
            f"--onnx {args.onnx}: {what}"
            if suffix != ".tflite"
            else f"--onnx {args.onnx}: {_NOT_RECORDS['.tflite']}"
        )
    if (
        args.predictor is not None
        and not Path(args.predictor).is_dir()
        and args.predictor not in reference_names()
    ):
        load_predictor(args.predictor)  # fails now, with the shipped names, before a model is captured
    records = _model_records(args)
    # Without --predictor: the one calibrated on this machine's CPU model, else the shipped one of
    # this CPU model, else the default (a broken calibration falls back); each line names it.
    if args.predictor is None:
        used, pred = default_predictor()
    else:
        used, pred = args.predictor, load_predictor(args.predictor)
    _log.debug("predictor: %s", used)
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
        # An unmeasured record's measured_ms is NaN: null in JSON, never a bare NaN.
        print(json.dumps(metrics_for_json(rows), indent=1, default=float, allow_nan=False))
        return 0
    if pred.composition is None:
        _log.info("note: this predictor has no composition correction; latency is the plain sum of modules")
    if pred.statistic != "median" and any(r.measured for r in records):
        _log.info(
            "note: this predictor learned the %s of each measurement's samples (the machine's undisturbed "
            "speed); a measured figure below is the same statistic",
            pred.statistic,
        )
    for row, r in zip(out.to_dict("records"), records):
        line = (
            f"{row['name']}: {row['latency_ms']:.3f} ms (80% interval {row['lo_ms']:.3f} to {row['hi_ms']:.3f}); "
            f"plain sum {row['plain_sum_ms']:.3f} ms; {row['n_modules']} modules"
        )
        if row["n_extrapolated"]:
            line += f", {row['n_extrapolated']} outside the training ranges"
        if not pd.isna(row["measured_ms"]):
            line += (
                f"; measured {row['measured_ms']:.3f} ms (ratio {row['latency_ms'] / row['measured_ms']:.3f})"
            )
        print(f"{line}; predictor {used}")
        if args.breakdown:
            b = pred.breakdown(r).sort_values("latency_ms", ascending=False).head(args.breakdown)
            with pd.option_context("display.width", 160, "display.max_columns", 20):
                print(b.round(4).to_string(index=False))
        unmapped = [u for u in r.unmapped if u.kind == "compute"]
        if unmapped:
            print(
                "  not in the catalogue (covered by the correction): "
                + ", ".join(f"{u.op} x{u.count}" for u in unmapped)
            )
    return 0


def _cmd_predictors(args: argparse.Namespace) -> int:
    from ._shipped import DEFAULT_REFERENCE, list_predictors, matching_reference

    infos = list_predictors(args.dir)
    if args.json:
        print(
            json.dumps(
                [{**{k: getattr(i, k) for k in i.__slots__}, "path": str(i.path)} for i in infos], indent=1
            )
        )
        return 0
    here = matching_reference()  # what `jaxlat predict` takes without --predictor
    for i in infos:
        tags = [
            t
            for t, on in (
                ("default", i.name == DEFAULT_REFERENCE),
                ("calibrated", i.calibrated),
                ("this CPU", i.name == here and here != DEFAULT_REFERENCE),
            )
            if on
        ]
        print(f"{i.name}{' (' + ', '.join(tags) + ')' if tags else ''}")
        if i.split:
            scope = "modules; whole models by a second predictor"
        else:
            scope = "whole models and modules" if i.whole_models else "modules only"
        print(f"  {i.backend} on {i.device}: {i.hardware}; learns the {i.statistic}; {scope}")
        print(f"  modules: {', '.join(i.modules)}")
        if not i.shipped:
            print(f"  path: {i.path}")
    if args.dir is not None and not any(not i.shipped for i in infos):
        _log.info("no predictors under %s (a predictor directory holds predictor.json)", args.dir)
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
        ax.fill_between(
            [lo, hi], [lo / 1.1, hi / 1.1], [lo * 1.1, hi * 1.1], color="tab:green", alpha=0.15, label="±10 %"
        )
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.6)
        ax.scatter(t, p, s=4, alpha=0.5)
        acc = np.mean(np.abs(p / t - 1) <= 0.1)
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), title=f"{m}  (±10 %: {acc:.2f})")
        ax.set_xlabel("measured ms", fontsize=8)
        ax.set_ylabel("predicted ms", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(mods) :]:
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
    from ._metrics import evaluate_table, metrics_for_json
    from ._shipped import load_predictor

    if args.plot:
        check_output_file(args.plot, "--plot")
    pred = load_predictor(args.predictor)
    df = profilers.read_dataset(args.data, allow_mixed_devices=args.allow_mixed_devices)
    in_data = sorted(set(df["module"]))
    known = df["module"].isin(pred.modules)
    if not known.any():
        raise CommandError(
            f"--data {', '.join(map(str, args.data))}: no rows of a module type the predictor has: the data "
            f"has {', '.join(in_data) or 'no rows'}; predictor {args.predictor} predicts {', '.join(pred.modules)}"
        )
    if not known.all():
        skipped = sorted(set(df.loc[~known, "module"]))
        _log.warning(
            "note: %d rows of %s not evaluated: predictor %s has no model for them",
            int((~known).sum()),
            ", ".join(skipped),
            args.predictor,
        )
    df = df[known].reset_index(drop=True)
    out = pred.predict(df)
    truth = df[statistic_column(pred.statistic)]  # the statistic the predictor learned
    table = evaluate_table(
        df["module"].to_numpy(),
        truth.to_numpy(),
        out["latency_ms"].to_numpy(),
        lo_ms=out["lo_ms"].to_numpy(),
        hi_ms=out["hi_ms"].to_numpy(),
    )
    if args.plot:
        plot = Path(args.plot)
    elif Path(args.predictor).is_dir():
        plot = Path(args.predictor) / "evaluate.png"
    else:  # a shipped predictor: not into the installed package
        plot = Path(f"evaluate_{args.predictor}.png")
    scatter_plot(
        pd.DataFrame({"module": df["module"], "measured_ms": truth, "predicted_ms": out["latency_ms"]}),
        plot,
        title=f"{args.predictor} on {', '.join(map(str, args.data))}",
    )
    ceiling = profilers.retest_ceiling(args.data, "p10" if pred.statistic == "p10" else "median")
    if args.json:
        # An undefined metric (r2 of one row) is NaN: null in JSON, never a bare NaN.
        metrics = metrics_for_json(table)
        print(json.dumps({"metrics": metrics, "retest": ceiling, "plot": str(plot)}, indent=1, allow_nan=False))
    else:
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            print(table.round(3).to_string())
        if ceiling is None:
            print("test-retest: not recorded in the data (jaxlat-profile measures a sample again unless --retest 0)")
        else:
            acc10 = float(table.loc["all", "acc10"]) if "all" in table.index else float(table["acc10"].iloc[0])
            share = f"; acc10 is {acc10 / ceiling['acc10']:.2f} of its ceiling" if ceiling["acc10"] > 0 else ""
            print(f"test-retest of the labels ({pred.statistic}, {ceiling['n']} configs measured again by the "
                  f"run(s) that wrote the data): {ceiling['acc10']:.3f} within ±10 %, {ceiling['acc20']:.3f} "
                  f"within ±20 %{share}")
        print(f"plot: {plot}")
    return 0


def _read_table(path: str, *, option: str, latency: bool = True):
    """A latency table file: CSV with columns `arch` (or `name`) and `latency_ms`; with
    `latency=False` only the keys are read (an `Index`).

    Latencies are checked as the transfer tables are (`check_latency_table`: each architecture
    once, finite, > 0) and at most the datasets' `MAX_LATENCY_MS`; every error names `option`
    and the file.
    """
    import numpy as np
    import pandas as pd

    from profilers._dataset import MAX_LATENCY_MS

    from .transfer._adapt import check_latency_table

    where = f"{option} {path}"
    if not Path(path).is_file():
        raise CommandError(f"{where}: no such file" if not Path(path).exists() else f"{where}: not a file")
    try:
        df = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as e:  # pandas' EmptyDataError and ParserError are ValueErrors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CommandError(f"{where}: not a CSV table ({first}); expected columns arch,latency_ms") from None
    key = "arch" if "arch" in df.columns else "name"
    missing = [c for c in (key, "latency_ms")[: 2 if latency else 1] if c not in df.columns]
    if missing:
        what = "arch (or name) and latency_ms" if latency else "arch (or name)"
        raise CommandError(
            f"{where}: missing columns {missing} (it has {list(df.columns)}); this table needs {what}"
        )
    if df.empty:
        raise CommandError(f"{where}: no rows; expected one row per architecture")
    blank = np.flatnonzero(df[key].isna().to_numpy())
    if len(blank):
        raise CommandError(f"{where}: {len(blank)} rows without an {key} (data row {blank[0] + 1} first)")
    keys = df[key].astype(str)
    if not latency:
        return pd.Index(keys)
    ms = pd.to_numeric(df["latency_ms"], errors="coerce")
    text = (ms.isna() & df["latency_ms"].notna()).to_numpy()
    if text.any():
        i = int(np.flatnonzero(text)[0])
        raise CommandError(
            f"{where}: {int(text.sum())} latencies are not numbers ({keys.iloc[i]!r}: "
            f"{df['latency_ms'].iloc[i]!r}): expected milliseconds"
        )
    table = check_latency_table(pd.Series(ms.to_numpy(float), index=keys), name=where)
    high = table[table > MAX_LATENCY_MS]
    if len(high):
        raise CommandError(
            f"{where}: {len(high)} latencies above {MAX_LATENCY_MS:g} ms ({high.index[0]!r}: {high.iloc[0]:g}): "
            "expected milliseconds, as the datasets hold them"
        )
    return table


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
        from ._metrics import metrics_for_json

        # A correlation over constant latencies is undefined (NaN): null in JSON.
        print(
            json.dumps(metrics_for_json({m: v.to_dict() for m, v in out.items()}), indent=1, allow_nan=False)
        )
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

    check_output_file(args.out, "--out")
    space = space_by_name(args.space)
    samples = _read_table(args.samples, option="--samples")
    if args.predict.endswith(".csv"):
        wanted = _read_table(args.predict, option="--predict", latency=False)
    else:
        wanted = pd.Index([x.strip() for x in Path(args.predict).read_text().splitlines() if x.strip()])
        if wanted.empty:
            raise CommandError(f"--predict {args.predict}: no architectures; expected one per line")

    def records(keys, where: str):
        out = []
        for k in keys:
            try:
                out.append(space.record(decode(space, k), name=k))
            except ValueError as e:
                raise CommandError(f"{where}: {e}") from e
        return out

    proxies = [
        table_proxy(_read_table(p, option="--proxy-table"), name=Path(p).stem) for p in args.proxy_table or []
    ]
    if args.proxy_predictor:
        from ._shipped import load_predictor

        pred = load_predictor(None if args.proxy_predictor == "shipped" else args.proxy_predictor)
        proxies.append(predictor_proxy(pred, name=str(args.proxy_predictor)))
    if not proxies:
        raise CommandError("give at least one --proxy-table or --proxy-predictor")
    sample_records = records(samples.index, f"--samples {args.samples}")
    wanted_records = records(wanted, f"--predict {args.predict}")
    adapted = adapt(sample_records, samples.to_numpy(float), proxies, threshold=args.threshold)
    out = pd.DataFrame({"arch": wanted, "latency_ms": adapted.predict(wanted_records)})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(args.out, index=False)
    from ._metrics import metrics_for_json

    print(json.dumps(metrics_for_json(adapted.report), indent=1, default=float, allow_nan=False))
    _log.info("wrote %d predictions to %s; method %s", len(out), args.out, adapted.method)
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from ._calibrate import calibrate_machine

    result = calibrate_machine(
        args.out,
        budget_min=args.budget_min,
        base=args.base,
        exclude_base=args.exclude_base,
        modules=args.module,
        families=args.family,
        register=not args.no_register,
        seed=args.seed,
        statistic=args.statistic,
        min_run_time_s=args.min_run_time,
        network_min_run_time_s=args.network_min_run_time,
        rounds=args.rounds,
        tune=not args.no_tune,
        objective=args.objective,
        progress=False if args.no_progress else None,
    )
    print(result.summary())
    return 0


def _version() -> str:
    from . import __version__  # the installed distribution's version, read once at import

    return __version__


def build_parser() -> argparse.ArgumentParser:
    from ._data import STATISTICS

    p = argparse.ArgumentParser(
        prog="jaxlat",
        formatter_class=HelpFormatter,
        description="Predict a model's latency; train a predictor from datasets, evaluate it.",
        epilog="Examples:\n" + __doc__.split("Examples:\n")[1].rstrip(),
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = output_options()  # -v, -q, --debug: the same options as jaxlat-profile's

    def command(parent, name: str, help: str) -> argparse.ArgumentParser:
        return parent.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            formatter_class=HelpFormatter,
            parents=[common],
        )

    r = command(
        sub, "predict", "predict whole-model latency of a torch model, an ONNX model or architecture records"
    )
    src = r.add_argument_group("model (one of)").add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--model",
        metavar="PKG.MOD:FACTORY",
        help="a torch model: a factory returning an nn.Module (needs torch and --input-shape)",
    )
    src.add_argument(
        "--onnx", metavar="FILE", type=existing_file, help="an ONNX model file (.onnx; needs onnx)"
    )
    src.add_argument(
        "--arch",
        metavar="FILE",
        action="extend",
        type=csv_list(str),
        help="architecture records (.json or .jsonl, from jaxlat-profile); comma-separated or repeated",
    )
    r.add_argument(
        "--input-shape",
        type=csv_list(int),
        metavar="N,C,H,W",
        help="example input shape for --model (the batch size included); for --onnx, the shape of a "
        "model input with symbolic dimensions",
    )
    r.add_argument(
        "--input-dtype",
        default="float32",
        choices=("float32", "float16", "bfloat16", "int64"),
        help="example input dtype for --model (int64: token ids)",
    )
    r.add_argument(
        "--vocab", type=int, default=1000, help="with --input-dtype int64: token ids are drawn below this"
    )
    r.add_argument(
        "--kwargs", metavar="JSON", help="keyword arguments for the --model factory, as a JSON object"
    )
    r.add_argument("--name", help="name of the prediction (default: the factory's or the file's name)")
    r.add_argument(
        "--predictor",
        metavar="DIR_OR_NAME",
        help="predictor directory or shipped name (see `jaxlat predictors`; default: the newest one "
        "calibrated on this machine's CPU model by `jaxlat calibrate`, else the shipped predictor of "
        "this CPU model, else cpu_torch_1t)",
    )
    r.add_argument(
        "--breakdown",
        type=int,
        nargs="?",
        const=10,
        default=None,
        metavar="N",
        help="also print the N slowest modules (N defaults to 10 when the option is given alone)",
    )
    r.add_argument("--threads", type=int, help="predict at this thread count instead of the record's")
    r.add_argument(
        "--utilization", type=float, help="predict at this device utilization (0..1) instead of the record's"
    )
    r.add_argument("--json", action="store_true", help="print the predictions as JSON")
    r.set_defaults(func=_cmd_predict)

    ls = command(sub, "predictors", "list the shipped predictors, and local ones under a directory")
    ls.add_argument(
        "--dir", metavar="DIR", help="also list the predictor directories found under DIR (recursively)"
    )
    ls.add_argument("--json", action="store_true", help="print the list as JSON")
    ls.set_defaults(func=_cmd_predictors)

    t = command(sub, "train", "fit a predictor on dataset files")
    t.add_argument(
        "--data",
        action="extend",
        type=csv_list(str),
        required=True,
        metavar="FILE",
        help="dataset files (.parquet); comma-separated or repeated",
    )
    t.add_argument("--out", required=True, metavar="DIR", help="predictor directory to write")
    t.add_argument(
        "--regressor",
        action="extend",
        type=csv_list(str),
        metavar="NAME|MODULE=NAME",
        help="regressor for all types (NAME) or one type (MODULE=NAME): medn, mlp, ridge, poly2, poly3, "
        "roofline, roofline_pw; comma-separated or repeated; without it, medn (or --select)",
    )
    t.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs for MLP and MEDN (default: the training config's)",
    )
    t.add_argument(
        "--members",
        type=int,
        default=1,
        help="train MLP and MEDN as ensembles of N networks, predicting their mean (N times the training "
        "time; default 1)",
    )
    t.add_argument(
        "--edge",
        type=csv_list(str),
        default=None,
        metavar="FEATURES",
        help="MLP and MEDN: calibrate the 80 %% interval outside the training range along these features "
        "(names from `jaxlat.feature_schema(module).names`, e.g. log_cin,log_cout) on one more fit without "
        "their largest values; default `all`: every feature, each calibrated on its own; `none`: no such "
        "fit, first-order widening",
    )
    t.add_argument(
        "--clip-inputs",
        action="store_true",
        help="MLP and MEDN: hold the learned correction at the training range's boundary, so predictions "
        "beyond it grow as the roofline prior (monotone in size; less accurate out of range)",
    )
    t.add_argument(
        "--bins",
        type=int,
        default=None,
        metavar="N",
        help="MLP and MEDN: most bins of the step network's piecewise-linear encoding of features on a grid of sizes "
        "per feature (default 32; at most one per 100 training rows of the type; 0: no step network)",
    )
    t.add_argument("--seed", type=int, default=0, help="random seed of splits and initialization")
    t.add_argument(
        "--statistic",
        choices=tuple(STATISTICS),
        default="median",
        help="latency statistic to learn: median, or p10 for data measured with --rounds on a machine "
        "whose speed wanders (the undisturbed state's latency)",
    )
    t.add_argument(
        "--allow-mixed-devices",
        action="store_true",
        help="accept dataset files measured on different devices",
    )
    t.add_argument(
        "--select",
        choices=("accuracy", "time", "space"),
        help="choose a regressor per module type by cross-validation (instead of --regressor)",
    )
    t.add_argument(
        "--require-differentiable", action="store_true", help="selection: only differentiable regressors"
    )
    t.add_argument(
        "--max-query-us", type=float, help="selection: at most this many microseconds per single query"
    )
    t.add_argument("--max-bytes", type=int, help="selection: at most this many parameter bytes per regressor")
    t.add_argument("--folds", type=int, default=3, help="selection: cross-validation folds")
    t.add_argument(
        "--candidates",
        type=csv_list(str),
        metavar="NAMES",
        help="selection: comma-separated regressors (default: medn,mlp,poly2,ridge,roofline)",
    )
    t.add_argument(
        "--archs",
        action="extend",
        type=csv_list(str),
        metavar="FILE",
        help="profiled architecture records (.jsonl) to fit the whole-model composition correction; "
        "comma-separated or repeated",
    )
    t.set_defaults(func=_cmd_train)

    e = command(sub, "evaluate", "metrics table and predicted-vs-measured plot of a predictor on datasets")
    e.add_argument(
        "--predictor",
        required=True,
        metavar="DIR_OR_NAME",
        help="predictor directory or shipped name (see `jaxlat predictors`)",
    )
    e.add_argument(
        "--data",
        action="extend",
        type=csv_list(str),
        required=True,
        metavar="FILE",
        help="dataset files (.parquet); comma-separated or repeated",
    )
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.add_argument(
        "--plot",
        default=None,
        metavar="PNG",
        help="plot path (default: PREDICTOR/evaluate.png, or ./evaluate_NAME.png for a shipped predictor)",
    )
    e.add_argument(
        "--allow-mixed-devices",
        action="store_true",
        help="accept dataset files measured on different devices",
    )
    e.set_defaults(func=_cmd_evaluate)

    ca = command(
        sub,
        "calibrate",
        "measure a calibration suite on this machine within a time budget and write its predictor",
    )
    ca.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output directory: predictor/, card.md, card.json, data/ (run again to resume)",
    )
    ca.add_argument(
        "--budget-min", type=float, default=10.0, help="minutes of measurement (probe and retest included)"
    )
    ca.add_argument(
        "--base",
        action="extend",
        type=csv_list(str),
        metavar="NAME_OR_DIR",
        help="base predictors to adapt: shipped names or predictor directories (default: every shipped "
        "one); comma-separated or repeated",
    )
    ca.add_argument(
        "--exclude-base",
        action="extend",
        type=csv_list(str),
        metavar="NAME",
        help="leave these bases out (e.g. this machine's own shipped predictor); comma-separated or repeated",
    )
    ca.add_argument(
        "--module",
        action="extend",
        type=csv_list(str),
        metavar="TYPE",
        help="module types of the suite (default: all); comma-separated or repeated",
    )
    ca.add_argument(
        "--family",
        action="extend",
        type=csv_list(str),
        metavar="FAMILY",
        help="generated-network families: resnet, mbconv, vit, text (default: all); comma-separated or repeated",
    )
    ca.add_argument(
        "--statistic",
        choices=("auto", *STATISTICS),
        default="auto",
        help="latency statistic to learn; auto: the one that repeated better in this run's test-retest",
    )
    ca.add_argument("--seed", type=int, default=0, help="seed of the samplers, the networks and the split")
    ca.add_argument("--min-run-time", type=float, default=0.1, help="seconds of timing per module config")
    ca.add_argument(
        "--network-min-run-time", type=float, default=0.5, help="seconds of timing per network and batch size"
    )
    ca.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="measurements per config and network, spread in time, pooled (default 5; 1: one window each)",
    )
    ca.add_argument(
        "--no-tune",
        action="store_true",
        help="do not score the bases with their networks fine-tuned on the module rows (factors only)",
    )
    ca.add_argument(
        "--objective",
        # jaxlat.CALIBRATION_OBJECTIVES, not imported here: that loads JAX (tests check they agree)
        choices=("split", "both", "networks", "modules"),
        default="split",
        help="what chooses the calibration: split (the best candidate for the module rows answers module "
        "queries, the mean of the networks' leader and the next two of its base composes whole models; the default), both (one candidate, module "
        "rows and networks averaged), networks (one, whole models alone) or modules (one, module rows alone)",
    )
    ca.add_argument(
        "--no-register",
        action="store_true",
        help="do not register the predictor for this CPU model (jaxlat predict then does not prefer it)",
    )
    ca.add_argument("--no-progress", action="store_true", help="no progress bar")
    ca.set_defaults(func=_cmd_calibrate)

    tr = sub.add_parser(
        "transfer",
        help="cross-device: rank agreement, few-shot adaptation",
        description="Cross-device: rank agreement, few-shot adaptation.",
        formatter_class=HelpFormatter,
    )
    tsub = tr.add_subparsers(dest="transfer_command", required=True, metavar="COMMAND")
    mo = command(tsub, "monotonicity", "Spearman and Kendall between every device and setting in datasets")
    mo.add_argument(
        "--data",
        action="extend",
        type=csv_list(str),
        required=True,
        metavar="FILE",
        help="dataset files (devices may differ); comma-separated or repeated",
    )
    mo.add_argument("--json", action="store_true", help="print the matrices as JSON")
    mo.set_defaults(func=_cmd_transfer_monotonicity)
    ad = command(
        tsub, "adapt", "predict a new device's latency over a NAS space from K measured architectures"
    )
    ad.add_argument(
        "--space",
        required=True,
        choices=("nb201", "fbnet", "mobile"),
        help="search space of the architectures (given as their encodings)",
    )
    ad.add_argument(
        "--samples",
        required=True,
        type=existing_file,
        metavar="CSV",
        help="CSV arch,latency_ms: the K measurements on the target",
    )
    ad.add_argument(
        "--predict",
        required=True,
        type=existing_file,
        metavar="FILE",
        help="CSV with an arch column, or a text file of one arch per line",
    )
    ad.add_argument(
        "--proxy-table",
        action="extend",
        type=csv_list(str),
        metavar="CSV",
        help="CSV arch,latency_ms measured on another device; comma-separated or repeated",
    )
    ad.add_argument(
        "--proxy-predictor",
        metavar="DIR_OR_NAME",
        help="a predictor directory, a shipped predictor's name, or 'shipped' (the default one), as a proxy",
    )
    ad.add_argument(
        "--threshold", type=float, default=0.9, help="rank correlation above which the proxy is reused"
    )
    ad.add_argument("--out", required=True, metavar="CSV", help="CSV arch,latency_ms of the predictions")
    ad.set_defaults(func=_cmd_transfer_adapt)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The `jaxlat` command; returns the exit status (2 for a usage or input error)."""
    return run_main(build_parser(), argv, prog="jaxlat")


if __name__ == "__main__":
    sys.exit(main())
