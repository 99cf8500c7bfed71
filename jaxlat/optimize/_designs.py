"""Design selection under SLOs (CARIn-style), with the latency predictor in the loop.

A **design** is a model variant x backend x precision x threads x batch size. For every design
and every device-utilization level, the predictors give the median latency and its p90 (the
upper end of the predictor's 80 % interval), in one vectorized call per predictor; throughput is
batch / latency; memory is the weights plus the largest activation pair; accuracy comes from the
user per variant and precision.

    space = DesignSpace(variants, predictors={("torch", "fp32"): p_torch, ("tflite", "int8"): p_tfl},
                        threads=(1, 2), batch_sizes=(1,))
    table = space.evaluate(utilization=np.linspace(0, 1, 21))     # every design x level
    choice = choose(table, SLO(max_p90_ms=30, max_memory_mb=200), utilization=0.5)
    switch = switch_table(table, {"tight": SLO(max_p90_ms=10), "loose": SLO(max_p90_ms=30)})
    switch.lookup("tight", 0.37)                                   # a lookup, not a search
    switch.save("switch.json")

The choice among designs that meet the SLOs is **fair**: each objective (p90 latency, memory,
accuracy, throughput) is normalized to [0, 1] over the feasible designs (1 best), and the design
whose worst normalized objective is best wins (max-min), ties broken by the mean. `pareto_front`
lists the non-dominated feasible designs.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from profilers import ArchRecord

    from .._predictor import LatencyPredictor

#: Objectives: column and direction (+1: higher is better).
OBJECTIVES = {"p90_ms": -1, "memory_mb": -1, "accuracy": +1, "throughput_per_s": +1}
SWITCH_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Variant:
    """A model variant.

    Attributes:
      name: its name.
      records: batch size -> architecture record at that batch (e.g. from
        `profilers.capture_torch` or a search space's `record`).
      accuracy: precision -> accuracy (user-given; a missing precision falls back to `fp32`'s).
    """

    name: str
    records: Mapping[int, ArchRecord]
    accuracy: Mapping[str, float]

    def accuracy_at(self, precision: str) -> float:
        return float(self.accuracy.get(precision, self.accuracy.get("fp32", np.nan)))


@dataclasses.dataclass(frozen=True)
class SLO:
    """Constraints a design must meet (None: no limit)."""

    max_p90_ms: float | None = None
    max_median_ms: float | None = None
    max_memory_mb: float | None = None
    min_accuracy: float | None = None
    min_throughput_per_s: float | None = None

    def feasible(self, t: pd.DataFrame) -> np.ndarray:
        ok = np.ones(len(t), bool)
        for field, col, sign in (("max_p90_ms", "p90_ms", 1), ("max_median_ms", "median_ms", 1),
                                 ("max_memory_mb", "memory_mb", 1), ("min_accuracy", "accuracy", -1),
                                 ("min_throughput_per_s", "throughput_per_s", -1)):
            v = getattr(self, field)
            if v is not None:
                ok &= (t[col].to_numpy() <= v) if sign > 0 else (t[col].to_numpy() >= v)
        return ok


def memory_mb(record: ArchRecord, precision: str) -> float:
    """Weights plus the largest input + output activation of any module, MB (a floor: runtimes
    add workspace)."""
    from profilers import weight_dtype_bytes

    weights = sum(m.config.costs().params for m in record.modules) * weight_dtype_bytes(precision)
    act = max((m.config.replace(dtype=precision).costs().bytes_in + m.config.replace(dtype=precision).costs().bytes_out
               for m in record.modules), default=0.0)
    return float((weights + act) / 1e6)


@dataclasses.dataclass
class DesignSpace:
    """Variants x backend-precision predictors x threads x batch sizes."""

    variants: Sequence[Variant]
    predictors: Mapping[tuple[str, str], LatencyPredictor]  # (backend, precision) -> predictor
    threads: Sequence[int] = (1,)
    batch_sizes: Sequence[int] = (1,)

    def designs(self) -> pd.DataFrame:
        """One row per design: variant, backend, precision, threads, batch_size."""
        rows = []
        for v, (backend, precision), t, b in itertools.product(self.variants, self.predictors, self.threads,
                                                               self.batch_sizes):
            if b in v.records:
                rows.append({"variant": v.name, "backend": backend, "precision": precision, "threads": t,
                             "batch_size": b})
        if not rows:
            raise ValueError("DesignSpace: no design (no variant has a record at the given batch sizes)")
        return pd.DataFrame(rows)

    def evaluate(self, utilization: Sequence[float] = (0.0,)) -> pd.DataFrame:
        """Every design at every utilization level: `median_ms`, `p90_ms`, `throughput_per_s`,
        `memory_mb`, `accuracy`, plus the design's fields and `utilization`. One vectorized
        `predict_models` call per predictor covers all its designs and levels."""
        designs = self.designs()
        by_name = {v.name: v for v in self.variants}
        out = []
        for (backend, precision), pred in self.predictors.items():
            sub = designs[(designs.backend == backend) & (designs.precision == precision)]
            recs, meta = [], []
            for d in sub.to_dict("records"):
                base = by_name[d["variant"]].records[d["batch_size"]]
                for u in utilization:
                    recs.append(base.with_settings(threads=d["threads"], utilization=float(u), dtype=precision))
                    meta.append({**d, "utilization": float(u)})
            pm = pred.predict_models(recs)
            for m, (_, r) in zip(meta, pm.iterrows()):
                v = by_name[m["variant"]]
                rec = v.records[m["batch_size"]]
                out.append({**m, "median_ms": float(r["latency_ms"]), "p90_ms": float(r["hi_ms"]),
                            "throughput_per_s": 1e3 * m["batch_size"] / float(r["latency_ms"]),
                            "memory_mb": memory_mb(rec, precision), "accuracy": v.accuracy_at(precision)})
        return pd.DataFrame(out)


def _key(row: Mapping[str, Any]) -> str:
    return f"{row['variant']}|{row['backend']}|{row['precision']}|t{int(row['threads'])}|b{int(row['batch_size'])}"


def pareto_front(table: pd.DataFrame) -> pd.DataFrame:
    """The designs no other design beats on every objective (at one utilization level)."""
    vals = np.stack([table[c].to_numpy(float) * s for c, s in OBJECTIVES.items()], 1)  # higher is better
    keep = []
    for i in range(len(vals)):
        dominated = np.any(np.all(vals >= vals[i], 1) & np.any(vals > vals[i], 1))
        keep.append(not dominated)
    return table[np.asarray(keep)]


def fair_scores(table: pd.DataFrame, weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Max-min fairness over normalized objectives: each objective to [0, 1] over the rows (1 is
    best), weighted (default all 1); score = min + 1e-3 * mean, so the mean breaks ties."""
    w = {k: 1.0 for k in OBJECTIVES} | dict(weights or {})
    cols = []
    for c, s in OBJECTIVES.items():
        if w[c] <= 0:
            continue
        v = table[c].to_numpy(float) * s
        span = v.max() - v.min()
        cols.append(w[c] * ((v - v.min()) / span if span > 0 else np.ones_like(v)))
    m = np.stack(cols, 1)
    return m.min(1) + 1e-3 * m.mean(1)


def choose(table: pd.DataFrame, slo: SLO, *, utilization: float | None = None,
           weights: Mapping[str, float] | None = None) -> dict[str, Any] | None:
    """The fair choice among designs meeting `slo` (at one utilization level of `table`, the
    nearest to `utilization`); None when no design meets it."""
    if utilization is not None:
        levels = np.unique(table["utilization"])
        u = levels[np.argmin(np.abs(levels - utilization))]
        table = table[table["utilization"] == u]
    feasible = table[slo.feasible(table)]
    if feasible.empty:
        return None
    best = feasible.iloc[int(np.argmax(fair_scores(feasible, weights)))]
    return best.to_dict()


@dataclasses.dataclass
class SwitchTable:
    """Precomputed choices: for each SLO set and utilization level, the design to run.

    `lookup(slo, u)` takes the smallest tabulated level at or above `u` (conservative: the
    design was chosen for at least that much contention): a bisection on a short list, no search.
    """

    levels: list[float]
    choices: dict[str, list[str | None]]  # slo name -> design key per level
    designs: dict[str, dict[str, Any]]  # design key -> its fields

    def lookup(self, slo: str, utilization: float) -> str | None:
        i = bisect.bisect_left(self.levels, utilization - 1e-12)
        return self.choices[slo][min(i, len(self.levels) - 1)]

    def to_json(self) -> dict[str, Any]:
        return {"format_version": SWITCH_FORMAT_VERSION, "levels": self.levels, "choices": self.choices,
                "designs": self.designs}

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.to_json(), indent=1, default=float) + "\n")
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> SwitchTable:
        obj = json.loads(Path(path).read_text())
        if obj.get("format_version") != SWITCH_FORMAT_VERSION:
            raise ValueError(f"{path}: format_version={obj.get('format_version')!r} is unknown; this version reads "
                             f"{SWITCH_FORMAT_VERSION}")
        return cls([float(x) for x in obj["levels"]], obj["choices"], obj["designs"])


def switch_table(table: pd.DataFrame, slos: Mapping[str, SLO], *,
                 weights: Mapping[str, float] | None = None) -> SwitchTable:
    """The best design per SLO set at every utilization level of `table` (see `SwitchTable`)."""
    levels = sorted(float(u) for u in np.unique(table["utilization"]))
    choices: dict[str, list[str | None]] = {}
    designs: dict[str, dict[str, Any]] = {}
    for name, slo in slos.items():
        choices[name] = []
        for u in levels:
            c = choose(table[table["utilization"] == u], slo, weights=weights)
            if c is None:
                choices[name].append(None)
                continue
            k = _key(c)
            designs[k] = {f: c[f] for f in ("variant", "backend", "precision", "threads", "batch_size")}
            choices[name].append(k)
    return SwitchTable(levels, choices, designs)


def induced_utilization(latency_ms: np.ndarray, rate_per_s: float, threads: np.ndarray, cores: int) -> np.ndarray:
    """Share of the CPU a model keeps busy: requests per second x seconds per request x its
    threads over the cores (at most 1)."""
    return np.minimum(1.0, rate_per_s * np.asarray(latency_ms) / 1e3 * np.asarray(threads) / cores)


def choose_jointly(tables: Mapping[str, pd.DataFrame], slos: Mapping[str, SLO], rates_per_s: Mapping[str, float], *,
                   cores: int, base_utilization: float = 0.0, iterations: int = 10,
                   weights: Mapping[str, float] | None = None) -> dict[str, dict[str, Any]] | None:
    """Designs for several models sharing one device, each meeting its own SLO.

    Each model's latency is read at the utilization the others induce (`induced_utilization`,
    plus `base_utilization`), interpolated over the levels of its table; the loads are solved by
    fixed-point iteration for every combination of feasible-at-some-level designs, and the
    combination whose worst model score (fair scores within each model) is best is returned.
    Returns None when no combination meets every SLO.
    """
    names = list(tables)
    cand: dict[str, list[tuple[str, pd.DataFrame]]] = {}
    for n in names:
        t = tables[n].assign(key=[_key(r) for r in tables[n].to_dict("records")])
        groups = [(k, g.sort_values("utilization")) for k, g in t.groupby("key")]
        cand[n] = [(k, g) for k, g in groups if slos[n].feasible(g).any()]
        if not cand[n]:
            return None
    best, best_score = None, -np.inf
    for combo in itertools.product(*(cand[n] for n in names)):
        sel = dict(zip(names, combo))
        threads = {n: int(sel[n][1]["threads"].iloc[0]) for n in names}
        u = {n: base_utilization for n in names}
        lat = {}
        for _ in range(iterations):
            for n in names:
                g = sel[n][1]
                lat[n] = float(np.interp(min(u[n], 1.0), g["utilization"], g["median_ms"]))
            new = {}
            for n in names:
                others = sum(float(induced_utilization(lat[m], rates_per_s[m], threads[m], cores)) for m in names if m != n)
                new[n] = min(1.0, base_utilization + others)
            if all(abs(new[n] - u[n]) < 1e-4 for n in names):
                break
            u = new
        rows = {}
        ok = True
        for n, (k, g) in zip(names, combo):
            r = {c: float(np.interp(min(u[n], 1.0), g["utilization"], g[c])) for c in ("median_ms", "p90_ms")}
            row = {**g.iloc[0].to_dict(), **r, "utilization": u[n],
                   "throughput_per_s": 1e3 * g["batch_size"].iloc[0] / r["median_ms"]}
            ok &= bool(slos[n].feasible(pd.DataFrame([row]))[0])
            rows[n] = row
        if not ok:
            continue
        score = min(float(fair_scores(pd.concat([pd.DataFrame([rows[n]]), tables[n]], ignore_index=True), weights)[0])
                    for n in names)
        if score > best_score:
            best, best_score = rows, score
    return best
