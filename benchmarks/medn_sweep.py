"""MEDN settings compared on the V100 TensorRT data (random 80/20 split): chosen by the
validation split, the test split only reported.

  python benchmarks/medn_sweep.py --v100 conv_data.out --out benchmarks/results
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tinynas  # noqa: E402
from _common import machine, machine_markdown, write_results  # noqa: E402
from jaxlat import TrainConfig, evaluate, predict_batch, split_by_config, type_arrays  # noqa: E402
from jaxlat.regressors import medn_regressor, medn_task_view  # noqa: E402

SETTINGS = {
    "default (spread head on stopped gradients)": dict(),
    "no spread loss": dict(nll_weight=0.0),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--v100", required=True)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--name", default="medn_sweep")
    args = ap.parse_args()
    df = tinynas.load(args.v100)
    train, test = tinynas.random_split(df)
    fit_df, val_df = split_by_config(train, test_frac=0.15, seed=0)
    mods = sorted(set(df["module"]))
    tr = {m: type_arrays(fit_df, m) for m in mods}
    va = {m: type_arrays(val_df, m) for m in mods}
    te = {m: type_arrays(test, m) for m in mods}
    rows = []
    for name, kw in SETTINGS.items():
        medn = medn_regressor(**kw)
        t0 = time.perf_counter()
        params = medn.fit(jax.random.key(0), tr, val=va)
        fit_s = time.perf_counter() - t0
        res = {"setting": name, "fit_s": fit_s}
        for split, data in (("val", va), ("test", te)):
            yt = np.concatenate([np.exp(data[m][1]) for m in mods])
            yp = np.concatenate([np.exp(predict_batch(*medn_task_view(medn, params, m), data[m][0])[:, 0]) for m in mods])
            res[f"{split}_acc10"] = evaluate(yt, yp)["acc10"]
            res[f"{split}_r2"] = evaluate(yt, yp)["r2"]
        rows.append(res)
        print(res, flush=True)
    best = max(rows, key=lambda r: r["val_acc10"])
    md = ["# MEDN settings on the V100 TensorRT conv data (random split)\n\n", machine_markdown(machine()), "\n",
          "| setting | val ±10 % | test ±10 % | test R² | fit s |\n|---|---|---|---|---|\n"]
    md += [f"| {r['setting']} | {r['val_acc10']:.3f} | {r['test_acc10']:.3f} | {r['test_r2']:.4f} | {r['fit_s']:.0f} |\n" for r in rows]
    md.append(f"\nChosen by validation: **{best['setting']}**.\n")
    print(write_results(args.out, args.name, {"rows": rows, "best": best["setting"]}, "".join(md)).read_text())


if __name__ == "__main__":
    main()
