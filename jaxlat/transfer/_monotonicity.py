"""Performance monotonicity: do two devices (or settings) rank the same configs or the same models
alike? Measured by Spearman's rho and Kendall's tau over what both measured.

A **latency table** is a `pandas.Series` of latencies (ms) indexed by a key: a module config
(`config_table`) or a model (`model_table`, keyed by record name or by architecture encoding).

    tables = settings_tables(profilers.read_dataset("data/cpu_torch_1t.parquet"))  # one per setting
    rank_agreement(tables["torch t1 u0"], tables["torch t1 u0.5"])                 # overall
    rank_agreement_by_module(df_a, df_b)                                            # per module type
    matrix = monotonicity_matrix(tables)                                            # every pair
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from profilers import config_from_row

if TYPE_CHECKING:
    from profilers import ArchRecord

#: Config fields that are run settings, not part of what is ranked.
SETTING_FIELDS = ("threads", "utilization")


def config_key(row: Mapping[str, Any], *, ignore: Iterable[str] = SETTING_FIELDS) -> str:
    """Key of a dataset row's config with the `ignore` fields at their defaults."""
    cfg = config_from_row(row)
    spec = cfg.spec
    return cfg.replace(**{f: spec.field(f).default for f in ignore}).key


def config_table(df: pd.DataFrame, *, ignore: Iterable[str] = SETTING_FIELDS) -> pd.Series:
    """Median latency per config (rows of one device and setting), keyed by `config_key`."""
    ignore = tuple(ignore)
    keys = [config_key(r, ignore=ignore) for r in df.to_dict("records")]
    s = pd.Series(df["latency_ms_median"].to_numpy(dtype=float), index=keys, name="latency_ms")
    return s.groupby(level=0).median()


def model_table(records: Iterable[ArchRecord], *, key: str = "name", field: str = "latency_ms") -> pd.Series:
    """Measured whole-model latency per record, keyed by record `name` or by `info[key]`
    (e.g. `key="arch"` for search-space records); `field` names the statistic of the record's
    `measured` mapping (`latency_ms`, the median; or `p10_ms`, ...).

    Raises:
      KeyError: a measured record without `field`."""
    out = {}
    for r in records:
        if not r.measured:
            continue
        if field not in r.measured:
            raise KeyError(f"model_table: record {r.name!r} has no measured {field!r}; it has "
                           f"{', '.join(k for k in r.measured if k.endswith('_ms'))}")
        k = r.name if key == "name" else r.info.get(key, r.name)
        out[k] = float(r.measured[field])
    return pd.Series(out, name=field, dtype=float)


def settings_tables(df: pd.DataFrame, *, label: str | None = None) -> dict[str, pd.Series]:
    """One config table per run setting (backend, delegate, dtype, threads, utilization) found
    in a dataset, named like `torch t1 u0` or `tflite/xnnpack int8 t1 u0.5`."""
    out = {}
    cols = ["backend", "delegate", "dtype", "threads", "utilization"]
    d = df.assign(delegate=df["delegate"].astype(object).where(df["delegate"].notna(), None))
    for vals, sub in d.groupby(cols, dropna=False, sort=True):
        backend, delegate, dtype, threads, util = vals
        name = label or (f"{backend}/{delegate}" if isinstance(delegate, str) else str(backend))
        if dtype != "fp32":
            name += f" {dtype}"
        out[f"{name} t{int(threads)} u{float(util):g}"] = config_table(sub, ignore=("threads", "utilization", "dtype"))
    return out


def rank_agreement(a: pd.Series, b: pd.Series) -> dict[str, float]:
    """Spearman's rho and Kendall's tau of two latency tables over their common keys.

    Raises:
      ValueError: fewer than 3 common keys.
    """
    common = a.index.intersection(b.index)
    if len(common) < 3:
        raise ValueError(f"rank_agreement: {len(common)} common keys; at least 3 are needed")
    x, y = a.loc[common].to_numpy(float), b.loc[common].to_numpy(float)
    return {"spearman": float(stats.spearmanr(x, y).statistic), "kendall": float(stats.kendalltau(x, y).statistic),
            "n": int(len(common)), "ratio_median": float(np.median(y / x))}


def rank_agreement_by_module(df_a: pd.DataFrame, df_b: pd.DataFrame, *,
                             ignore: Iterable[str] = ("threads", "utilization", "dtype")) -> pd.DataFrame:
    """`rank_agreement` per module type and overall between two datasets (one setting each).

    Returns:
      A DataFrame: `module` (`all` last), `spearman`, `kendall`, `n`, `ratio_median` (b / a).
    """
    ignore = tuple(ignore)
    rows = []
    ta, tb = config_table(df_a, ignore=ignore), config_table(df_b, ignore=ignore)
    mods_a = dict(zip((config_key(r, ignore=ignore) for r in df_a.to_dict("records")), df_a["module"]))
    for module in sorted(set(df_a["module"]) & set(df_b["module"])):
        keys = [k for k, m in mods_a.items() if m == module]
        try:
            rows.append({"module": module, **rank_agreement(ta.loc[ta.index.intersection(keys)], tb)})
        except ValueError:
            continue
    rows.append({"module": "all", **rank_agreement(ta, tb)})
    return pd.DataFrame(rows)


def monotonicity_matrix(tables: Mapping[str, pd.Series], *, metric: str = "spearman") -> pd.DataFrame:
    """`metric` (`spearman` or `kendall`) for every pair of tables (1 on the diagonal; NaN where
    fewer than 3 keys are shared)."""
    if metric not in ("spearman", "kendall"):
        raise ValueError(f"metric={metric!r} is not valid: expected spearman or kendall")
    names = list(tables)
    m = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            try:
                v = rank_agreement(tables[a], tables[b])[metric]
            except ValueError:
                v = np.nan
            m.loc[a, b] = m.loc[b, a] = v
    return m
