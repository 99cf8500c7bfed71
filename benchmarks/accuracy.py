"""Accuracy of every regressor, per module type, on (a) this project's CPU dataset and (b) the V100
TensorRT conv data of another project (random 80/20 split, and a split that holds out the
largest channel counts). Also the MEDN ablation: one MEDN against per-type MLPs of equal total
parameter count.

  python benchmarks/accuracy.py --cpu-data data/cpu_torch_1t.parquet \
      --v100 ../shared/data/tinynas_v100_trt_conv/conv_data.out --out benchmarks/results
  python benchmarks/accuracy.py --dataset cpu_tflite_1t=data/cpu_tflite_1t.parquet --name accuracy_tflite

Writes accuracy.json and accuracy.md. `--quick` shrinks every training for a smoke run.
"""

from __future__ import annotations

import argparse
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


def factories(quick: bool, mlp_epochs: int):
    mlp_train = TrainConfig(epochs=20 if quick else mlp_epochs, batch_size=256, learning_rate=1e-3, patience=0 if quick else 80)
    return {
        "ridge": lambda: ridge_regressor(),
        "poly2": lambda: poly_ridge_regressor(2),
        "poly3": lambda: poly_ridge_regressor(3),
        "roofline": lambda: roofline_regressor(),
        "mlp": lambda: mlp_regressor((256, 256, 256), train=mlp_train),
        "random_forest": lambda: random_forest_regressor(n_jobs=-1, **({"n_estimators": 20} if quick else {})),
        "xgboost": lambda: xgboost_regressor(n_jobs=-1, **({"n_estimators": 50} if quick else {})),
    }


def _row(dataset, split, module, regressor, y_true_ms, pred, fit_s, nbytes):
    mu, sigma = pred[:, 0], np.exp(pred[:, 1])
    z = 1.2815515655446004
    m = evaluate(y_true_ms, np.exp(mu), lo_ms=np.exp(mu - z * sigma), hi_ms=np.exp(mu + z * sigma))
    return {"dataset": dataset, "split": split, "module": module, "regressor": regressor, "fit_s": fit_s, "size_bytes": nbytes, **m}


def run(dataset: str, split: str, train: pd.DataFrame, test: pd.DataFrame, *, quick: bool, mlp_epochs: int, medn_epochs: int, only=None):
    modules = sorted(set(train["module"]) & set(test["module"]))
    if not modules:
        raise ValueError(f"{dataset}/{split}: no module type has both training and test rows")
    fit_df, val_df = split_by_config(train, test_frac=0.15, seed=0)
    data = {m: (type_arrays(fit_df, m), type_arrays(val_df, m), type_arrays(test, m)) for m in modules}
    rows, preds = [], {}
    # MEDN over all module types at once.
    # MEDN with the library's default training; the equal-size MLPs below get the same.
    train_cfg = TrainConfig(epochs=20, batch_size=256) if quick else TrainConfig(epochs=medn_epochs, batch_size=256, learning_rate=1e-3, patience=0)
    medn = medn_regressor(train=train_cfg)
    t0 = time.perf_counter()
    params = medn.fit(jax.random.key(0), {m: data[m][0] for m in modules}, val={m: data[m][1] for m in modules})
    fit_s = time.perf_counter() - t0
    n_medn = param_count(params["model"])
    for m in modules:
        reg, p = medn_task_view(medn, params, m)
        pred = predict_batch(reg, p, data[m][2][0])
        preds[("medn", m)] = pred
        rows.append(_row(dataset, split, m, "medn", np.exp(data[m][2][1]), pred, fit_s, size_bytes("medn", p)))
        print(f"{dataset}/{split} {m:<16} medn           acc10={rows[-1]['acc10']:.3f} r2={rows[-1]['r2']:.4f}", flush=True)
    # Ablation: per-type MLPs whose parameters add up to MEDN's.
    f_mean = float(np.mean([data[m][0][0].shape[1] for m in modules]))
    per_type = n_medn / len(modules)
    width = max(4, int((-(f_mean + 4) + math.sqrt((f_mean + 4) ** 2 + 8 * per_type)) / 4))
    total = 0
    for i, m in enumerate(modules):
        (x, y), (xv, yv), (xt, yt) = data[m]
        reg = mlp_regressor((width, width, width), train=train_cfg)
        t0 = time.perf_counter()
        p = reg.fit(jax.random.key(100 + i), x, y, names=feature_schema(m).names, x_val=xv, y_val=yv)
        total += param_count(p["layers"])
        pred = predict_batch(reg, p, xt)
        preds[("mlp_equal_params", m)] = pred
        rows.append(_row(dataset, split, m, "mlp_equal_params", np.exp(yt), pred, time.perf_counter() - t0, size_bytes("mlp", p)))
    for name, make in factories(quick, mlp_epochs).items():
        if only and name not in only:
            continue
        for i, m in enumerate(modules):
            (x, y), (xv, yv), (xt, yt) = data[m]
            reg = make()
            t0 = time.perf_counter()
            params = reg.fit(jax.random.key(i), x, y, names=feature_schema(m).names, x_val=xv, y_val=yv)
            fit_s = time.perf_counter() - t0
            pred = predict_batch(reg, params, xt)
            preds[(name, m)] = pred
            rows.append(_row(dataset, split, m, name, np.exp(yt), pred, fit_s, size_bytes(name, params)))
            print(f"{dataset}/{split} {m:<16} {name:<14} acc10={rows[-1]['acc10']:.3f} r2={rows[-1]['r2']:.4f} ({fit_s:.1f}s)", flush=True)
    # Overall rows: every module type's test rows together.
    for name in sorted({r for r, _ in preds}):
        yt = np.concatenate([np.exp(data[m][2][1]) for m in modules if (name, m) in preds])
        pr = np.concatenate([preds[(name, m)] for m in modules if (name, m) in preds])
        rows.append(_row(dataset, split, "all", name, yt, pr, float("nan"), 0))
    ablation = {"medn_params": n_medn, "mlp_width": width, "mlp_total_params": total, "n_types": len(modules)}
    return rows, ablation


def markdown(results: pd.DataFrame, ablations: dict, meta: dict) -> str:
    out = ["# Regressor accuracy\n", machine_markdown(meta["machine"]), "\n"]
    out.append("Cells: share of test predictions within ±10 % of the measured median (R² on raw latency in brackets). "
               "Every model sees the same features and the same train/validation/test rows.\n\n")
    order = ["ridge", "poly2", "poly3", "roofline", "random_forest", "xgboost", "mlp", "mlp_equal_params", "medn"]
    for (ds, split), sub in results.groupby(["dataset", "split"], sort=False):
        out.append(f"## {ds}, {split} split ({int(sub[sub.module == 'all'].n.iloc[0])} test rows)\n\n")
        regs = [r for r in order if r in set(sub.regressor)]
        out.append("| module | " + " | ".join(regs) + " |\n|---|" + "---|" * len(regs) + "\n")
        for m in sorted(set(sub.module) - {"all"}) + ["all"]:
            cells = []
            for r in regs:
                x = sub[(sub.module == m) & (sub.regressor == r)]
                cells.append(f"{x.acc10.iloc[0]:.3f} ({x.r2.iloc[0]:.3f})" if len(x) else "")
            out.append(f"| {'**all**' if m == 'all' else m} | " + " | ".join(cells) + " |\n")
        a = ablations[f"{ds}/{split}"]
        allr = sub[sub.module == "all"].set_index("regressor")
        out.append(
            f"\nMEDN ({a['medn_params']:,} parameters) against {a['n_types']} per-type MLPs of width {a['mlp_width']} "
            f"({a['mlp_total_params']:,} parameters together): ±10 % accuracy {allr.loc['medn', 'acc10']:.3f} vs "
            f"{allr.loc['mlp_equal_params', 'acc10']:.3f}, R² {allr.loc['medn', 'r2']:.4f} vs {allr.loc['mlp_equal_params', 'r2']:.4f}. "
            f"MEDN 80 % interval coverage: {allr.loc['medn', 'coverage']:.3f}.\n\n"
        )
    return "".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-data", default=None, help="this project's torch dataset (.parquet), named cpu_torch_1t")
    ap.add_argument("--dataset", action="append", default=[], metavar="NAME=PATH",
                    help="another dataset to score, split 80/20 by config like --cpu-data (repeatable)")
    ap.add_argument("--v100", default=None, help="conv_data.out of the V100 TensorRT data")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mlp-epochs", type=int, default=500)
    ap.add_argument("--medn-epochs", type=int, default=500)
    ap.add_argument("--only", action="append", help="restrict per-type regressors (repeatable)")
    ap.add_argument("--v100-split", choices=("random", "extrapolation", "both"), default="both")
    ap.add_argument("--name", default="accuracy", help="output file stem")
    args = ap.parse_args()
    rows, ablations = [], {}
    datasets = ([("cpu_torch_1t", args.cpu_data)] if args.cpu_data else []) + [tuple(d.split("=", 1)) for d in args.dataset]
    for name, path in datasets:
        df = profilers.read_dataset(path)
        tr, te = split_by_config(df, test_frac=0.2, seed=0)
        r, a = run(name, "by-config 80/20", tr, te, quick=args.quick, mlp_epochs=args.mlp_epochs, medn_epochs=args.medn_epochs, only=args.only)
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
            r, a = run("v100_tensorrt_conv", split, tr, te, quick=args.quick, mlp_epochs=args.mlp_epochs, medn_epochs=args.medn_epochs, only=args.only)
            rows += r
            ablations[f"v100_tensorrt_conv/{split}"] = a
    results = pd.DataFrame(rows)
    meta = {"machine": machine(), "args": vars(args), "jaxlat": jaxlat.__version__}
    path = write_results(args.out, args.name, {"meta": meta, "ablations": ablations, "rows": results.to_dict(orient="records")},
                         markdown(results, ablations, meta))
    print(path.read_text())


if __name__ == "__main__":
    main()
