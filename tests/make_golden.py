"""Writes tests/data/shipped_golden.npz: the shipped predictors' predictions on a fixed sample of
the committed datasets and architecture records. `tests/test_golden.py` checks that today's code
predicts the same (relative difference at most 1e-5). Re-run only when a change is meant to move
the shipped predictions, and say so in the commit:

    .venv/bin/python tests/make_golden.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "shipped_golden.npz"
#: (predictor, dataset, record files): every committed dataset of the predictor's machine.
CASES = {
    "cpu_torch_1t": (["data/cpu_torch_1t.parquet", "data/cpu_torch_1t_arch.parquet"],
                     ["benchmarks/results/zoo_cpu_records.jsonl", "data/cpu_generated_models.jsonl"]),
    "epyc_torch_1t": (["data/epyc_torch_1t.parquet", "data/epyc_torch_1t_space.parquet"],
                      ["benchmarks/results/zoo_epyc_records.jsonl", "data/epyc_generated_padded.jsonl"]),
}
ROWS_PER_TYPE = 12
RECORDS_PER_FILE = 12


def sample_rows(paths):
    import pandas as pd

    from profilers import read_dataset

    df = pd.concat([read_dataset(ROOT / p) for p in paths], ignore_index=True)
    return df.groupby("module", sort=True).head(ROWS_PER_TYPE).reset_index(drop=True)


def sample_records(paths):
    from profilers import load_records

    out = []
    for p in paths:
        out += load_records(ROOT / p)[:RECORDS_PER_FILE]
    return out


def main() -> None:
    from jaxlat import LatencyPredictor

    arrays = {}
    for name, (data, recs) in CASES.items():
        pred = LatencyPredictor.load(ROOT / "jaxlat" / "predictors" / name)
        rows = pred.predict(sample_rows(data))
        arrays[f"{name}/modules"] = rows[["latency_ms", "lo_ms", "hi_ms"]].to_numpy(np.float64)
        models = pred.predict_models(sample_records(recs))
        arrays[f"{name}/models"] = models[["latency_ms", "lo_ms", "hi_ms", "plain_sum_ms"]].to_numpy(np.float64)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
    main()
