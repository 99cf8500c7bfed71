"""Accuracy of every regressor, per module type, on (a) this project's CPU dataset and (b) the V100
TensorRT conv data of another project (random 80/20 split, and a split that holds out the
largest channel counts). Also the MEDN ablation: one MEDN against per-type MLPs of equal total
parameter count.

  python benchmarks/accuracy.py --cpu-data data/cpu_torch_1t.parquet \
      --v100 ../shared/data/tinynas_v100_trt_conv/conv_data.out --out benchmarks/results
  python benchmarks/accuracy.py --dataset cpu_tflite_1t=data/cpu_tflite_1t.parquet --name accuracy_tflite

Writes accuracy.json and accuracy.md. `--quick` shrinks every training for a smoke run.

The training recipe of the MLP and MEDN (`jaxlat.regressors.Recipe`) is chosen on the
validation rows (15 % of the training configs): `--ablation` adds, beside the default recipe 2
(`mlp`, `medn`), recipe 1 (`mlp_recipe1`, `medn_recipe1`), recipe 2 without each of its
parts (`mlp_mse`, `mlp_no_prior`, `mlp_no_conformal`; `mlp_no_encoding` and `medn_no_encoding`
without the step network) and with inputs clipped to the training range (`mlp_clip`,
`medn_clip`, the default before) and with the first-order widening outside the range
(`mlp_first_order`, `medn_first_order`: `edge=()`), each scored on the validation and the test
rows. `--edge log_cin,log_cout` adds `mlp_edge` and `medn_edge`: the widening outside
the range calibrated along the features the test extrapolates in (`Recipe.edge`).
`--members N` adds `mlp_ensemble` and `medn_ensemble`: ensembles of N networks. `--only` restricts to some regressors; `--merge` adds the rows
to an earlier run's file of the same `--name` (replacing rows of the same regressor), so that
a long comparison can run in parts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jaxlat  # noqa: E402
import profilers  # noqa: E402
from _common import machine, machine_markdown, write_results  # noqa: E402
from jaxlat import TrainConfig, evaluate, feature_schema, predict_batch, split_by_config, type_arrays  # noqa: E402
from jaxlat.regressors import (  # noqa: E402
    medn_regressor,
    medn_task_view,
    mlp_regressor,
    poly_ridge_regressor,
    random_forest_regressor,
    ridge_regressor,
    roofline_regressor,
    xgboost_regressor,
)


def param_count(params) -> int:
    leaves = [x for x in jax.tree.leaves(params) if hasattr(x, "size") and not isinstance(x, str)]
    return int(sum(np.size(x) for x in leaves))


def size_bytes(name: str, params) -> int:
    if name == "random_forest":
        return int(sum(e.tree_.node_count for e in params["model"].estimators_) * 5 * 8)
    if name == "xgboost":
        return len(params["model"].get_booster().save_raw("json"))
    return jaxlat.params_nbytes(params)


#: Recipe 1 (every MLP and MEDN saved before recipes were recorded), as a mapping of its fields.
RECIPE1 = {"version": 1, "prior": False, "clip": False, "loss": "mse", "conformal": False}
#: The recipe ablation: name -> recipe fields over the default recipe 2.
MLP_RECIPES = {
    "mlp": {},
    "mlp_recipe1": RECIPE1,
    "mlp_mse": {"loss": "mse"},
    "mlp_no_prior": {"prior": False},
    "mlp_clip": {"clip": True},
    "mlp_no_conformal": {"conformal": False},
    "mlp_no_encoding": {"bins": 0},
    "mlp_first_order": {"edge": ()},
}
MEDN_RECIPES = {"medn": {}, "medn_recipe1": RECIPE1, "medn_clip": {"clip": True}, "medn_no_encoding": {"bins": 0},
                "medn_first_order": {"edge": ()}}



def factories(quick: bool, mlp_train: TrainConfig, ablation: bool, edge: tuple[str, ...] = (), members: int = 1):
    mlps = {k: v for k, v in MLP_RECIPES.items() if ablation or k == "mlp"}
    if edge:
        mlps["mlp_edge"] = {"edge": edge}
    ensemble = {"mlp_ensemble": lambda: mlp_regressor((256, 256, 256), train=mlp_train, members=members)} if members > 1 else {}
    return {
        "ridge": lambda: ridge_regressor(),
        "poly2": lambda: poly_ridge_regressor(2),
        "poly3": lambda: poly_ridge_regressor(3),
        "roofline": lambda: roofline_regressor(),
        **{name: (lambda r=r: mlp_regressor((256, 256, 256), train=mlp_train, recipe=r)) for name, r in mlps.items()},
        **ensemble,
        "random_forest": lambda: random_forest_regressor(n_jobs=-1, **({"n_estimators": 20} if quick else {})),
        "xgboost": lambda: xgboost_regressor(n_jobs=-1, **({"n_estimators": 50} if quick else {})),
    }


def _row(dataset, split, module, regressor, y_true_ms, pred, fit_s, nbytes):
    mu, sigma = pred[:, 0], np.exp(pred[:, 1])
    z = 1.2815515655446004
    m = evaluate(y_true_ms, np.exp(mu), lo_ms=np.exp(mu - z * sigma), hi_ms=np.exp(mu + z * sigma))
    return {"dataset": dataset, "split": split, "module": module, "regressor": regressor, "fit_s": fit_s, "size_bytes": nbytes, **m}


def _wider(test: pd.DataFrame, module: str):
    """Features of `module`'s test rows with the channels doubled (the V100 conv types: output
    channels; depthwise: input, output channels and groups), or None for other types."""
    import tinynas

    sub = test[test["module"] == module].copy()
    if module == tinynas.REGULAR:
        sub["cout"] *= 2
    elif module == tinynas.DEPTHWISE:
        for c in ("cin", "cout", "groups"):
            sub[c] *= 2
    else:
        return None
    return type_arrays(sub, module)[0]


def _wanted(name: str, only) -> bool:
    return not only or name in only


def run(dataset: str, split: str, train: pd.DataFrame, test: pd.DataFrame, *, quick: bool, mlp_train: TrainConfig,
        medn_train: TrainConfig, only=None, ablation: bool = False, val_seed: int = 0, edge: tuple[str, ...] = (),
        members: int = 1):
    """Fit every regressor on 85 % of `train`'s configs, validate on the rest (`val_seed` seeds
    that split: it must differ from the seed of a by-config test split, whose hash would
    otherwise put no training config in validation), score on `test`."""
    modules = sorted(set(train["module"]) & set(test["module"]))
    if not modules:
        raise ValueError(f"{dataset}/{split}: no module type has both training and test rows")
    fit_df, val_df = split_by_config(train, test_frac=0.15, seed=val_seed)
    data = {m: (type_arrays(fit_df, m), type_arrays(val_df, m), type_arrays(test, m)) for m in modules}
    wider = {m: _wider(test, m) for m in modules}
    rows, preds = [], {}

    def score(name, m, reg, p, fit_s, nbytes):
        (_, _), (xv, yv), (xt, yt) = data[m]
        pred = predict_batch(reg, p, xt)
        preds[(name, m)] = pred
        if wider[m] is not None:  # does the prediction rise when the layer's channels double?
            rises = predict_batch(reg, p, wider[m])[:, 0] > pred[:, 0]
            preds[("rises", name, m)] = rises
        val = _row(dataset, split, m, name, np.exp(yv), predict_batch(reg, p, xv), fit_s, nbytes) if len(yv) else {}
        rows.append({**_row(dataset, split, m, name, np.exp(yt), pred, fit_s, nbytes),
                     "rises_2x_channels": float(np.mean(preds[("rises", name, m)])) if wider[m] is not None else float("nan"),
                     "val_acc10": val.get("acc10", float("nan")), "val_coverage": val.get("coverage", float("nan"))})
        print(f"{dataset}/{split} {m:<16} {name:<16} acc10={rows[-1]['acc10']:.3f} val_acc10={rows[-1]['val_acc10']:.3f} "
              f"r2={rows[-1]['r2']:.4f} coverage={rows[-1]['coverage']:.3f} ({fit_s:.1f}s)", flush=True)

    # MEDN over all module types at once (the default recipe, and recipe 1 in the ablation).
    n_medn = None
    medn_recipes = {**MEDN_RECIPES, **({"medn_edge": {"edge": edge}} if edge else {}),
                    **({"medn_ensemble": {}} if members > 1 else {})}
    for name, recipe in medn_recipes.items():
        if not _wanted(name, only) or (name not in ("medn", "medn_edge", "medn_ensemble") and not ablation):
            continue
        medn = medn_regressor(train=medn_train, recipe=recipe, members=members if name == "medn_ensemble" else 1)
        t0 = time.perf_counter()
        params = medn.fit(jax.random.key(0), {m: data[m][0] for m in modules}, val={m: data[m][1] for m in modules})
        fit_s = time.perf_counter() - t0
        n_medn = param_count(params["model"])
        for m in modules:
            reg, p = medn_task_view(medn, params, m)
            score(name, m, reg, p, fit_s, size_bytes("medn", p))
    # Ablation: per-type MLPs whose parameters add up to MEDN's, trained like MEDN.
    width = total = 0
    if _wanted("mlp_equal_params", only) and n_medn is not None:
        f_mean = float(np.mean([data[m][0][0].shape[1] for m in modules]))
        per_type = n_medn / len(modules)
        width = max(4, int((-(f_mean + 4) + math.sqrt((f_mean + 4) ** 2 + 8 * per_type)) / 4))
        for i, m in enumerate(modules):
            (x, y), (xv, yv), _ = data[m]
            reg = mlp_regressor((width, width, width), train=medn_train)
            t0 = time.perf_counter()
            p = reg.fit(jax.random.key(100 + i), x, y, names=feature_schema(m).names, x_val=xv, y_val=yv)
            total += param_count(p["layers"])
            score("mlp_equal_params", m, reg, p, time.perf_counter() - t0, size_bytes("mlp", p))
    for name, make in factories(quick, mlp_train, ablation, edge, members).items():
        if not _wanted(name, only):
            continue
        for i, m in enumerate(modules):
            (x, y), (xv, yv), _ = data[m]
            reg = make()
            t0 = time.perf_counter()
            params = reg.fit(jax.random.key(i), x, y, names=feature_schema(m).names, x_val=xv, y_val=yv)
            score(name, m, reg, params, time.perf_counter() - t0, size_bytes(name, params))
    # Overall rows: every module type's test rows together.
    for name in sorted({k[0] for k in preds if len(k) == 2}):
        yt = np.concatenate([np.exp(data[m][2][1]) for m in modules if (name, m) in preds])
        pr = np.concatenate([preds[(name, m)] for m in modules if (name, m) in preds])
        per = [r for r in rows if r["regressor"] == name]
        n_val = [len(data[r["module"]][1][1]) for r in per]
        fit_s = max(r["fit_s"] for r in per) if name.startswith("medn") else sum(r["fit_s"] for r in per)  # MEDN: one fit
        overall = _row(dataset, split, "all", name, yt, pr, float(fit_s), 0)
        rises = [preds[("rises", name, m)] for m in modules if ("rises", name, m) in preds]
        overall["rises_2x_channels"] = float(np.mean(np.concatenate(rises))) if rises else float("nan")
        # Validation figures of all types together: the row-weighted mean of the per-type ones.
        for k in ("val_acc10", "val_coverage"):
            overall[k] = float(np.average([r[k] for r in per], weights=n_val)) if sum(n_val) else float("nan")
        rows.append(overall)
    ablation_info = {"medn_params": n_medn, "mlp_width": width, "mlp_total_params": total, "n_types": len(modules),
                     "fit_rows": len(fit_df), "val_rows": len(val_df), "test_rows": len(test)}
    return rows, ablation_info


ORDER = ["ridge", "poly2", "poly3", "roofline", "random_forest", "xgboost", "mlp", "mlp_ensemble", "mlp_equal_params", "medn",
         "medn_ensemble"]
ABLATION_ORDER = ["mlp_recipe1", "mlp_mse", "mlp_no_prior", "mlp_no_clip", "mlp_clip", "mlp_no_conformal", "mlp_no_encoding",
                  "mlp_first_order", "mlp", "mlp_edge", "medn_recipe1", "medn_clip", "medn_no_encoding", "medn_first_order",
                  "medn", "medn_edge"]
RECIPE_WORDS = {
    "mlp_recipe1": "recipe 1: MSE on standardized log latency, RMS-residual interval",
    "mlp_mse": "recipe 2 with squared error instead of Huber",
    "mlp_no_prior": "recipe 2 without the roofline prior",
    "mlp_no_clip": "recipe 2 without clipping inputs to the training range (now the default)",
    "mlp_clip": "recipe 2 with inputs clipped to the training range (the default before)",
    "mlp_edge": "recipe 2, the widening calibrated on the edge rows of a first fit along `--edge`",
    "mlp_no_conformal": "recipe 2 with the RMS-residual interval instead of conformal + widening",
    "mlp_no_encoding": "recipe 2 without the step network on the piecewise-linear encoding (`bins=0`, the default before)",
    "mlp_first_order": "recipe 2 with the first-order widening outside the range (`edge=()`, the default before)",
    "mlp": "recipe 2: roofline prior (input and residual), step network on the piecewise-linear encoding, Huber, conformal + widening outside the range calibrated per feature on a first fit (`edge=\"all\"`)",
    "medn_recipe1": "recipe 1: MSE, learned spread (NLL)",
    "medn_clip": "recipe 2 with inputs clipped to the training range (the default before)",
    "medn_no_encoding": "recipe 2 without the step network on the piecewise-linear encoding (`bins=0`, the default before)",
    "medn_first_order": "recipe 2 with the first-order widening outside the range (`edge=()`, the default before)",
    "medn": "recipe 2: per-type prior, step network on the piecewise-linear encoding, Huber, learned spread scaled by conformal + widening outside the range calibrated per feature on a first fit (`edge=\"all\"`)",
    "medn_edge": "recipe 2, the widening calibrated on the edge rows of a first fit along `--edge`",
}


def _cell(x, col="acc10"):
    return f"{x[col].iloc[0]:.3f}" if len(x) and np.isfinite(x[col].iloc[0]) else ""


def markdown(results: pd.DataFrame, ablations: dict, meta: dict) -> str:
    out = ["# Regressor accuracy\n", machine_markdown(meta["machine"]), "\n"]
    a = meta["args"]
    out.append(f"Command: `{meta.get('command', '')}`. Training: MLPs {a.get('mlp_epochs')} epochs at most "
               f"(early stopping on validation, patience {a.get('patience')}), MEDN {a.get('medn_epochs')} epochs "
               f"(the best epoch on validation kept); batch {a.get('batch_size')}, peak learning rate {a.get('lr')} "
               f"(MEDN {a.get('medn_lr') or a.get('lr')}), gradient clipping at global norm {a.get('clip_norm')}"
               + (f", weights averaged (EMA decay {a['ema']}: validated, kept and scored)" if a.get("ema") else "")
               + ".\n\n")
    out.append("Cells: share of test predictions within ±10 % of the measured median (R² on raw latency in brackets). "
               "Every model sees the same features and the same train/validation/test rows.\n\n")
    for (ds, split), sub in results.groupby(["dataset", "split"], sort=False):
        a = ablations.get(f"{ds}/{split}", {})
        out.append(f"## {ds}, {split} split ({int(sub[sub.module == 'all'].n.iloc[0])} test rows; "
                   f"{a.get('fit_rows', '?')} training, {a.get('val_rows', '?')} validation)\n\n")
        regs = [r for r in ORDER + ["mlp_edge", "medn_edge"] if r in set(sub.regressor)]
        out.append("| module | " + " | ".join(regs) + " |\n|---|" + "---|" * len(regs) + "\n")
        for m in sorted(set(sub.module) - {"all"}) + ["all"]:
            cells = []
            for r in regs:
                x = sub[(sub.module == m) & (sub.regressor == r)]
                cells.append(f"{x.acc10.iloc[0]:.3f} ({x.r2.iloc[0]:.3f})" if len(x) else "")
            out.append(f"| {'**all**' if m == 'all' else m} | " + " | ".join(cells) + " |\n")
        allr = sub[sub.module == "all"]
        out.append("\n80 % interval coverage of the test rows (all types), and of the validation rows that set it:\n\n")
        regs_all = [r for r in ORDER + ABLATION_ORDER if r in set(allr.regressor)]
        regs_all = list(dict.fromkeys(regs_all))
        rises = "rises_2x_channels" in allr and allr["rises_2x_channels"].notna().any()
        out.append("| regressor | test coverage | validation coverage |" + (" rises with 2x channels |" if rises else "")
                   + "\n|---|---|---|" + ("---|" if rises else "") + "\n")
        for r in regs_all:
            x = allr[allr.regressor == r]
            out.append(f"| {r} | {_cell(x, 'coverage')} | {_cell(x, 'val_coverage')} |"
                       + (f" {_cell(x, 'rises_2x_channels')} |" if rises else "") + "\n")
        if rises:
            out.append("\n(rises with 2x channels: share of test configs whose predicted latency grows when the output "
                       "channels double, depthwise: all channels; physics says it should.)\n")
        variants = [r for r in ABLATION_ORDER if r in set(allr.regressor)]
        if len(variants) > 2 or any(v.endswith("recipe1") for v in variants):
            out.append("\nRecipe ablation (each choice is made on the validation column; the test column is beside it):\n\n")
            out.append("| variant | what | validation ±10 % | test ±10 % | test R² | test coverage | fit s |\n"
                       "|---|---|---|---|---|---|---|\n")
            for r in variants:
                x = allr[allr.regressor == r]
                out.append(f"| {r} | {RECIPE_WORDS[r]} | {_cell(x, 'val_acc10')} | {_cell(x)} | {_cell(x, 'r2')} | "
                           f"{_cell(x, 'coverage')} | {x.fit_s.iloc[0]:.0f} |\n")
        if a.get("mlp_width") and {"medn", "mlp_equal_params"} <= set(allr.regressor):
            al = allr.set_index("regressor")
            out.append(
                f"\nMEDN ({a['medn_params']:,} parameters) against {a['n_types']} per-type MLPs of width {a['mlp_width']} "
                f"({a['mlp_total_params']:,} parameters together): ±10 % accuracy {al.loc['medn', 'acc10']:.3f} vs "
                f"{al.loc['mlp_equal_params', 'acc10']:.3f}, R² {al.loc['medn', 'r2']:.4f} vs "
                f"{al.loc['mlp_equal_params', 'r2']:.4f}.\n")
        out.append("\n")
    return "".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-data", default=None, help="this project's torch dataset (.parquet), named cpu_torch_1t")
    ap.add_argument("--dataset", action="append", default=[], metavar="NAME=PATH",
                    help="another dataset to score, split 80/20 by config like --cpu-data (repeatable)")
    ap.add_argument("--v100", default=None, help="conv_data.out of the V100 TensorRT data")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--quick", action="store_true", help="20 epochs, small tree ensembles: a smoke run")
    ap.add_argument("--mlp-epochs", type=int, default=500, help="most epochs of the per-type MLPs (default 500)")
    ap.add_argument("--medn-epochs", type=int, default=500, help="epochs of MEDN (default 500)")
    ap.add_argument("--batch-size", type=int, default=256, help="rows per step of MLPs and MEDN (default 256)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the MLPs (default 1e-3)")
    ap.add_argument("--medn-lr", type=float, default=None, help="peak learning rate of MEDN (default: --lr)")
    ap.add_argument("--clip-norm", type=float, default=None, help="clip gradients to this global norm (default: none)")
    ap.add_argument("--ema", type=float, default=TrainConfig().ema_decay, metavar="DECAY",
                    help="decay of the weights' moving average (TrainConfig.ema_decay; default %(default)s; 0: none)")
    ap.add_argument("--patience", type=int, default=80, help="MLP early-stopping patience in epochs (default 80)")
    ap.add_argument("--only", action="append", help="restrict to these regressors (repeatable), e.g. medn, mlp, xgboost")
    ap.add_argument("--ablation", action="store_true", help="add the recipe ablation (see above)")
    ap.add_argument("--merge", action="store_true", help="add to the rows of an earlier run with the same --name")
    ap.add_argument("--v100-split", choices=("random", "extrapolation", "both"), default="both")
    ap.add_argument("--name", default="accuracy", help="output file stem")
    ap.add_argument("--members", type=int, default=1,
                    help="with N > 1, add mlp_ensemble and medn_ensemble: ensembles of N networks (members=N)")
    ap.add_argument("--edge", default="", metavar="FEATURES",
                    help="comma-separated feature names along which the test extrapolates (e.g. log_cin,log_cout), "
                         "or `all` (every feature, each calibrated on its own): adds mlp_edge and medn_edge, whose "
                         "widening is calibrated along them (Recipe.edge)")
    args = ap.parse_args()
    rows, ablations = [], {}
    if args.quick:
        mlp_train = medn_train = TrainConfig(epochs=20, batch_size=args.batch_size)
    else:
        mlp_train = TrainConfig(epochs=args.mlp_epochs, batch_size=args.batch_size, learning_rate=args.lr,
                                patience=args.patience, clip_norm=args.clip_norm, ema_decay=args.ema or None)
        medn_train = TrainConfig(epochs=args.medn_epochs, batch_size=args.batch_size, learning_rate=args.medn_lr or args.lr,
                                 patience=0, clip_norm=args.clip_norm, ema_decay=args.ema or None)
    edge = args.edge if args.edge == "all" else tuple(n for n in args.edge.split(",") if n)
    kw = dict(quick=args.quick, mlp_train=mlp_train, medn_train=medn_train, only=args.only, ablation=args.ablation, edge=edge,
              members=args.members)
    datasets = ([("cpu_torch_1t", args.cpu_data)] if args.cpu_data else []) + [tuple(d.split("=", 1)) for d in args.dataset]
    for name, path in datasets:
        df = profilers.read_dataset(path)
        tr, te = split_by_config(df, test_frac=0.2, seed=0)
        r, a = run(name, "by-config 80/20", tr, te, val_seed=1, **kw)
        rows += r
        ablations[f"{name}/by-config 80/20"] = a
    if args.v100:
        import tinynas

        df = tinynas.load(args.v100)
        splits = {}
        if args.v100_split in ("random", "both"):
            splits["random 80/20"] = tinynas.random_split(df)
        if args.v100_split in ("extrapolation", "both"):
            splits["extrapolation (channels >= 1024 held out)"] = tinynas.extrapolation_split(df)
        for split, (tr, te) in splits.items():
            r, a = run("v100_tensorrt_conv", split, tr, te, **kw)
            rows += r
            ablations[f"v100_tensorrt_conv/{split}"] = a
    command = "python benchmarks/accuracy.py " + " ".join(sys.argv[1:])
    meta = {"machine": machine(), "args": vars(args), "jaxlat": jaxlat.__version__, "command": command}
    earlier = Path(args.out) / f"{args.name}.json"
    if args.merge and earlier.exists():
        old = json.loads(earlier.read_text())
        new_keys = {(r["dataset"], r["split"], r["regressor"]) for r in rows}
        rows = [r for r in old["rows"] if (r["dataset"], r["split"], r["regressor"]) not in new_keys] + rows
        ablations = {**old.get("ablations", {}), **{k: {**old.get("ablations", {}).get(k, {}),
                                                        **{q: v for q, v in a.items() if v or q not in old.get("ablations", {}).get(k, {})}}
                                                    for k, a in ablations.items()}}
        meta["runs"] = [*old["meta"].get("runs", [old["meta"]]), {k: v for k, v in meta.items() if k != "runs"}]
        meta["command"] = " ; ".join(r.get("command", "") for r in meta["runs"])
    results = pd.DataFrame(rows)
    path = write_results(args.out, args.name, {"meta": meta, "ablations": ablations, "rows": results.to_dict(orient="records")},
                         markdown(results, ablations, meta))
    print(path.read_text())


if __name__ == "__main__":
    main()
