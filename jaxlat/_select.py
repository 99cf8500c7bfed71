"""Auto-selection: per module type, the regressor that is most accurate within the user's
budgets on prediction time per query and model size.

    sel = select_regressors(df, mode="accuracy", budgets=Budgets(max_query_us=200))
    print(sel.format())                 # the selection table, and selected vs MEDN for all
    predictor = train_predictor(df, regressor=sel.choice)

Every candidate is scored on the same out-of-fold predictions (K folds by config group, so a
held-out config never has a near-twin in training). Modes:

- `accuracy`: the highest ±10 % accuracy (ties: R², then time) among candidates in budget,
  if it beats the first candidate in budget (MEDN by default) by more than `min_gain_se`
  standard errors of their paired out-of-fold difference; otherwise that first candidate. On
  noisy labels the out-of-fold ranking of close candidates is mostly noise, and a choice made
  on it loses on new configs as often as it wins (`benchmarks/results/selection.md`).
- `time`: the fastest candidate whose accuracy is within `tolerance` of that type's best.
- `space`: the smallest candidate whose accuracy is within `tolerance` of that type's best.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from ._base import Regressor, params_nbytes, predict_batch
from ._data import config_groups, statistic_column, type_arrays
from ._features import feature_schema
from ._mass import single_query
from ._metrics import evaluate
from ._train import TrainConfig

_log = logging.getLogger(__name__)

MODES = ("accuracy", "time", "space")
#: Candidates tried by default: every regressor a predictor can save.
DEFAULT_CANDIDATES = ("medn", "mlp", "poly2", "ridge", "roofline")


@dataclasses.dataclass(frozen=True)
class Budgets:
    """Limits a selected regressor must meet (None: no limit).

    Attributes:
      max_query_us: median time of one single-config prediction on this host, microseconds.
      max_bytes: parameter bytes of the regressor (a MEDN counts whole, as it is stored once).
      require_differentiable: only regressors with a meaningful `jax.grad` (NAS needs it).
    """

    max_query_us: float | None = None
    max_bytes: int | None = None
    require_differentiable: bool = False

    def admits(self, row: Mapping[str, Any]) -> bool:
        if self.max_query_us is not None and row["query_us"] > self.max_query_us:
            return False
        if self.max_bytes is not None and row["bytes"] > self.max_bytes:
            return False
        return not (self.require_differentiable and not row["differentiable"])


@dataclasses.dataclass
class Selection:
    """The outcome: `choice` (module -> regressor name), the full candidate `table` (one row per
    module and candidate), and overall metrics of the selection against MEDN for every type."""

    choice: dict[str, str]
    table: Any  # DataFrame
    overall: dict[str, dict[str, float]]  # {"selected": metrics, "medn_all": metrics}
    mode: str
    budgets: Budgets

    def format(self) -> str:
        t = self.table
        lines = [f"selection (mode={self.mode}; budgets: {_budget_text(self.budgets)})",
                 f"{'module':<14} {'regressor':<9} {'acc10':>6} {'r2':>7} {'query_us':>9} {'bytes':>10}  chosen"]
        for _, r in t.iterrows():
            mark = "<-" if self.choice.get(r["module"]) == r["regressor"] else ("" if r["admitted"] else "over budget")
            lines.append(f"{r['module']:<14} {r['regressor']:<9} {r['acc10']:>6.3f} {r['r2']:>7.3f} "
                         f"{r['query_us']:>9.1f} {int(r['bytes']):>10}  {mark}")
        for name, m in self.overall.items():
            lines.append(f"overall {name:<9}: ±10% {m['acc10']:.3f}, ±20% {m['acc20']:.3f}, R² {m['r2']:.4f}, "
                         f"Spearman {m['spearman']:.3f} (n={m['n']})")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "budgets": dataclasses.asdict(self.budgets),
            "choice": dict(self.choice),
            "overall": self.overall,
            "table": self.table.to_dict("records"),
        }


def _budget_text(b: Budgets) -> str:
    parts = []
    if b.max_query_us is not None:
        parts.append(f"query <= {b.max_query_us:g} us")
    if b.max_bytes is not None:
        parts.append(f"size <= {b.max_bytes} B")
    if b.require_differentiable:
        parts.append("differentiable")
    return ", ".join(parts) or "none"


def fold_ids(df, folds: int, seed: int) -> np.ndarray:
    """Fold index per row, by config group (utilization and threads ignored), seeded."""
    groups = config_groups(df)
    u = np.array([int(hashlib.sha1(f"fold{seed}|{g}".encode()).hexdigest()[:8], 16) / 2**32 for g in groups])
    return np.minimum((u * folds).astype(int), folds - 1)


def _query_us(reg: Regressor, params: Any, x: np.ndarray, repeats: int = 200) -> float:
    """Median wall time of one single-config prediction (compiled; after warm-up)."""
    if reg.jittable:
        q = single_query(reg.predict, params)
        call = lambda: q(x[0])
    else:
        call = lambda: reg.predict(params, x[:1])
    for _ in range(5):
        call()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1e6)


def _fit_candidates(train_df, test_df, mods, candidates, key, train: TrainConfig | None,
                    column: str = "latency_ms_median"):
    """Fit every candidate on `train_df`; return {(module, name): (pred [n, 2], reg, params)}."""
    from .regressors import medn_task_view, regressor_entry
    from .regressors._recipe import DEFAULT

    out = {}
    arrays = {m: (type_arrays(train_df, m, column), type_arrays(test_df, m, column)) for m in mods}
    overrides = {} if train is None else {"train": train}
    entries = [regressor_entry(c) for c in candidates]
    # Selection scores point predictions only: the MLP's and MEDN's edge fit, which sets how
    # their interval widens, is left to the final fit.
    net = overrides | {"recipe": dataclasses.replace(DEFAULT, edge=())}
    build = lambda entry: entry.build(net if entry.name in ("mlp", "medn") else overrides)
    for entry in (e for e in entries if e.multi_task):  # fitted once over every type
        mr = build(entry)
        params = mr.fit(key, {m: arrays[m][0] for m in mods})
        for m in mods:
            reg, p = medn_task_view(mr, params, m)
            out[(m, entry.name)] = (predict_batch(reg, p, arrays[m][1][0]), reg, p, params_nbytes(params))
    for i, m in enumerate(mods):
        (x, y), (xt, _) = arrays[m]
        for j, entry in enumerate(e for e in entries if not e.multi_task):
            reg = build(entry)
            p = reg.fit(jax.random.fold_in(key, 1000 * i + j), x, y, names=feature_schema(m).names)
            out[(m, entry.name)] = (predict_batch(reg, p, xt), reg, p, params_nbytes(p))
    return out


def select_regressors(
    df,
    *,
    mode: str = "accuracy",
    budgets: Budgets = Budgets(),
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    folds: int = 3,
    seed: int = 0,
    train: TrainConfig | None = None,
    tolerance: float = 0.01,
    progress: bool = True,
    statistic: str = "median",
    min_gain_se: float = 2.0,
) -> Selection:
    """Score `candidates` per module type by K-fold cross-validation and choose per `mode`.

    Args:
      df: dataset rows (from `profilers.read_dataset`), any number of module types.
      mode: `accuracy`, `time` or `space` (see the module docstring).
      budgets: limits on query time, size and differentiability.
      candidates: regressor names (`medn`, `mlp`, `poly2`, `poly3`, `ridge`, `roofline`).
      folds: cross-validation folds (by config group).
      tolerance: accuracy slack (±10 % accuracy, absolute) of the `time` and `space` modes.
      statistic: the latency statistic learned and scored (`jaxlat._data.STATISTICS`).
      min_gain_se: `accuracy` mode: how many standard errors of the paired out-of-fold
        difference in ±10 % hits the best candidate must lead the first candidate in budget
        by to be chosen over it (0: always the best).

    Raises:
      ValueError: an unknown mode or candidate, or a module type no candidate fits the
        budgets for (the message gives the best candidate's time and size).
    """
    import pandas as pd

    from .regressors import regressor_names

    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not valid: expected one of {', '.join(MODES)}")
    bad = [c for c in candidates if c not in regressor_names()]
    if bad:
        raise ValueError(f"candidates={bad} not valid: expected names from {', '.join(regressor_names())}")
    if not candidates:
        raise ValueError("candidates is empty: expected at least one of " + ", ".join(regressor_names()))
    if folds < 2:
        raise ValueError(f"folds={folds} is not valid: expected at least 2")
    if isinstance(min_gain_se, bool) or not isinstance(min_gain_se, (int, float)) or not 0 <= min_gain_se < np.inf:
        raise ValueError(f"min_gain_se={min_gain_se!r} is not valid: expected a number >= 0")
    column = statistic_column(statistic)
    df = df.reset_index(drop=True)
    mods = sorted(set(df["module"]))
    fid = fold_ids(df, folds, seed)
    oof = {(m, c): np.zeros(int((df["module"] == m).sum())) for m in mods for c in candidates}
    timing: dict[tuple[str, str], tuple[float, int, bool]] = {}
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    # A progress bar on a terminal only (tqdm's disable=None): logs and pipes stay clean.
    for k in tqdm(range(folds), desc="selection folds", unit="fold", disable=None if progress else True):
        tr, te = df[fid != k], df[fid == k]
        fitted = _fit_candidates(tr, te, mods, candidates, jax.random.fold_in(key, k), train, column)
        for (m, c), (pred, reg, p, nbytes) in fitted.items():
            sel = (te["module"] == m).to_numpy()
            pos = np.flatnonzero(fid[(df["module"] == m).to_numpy()] == k)
            oof[(m, c)][pos] = pred[:, 0]
            if k == 0:
                x = type_arrays(te, m)[0] if sel.any() else type_arrays(tr, m)[0]
                timing[(m, c)] = (_query_us(reg, p, x), nbytes, reg.differentiable)
        if progress:
            _log.info("selection: fold %d/%d done, %.0f s", k + 1, folds, time.perf_counter() - t0)
    rows = []
    truth = {m: df.loc[df["module"] == m, column].to_numpy(np.float64) for m in mods}
    for m in mods:
        for c in candidates:
            pred = np.exp(oof[(m, c)])
            finite = bool(np.isfinite(pred).all() and (pred > 0).all())
            # A candidate that diverged (non-finite predictions) is reported and never chosen.
            met = evaluate(truth[m], pred) if finite else {"acc10": 0.0, "acc20": 0.0, "r2": -np.inf, "mape": np.inf}
            if not finite:
                _log.warning("selection: %s on %s predicted non-finite latencies; not a candidate", c, m)
            q, nbytes, diff = timing[(m, c)]
            row = {"module": m, "regressor": c, "acc10": met["acc10"], "acc20": met["acc20"], "r2": met["r2"],
                   "mape": met["mape"], "query_us": q, "bytes": nbytes, "differentiable": diff}
            row["admitted"] = finite and budgets.admits(row)
            rows.append(row)
    table = pd.DataFrame(rows)
    choice = {m: _choose(table[table["module"] == m], mode, tolerance, budgets, m) for m in mods}
    if mode == "accuracy":
        for m in mods:
            admitted = set(table.loc[(table["module"] == m) & table["admitted"], "regressor"])
            first = next(c for c in candidates if c in admitted)
            if choice[m] == first:
                continue
            hits = {c: np.abs(np.exp(oof[(m, c)]) / truth[m] - 1) <= 0.10 for c in (choice[m], first)}
            if not significant_gain(hits[choice[m]], hits[first], min_gain_se):
                _log.info("selection: %s keeps %s (%s's out-of-fold lead is within %g standard errors)",
                          m, first, choice[m], min_gain_se)
                choice[m] = first
    overall = {}
    for name, pick in (("selected", choice), ("medn_all", {m: "medn" for m in mods} if "medn" in candidates else None)):
        if pick is None:
            continue
        t = np.concatenate([truth[m] for m in mods])
        p = np.concatenate([np.exp(oof[(m, pick[m])]) for m in mods])
        overall[name] = evaluate(t, p)
    return Selection(choice, table, overall, mode, budgets)


def significant_gain(hits: np.ndarray, reference_hits: np.ndarray, min_gain_se: float) -> bool:
    """Whether `hits` (bools per row: within ±10 %) beat `reference_hits` on the same rows by
    more than `min_gain_se` standard errors of the paired difference.

    Examples:
      >>> significant_gain(np.array([1, 1, 1, 0] * 50, bool), np.array([1, 0, 0, 0] * 50, bool), 2.0)
      True
      >>> significant_gain(np.array([1, 0] * 10, bool), np.array([0, 1] * 9 + [0, 0], bool), 2.0)
      False
    """
    d = np.asarray(hits, np.float64) - np.asarray(reference_hits, np.float64)
    if len(d) < 2:  # no standard error: only the plain rule (min_gain_se=0) can tell
        return min_gain_se == 0 and bool(d.sum() > 0)
    se = float(d.std(ddof=1)) / np.sqrt(len(d))
    return bool(float(d.mean()) > min_gain_se * se)


def _choose(rows, mode: str, tolerance: float, budgets: Budgets, module: str) -> str:
    ok = rows[rows["admitted"]]
    if ok.empty:
        best = rows.sort_values("query_us").iloc[0]
        raise ValueError(
            f"{module}: no candidate meets the budgets ({_budget_text(budgets)}); the fastest, "
            f"{best['regressor']}, takes {best['query_us']:.1f} us per query and {int(best['bytes'])} bytes"
        )
    ranked = ok.sort_values(["acc10", "r2", "query_us"], ascending=[False, False, True])
    if mode == "accuracy":
        return str(ranked.iloc[0]["regressor"])
    near = ok[ok["acc10"] >= ranked.iloc[0]["acc10"] - tolerance]
    col = "query_us" if mode == "time" else "bytes"
    return str(near.sort_values([col, "acc10"], ascending=[True, False]).iloc[0]["regressor"])
