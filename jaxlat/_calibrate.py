"""Calibrate a predictor to this machine in a bounded time: `jaxlat calibrate`, `calibrate_machine`.

    result = jaxlat.calibrate_machine("runs/cal", budget_min=10)
    result.card["held_out"]                 # calibrated vs uncalibrated, on measurements it never chose by
    jaxlat.load_predictor()                 # now the calibrated predictor of this CPU model

Run on the target machine, it

1. **plans** a calibration suite sized to the budget by a short probe (a few module configs and
   the first network of each family, whose timings give the cost of a config and of a
   network): module configs of every type of the catalogue, Latin-hypercube samples over each
   type's ranges at batch 1 and 8, and generated networks of every family (`profilers`
   generated networks: residual CNNs, inverted residuals with depthwise convolutions, ViTs,
   text transformers; some with TensorFlow-style pad operators), at the same batch sizes. The
   plan is `OUT/data/plan.json`.
2. **measures** it: module configs through `profilers.run_profile` (worker processes, the
   resumable dataset writer; by default each config in 5 rounds, round-robin over chunks of
   `MODULE_CHUNK` configs, so that its rounds lie 10-20 s apart), the networks in blocks
   between them (`profilers.profile_many` in a subprocess with the measurement environment,
   in rounds too; the records file resumes by name), so that a
   drift of the machine's speed touches both alike. Before each network block the costs are
   re-estimated from what has been measured: the block keeps as many networks as fit its share
   of the budget left (`networks_that_fit`). At the end a sample drawn over the whole
   suite is measured again: the test-retest ceiling. Interrupt it at any point and run the same
   command again: nothing measured is measured again.
3. **adapts** every base predictor (the shipped ones, or `base`), and each base's networks
   fine-tuned on the calibration's module rows (`jaxlat.fine_tuned`, out of fold; not
   with `tune=False`), with candidate corrections: the
   module predictions kept, scaled by one factor, scaled per module type (a multiplicative
   factor fitted on the calibration rows of each type), or scaled per module type with the
   factors fitted on the measured networks (`fit_network_shift`: a type's modules inside a
   network need not run at the ratio they run alone); the whole-model composition kept,
   rescaled or refitted (`jaxlat.fit_composition`, the base's coefficients as prior). The choice
   is made by K-fold held-out error on three quarters of the calibration measurements (by
   default one candidate for the module rows, and for whole models the mean of the networks'
   leader and the next two candidates of its base: `objective`, `choose`). Then, for module
   queries (`objective="split"`), each module type's model may be blended with a piecewise
   roofline fitted on this machine's rows of the type (`piecewise_roofline_regressor`: per
   kind an overhead and a per-FLOP cost, bytes costing more beyond each cache size): the
   roofline's share of the log latency (`LOCAL_WEIGHTS`, 0 to 1) is chosen per type by the
   same folds (`local_weights`). A few dozen rows pin such a roofline down where a network
   needs hundreds: simple types (activations, additions) take it, convolutions mostly keep
   the pick. The remaining quarter, never used for fitting or for the choice, gives the
   accuracy the card reports, beside every base's uncalibrated accuracy on the same rows and
   networks.
4. **writes** the chosen `LatencyPredictor` to `OUT/predictor` (fitted on all measurements),
   `OUT/card.json` and `OUT/card.md`, and registers it for this CPU model
   (`jaxlat._shipped.register_calibrated`), so that `jaxlat.load_predictor()` and `jaxlat predict`
   without `--predictor` take it.

The module factors are `LatencyPredictor.with_type_scales`: part of the predictor's parameters
(`PredictorParams.log_scale`), whatever its regressors, and saved with it.

Layout of OUT:

    predictor/                  the calibrated LatencyPredictor
    card.json, card.md          machine, what was measured, test-retest, choice, held-out accuracy
    data/plan.json              the suite (a resumed run reads it; its arguments must match)
    data/progress.json          measurement time spent and which network blocks are done
    data/modules.parquet        module measurements (profilers dataset)
    data/networks.jsonl         network records, measured end to end
    data/retest_modules.parquet, data/retest_networks.jsonl   the re-measured sample
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

import profilers

from ._composition import IDENTITY, TERMS, Composition, count_rows, fit_composition
from ._data import STATISTICS, measured_ms, statistic_column
from ._finetune import fine_tuned, trainable_keys
from ._io import check_output_dir, write_json
from ._metrics import evaluate, metrics_for_json
from ._predict import module_sum
from ._predictor import blended_type_model
from .regressors._roofline import piecewise_roofline_log_ms_host, piecewise_roofline_regressor

if TYPE_CHECKING:
    import pandas as pd

    from ._predictor import LatencyPredictor

_log = logging.getLogger(__name__)

#: Version of `data/plan.json`; a plan of another version is refused (use another --out).
PLAN_VERSION = 1
#: Version of `card.json`.
CARD_VERSION = 1
#: Batch sizes every module type and network family is measured at.
BATCH_SIZES = (1, 8)
#: Generated-network families (`profilers/_netgen.py` FAMILIES; that module imports torch, so
#: the names are repeated here and checked by the measuring subprocess).
NETWORK_FAMILIES = ("resnet", "mbconv", "vit", "text")
#: Families with convolutions, which some networks get with TensorFlow-style pad operators.
_PADDED_FAMILIES = ("resnet", "mbconv")
#: The smallest suite: configs per module type and batch size, and networks (each at every
#: batch size). Below it the held-out split has nothing to hold out.
MIN_CONFIGS_PER_TYPE_BATCH = 3
MIN_NETWORKS = 4
#: Module corrections and composition forms, simplest first (ties go to the simpler).
MODULE_CORRECTIONS = ("none", "global", "per_type", "per_type_networks")
COMPOSITIONS = ("kept", "rescaled", "refitted")
#: What the choice scores (`choose`): the held-out error of the module rows and of the networks
#: averaged, of the networks alone (whole models: NAS, deployment), of the module rows alone,
#: or `split`: each part its own, the best candidate for module rows answering module queries
#: and the mean of the networks' leader and the next two of its base composing whole models
#: (`LatencyPredictor.with_whole_models`).
CALIBRATION_OBJECTIVES = ("split", "both", "networks", "modules")
#: The objectives that score one candidate (`split` takes the leaders of two of them).
_SCORED_OBJECTIVES = ("both", "networks", "modules")
#: Share of the suite's measurement time for module configs (the rest: networks).
_MODULE_SHARE = 0.6
#: Share of configs and networks measured again at the end (test-retest), with bounds.
_RETEST_SHARE = 0.08
#: Share of the calibration measurements held out from fitting and choice, for the card.
_REPORT_SHARE = 0.25
_FOLDS = 5
#: Two candidates whose held-out scores differ by less than this (mean |log error|) tie.
_TIE = 0.005
#: With `objective="split"`, whole models are composed by the mean of up to this many
#: candidates of one base: the networks' leader and the next best of its base (`blend`).
WHOLE_MEMBERS = 3
#: With `objective="split"`, the shares a module type's model may give to a piecewise roofline
#: fitted on this machine's rows of the type (`local_weights`): its log latency is
#: `(1 - w) * the module pick's + w * the roofline's`; 0 keeps the module pick alone.
LOCAL_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: A type needs this many selection rows for its roofline to be scored (fewer: weight 0).
_MIN_LOCAL_ROWS = 10
#: Sampled module configs are at most this many FLOPs (at their batch size): affordable timing.
_MAX_FLOPS = 1.5e9
#: ... and predicted (by the first base predictor) at most this many ms per call: with warm-up
#: and repeats such a config costs seconds (a 5x5 stride-1 max pool over 993 channels at 81x81,
#: batch 8, took 3.9 s per call at 1 thread on a 2-core Xeon VM).
_MAX_PREDICTED_MS = 250.0
#: Cost guesses when the probe measured nothing (a resumed probe): seconds per module config,
#: per network record, and to start a measuring process.
_DEFAULT_COST = {"s_per_config": 0.4, "s_per_network": 3.0, "s_startup": 4.0}
#: Module configs measured round-robin together when `rounds > 1`: a config's rounds then lie
#: this many configs apart (10-20 s at the default timing), and rows (which start the network
#: blocks due) come out in bursts of this many.
MODULE_CHUNK = 96
#: `fit_composition` needs at least this many networks.
_MIN_REFIT_NETWORKS = 6
#: Pull of the network-fitted per-type factors toward the module rows' (`fit_network_shift`):
#: their summed squared log distance, times this over the number of networks, is added to the
#: networks' mean squared log error (the pull weighs as much as one network's error).
_NETWORK_SHIFT_L2 = 1.0

# -- settings ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SuiteSettings:
    """What a calibration measures: the plan's arguments, which a resumed run must repeat."""

    budget_min: float  # measurement budget, minutes
    modules: tuple[str, ...]  # module types of the suite
    families: tuple[str, ...]  # generated-network families
    batch_sizes: tuple[int, ...]  # every config and network is measured at each
    seed: int  # of the samplers and the generated networks
    min_run_time_s: float  # timing of one module config (`profilers.TimerConfig.min_run_time_s`)
    network_min_run_time_s: float  # timing of one network at one batch size
    rounds: int  # measurements per config and network, spread in time, pooled

    @property
    def budget_s(self) -> float:
        return 60.0 * self.budget_min

    def as_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _names(value: str | Iterable[str] | None, *, name: str) -> tuple[str, ...] | None:
    """A list argument given as a sequence or as one comma-separated string."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(v, str) for v in items):
        raise ValueError(f"{name}={value!r} is not valid: expected names (strings)")
    return tuple(dict.fromkeys(v.strip() for v in items if v.strip()))


def _positive(value: Any, *, name: str, flag: str, unit: str, maximum: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= maximum):
        bound = f" and at most {maximum:g}" if math.isfinite(maximum) else ""
        raise ValueError(f"{name}={value!r} is not valid ({flag}): expected {unit} > 0{bound}")
    return float(value)


def check_settings(
    *,
    budget_min: float = 10.0,
    modules: str | Iterable[str] | None = None,
    families: str | Iterable[str] | None = None,
    seed: int = 0,
    min_run_time_s: float = 0.1,
    network_min_run_time_s: float = 0.5,
    rounds: int = 5,
) -> SuiteSettings:
    """The suite's settings, checked: each bad value is a `ValueError` naming the argument (and
    its command-line flag) and what is allowed."""
    budget = _positive(budget_min, name="budget_min", flag="--budget-min", unit="minutes", maximum=24 * 60)
    known = profilers.module_types()
    mods = _names(modules, name="modules")
    if mods is None or mods == ("all",):
        mods = tuple(known)
    if not mods:
        raise ValueError(
            f"modules={modules!r} is not valid (--module): expected module types, from {', '.join(known)}"
        )
    bad = [m for m in mods if m not in known]
    if bad:
        raise ValueError(
            f"module {bad[0]!r} is not valid (--module): expected some of {', '.join(known)} (or all)"
        )
    fams = _names(families, name="families")
    fams = NETWORK_FAMILIES if fams is None else fams
    bad = [f for f in fams if f not in NETWORK_FAMILIES]
    if bad or not fams:
        what = repr(bad[0]) if bad else "none"
        raise ValueError(
            f"family {what} is not valid (--family): expected some of {', '.join(NETWORK_FAMILIES)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} is not valid (--seed): expected an int >= 0")
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or not 1 <= rounds <= 20:
        raise ValueError(f"rounds={rounds!r} is not valid (--rounds): expected an int from 1 to 20")
    return SuiteSettings(
        budget_min=budget,
        modules=tuple(mods),
        families=tuple(fams),
        batch_sizes=BATCH_SIZES,
        seed=int(seed),
        min_run_time_s=_positive(
            min_run_time_s, name="min_run_time_s", flag="--min-run-time", unit="seconds", maximum=60
        ),
        network_min_run_time_s=_positive(
            network_min_run_time_s,
            name="network_min_run_time_s",
            flag="--network-min-run-time",
            unit="seconds",
            maximum=60,
        ),
        rounds=int(rounds),
    )


def module_timer(settings: SuiteSettings) -> profilers.TimerConfig:
    """How one module config is timed (the profilers' defaults, at `min_run_time_s`)."""
    return profilers.TimerConfig(min_run_time_s=settings.min_run_time_s)


def network_timer(settings: SuiteSettings) -> profilers.TimerConfig:
    """How one network is timed: `profilers.MODEL_TIMER`'s form, shorter (a suite times many)."""
    t = settings.network_min_run_time_s
    return profilers.TimerConfig(
        warmup_s=0.4 * t, min_warmup_calls=2, min_run_time_s=t, min_repeats=5, max_run_time_s=max(5.0, 4 * t)
    )


def network_floor_s(settings: SuiteSettings) -> float:
    """The least time one network record takes: each round's warm-up, and the timing."""
    timer = network_timer(settings)
    return settings.rounds * timer.warmup_s + timer.min_run_time_s


# -- the plan ---------------------------------------------------------------------------------


def network_name(arch: Mapping[str, Any], batch_size: int) -> str:
    """The record name `profilers.generated_jobs` gives network `arch` at `batch_size` (1 thread,
    utilization 0)."""
    tag = f"_{arch['family']}" + ("_pad" if arch["explicit_padding"] else "")
    return f"gen{arch['seed']}{tag}_b{batch_size}_t1_u0"


def arch_specs(settings: SuiteSettings, n: int) -> list[dict[str, Any]]:
    """The first `n` networks of the suite: families in turn; in every other turn of the families
    one convolutional family with TensorFlow-style pad operators (mbconv first), so that even a
    small suite has pads and copies."""
    fams = settings.families
    out = []
    for i in range(n):
        fam, turn = fams[i % len(fams)], i // len(fams)
        pad = fam in _PADDED_FAMILIES and (turn % 2 == 0) == (fam == "mbconv" or "mbconv" not in fams)
        out.append(
            {"arch": i, "seed": 10_000 * (settings.seed + 1) + i, "family": fam, "explicit_padding": pad}
        )
    return out


#: Predicts the per-call latency (ms) of configs, to leave out those too slow to time in a suite.
Screen = Callable[[Sequence[profilers.ModuleConfig]], np.ndarray]


def predicted_ms_screen(predictor: LatencyPredictor) -> Screen:
    """A `Screen` from a predictor (a base of the calibration; any machine's is close enough to
    tell a 1 ms config from a 1 s one); module types it lacks are not screened (0 ms)."""

    def screen(configs: Sequence[profilers.ModuleConfig]) -> np.ndarray:
        if not configs or configs[0].module not in predictor.modules:
            return np.zeros(len(configs))
        return predictor.predict(list(configs))["latency_ms"].to_numpy(float)

    return screen


def _no_screen(configs: Sequence[profilers.ModuleConfig]) -> np.ndarray:
    return np.zeros(len(configs))


def _sample(
    module: str, n: int, *, batch: int, seed: int, method: str, screen: Screen = _no_screen
) -> list[profilers.ModuleConfig]:
    """`n` configs of one type at one batch size: at most `_MAX_FLOPS` each where the ranges
    allow it, and predicted (`screen`) below `_MAX_PREDICTED_MS` per call where enough are. Drawn
    three times over and `n` kept, evenly spaced over the draw order: `sample_configs` returns
    its families in blocks (a convolution's regular, depthwise and grouped configs), so the
    first `n` would all be of the first family."""
    ranges = {"batch_size": (batch,)}
    try:
        drawn = profilers.sample_configs(
            module, 3 * n, method=method, seed=seed, ranges=ranges, max_flops=_MAX_FLOPS
        )
    except ValueError:  # too few configs under the cap at this batch size: the whole range then
        drawn = profilers.sample_configs(module, 3 * n, method=method, seed=seed, ranges=ranges)
    ms = screen(drawn)
    fast = [c for c, t in zip(drawn, ms) if t <= _MAX_PREDICTED_MS]
    if len(fast) >= n:  # spaced at least one apart, so the rounded positions are distinct
        return [fast[i] for i in np.linspace(0, len(fast) - 1, n).round().astype(int)]
    slow = [drawn[i] for i in np.argsort(ms, kind="stable") if ms[i] > _MAX_PREDICTED_MS]
    return (fast + slow)[:n]


def probe_configs(settings: SuiteSettings, screen: Screen = _no_screen) -> list[profilers.ModuleConfig]:
    """One random config per module type and batch size: the probe, and part of the suite."""
    return [
        c
        for i, m in enumerate(settings.modules)
        for b in settings.batch_sizes
        for c in _sample(
            m, 1, batch=b, seed=1_000_003 + 97 * settings.seed + 7 * i + b, method="random", screen=screen
        )
    ]


def suite_configs(
    settings: SuiteSettings, per_type_batch: int, screen: Screen = _no_screen
) -> list[profilers.ModuleConfig]:
    """`per_type_batch` Latin-hypercube configs per module type and batch size, interleaved
    (types and batch sizes in turn), so that every stretch of the run covers every type."""
    lists = [
        _sample(
            m, per_type_batch, batch=b, seed=settings.seed * 1000 + 10 * i + j, method="lhs", screen=screen
        )
        for i, m in enumerate(settings.modules)
        for j, b in enumerate(settings.batch_sizes)
    ]
    return [lst[k] for k in range(per_type_batch) for lst in lists if k < len(lst)]


@dataclasses.dataclass(frozen=True, slots=True)
class SuiteSize:
    """How large a suite fits the budget (`size_suite`)."""

    per_type_batch: int  # module configs per type and batch size
    n_networks: int  # generated networks (each at every batch size)
    n_blocks: int  # network blocks interleaved with the module configs
    retest_configs: int  # module configs measured again at the end
    retest_networks: int  # networks measured again at the end
    estimate_s: float  # the whole measurement, probe included
    minimum_s: float  # the smallest suite's measurement, probe included


def size_suite(settings: SuiteSettings, cost: Mapping[str, float], elapsed_s: float) -> SuiteSize:
    """The suite that fills the budget, given the probe's costs (`s_per_config`,
    `s_per_network` per record, `s_startup` per measuring process) and the time already spent.

    Modules get `_MODULE_SHARE` of the time left after the processes' start-up, networks the
    rest; a tenth or so of each is measured again at the end. Never below the minimum suite.
    """
    n_types, n_b = len(settings.modules), len(settings.batch_sizes)
    c_m, c_n, s_0 = cost["s_per_config"], cost["s_per_network"], cost["s_startup"]
    blocks = int(np.clip(settings.budget_s // 90, 1, 8))  # a block every minute and a half or so
    overhead = (blocks + 3) * s_0  # the module worker, every network block, two retests
    suite_s = max(0.0, settings.budget_s - elapsed_s - overhead)
    rows = _MODULE_SHARE * suite_s / (c_m * (1 + _RETEST_SHARE))
    records = (1 - _MODULE_SHARE) * suite_s / (c_n * (1 + _RETEST_SHARE))
    per = int(np.clip(rows // (n_types * n_b), MIN_CONFIGS_PER_TYPE_BATCH, 500))
    nets = int(np.clip(records // n_b, MIN_NETWORKS, 300))
    blocks = min(blocks, nets)

    def retests(per_tb: int, n_nets: int) -> tuple[int, int]:
        n_rows = per_tb * n_types * n_b
        return (
            int(np.clip(round(_RETEST_SHARE * n_rows), min(8, n_rows), 60)),
            int(np.clip(round(_RETEST_SHARE * n_nets), 1, 4)),
        )

    def total(per_tb: int, n_nets: int, n_blocks: int) -> float:
        rt_c, rt_n = retests(per_tb, n_nets)
        return (
            elapsed_s
            + (n_blocks + 3) * s_0
            + (per_tb * n_types * n_b + rt_c) * c_m
            + (n_nets + rt_n) * n_b * c_n
        )

    rt_c, rt_n = retests(per, nets)
    return SuiteSize(
        per,
        nets,
        blocks,
        rt_c,
        rt_n,
        total(per, nets, blocks),
        total(MIN_CONFIGS_PER_TYPE_BATCH, MIN_NETWORKS, 1),
    )


def _u(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from a seed and a key: stable under order and across runs."""
    return int(hashlib.sha1(f"{seed}|{key}".encode()).hexdigest()[:12], 16) / 16**12


def make_plan(
    settings: SuiteSettings,
    size: SuiteSize,
    probe: Sequence[profilers.ModuleConfig],
    cost: Mapping[str, float],
    elapsed_s: float,
    screen: Screen = _no_screen,
) -> dict[str, Any]:
    """The plan (`data/plan.json`): configs in measurement order (the probe's first), networks,
    the blocks that interleave them, and the sample measured again at the end."""
    suite = suite_configs(settings, size.per_type_batch, screen)
    configs = list({c.key: c for c in [*probe, *suite]}.values())
    archs = arch_specs(settings, size.n_networks)
    per_block = np.array_split(np.arange(len(archs)), size.n_blocks)
    blocks = [
        {"after_config": round((j + 1) * len(configs) / size.n_blocks), "archs": [int(i) for i in idx]}
        for j, idx in enumerate(per_block)
    ]
    keys = sorted((c.key for c in configs), key=lambda k: _u(settings.seed, "retest|" + k))
    nets = sorted(range(len(archs)), key=lambda i: _u(settings.seed, f"retest-net|{i}"))
    return {
        "version": PLAN_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": settings.as_json(),
        "probe": {"cost": dict(cost), "elapsed_s": elapsed_s, "n_configs": len(probe)},
        "size": dataclasses.asdict(size),
        "configs": [c.as_dict() for c in configs],
        "archs": archs,
        "blocks": blocks,
        "retest": {"configs": keys[: size.retest_configs], "archs": sorted(nets[: size.retest_networks])},
    }


# -- measuring ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Paths:
    """The files of a calibration directory (see the module docstring)."""

    out: Path

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def plan(self) -> Path:
        return self.data / "plan.json"

    @property
    def progress(self) -> Path:
        return self.data / "progress.json"

    @property
    def modules(self) -> Path:
        return self.data / "modules.parquet"

    @property
    def networks(self) -> Path:
        return self.data / "networks.jsonl"

    @property
    def retest_modules(self) -> Path:
        return self.data / "retest_modules.parquet"

    @property
    def retest_networks(self) -> Path:
        return self.data / "retest_networks.jsonl"


class _Progress:
    """`data/progress.json`: measurement seconds spent over every session, and the state of each
    network block and retest step; written atomically after each step."""

    def __init__(self, path: Path):
        self.path = path
        self.state: dict[str, Any] = {"measure_s": 0.0, "steps": {}, "sessions": 0}
        if path.exists():
            self.state.update(json.loads(path.read_text()))
        self.state["sessions"] = int(self.state.get("sessions", 0)) + 1
        self._since: float | None = None
        self._saved = 0.0

    @property
    def measure_s(self) -> float:
        live = 0.0 if self._since is None else time.monotonic() - self._since
        return float(self.state["measure_s"]) + live

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Count the block's wall time as measurement time (saved now and then, and at its end)."""
        self._since = time.monotonic()
        try:
            yield
        finally:
            self.tick()
            self._since = None

    def tick(self, *, save_every_s: float = 5.0) -> None:
        if self._since is not None:
            now = time.monotonic()
            self.state["measure_s"] = float(self.state["measure_s"]) + now - self._since
            self._since = now
        if time.monotonic() - self._saved >= save_every_s:
            self.save()

    def step(self, name: str) -> str | None:
        return self.state["steps"].get(name)

    def set_step(self, name: str, status: str) -> None:
        self.state["steps"][name] = status
        self.save()

    def save(self) -> None:
        self._saved = time.monotonic()
        write_json(self.path, self.state)


def read_records(path: Path) -> list[profilers.ArchRecord]:
    """The records of a `.jsonl` file (none if it is missing). A last line cut short by an
    interruption is dropped (and the file rewritten without it): that network is measured again."""
    if not path.exists():
        return []
    try:
        return profilers.load_records(path)
    except profilers.ArchError:
        lines = path.read_text().splitlines()
        try:
            json.loads(lines[-1])
        except (ValueError, IndexError):
            _log.warning("%s: dropped a truncated last line (an interrupted write)", path)
            tmp = path.with_name(f".{path.name}.repair")
            tmp.write_text("".join(f"{ln}\n" for ln in lines[:-1]))
            os.replace(tmp, path)
            return profilers.load_records(path)
        raise


def _stop(proc: subprocess.Popen) -> None:
    """End a measuring subprocess as Ctrl-C would (its records so far are kept), then kill it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: Progress states of a measuring step that a resumed run does not repeat (a step that failed or
#: timed out is tried again).
_FINISHED = ("done", "skipped: budget")


def networks_that_fit(
    n_todo: int,
    *,
    n_batch_sizes: int,
    cost: Mapping[str, float],
    spent_s: float,
    budget_s: float,
    rest_s: float,
    blocks_left: int,
    have_networks: int,
) -> int:
    """How many of a network block's `n_todo` networks to measure: as many as fit the block's
    share (one of `blocks_left`) of the budget that the module configs still to measure and the
    retests (`rest_s`) leave, at the costs seen so far; never fewer than the smallest suite still
    needs (`MIN_NETWORKS`, of which `have_networks` are in)."""
    free_s = (budget_s - spent_s - rest_s) / max(1, blocks_left) - cost["s_startup"]
    fit = math.floor(max(0.0, free_s) / (n_batch_sizes * cost["s_per_network"]))
    need = max(0, MIN_NETWORKS - have_networks)
    return int(min(n_todo, max(fit, need)))


def observed_cost(
    cost: Mapping[str, float],
    settings: SuiteSettings,
    *,
    module_s: float,
    n_rows: int,
    network_s: float,
    n_records: int,
    n_processes: int,
) -> dict[str, float]:
    """The probe's costs, updated with what this run's measuring took: module configs (`n_rows`
    rows in `module_s` seconds, one process start included) and network records (`n_records` in
    `network_s`, over `n_processes` process starts), each never below its floor."""
    out = dict(cost)
    if n_rows >= MODULE_CHUNK:  # rows come in bursts of a chunk when measured in rounds
        out["s_per_config"] = max(0.05, (module_s - cost["s_startup"]) / n_rows)
    if n_records > 0:
        out["s_per_network"] = max(
            network_floor_s(settings), (network_s - n_processes * cost["s_startup"]) / n_records
        )
    return out


def network_timeout_s(cost: Mapping[str, float], n_records: int) -> float:
    """How long a block of `n_records` network measurements may take before it is stopped: three
    times what the probe's costs predict, at least a minute."""
    return max(60.0, 3 * (cost["s_startup"] + n_records * cost["s_per_network"]))


def measure_networks(
    archs: Sequence[Mapping[str, Any]], out: Path, settings: SuiteSettings, *, timeout_s: float
) -> str:
    """Measure generated networks at every batch size into the records file `out` (resumes by
    name) in a subprocess with the measurement environment; returns `"done"`, `"timeout"` (the
    networks measured until then are kept) or `"failed: ..."` with the end of its stderr.

    A `Popen` rather than `subprocess.run`: on a timeout or Ctrl-C the child is stopped with
    SIGINT first, so that the record it is appending is written whole.
    """
    spec = {
        "out": str(out),
        "archs": [dict(a) for a in archs],
        "batch_sizes": list(settings.batch_sizes),
        "timer": dataclasses.asdict(network_timer(settings)),
        "rounds": settings.rounds,
    }
    env = {**os.environ, **profilers.MEASUREMENT_ENV}
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "profilers._measure_generated"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            text=True,
        )
        try:
            with contextlib.suppress(BrokenPipeError):  # a child that died at once: its exit code tells
                proc.stdin.write(json.dumps(spec))
                proc.stdin.close()
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return "timeout"
        except BaseException:
            _stop(proc)
            raise
        if code != 0:
            err.seek(0)
            lines = [ln for ln in err.read().strip().splitlines() if ln.strip()]
            return f"failed: {lines[-1] if lines else f'exit code {code}'}"
    return "done"


def _probe(
    settings: SuiteSettings, paths: _Paths, progress: _Progress, screen: Screen
) -> tuple[list[profilers.ModuleConfig], dict[str, float]]:
    """Measure the probe (one config per type and batch size, the suite's first network of each
    family) and return the configs and the costs they show: seconds per config, per network
    record, per process start."""
    configs = probe_configs(settings, screen)
    times: list[float] = []
    with progress.measuring():
        t0 = time.monotonic()
        summary = profilers.run_profile(
            configs,
            paths.modules,
            timer=module_timer(settings),
            progress=False,
            retest=0,
            describe=True,
            rounds=settings.rounds,
            on_row=lambda row: times.append(time.monotonic()),
            run_info={"calibrate": "probe", "sampler": "random", "seed": settings.seed},
        )
        if summary.interrupted:
            raise KeyboardInterrupt
        t1 = time.monotonic()
        arch = arch_specs(settings, len(settings.families))  # one of each family: their sizes differ
        before = len(read_records(paths.networks))
        status = measure_networks(arch, paths.networks, settings, timeout_s=600)
        t2 = time.monotonic()
    n_new = len(read_records(paths.networks)) - before
    if status != "done":
        _log.warning("probe: the first network: %s", status)
    cost = dict(_DEFAULT_COST)
    if len(times) >= 3:
        cost["s_per_config"] = float(np.mean(np.diff(times)))
    elif times:
        cost["s_per_config"] = (t1 - t0) / len(times)
    if times:
        cost["s_startup"] = float(np.clip(times[0] - t0 - cost["s_per_config"], 1.0, 10.0))
    if n_new > 0 and status == "done":
        cost["s_per_network"] = (t2 - t1 - cost["s_startup"]) / n_new
    # One network's time minus a start-up estimated on another process is a small difference of
    # large numbers: never below what the network timer itself spends per record.
    cost["s_per_network"] = max(network_floor_s(settings), cost["s_per_network"])
    _log.info(
        "probe: %.2f s per module config, %.2f s per network, %.1f s to start a measuring process (%s)",
        cost["s_per_config"],
        cost["s_per_network"],
        cost["s_startup"],
        "measured" if times and n_new else "defaults where nothing new was measured",
    )
    return configs, cost


def _plan(settings: SuiteSettings, paths: _Paths, progress: _Progress, screen: Screen) -> dict[str, Any]:
    """The plan of `paths`: read (its settings must match), or made after a probe."""
    if paths.plan.exists():
        plan = json.loads(paths.plan.read_text())
        if plan.get("version") != PLAN_VERSION:
            raise ValueError(
                f"{paths.plan}: plan version {plan.get('version')!r}, this jaxlat writes "
                f"{PLAN_VERSION}; calibrate into another --out"
            )
        if plan["settings"] != settings.as_json():
            diff = ", ".join(
                f"{k}={v!r} (now {settings.as_json()[k]!r})"
                for k, v in plan["settings"].items()
                if settings.as_json().get(k) != v
            )
            raise ValueError(
                f"--out {paths.out}: holds a calibration planned with {diff}; run with the same "
                "settings to resume it (or refit it), or give another --out"
            )
        _log.info("resuming the calibration planned in %s", paths.plan)
        return plan
    _log.info("probing this machine's speed (%s)", ", ".join(settings.modules))
    probe, cost = _probe(settings, paths, progress, screen)
    size = size_suite(settings, cost, progress.measure_s)
    if size.minimum_s > settings.budget_s:
        _log.warning(
            "budget_min=%g (--budget-min) is below the smallest calibration suite (about %.1f min here: "
            "%d configs per module type and batch size, %d networks at batch %s): it will overrun by about "
            "%.1f min",
            settings.budget_min,
            size.minimum_s / 60,
            MIN_CONFIGS_PER_TYPE_BATCH,
            MIN_NETWORKS,
            ",".join(map(str, settings.batch_sizes)),
            (size.minimum_s - settings.budget_s) / 60,
        )
    plan = make_plan(settings, size, probe, cost, progress.measure_s, screen)
    write_json(paths.plan, plan)
    _log.info(
        "plan: %d module configs of %d types and %d networks x %d batch sizes in %d network block(s), about %.1f "
        "min of measurement (budget %g min) -> %s",
        len(plan["configs"]),
        len(settings.modules),
        size.n_networks,
        len(settings.batch_sizes),
        size.n_blocks,
        size.estimate_s / 60,
        settings.budget_min,
        paths.plan,
    )
    return plan


def _done_keys(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return set(profilers.read_dataset(path, include_failed=True)["config_key"])


def _measure(
    plan: Mapping[str, Any], settings: SuiteSettings, paths: _Paths, progress: _Progress, show: bool | None
) -> None:
    """Measure the plan's configs and networks, interleaved, skipping what is measured already.
    Before each network block the costs are re-estimated from what this run has measured: the
    block keeps as many networks as fit its share of the budget left (at least the smallest
    suite's), the rest are skipped; so is a block due once the budget is spent."""
    from tqdm.auto import tqdm

    configs = [profilers.config_from_row(c) for c in plan["configs"]]
    position = {c.key: i for i, c in enumerate(configs)}
    archs = plan["archs"]
    n_b = len(settings.batch_sizes)
    done = _done_keys(paths.modules)
    names_done = {r.name for r in read_records(paths.networks)}
    n_items = len(configs) + len(archs) * n_b
    bar = tqdm(
        total=n_items,
        initial=len(done & set(position)) + len(names_done),
        desc="calibration suite",
        unit="item",
        disable=None if show is None else not show,
        dynamic_ncols=True,
    )
    seen = {"rows": 0, "module_s": 0.0, "network_s": 0.0, "records": 0, "processes": 0}
    rows_left = len(set(position) - done)
    start = time.monotonic()

    def cost_now() -> dict[str, float]:
        cost = observed_cost(
            plan["probe"]["cost"],
            settings,
            module_s=time.monotonic() - start - seen["network_s"],
            n_rows=seen["rows"],
            network_s=seen["network_s"],
            n_records=seen["records"],
            n_processes=seen["processes"],
        )
        progress.state["cost"] = cost  # read by the retest, and by a resumed run's card
        return cost

    def rest_s(cost: Mapping[str, float]) -> float:
        """Measurement still to come besides the networks: module configs, and both retests."""
        retest = plan["size"]["retest_configs"] * cost["s_per_config"]
        retest += plan["size"]["retest_networks"] * n_b * cost["s_per_network"] + 2 * cost["s_startup"]
        return (rows_left - seen["rows"]) * cost["s_per_config"] + retest

    attempted: set[int] = set()  # blocks tried in this run (a failed one waits for the next run)

    def run_blocks(upto: int) -> None:
        for j, block in enumerate(plan["blocks"]):
            step = f"networks_{j}"
            if block["after_config"] > upto or j in attempted or progress.step(step) in _FINISHED:
                continue  # a block that failed or timed out is tried again by the next run
            attempted.add(j)
            todo = [
                archs[i]
                for i in block["archs"]
                if any(network_name(archs[i], b) not in names_done for b in settings.batch_sizes)
            ]
            cost = cost_now()
            keep = networks_that_fit(
                len(todo),
                n_batch_sizes=n_b,
                cost=cost,
                spent_s=progress.measure_s,
                budget_s=settings.budget_s,
                rest_s=rest_s(cost),
                blocks_left=sum(
                    progress.step(f"networks_{i}") not in _FINISHED for i in range(j, len(plan["blocks"]))
                ),
                have_networks=len(names_done) // n_b,
            )
            if todo and keep < len(todo):
                _log.warning(
                    "network block %d/%d: %d of its %d networks fit the budget of %g min (%.1f s per record "
                    "so far); the rest are skipped",
                    j + 1,
                    len(plan["blocks"]),
                    keep,
                    len(todo),
                    settings.budget_min,
                    cost["s_per_network"],
                )
            if todo and not keep:
                progress.set_step(step, "skipped: budget")
                continue
            todo = todo[:keep]
            if todo:
                n_rec = len(todo) * n_b
                t0 = time.monotonic()
                status = measure_networks(
                    todo, paths.networks, settings, timeout_s=network_timeout_s(cost, n_rec)
                )
                new = {r.name for r in read_records(paths.networks)} - names_done
                seen["network_s"] += time.monotonic() - t0
                seen["records"] += len(new)
                seen["processes"] += 1
                names_done.update(new)
                bar.update(len(new))
                if status != "done":
                    _log.warning(
                        "network block %d/%d: %s (%d of %d records measured)",
                        j + 1,
                        len(plan["blocks"]),
                        status,
                        len(new),
                        n_rec,
                    )
                _log.info(
                    "networks %d/%d: %d records, %.1f of %g min spent",
                    j + 1,
                    len(plan["blocks"]),
                    len(names_done),
                    progress.measure_s / 60,
                    settings.budget_min,
                )
            else:
                status = "done"
            progress.set_step(step, status)

    def on_row(row: Mapping[str, Any]) -> None:
        seen["rows"] += 1
        bar.update(1)
        progress.tick()
        run_blocks(position.get(row["config_key"], -1) + 1)

    try:
        with progress.measuring():
            if set(position) - done:
                summary = profilers.run_profile(
                    configs,
                    paths.modules,
                    timer=module_timer(settings),
                    progress=False,
                    retest=0,
                    describe=False,
                    rounds=settings.rounds,
                    chunk_size=MODULE_CHUNK,
                    on_row=on_row,
                    run_info={"calibrate": "suite", "sampler": "lhs", "seed": settings.seed},
                )
                if summary.interrupted:
                    raise KeyboardInterrupt
            run_blocks(len(configs))
    finally:
        cost_now()
        progress.save()
        bar.close()


def _retest(plan: Mapping[str, Any], settings: SuiteSettings, paths: _Paths, progress: _Progress) -> None:
    """Measure the plan's retest sample again (drawn over the whole suite, so that the second
    measurement lies minutes after the first, as a prediction would be read later)."""
    ok = set(profilers.read_dataset(paths.modules)["config_key"])
    configs = [profilers.config_from_row(c) for c in plan["configs"]]
    wanted = set(plan["retest"]["configs"])
    again = [c for c in configs if c.key in wanted and c.key in ok]
    names = {r.name for r in read_records(paths.networks)}
    nets = [
        plan["archs"][i]
        for i in plan["retest"]["archs"]
        if all(network_name(plan["archs"][i], b) in names for b in settings.batch_sizes)
    ]
    with progress.measuring():
        if again and progress.step("retest_modules") is None:
            _log.info("measuring %d module configs again (test-retest)", len(again))
            summary = profilers.run_profile(
                again,
                paths.retest_modules,
                timer=module_timer(settings),
                progress=False,
                retest=0,
                describe=False,
                rounds=settings.rounds,
                chunk_size=MODULE_CHUNK,
                run_info={"calibrate": "retest", "seed": settings.seed},
            )
            if summary.interrupted:
                raise KeyboardInterrupt
            progress.set_step("retest_modules", "done")
        if nets and progress.step("retest_networks") not in _FINISHED:
            _log.info("measuring %d networks again (test-retest)", len(nets) * len(settings.batch_sizes))
            n_rec = len(nets) * len(settings.batch_sizes)
            status = measure_networks(
                nets,
                paths.retest_networks,
                settings,
                timeout_s=network_timeout_s(progress.state.get("cost", plan["probe"]["cost"]), n_rec),
            )
            progress.set_step("retest_networks", status)


# -- test-retest ----------------------------------------------------------------------------------


def agreement(first_ms: np.ndarray, second_ms: np.ndarray) -> dict[str, Any]:
    """How two measurements of the same items agree: `n`, the share within ±10 % and ±20 % of
    the first, the median ratio second / first (the machine's drift) and the ±10 % share with
    that drift divided out (`profilers.retest_agreement`).

    Examples:
      >>> agreement(np.array([1.0, 2.0, 4.0]), np.array([1.05, 2.5, 4.0]))["acc10"]
      0.6666666666666666
    """
    a, b = np.asarray(first_ms, float), np.asarray(second_ms, float)
    if len(a) == 0:
        return {"n": 0, "acc10": None, "acc20": None, "median_ratio": None, "acc10_drift_removed": None}
    r = profilers.retest_agreement(a, b)
    return {"n": len(a), "acc10": r["acc10"], "acc20": r["acc20"], "median_ratio": r["ratio"],
            "acc10_drift_removed": r["acc10_drift_removed"]}


def retest_agreement(paths: _Paths) -> dict[str, Any]:
    """Test-retest agreement of the re-measured modules and networks, for each statistic."""
    out: dict[str, Any] = {"modules": {}, "networks": {}}
    if paths.retest_modules.exists():
        first = profilers.read_dataset(paths.modules).set_index("config_key")
        second = profilers.read_dataset(paths.retest_modules).set_index("config_key")
        keys = [k for k in second.index if k in first.index]
        for stat in STATISTICS:
            col = statistic_column(stat)
            out["modules"][stat] = agreement(
                first.loc[keys, col].to_numpy(), second.loc[keys, col].to_numpy()
            )
    again = {r.name: r for r in read_records(paths.retest_networks) if r.measured}
    if again:
        first_r = {r.name: r for r in read_records(paths.networks) if r.measured}
        names = [n for n in again if n in first_r]
        for stat in STATISTICS:
            out["networks"][stat] = agreement(
                np.array([measured_ms(first_r[n], stat) for n in names]),
                np.array([measured_ms(again[n], stat) for n in names]),
            )
    return out


def choose_statistic(retest: Mapping[str, Any], requested: str) -> str:
    """`requested`, or for `"auto"` the statistic whose module labels repeated better (the
    median on a tie, or without a retest)."""
    if requested != "auto":
        return requested
    mods = retest.get("modules") or {}
    med, p10 = (mods.get(s, {}).get("acc10") for s in ("median", "p10"))
    return "p10" if med is not None and p10 is not None and p10 > med else "median"


# -- adaptation -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Suite:
    """The calibration measurements as host arrays."""

    module: np.ndarray  # [r] module type of each module row
    log_y: np.ndarray  # [r] log of its latency (ms), the chosen statistic
    row_key: np.ndarray  # [r] config key
    net_log_y: np.ndarray  # [n] log of each network's latency (ms)
    net_counts: np.ndarray  # [n, 5] composition counts (`jaxlat.count_rows`)
    net_arch: np.ndarray  # [n] the network's architecture (its batch sizes share it)


@dataclasses.dataclass(frozen=True)
class BaseArrays:
    """A base predictor's predictions of the calibration suite, from which every candidate
    correction is computed on the host."""

    name: str
    log_pred: np.ndarray  # [r] log of its module predictions (ms)
    modules: tuple[str, ...]  # every module type it predicts (a correction's factors cover them all)
    types: tuple[str, ...]  # the module types of `net_sums`' columns
    net_sums: np.ndarray  # [n, len(types)] per network, the sum of its module predictions per type (ms)
    coef: np.ndarray  # [6] its composition coefficients (`TERMS`; the plain sum if it has none)


@dataclasses.dataclass(frozen=True)
class Fitted:
    """A candidate fitted on some of the suite: per-type log shifts and composition coefficients."""

    shift: Mapping[str, float]  # module type -> log of its factor
    coef: np.ndarray  # [6]


def fit_log_shift(
    correction: str, module: np.ndarray, log_ratio: np.ndarray, types: Iterable[str]
) -> dict[str, float]:
    """Per module type, the log factor of a module correction, from `log(measured / predicted)`
    of training rows: `none` (0), `global` (their median) or `per_type` (each type's median; a
    type without rows takes the global one).

    Examples:
      >>> fit_log_shift("per_type", np.array(["a", "a", "b"]), np.array([0.1, 0.3, -0.2]), ["a", "b", "c"])
      {'a': 0.2, 'b': -0.2, 'c': 0.1}
    """
    types = list(types)
    if correction == "none" or len(log_ratio) == 0:
        return {t: 0.0 for t in types}
    overall = float(np.median(log_ratio))
    if correction == "global":
        return {t: overall for t in types}
    return {t: float(np.median(log_ratio[module == t])) if np.any(module == t) else overall for t in types}


def fit_network_shift(
    prior: Mapping[str, float],
    types: Sequence[str],
    net_sums: np.ndarray,
    counts: np.ndarray,
    y_ms: np.ndarray,
    coef: np.ndarray,
    l2: float = _NETWORK_SHIFT_L2,
) -> dict[str, float]:
    """Per-type log factors of the module predictions fitted on measured networks: those that
    make the composition `coef` of the scaled module sums fit the networks' latencies `y_ms`,

        mean_n (log compose(coef, sum_t exp(a_t) net_sums[n, t], counts[n]) - log y_n)^2
          + l2 / n * sum_t (a_t - prior[t])^2,

    pulled toward `prior` (the module rows' factors). Types in `prior` that no network has
    (`net_sums` columns `types`) keep their prior; with no network, `prior` is returned.

    Examples:
      >>> sums = np.array([[1.0, 1.0], [2.0, 1.0], [1.0, 3.0]])
      >>> y = sums @ np.array([2.0, 0.5])  # type a runs 2x, b 0.5x its prediction
      >>> out = fit_network_shift({"a": 0.0, "b": 0.0}, ["a", "b"], sums, np.zeros((3, 5)), y,
      ...                         np.array([1.0, 0, 0, 0, 0, 0]), l2=1e-6)
      >>> {t: round(math.exp(v), 3) for t, v in out.items()}
      {'a': 2.0, 'b': 0.5}
    """
    from scipy.optimize import minimize

    out = {t: float(v) for t, v in prior.items()}
    if len(y_ms) == 0:
        return out
    p0 = np.array([out.get(t, 0.0) for t in types], float)
    sums, rest = np.asarray(net_sums, float), np.asarray(counts, float) @ np.asarray(coef[1:], float)
    log_y, n = np.log(np.asarray(y_ms, float)), len(y_ms)

    def loss(a: np.ndarray) -> tuple[float, np.ndarray]:
        scaled = sums * np.exp(a)[None, :]
        raw = coef[0] * scaled.sum(axis=1) + rest
        pred = np.maximum(raw, 1e-6)  # a negative per-count term could take it below 0
        r = np.log(pred) - log_y
        grad = 2.0 / n * (np.where(raw > 1e-6, r / pred, 0.0)) @ (coef[0] * scaled) + 2.0 * l2 / n * (a - p0)
        return float(np.mean(r**2) + l2 / n * np.sum((a - p0) ** 2)), grad

    fitted = minimize(loss, p0, jac=True, method="L-BFGS-B").x
    out.update({t: float(v) for t, v in zip(types, fitted)})
    return out


def shifted_sums(base: BaseArrays, shift: Mapping[str, float]) -> np.ndarray:
    """`[n]` module sums of the networks with each type's predictions scaled by `exp(shift)`."""
    return base.net_sums @ np.exp(np.array([shift.get(t, 0.0) for t in base.types], float))


def terms(sums_ms: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """`[n, 6]` design rows of the composition (`jaxlat.design_rows`) from module sums `[n]` and
    count rows `[n, 5]` (`jaxlat.count_rows`)."""
    return np.column_stack([np.asarray(sums_ms, np.float64), np.asarray(counts, np.float64)])


def compose_ms(coef: np.ndarray, sums_ms: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Whole-network latency (ms) from module sums and counts (`Composition.apply`)."""
    return Composition(dict(zip(TERMS, map(float, coef)))).apply(terms(sums_ms, counts))


def fit_coef(
    how: str, sums_ms: np.ndarray, counts: np.ndarray, y_ms: np.ndarray, coef0: np.ndarray
) -> np.ndarray | None:
    """Composition coefficients: `kept` (the base's), `rescaled` (the base's times the median
    ratio measured / predicted) or `refitted` (`jaxlat.fit_composition`, the base's as prior for
    terms the networks leave at zero); None where `refitted` has too few networks."""
    if how == "kept":
        return np.asarray(coef0, float)
    if how == "rescaled":
        pred = np.maximum(compose_ms(coef0, sums_ms, counts), 1e-6)
        return np.asarray(coef0, float) * float(np.exp(np.median(np.log(y_ms) - np.log(pred))))
    if len(y_ms) < _MIN_REFIT_NETWORKS:
        return None
    comp = fit_composition(terms(sums_ms, counts), y_ms, prior=dict(zip(TERMS, map(float, coef0))))
    return comp.coef_array.astype(float)


def fit_candidate(
    base: BaseArrays, suite: Suite, rows: np.ndarray, nets: np.ndarray, correction: str, composition: str
) -> Fitted | None:
    """A candidate (module correction, composition form) fitted on the suite's `rows` and `nets`
    (boolean masks); None where it cannot be fitted there. `per_type_networks`: the `per_type`
    factors of the rows, then fitted on the networks (`fit_network_shift`), the base's
    composition held; the composition form is fitted after."""
    types = base.modules  # all of them: a global factor reaches types the suite did not measure too
    per_rows = "per_type" if correction == "per_type_networks" else correction
    shift = fit_log_shift(per_rows, suite.module[rows], suite.log_y[rows] - base.log_pred[rows], types)
    if correction == "per_type_networks":
        shift = fit_network_shift(shift, base.types, base.net_sums[nets], suite.net_counts[nets],
                                  np.exp(suite.net_log_y[nets]), base.coef)
    coef = fit_coef(
        composition,
        shifted_sums(base, shift)[nets],
        suite.net_counts[nets],
        np.exp(suite.net_log_y[nets]),
        base.coef,
    )
    return None if coef is None else Fitted(shift, coef)


def blend(fits: Sequence[Fitted]) -> Fitted:
    """One candidate whose whole-model predictions are the mean of those of `fits` (candidates
    of one base): the composition is linear in its coefficients and its `scale` multiplies the
    module sum, so the mean is exact, the coefficients averaged and each type's factor
    `mean(scale_i * factor_i) / mean(scale_i)`. Its module predictions are the module sums'
    weights, not a mean of the members' module predictions.

    >>> a = Fitted({"conv2d": 0.0}, np.array([1.0, 0.1, 0, 0, 0, 0]))
    >>> b = Fitted({"conv2d": math.log(3.0)}, np.array([1.0, 0.3, 0, 0, 0, 0]))
    >>> m = blend([a, b]); round(math.exp(m.shift["conv2d"]), 6), m.coef[:2].tolist()
    (2.0, [1.0, 0.2])
    """
    if len(fits) == 1:
        return fits[0]
    coef = np.mean([f.coef for f in fits], axis=0)
    scale = np.array([f.coef[0] for f in fits], float)  # TERMS[0]: the module sum's coefficient
    if coef[0] <= 0:  # no member counts its module sum (`fit_composition` keeps scales >= 0)
        return Fitted({t: 0.0 for f in fits for t in f.shift}, coef)
    types = sorted(set().union(*(f.shift for f in fits)))
    shift = {t: float(np.log(np.mean(scale * np.exp([f.shift.get(t, 0.0) for f in fits])) / coef[0])) for t in types}
    return Fitted(shift, coef)


def fit_members(
    base: BaseArrays, suite: Suite, rows: np.ndarray, nets: np.ndarray, members: Sequence[tuple[str, str]]
) -> Fitted | None:
    """`fit_candidate` of each `(correction, composition)` of `members` on one base, as one
    candidate (`blend`); None where one of them cannot be fitted."""
    fits = [fit_candidate(base, suite, rows, nets, corr, comp) for corr, comp in members]
    return None if any(f is None for f in fits) else blend(fits)


def predict_log(base: BaseArrays, suite: Suite, fitted: Fitted) -> tuple[np.ndarray, np.ndarray]:
    """Log latency of every module row and every network under a fitted candidate."""
    rows = base.log_pred + np.array([fitted.shift.get(m, 0.0) for m in suite.module], float)
    nets = compose_ms(fitted.coef, shifted_sums(base, fitted.shift), suite.net_counts)
    return rows, np.log(np.maximum(nets, 1e-6))


def split_suite(suite: Suite, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The report part (held out from fitting and choice) and the selection folds.

    Returns:
      `report_rows [r]`, `report_nets [n]` (bool), `row_fold [r]`, `net_fold [n]` (int; -1 in
      the report part): per module type a quarter of its configs (none below 4), a quarter of the
      network architectures (both batch sizes together; at least one from 4 on), and the rest in
      `min(5, architectures left)` folds.
    """
    report_rows = np.zeros(len(suite.log_y), bool)
    row_rank = np.zeros(len(suite.log_y), int)
    for m in np.unique(suite.module):
        idx = np.flatnonzero(suite.module == m)
        idx = idx[np.argsort([_u(seed, f"row|{k}") for k in suite.row_key[idx]], kind="stable")]
        n_rep = math.ceil(_REPORT_SHARE * len(idx)) if len(idx) >= 4 else 0
        report_rows[idx[:n_rep]] = True
        row_rank[idx[n_rep:]] = np.arange(len(idx) - n_rep)
    archs = sorted(set(suite.net_arch), key=lambda a: _u(seed, f"net|{a}"))
    n_rep = max(1, round(_REPORT_SHARE * len(archs))) if len(archs) >= MIN_NETWORKS else 0
    folds = max(1, min(_FOLDS, len(archs) - n_rep))
    arch_fold = {a: (-1 if i < n_rep else (i - n_rep) % folds) for i, a in enumerate(archs)}
    net_fold = np.array([arch_fold[a] for a in suite.net_arch], int)
    row_fold = np.where(report_rows, -1, row_rank % folds)
    return report_rows, net_fold < 0, row_fold, net_fold


def cross_validate(
    base: BaseArrays,
    suite: Suite,
    row_fold: np.ndarray,
    net_fold: np.ndarray,
    members: Sequence[tuple[str, str]],
) -> tuple[np.ndarray, np.ndarray] | None:
    """Out-of-fold log predictions of the selection part (NaN in the report part) of a candidate,
    `members` `[(correction, composition)]`, or of the `blend` of several; None where one cannot
    be fitted in some fold."""
    rows_out = np.full(len(suite.log_y), np.nan)
    nets_out = np.full(len(suite.net_log_y), np.nan)
    for k in np.unique(net_fold[net_fold >= 0]):
        fit = fit_members(base, suite, (row_fold >= 0) & (row_fold != k), (net_fold >= 0) & (net_fold != k), members)
        if fit is None:
            return None
        r, n = predict_log(base, suite, fit)
        rows_out[row_fold == k], nets_out[net_fold == k] = r[row_fold == k], n[net_fold == k]
    return rows_out, nets_out


def accuracy(log_pred: np.ndarray, log_y: np.ndarray) -> dict[str, Any]:
    """`n`, `acc10`, `acc20` (`jaxlat.evaluate`), `median_abs_err` (relative) and
    `mean_abs_log_err` of predictions against measurements (both log ms); empty: `n` 0."""
    if len(log_y) == 0:
        return {"n": 0, "acc10": None, "acc20": None, "median_abs_err": None, "mean_abs_log_err": None}
    m = evaluate(np.exp(log_y), np.exp(log_pred))
    return {
        "n": int(m["n"]),
        "acc10": m["acc10"],
        "acc20": m["acc20"],
        "median_abs_err": float(np.median(np.abs(np.exp(log_pred - log_y) - 1))),
        "mean_abs_log_err": float(np.mean(np.abs(log_pred - log_y))),
    }


@dataclasses.dataclass(frozen=True)
class Choice:
    """The chosen candidate and the scores of all of them."""

    base: str
    correction: str
    composition: str
    candidates: list[dict[str, Any]]  # every candidate: its held-out errors and score
    #: Per objective (`CALIBRATION_OBJECTIVES`), the candidate it would choose and its errors.
    by_objective: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: With `objective="split"`: what composes the whole models (`base`, `modules`,
    #: `composition` of the networks' leader as in `candidates`; `members`: the `[correction,
    #: composition]` pairs of that base whose mean it is, the leader's first; the held-out errors
    #: of that mean); None for the other objectives.
    whole: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        own = candidate_label(self.base, self.correction, self.composition)
        if self.whole is None:
            return own
        return f"modules: {own}; whole models: {part_label(self.whole)}"


def whole_key(c: Mapping[str, Any]) -> tuple[str, str, str]:
    """`(base, modules, composition)` of a candidate entry."""
    return c["base"], c["modules"], c["composition"]


def part_members(c: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The `(correction, composition)` pairs a part is the mean of (one for a single candidate;
    an entry written before blends has none)."""
    return [tuple(m) for m in c.get("members") or [(c["modules"], c["composition"])]]


_CORRECTION_WORDS = {
    "none": "module predictions kept",
    "global": "one scale for all module types",
    "per_type": "per-type scale",
    "per_type_networks": "per-type scale fitted on the networks",
}


def candidate_label(base: str, correction: str, composition: str) -> str:
    """A candidate in words, e.g. `epyc_torch_1t + per-type scale + composition refitted`."""
    return f"{base} + {_CORRECTION_WORDS[correction]} + composition {composition}"


def part_label(c: Mapping[str, Any]) -> str:
    """A part (`Choice.whole`, or a candidate entry) in words: `candidate_label`, or for the mean
    of several, e.g. `xeon_amx_torch_1t + per-type scale + composition refitted, kept and
    rescaled, averaged` (`xeon_amx_torch_1t, the mean of 3: ...; ...` where the corrections
    differ)."""
    members = part_members(c)
    if len(members) == 1:
        return candidate_label(c["base"], *members[0])
    if len({corr for corr, _ in members}) == 1:  # the usual case: one correction, its compositions
        comps = [comp for _, comp in members]
        listed = ", ".join(comps[:-1]) + f" and {comps[-1]}"
        return f"{c['base']} + {_CORRECTION_WORDS[members[0][0]]} + composition {listed}, averaged"
    each = "; ".join(f"{_CORRECTION_WORDS[corr]} + composition {comp}" for corr, comp in members)
    return f"{c['base']}, the mean of {len(members)}: {each}"


def check_objective(objective: str) -> str:
    """`objective` if it is one of `CALIBRATION_OBJECTIVES`, else a ValueError naming them."""
    if objective not in CALIBRATION_OBJECTIVES:
        raise ValueError(
            f"objective={objective!r} is not valid (--objective): expected one of "
            f"{', '.join(CALIBRATION_OBJECTIVES)}"
        )
    return objective


def choose(
    bases: Sequence[BaseArrays],
    suite: Suite,
    row_fold: np.ndarray,
    net_fold: np.ndarray,
    objective: str = "split",
) -> Choice:
    """The candidate (base, module correction, composition form) with the lowest held-out error,
    out of fold: with `objective="both"` the mean of the mean |log error| of the module rows and
    of the networks; `"networks"` or `"modules"`: that part's alone; `"split"` (the default):
    one of each, below. Within `_TIE` of the best,
    the simplest wins (fewer fitted values, then the earlier base).

    With one candidate for both parts (whole models composed from its module predictions), the
    two can disagree: a base fine-tuned on the module rows predicts modules best while another
    base's modules, composed, predict the networks best (`docs/results.md`, "A new machine").
    `"networks"` suits whole-model use (NAS, choosing a deployment), `"modules"` per-layer use,
    and `"split"` takes the `"modules"` leader for module queries and, for whole models
    (`Choice.whole`), the mean (`blend`) of the `"networks"` leader and the next best
    candidates of its base by held-out network error, `WHOLE_MEMBERS` in all: scores and
    `chosen` are then those of the module part, `chosen_whole` marks the members. The mean is
    a hedge, not a score's choice: the networks scored are generated ones, and on real
    architectures the leader among a few close candidates was often not the best
    (`docs/results.md`, "A new machine"); averaged, their errors partly cancel."""
    check_objective(objective)
    rows_sel, nets_sel = row_fold >= 0, net_fold >= 0
    table = []
    for bi, base in enumerate(bases):
        for ci, corr in enumerate(MODULE_CORRECTIONS):
            for pi, comp in enumerate(COMPOSITIONS):
                entry: dict[str, Any] = {"base": base.name, "modules": corr, "composition": comp}
                oof = cross_validate(base, suite, row_fold, net_fold, [(corr, comp)])
                if oof is None:
                    table.append(
                        {
                            **entry,
                            "score": None,
                            "note": f"fewer than {_MIN_REFIT_NETWORKS} networks to fit on",
                        }
                    )
                    continue
                m_err, n_err = _oof_errors(oof, suite, rows_sel, nets_sel)
                table.append(
                    {
                        **entry,
                        "module_mean_abs_log_err": m_err,
                        "network_mean_abs_log_err": n_err,
                        "_scores": {"both": 0.5 * (m_err + n_err), "networks": n_err, "modules": m_err},
                        "_rank": (ci + pi, bi),
                    }
                )
    scored = [c for c in table if "_scores" in c]
    if not scored:  # `kept` and `rescaled` always fit, so this would be a bug
        raise ValueError(
            f"calibrate: none of the {len(table)} candidates could be scored; please report this"
        )

    def leader(o: str) -> dict[str, Any]:
        best = min(c["_scores"][o] for c in scored)
        return min((c for c in scored if c["_scores"][o] <= best + _TIE), key=lambda c: c["_rank"])

    leaders = {o: leader(o) for o in _SCORED_OBJECTIVES}
    split = objective == "split"
    pick = leaders["modules" if split else objective]
    keys = ("base", "modules", "composition", "module_mean_abs_log_err", "network_mean_abs_log_err")
    whole, members = None, []
    if split:
        lead = leaders["networks"]
        same = sorted((c for c in scored if c["base"] == lead["base"] and c is not lead),
                      key=lambda c: c["_scores"]["networks"])
        members = [lead, *same[: WHOLE_MEMBERS - 1]]
        base = next(b for b in bases if b.name == lead["base"])
        pairs = [(c["modules"], c["composition"]) for c in members]
        m_err, n_err = _oof_errors(cross_validate(base, suite, row_fold, net_fold, pairs), suite, rows_sel, nets_sel)
        whole = {**{k: lead[k] for k in keys[:3]}, "members": [list(m) for m in pairs],
                 "module_mean_abs_log_err": m_err, "network_mean_abs_log_err": n_err}
    for c in table:
        c.pop("_rank", None)
        if "_scores" in c:
            c["score"] = c.pop("_scores")["modules" if split else objective]
        c["chosen"] = c is pick
        if split:
            c["chosen_whole"] = any(c is m for m in members)
    by_objective = {o: {k: c[k] for k in keys} for o, c in leaders.items()}
    return Choice(pick["base"], pick["modules"], pick["composition"], table, by_objective, whole)


def _oof_errors(oof: tuple[np.ndarray, np.ndarray], suite: Suite, rows: np.ndarray, nets: np.ndarray) -> tuple[float, float]:
    """Mean |log error| of out-of-fold predictions over the selection rows and networks."""
    return (float(np.mean(np.abs(oof[0][rows] - suite.log_y[rows]))),
            float(np.mean(np.abs(oof[1][nets] - suite.net_log_y[nets]))))


def base_arrays(
    name: str, predictor: LatencyPredictor, df: pd.DataFrame, records: Sequence[profilers.ArchRecord]
) -> BaseArrays:
    """A base predictor's predictions of the module rows and, per type, of the networks' modules.

    Raises:
      ValueError: it has no model for a module type of the suite (the message names them).
    """
    import pandas as pd

    frames = [r.frame().drop(columns=["op", "approx"]).assign(_net=i) for i, r in enumerate(records)]
    rows = pd.concat(frames, ignore_index=True)
    missing = sorted((set(df["module"]) | set(rows["module"])) - set(predictor.modules))
    if missing:
        raise ValueError(f"base {name}: no model for {', '.join(missing)}, which the calibration suite has")
    log_pred = np.log(predictor.predict(df)["latency_ms"].to_numpy(float))
    lat = predictor.predict(rows.drop(columns=["_net"]))["latency_ms"].to_numpy(float)
    types = tuple(sorted(set(rows["module"])))
    # Per network and type, the sum of its module predictions: the one module sum, with each
    # row's latency in its type's column.
    per_type = lat[:, None] * (rows["module"].to_numpy()[:, None] == np.array(types)[None, :])
    sums = np.asarray(module_sum(jax.device_put(per_type.astype(np.float32)), jax.device_put(np.ones(len(lat), np.float32)),
                                 jax.device_put(rows["_net"].to_numpy(np.int32)), len(records)), float)
    comp = predictor.composition or Composition(IDENTITY)
    return BaseArrays(name, log_pred, tuple(predictor.modules), types, sums, comp.coef_array.astype(float))


#: Suffix of a base fine-tuned on the calibration's module rows (`tuned_arrays`).
TUNED = " fine-tuned"


def tuned_arrays(
    name: str,
    predictor: LatencyPredictor,
    df: pd.DataFrame,
    records: Sequence[profilers.ArchRecord],
    row_fold: np.ndarray,
    report_rows: np.ndarray,
    statistic: str,
) -> BaseArrays:
    """`base_arrays` of `predictor` fine-tuned on the module rows (`jaxlat._finetune.fine_tuned`),
    named `name + TUNED`: each selection row predicted by a fit without its fold, the report
    rows and the networks' modules by a fit on every selection row (never on a report row)."""
    log_pred = np.full(len(df), np.nan)
    for k in np.unique(row_fold[row_fold >= 0]):
        fit = fine_tuned(predictor, df[(row_fold >= 0) & (row_fold != k)], statistic=statistic)
        log_pred[row_fold == k] = np.log(fit.predict(df[row_fold == k])["latency_ms"].to_numpy(float))
    on_selection = fine_tuned(predictor, df[~report_rows], statistic=statistic)
    arrays = base_arrays(name + TUNED, on_selection, df, records)
    log_pred[report_rows] = arrays.log_pred[report_rows]
    return dataclasses.replace(arrays, log_pred=log_pred)


def with_module_log_scale(predictor: LatencyPredictor, shift: Mapping[str, float]) -> LatencyPredictor:
    """A copy of `predictor` whose predictions of module type `t` are `exp(shift[t])` times its
    own: `LatencyPredictor.with_type_scales`, factors that are part of its parameters (any
    regressor; saved with it). Types it has no model for are left out."""
    factors = {t: math.exp(d) for t, d in shift.items() if d != 0.0 and t in predictor.models}
    return predictor.with_type_scales(factors) if factors else predictor


def _composition(
    coef: np.ndarray, sums_ms: np.ndarray, counts: np.ndarray, y_ms: np.ndarray, how: str, base: str
) -> Composition:
    """The final composition, its interval width from its residuals on the suite's networks."""
    pred = np.maximum(compose_ms(coef, sums_ms, counts), 1e-6)
    log_res = np.log(pred / y_ms)
    rel = pred / y_ms - 1
    info = {
        "fitted_by": "jaxlat.calibrate",
        "method": how,
        "base": base,
        "n_networks": len(y_ms),
        "fit_acc10": float(np.mean(np.abs(rel) <= 0.10)),
        "fit_median_abs_rel_err": float(np.median(np.abs(rel))),
    }
    return Composition(
        {t: float(c) for t, c in zip(TERMS, coef)},
        float(np.sqrt(np.mean(log_res**2))),
        info,
        max(0.01, float(np.quantile(np.abs(log_res), 0.8))),
    )


# -- the card -------------------------------------------------------------------------------------


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def objective_lines(choice: Mapping[str, Any]) -> list[str]:
    """Card lines: what each objective would choose (`--objective`), with its held-out errors;
    none for a card written before objectives were recorded."""
    by = choice.get("by_objective") or {}
    if not by:
        return []
    lines = [
        "",
        "What each objective would choose (cross-validated mean |log error| of modules / networks):",
        "",
    ]
    whole = " (leads this calibration's whole-model mean)" if (choice.get("whole_models") or {}).get("members") else (
        " (this calibration's whole-model part)")
    split = {"modules": " (this calibration's module part)", "networks": whole}
    for o, c in by.items():
        here = " (this calibration's)" if o == choice.get("objective") else ""
        if choice.get("objective") == "split":
            here = split.get(o, "")
        lines.append(
            f"- `--objective {o}`{here}: {candidate_label(c['base'], c['modules'], c['composition'])}; "
            f"{c['module_mean_abs_log_err']:.3f} / {c['network_mean_abs_log_err']:.3f}"
        )
    return lines


_OBJECTIVE_WORDS = {
    "both": "modules and networks, averaged",
    "networks": "the networks alone",
    "modules": "the module rows alone",
    "split": "the module rows for module queries, the networks for whole models",
}


def roofline_share_lines(local: Mapping[str, Any] | None, held_out: Mapping[str, Any]) -> list[str]:
    """The card's words on the piecewise roofline blended into module types (none: `[]`)."""
    if not local:
        return []
    used = {t: w for t, w in local["weights"].items() if w > 0}
    if not local["errors"]:
        return ["", (f"No module type had the {_MIN_LOCAL_ROWS} selection rows a piecewise roofline fitted "
                     "here needs to be scored; none is blended.")]
    if used:
        which = ", ".join(f"{t} {w:g}" for t, w in used.items())
        head = (f"Module types blended with a piecewise roofline fitted on this machine's rows of the type "
                f"(its share of the log latency, chosen by out-of-fold error): {which}; the other types "
                "keep the pick alone. A blended type's scale factor above is what the pick's share of it "
                "takes (1 at a share of 1).")
    else:
        head = ("A piecewise roofline fitted on this machine's rows of each type was scored beside the pick; "
                "it improved no type out of fold, so none is blended.")
    without, with_ = local["held_out_without"], held_out["table"][0]["modules"]
    return ["", head + f" Held-out module rows within ±10 %: {_fmt(without['acc10'])} without the blend, "
            f"{_fmt(with_['acc10'])} with it."]


def card_markdown(card: Mapping[str, Any]) -> str:
    """`card.md`: the card's figures for a reader."""
    m, meas, rt, ch, ho = (
        card["machine"],
        card["measured"],
        card["test_retest"],
        card["choice"],
        card["held_out"],
    )
    stat = card["statistic"]
    lines = [
        f"# Calibration card: {m['cpu_model']}",
        "",
        (
            f"Written by `jaxlat calibrate` on {card['created_at']} (jaxlat {card['jaxlat_version']}). The figures "
            "below come from this one run on this machine."
        ),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu_model']} ({m.get('cpu_logical_cores')} logical cores, {m.get('cpu_physical_cores')} physical) |",
        f"| memory | {m.get('memory_gib')} GiB |",
        f"| OS, Python | {m.get('os')}, {m.get('python')} |",
        f"| measured with | {', '.join(f'{k} {v}' for k, v in (m.get('libraries') or {}).items())}, 1 thread |",
        f"| device id | {m.get('device_id')} |",
        "",
        "## What was measured",
        "",
        (
            f"Budget {card['budget_min']:g} min; measurement took {meas['measure_s'] / 60:.1f} min "
            f"(probe {meas['probe_s'] / 60:.1f} min, over {meas['sessions']} session(s)); fitting took "
            f"{meas['fit_s'] / 60:.1f} min."
        ),
        "",
        "| module type | configs at batch 1 | at batch 8 | failed |",
        "|---|---:|---:|---:|",
    ]
    for t, c in meas["modules"].items():
        lines.append(f"| {t} | {c.get('b1', 0)} | {c.get('b8', 0)} | {c.get('failed', 0)} |")
    nets = meas["networks"]
    fams = ", ".join(f"{f} {n}" for f, n in nets["per_family"].items())
    lines += [
        "",
        (
            f"Networks: {nets['records']} records, {nets['architectures']} generated architectures at batch "
            f"{', '.join(map(str, card['batch_sizes']))} ({fams}; {nets['with_pad_operators']} with pad "
            "operators)."
        ),
        "",
        "## Test-retest ceiling",
        "",
        (
            "A sample drawn over the whole suite, measured again at its end: the share whose second "
            "measurement lies within ±10 % (±20 %) of the first. No prediction can be read more accurately "
            "than its labels repeat."
        ),
        "",
        "| | n | median within ±10 % | ±20 % | p10 within ±10 % | ±20 % | second / first | "
        "median ±10 %, drift removed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for what in ("modules", "networks"):
        r = rt.get(what) or {}
        med, p10 = r.get("median") or {}, r.get("p10") or {}
        lines.append(
            f"| {what} | {med.get('n', 0)} | {_fmt(med.get('acc10'))} | {_fmt(med.get('acc20'))} | "
            f"{_fmt(p10.get('acc10'))} | {_fmt(p10.get('acc20'))} | {_fmt(med.get('median_ratio'), '.3f')} | "
            f"{_fmt(med.get('acc10_drift_removed'))} |"
        )
    lines += [
        "",
        ("'Second / first' is the median ratio of the two measurements: the machine's speed moving "
         "between them, common to every config. 'Drift removed' divides it out: what is left is each "
         "config's own noise."),
        "",
        f"Latency statistic learned: **{stat}** ({card['statistic_reason']}).",
        "",
        "## Choice",
        "",
        (
            f"**{ch['label']}**, chosen by {ch['folds']}-fold held-out error (mean |log error| of "
            f"{_OBJECTIVE_WORDS[ch.get('objective', 'both')]}) on {ch['selection_rows']} module rows and "
            f"{ch['selection_networks']} networks; the "
            "held-out part below was used neither for fitting nor for the choice."
        ),
        "",
        "| base | modules | composition | module err | network err | score |",
        "|---|---|---|---:|---:|---:|",
    ]
    in_whole = "in the whole-model mean" if (ch.get("whole_models") or {}).get("members") else "chosen for whole models"
    for c in sorted(ch["candidates"], key=lambda c: (c["score"] is None, c["score"] or 0)):
        marks = ["chosen"] if c["chosen"] else []
        if c.get("chosen_whole"):
            marks.append(in_whole)
        mark = f" ({'; '.join(marks)})" if marks else ""
        lines.append(
            f"| {c['base']}{mark} | {c['modules']} | {c['composition']} | "
            f"{_fmt(c.get('module_mean_abs_log_err'), '.3f')} | {_fmt(c.get('network_mean_abs_log_err'), '.3f')} "
            f"| {_fmt(c['score'], '.3f') if c['score'] is not None else 'n/a: ' + c.get('note', '')} |"
        )
    lines += objective_lines(ch)
    scales = ch.get("module_scale") or {}
    if any(abs(v - 1) > 1e-9 for v in scales.values()):
        lines += [
            "",
            "Module scale factors: "
            + ", ".join(
                f"{t} x{v:.3f}" + ("" if t in meas["modules"] else "*") for t, v in sorted(scales.items())
            )
            + (
                " (* no module row measured: the factor of all measured rows, or fitted on the networks)."
                if set(scales) - set(meas["modules"])
                else "."
            ),
        ]
    lines += roofline_share_lines(ch.get("roofline"), card["held_out"])
    whole = ch.get("whole_models")
    coef = ch["composition_coef"]
    if whole:
        factors = ", ".join(f"{t} x{v:.3f}" for t, v in sorted(whole["module_scale"].items()) if abs(v - 1) > 1e-9)
        lines += [
            "",
            (f"Whole models are composed by a second predictor, **{whole['label']}**"
             + (f" (module scale factors {factors})" if factors else "")
             + "; module queries are answered by the first (`--objective split`)."),
        ]
        if whole.get("members"):
            lead = (ch.get("by_objective") or {}).get("networks")
            lines[-1] += (
                f" The mean's cross-validated network error: {whole['network_mean_abs_log_err']:.3f}"
                + (f", its leader's alone {lead['network_mean_abs_log_err']:.3f}" if lead else "")
                + "; the mean is a hedge: the networks scored are generated ones, not real architectures."
            )
        coef = whole["composition_coef"]
    lines += [
        "",
        "Composition" + (" (of the second predictor)" if whole else "") + ": "
        + ", ".join(f"{k} {v:.4g}" for k, v in coef.items()) + ".",
        "",
        "## Held-out accuracy",
        "",
        (
            f"On {ho['rows']} module rows and {ho['networks']} networks of this run held out from fitting and "
            f"from the choice (statistic: {stat}); read against the test-retest ceiling above."
        ),
        "",
        "| predictor | modules within ±10 % | median abs error | networks within ±10 % | median abs error |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in ho["table"]:
        mo, ne = row["modules"], row["networks"]
        lines.append(
            f"| {row['predictor']} | {_fmt(mo['acc10'])} | {_fmt(mo['median_abs_err'], '.1%')} | "
            f"{_fmt(ne['acc10'])} | {_fmt(ne['median_abs_err'], '.1%')} |"
        )
    lines += [
        "",
        f"Predictor: `{card['predictor']}`; "
        + (
            f"registered for CPU model `{m['cpu_model']}` in `{card['registered']}`."
            if card.get("registered")
            else "not registered (--no-register)."
        ),
        "",
    ]
    return "\n".join(lines)


# -- the whole run --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Calibrated:
    """What `calibrate_machine` wrote.

    Attributes:
      out: the output directory.
      predictor_dir: the calibrated predictor (`out / "predictor"`).
      card: the card (`out / "card.json"`).
      registered: the registry file it was registered in, or None.
    """

    out: Path
    predictor_dir: Path
    card: dict[str, Any]
    registered: Path | None

    def predictor(self) -> LatencyPredictor:
        """The calibrated `LatencyPredictor`, loaded."""
        from ._predictor import LatencyPredictor

        return LatencyPredictor.load(self.predictor_dir)

    def summary(self) -> str:
        """A few lines: what was measured, the ceiling, the choice, held-out accuracy, the files."""
        c = self.card
        meas, rt, ho = c["measured"], c["test_retest"], c["held_out"]["table"]
        stat = c["statistic"]
        ceiling = [
            f"{w} {_fmt(((rt.get(w) or {}).get(stat) or {}).get('acc10'))}" for w in ("modules", "networks")
        ]
        cal, unc = ho[0], ho[1:]

        def best(what: str) -> str:
            vals = [r[what]["acc10"] for r in unc if r[what]["acc10"] is not None]
            return _fmt(max(vals) if vals else None)

        lines = [
            (
                f"calibrated on {meas['rows']} module rows and {meas['networks']['records']} networks in "
                f"{meas['measure_s'] / 60:.1f} min of measurement (budget {c['budget_min']:g} min)"
            ),
            f"test-retest within ±10 % ({stat}): {', '.join(ceiling)}",
            f"chosen: {c['choice']['label']}" + _other_objective_hint(c["choice"]),
            (
                f"held-out within ±10 %: modules {_fmt(cal['modules']['acc10'])} (best uncalibrated {best('modules')}), "
                f"networks {_fmt(cal['networks']['acc10'])} ({best('networks')})"
            ),
            f"wrote {self.predictor_dir}, {self.out / 'card.md'}"
            + (
                f"; registered for {c['machine']['cpu_model']!r}: jaxlat predict takes it"
                if self.registered
                else ""
            ),
        ]
        return "\n".join(lines)


def _other_objective_hint(choice: Mapping[str, Any]) -> str:
    """For the summary: where whole models alone would choose another candidate, a hint naming
    `--objective networks` and the two held-out network errors; else nothing."""
    net, objective = (choice.get("by_objective") or {}).get("networks"), choice.get("objective", "both")
    if not net or objective in ("networks", "split"):
        return ""
    mine = next(c for c in choice["candidates"] if c["chosen"])
    if whole_key(net) == whole_key(mine):
        return ""
    return (
        f"\n  (for whole models alone, --objective networks would choose "
        f"{candidate_label(*whole_key(net))}: cross-validated network error "
        f"{net['network_mean_abs_log_err']:.3f} against {mine['network_mean_abs_log_err']:.3f}; "
        "--objective split would compose whole models with the mean of it and the next two of its base "
        "and keep module queries as they are; see card.md)"
    )


def _bases(
    base: str | Iterable[str] | None, exclude: str | Iterable[str] | None
) -> dict[str, LatencyPredictor]:
    """The base predictors by name (shipped names or directories), loaded; bad names fail now."""
    from ._shipped import load_predictor, reference_names

    names = _names(base, name="base")
    names = reference_names() if names is None else names
    excluded = _names(exclude, name="exclude_base") or ()
    unknown = [x for x in excluded if x not in names]
    if unknown:
        raise ValueError(
            f"exclude_base {unknown[0]!r} is not valid (--exclude-base): it is not among the bases "
            f"({', '.join(names)})"
        )
    names = tuple(n for n in names if n not in excluded)
    if not names:
        raise ValueError(
            "base: no base predictor left (--base, --exclude-base); expected at least one of "
            f"{', '.join(reference_names())} or a predictor directory"
        )
    out = {}
    for n in names:
        try:
            out[n] = load_predictor(n)
        except ValueError as e:
            raise ValueError(f"base {n!r} is not valid (--base): {e}") from None
    return out


def _measured_summary(
    plan: Mapping[str, Any],
    paths: _Paths,
    df: pd.DataFrame,
    records: Sequence[profilers.ArchRecord],
    progress: _Progress,
    fit_s: float,
) -> dict[str, Any]:
    all_rows = profilers.read_dataset(paths.modules, include_failed=True)
    per_type: dict[str, dict[str, int]] = {}
    for t, sub in all_rows.groupby("module"):
        ok = sub[sub["status"] == "ok"]
        per_type[str(t)] = {
            **{f"b{int(b)}": int((ok["batch_size"] == b).sum()) for b in BATCH_SIZES},
            "failed": int((sub["status"] != "ok").sum()),
        }
    arch_of = {r.name: re.sub(r"_b\d+_", "_", r.name) for r in records}
    fam: dict[str, int] = {}
    for r in records:
        f = str(r.info.get("family", "?"))
        fam[f] = fam.get(f, 0) + 1
    return {
        "rows": len(df),
        "modules": per_type,
        "networks": {
            "records": len(records),
            "architectures": len(set(arch_of.values())),
            "per_family": fam,
            "with_pad_operators": sum(bool(r.info.get("explicit_padding")) for r in records),
        },
        "measure_s": progress.measure_s,
        "probe_s": float(plan["probe"]["elapsed_s"]),
        "sessions": int(progress.state["sessions"]),
        "fit_s": fit_s,
        "steps": dict(progress.state["steps"]),
    }


def _suite(df: pd.DataFrame, records: Sequence[profilers.ArchRecord], statistic: str) -> Suite:
    col = statistic_column(statistic)
    return Suite(
        module=df["module"].astype(str).to_numpy(object),
        log_y=np.log(df[col].to_numpy(float)),
        row_key=df["config_key"].astype(str).to_numpy(object),
        net_log_y=np.log(np.array([measured_ms(r, statistic) for r in records], float)),
        net_counts=count_rows([r.counts() for r in records]),
        net_arch=np.array([re.sub(r"_b\d+_", "_", r.name) for r in records], object),
    )


# -- a piecewise roofline fitted here, blended into the module pick --------------------------------


def local_features(predictor: LatencyPredictor, df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per module type of `df`, its rows' features as `predictor`'s model of the type reads them
    (`[n_t, f]`, in `df` order): what the piecewise roofline is fitted on, so that it and the
    model it is blended with read the same columns."""
    module = df["module"].astype(str).to_numpy()
    return {t: predictor._encode(t, df[module == t], source="calibrate") for t in sorted(set(module))
            if t in predictor.models}


def _fit_local(x: np.ndarray, log_y: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    return piecewise_roofline_regressor().fit(None, x, log_y, names=names)


def local_predict(
    x: Mapping[str, np.ndarray], names: Mapping[str, Sequence[str]], suite: Suite, train: np.ndarray
) -> np.ndarray:
    """`[r]` log predictions of a piecewise roofline per module type of `x` fitted on the
    type's `train` rows (a mask over the suite's rows); NaN for other types and types without
    such rows."""
    out = np.full(len(suite.log_y), np.nan)
    for t, xt in x.items():
        idx = np.flatnonzero(suite.module == t)
        on = train[idx]
        if on.any():
            out[idx] = piecewise_roofline_log_ms_host(_fit_local(xt[on], suite.log_y[idx[on]], names[t]), xt)
    return out


def local_oof(
    x: Mapping[str, np.ndarray], names: Mapping[str, Sequence[str]], suite: Suite, row_fold: np.ndarray
) -> np.ndarray:
    """`[r]` out-of-fold `local_predict` of the selection rows (each fold's rows by a fit on the
    type's other selection rows) of the types with at least `_MIN_LOCAL_ROWS` selection rows;
    NaN in the report part and for the other types."""
    out = np.full(len(suite.log_y), np.nan)
    scored = {t: xt for t, xt in x.items() if np.sum((suite.module == t) & (row_fold >= 0)) >= _MIN_LOCAL_ROWS}
    for k in np.unique(row_fold[row_fold >= 0]):
        pred = local_predict(scored, names, suite, (row_fold >= 0) & (row_fold != k))
        out[row_fold == k] = pred[row_fold == k]
    return out


def local_weights(
    pick_oof: np.ndarray, roofline_oof: np.ndarray, suite: Suite, rows: np.ndarray
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Per module type, the share of the piecewise roofline (`LOCAL_WEIGHTS`) whose blend with
    the module pick has the lowest out-of-fold mean |log error| on the selection `rows`; within
    `_TIE` of the best the smallest share wins (0: the pick alone). Returns the weights (every
    type of the suite) and each type's errors per weight (types scored only).

    Examples:
      >>> suite = Suite(np.array(["a"] * 4), np.log([1.0, 2, 4, 8]), np.array(list("wxyz")), np.zeros(0),
      ...               np.zeros((0, 5)), np.zeros(0))
      >>> w, _ = local_weights(np.log([2.0, 4, 8, 16]), np.log([1.0, 2, 4, 8]), suite, np.ones(4, bool))
      >>> w
      {'a': 1.0}
    """
    weights, errors = {}, {}
    for t in sorted(map(str, set(suite.module))):
        on = rows & (suite.module == t) & np.isfinite(roofline_oof) & np.isfinite(pick_oof)
        if not on.any():
            weights[t] = 0.0
            continue
        err = [float(np.mean(np.abs((1 - w) * pick_oof[on] + w * roofline_oof[on] - suite.log_y[on])))
               for w in LOCAL_WEIGHTS]
        best = min(err)
        weights[t] = next(w for w, e in zip(LOCAL_WEIGHTS, err) if e <= best + _TIE)
        errors[t] = err
    return weights, errors


def roofline_share_log(pick_log: np.ndarray, roofline_log: np.ndarray, module: np.ndarray, weights: Mapping[str, float]) -> np.ndarray:
    """`(1 - w_t) * pick_log + w_t * roofline_log` per row of type `t`; rows of weight 0 keep
    `pick_log` (their roofline may be NaN: not fitted)."""
    w = np.array([weights.get(t, 0.0) for t in module], float)
    return np.where(w > 0, pick_log + w * (roofline_log - pick_log), pick_log)


def with_roofline_shares(
    predictor: LatencyPredictor, x: Mapping[str, np.ndarray], suite: Suite, weights: Mapping[str, float]
) -> LatencyPredictor:
    """`predictor` with each module type of weight `w > 0` blended with a piecewise roofline
    fitted on all its rows (`jaxlat._predictor.blended_type_model`; at `w` 1 the roofline alone,
    its training range that of those rows); the type's factor (`log_scale`) is scaled by
    `1 - w`, so that the pick's part keeps it and the roofline's part, fitted on this machine's
    latencies, takes none."""
    models = {}
    for t, w in weights.items():
        if w > 0:
            model = predictor.models[t]
            params = _fit_local(x[t], suite.log_y[suite.module == t], model.feature_names)
            models[t] = blended_type_model(model, piecewise_roofline_regressor(), params, w, local_x=x[t])
    return predictor.with_type_models(models, log_scale=shares_applied(predictor.log_scale, weights)) if models else predictor


def shares_applied(shift: Mapping[str, float], weights: Mapping[str, float]) -> dict[str, float]:
    """The calibration's per-type log factors as a predictor with roofline shares applies them:
    each scaled by `1 - w` of its type (`with_roofline_shares`)."""
    return {t: (1 - weights.get(t, 0.0)) * d for t, d in shift.items()}


@dataclasses.dataclass(frozen=True)
class Adaptation:
    """The outcome of `adapt`: the calibrated predictor and how it was chosen and scored."""

    predictor: LatencyPredictor  # the chosen candidate fitted on every measurement
    choice: Choice
    final: Fitted
    held_out: dict[str, Any]  # calibrated and uncalibrated accuracy on the report part
    selection_rows: int  # module rows and networks the choice was made on
    selection_networks: int
    folds: int
    final_whole: Fitted | None = None  # the whole-model part's fit (`objective="split"`)
    #: With `objective="split"`: per module type the piecewise roofline's share in its model
    #: (`weights`), the out-of-fold errors per share (`errors`, `LOCAL_WEIGHTS` order), and the
    #: held-out module accuracy of the pick without the blend (`held_out_without`).
    local: dict[str, Any] | None = None


def adapt(
    bases: Mapping[str, LatencyPredictor],
    df: pd.DataFrame,
    records: Sequence[profilers.ArchRecord],
    *,
    statistic: str,
    seed: int,
    tune: bool = True,
    objective: str = "split",
) -> Adaptation:
    """Choose and fit the calibration of `bases` to the module rows `df` and the measured
    network `records` (see the module docstring). With `tune`, each base with network
    regressors is also a candidate fine-tuned on the module rows (`jaxlat._finetune`), scored
    out of fold like the others. `objective`: what the choice scores (`choose`).

    Raises:
      ValueError: no base can predict the suite, or too few networks to hold any out.
    """
    check_objective(objective)
    suite = _suite(df, records, statistic)
    if len(set(suite.net_arch)) < 2:
        raise ValueError(
            f"{len(set(suite.net_arch))} network architecture(s) measured; at least 2 are needed"
        )
    arrays = []
    for name, pred in bases.items():
        try:
            arrays.append(base_arrays(name, pred, df, records))
        except ValueError as e:
            _log.warning("%s; this base is left out", e)
    if not arrays:
        raise ValueError("no base predictor can predict the calibration suite (see the warnings above)")
    _log.info(
        "choosing among %d candidates on %d module rows and %d networks",
        len(arrays) * len(MODULE_CORRECTIONS) * len(COMPOSITIONS),
        len(df),
        len(records),
    )
    report_rows, report_nets, row_fold, net_fold = split_suite(suite, seed)
    if tune:
        for name in [a.name for a in arrays]:
            if trainable_keys(bases[name]):
                _log.info("fine-tuning %s out of fold", name)
                arrays.append(tuned_arrays(name, bases[name], df, records, row_fold, report_rows, statistic))
    choice = choose(arrays, suite, row_fold, net_fold, objective)
    by_name = {a.name: a for a in arrays}
    parts = [(choice.base, [(choice.correction, choice.composition)])]
    if choice.whole is not None:
        parts.append((choice.whole["base"], part_members(choice.whole)))
    # What the card reports: each part fitted on the selection part, scored on the report part
    # (module rows by the first, networks by the last).
    on_sel = [fit_members(by_name[b], suite, ~report_rows, ~report_nets, members) for b, members in parts]
    cal_rows = predict_log(by_name[parts[0][0]], suite, on_sel[0])[0]
    cal_nets = predict_log(by_name[parts[-1][0]], suite, on_sel[-1])[1]
    local = None
    if objective == "split":  # module queries have their own predictor: blend a roofline fitted here
        start = bases[choice.base.removesuffix(TUNED)]
        x = local_features(start, df)
        names = {t: start.models[t].feature_names for t in x}
        pick_oof = cross_validate(by_name[choice.base], suite, row_fold, net_fold, [(choice.correction, choice.composition)])
        weights, errors = local_weights(pick_oof[0], local_oof(x, names, suite, row_fold), suite, row_fold >= 0)
        local = {"regressor": "roofline_pw", "weights": weights, "errors": errors, "error_weights": list(LOCAL_WEIGHTS),
                 "held_out_without": accuracy(cal_rows[report_rows], suite.log_y[report_rows])}
        shared = {t: x[t] for t, w in weights.items() if w > 0}
        cal_rows = roofline_share_log(cal_rows, local_predict(shared, names, suite, row_fold >= 0), suite.module, weights)
        _log.info("module types blended with a piecewise roofline fitted here: %s",
                  ", ".join(f"{t} {w:g}" for t, w in weights.items() if w > 0) or "none")
    table = [
        {
            "predictor": f"calibrated ({choice.label})",
            "modules": accuracy(cal_rows[report_rows], suite.log_y[report_rows]),
            "networks": accuracy(cal_nets[report_nets], suite.net_log_y[report_nets]),
        }
    ]
    for a in arrays:
        if a.name not in bases:
            continue
        rows, nets = predict_log(a, suite, Fitted({t: 0.0 for t in a.types}, a.coef))
        table.append(
            {
                "predictor": f"{a.name}, uncalibrated",
                "modules": accuracy(rows[report_rows], suite.log_y[report_rows]),
                "networks": accuracy(nets[report_nets], suite.net_log_y[report_nets]),
            }
        )
    # The predictor: each part fitted on every measurement.
    tuned: dict[str, LatencyPredictor] = {}
    fitted = [_final_part(bases, tuned, by_name[b], df, records, suite, statistic, members) for b, members in parts]
    predictor, final = fitted[0]
    if local is not None:
        predictor = with_roofline_shares(predictor, x, suite, local["weights"])
        final = dataclasses.replace(final, shift=shares_applied(final.shift, local["weights"]))
    if len(fitted) > 1:
        predictor = predictor.with_whole_models(fitted[1][0])
    held_out = {"rows": int(report_rows.sum()), "networks": int(report_nets.sum()), "table": table}
    return Adaptation(
        predictor,
        choice,
        final,
        held_out,
        int((~report_rows).sum()),
        int((~report_nets).sum()),
        int(net_fold.max()) + 1,
        fitted[1][1] if len(fitted) > 1 else None,
        local,
    )


def _final_part(
    bases: Mapping[str, LatencyPredictor],
    tuned: dict[str, LatencyPredictor],
    arrays: BaseArrays,
    df: pd.DataFrame,
    records: Sequence[profilers.ArchRecord],
    suite: Suite,
    statistic: str,
    members: Sequence[tuple[str, str]],
) -> tuple[LatencyPredictor, Fitted]:
    """One chosen part (a candidate, or the mean of several of one base: `members`, pairs of
    correction and composition) fitted on every measurement, as a predictor of `statistic` (its
    module factors and composition), checked against the fit; a fine-tuned base is tuned again
    on every module row (once per base: `tuned` caches it)."""
    start = bases.get(arrays.name)
    if start is None:  # a fine-tuned base
        if arrays.name not in tuned:
            tuned[arrays.name] = fine_tuned(bases[arrays.name.removesuffix(TUNED)], df, statistic=statistic)
        start = tuned[arrays.name]
        arrays = base_arrays(arrays.name, start, df, records)
    every_row, every_net = np.ones(len(suite.log_y), bool), np.ones(len(suite.net_log_y), bool)
    final = fit_members(arrays, suite, every_row, every_net, members)
    sums = shifted_sums(arrays, final.shift)
    how = members[0][1] if len(members) == 1 else "mean of " + ", ".join(f"{a} {b}" for a, b in members)
    comp = _composition(final.coef, sums, suite.net_counts, np.exp(suite.net_log_y), how, arrays.name)
    predictor = copy.copy(with_module_log_scale(start, final.shift).with_composition(comp))
    predictor.statistic = statistic  # what it was calibrated to, whatever its base learned
    check = predictor.predict_models(records)["latency_ms"].to_numpy(float)
    expected = compose_ms(final.coef, sums, suite.net_counts)
    if not np.allclose(check, expected, rtol=2e-3):
        raise RuntimeError(
            f"calibrate: the calibrated predictor gives {check[:3]} ms for the first networks where "
            f"its fit gives {expected[:3]} ms; please report this"
        )
    return predictor, final


def _this_machine(
    predictor: LatencyPredictor, meta: Mapping[str, Any], adaptation: Adaptation, statistic: str
) -> LatencyPredictor:
    """A copy of `predictor` that describes this machine: its device metadata (with the
    calibration's base and correction; for a mean of candidates, its leader's correction and
    composition and all of them in `members`) and the statistic it was calibrated to."""
    c, shift = adaptation.choice, adaptation.final.shift
    device = {k: meta.get(k) for k in ("device_id", "backend", "device", "fingerprint")}

    def described(p: LatencyPredictor, part: Mapping[str, Any], log_shift, card: str):
        out = copy.copy(p)
        members = part_members(part)
        out.device = device | {
            "calibration": {
                "base": part["base"],
                "module_correction": part["modules"],
                "composition": part["composition"],
                **({"members": [list(m) for m in members]} if len(members) > 1 else {}),
                "module_scale": {t: math.exp(d) for t, d in sorted(log_shift.items())},
                "card": card,
            }
        }
        out.statistic = statistic
        return out

    whole = None
    if predictor.is_split:
        whole = described(predictor.whole_models, c.whole, adaptation.final_whole.shift, "../../card.json")
    own = {"base": c.base, "modules": c.correction, "composition": c.composition}
    own = described(predictor.with_whole_models(None), own, shift, "../card.json")
    used = {t: w for t, w in ((adaptation.local or {}).get("weights") or {}).items() if w > 0}
    if used:  # the module types blended with a piecewise roofline fitted here, and its share
        own.device["calibration"]["roofline_shares"] = used
    return own.with_whole_models(whole)


def calibrate_machine(
    out: str | os.PathLike,
    *,
    budget_min: float = 10.0,
    base: str | Iterable[str] | None = None,
    exclude_base: str | Iterable[str] | None = None,
    modules: str | Iterable[str] | None = None,
    families: str | Iterable[str] | None = None,
    register: bool = True,
    seed: int = 0,
    statistic: str = "auto",
    min_run_time_s: float = 0.1,
    network_min_run_time_s: float = 0.5,
    rounds: int = 5,
    tune: bool = True,
    objective: str = "split",
    progress: bool | None = None,
) -> Calibrated:
    """Measure a calibration suite on this machine within a time budget and write a predictor
    for it, with a card (see the module docstring: `jaxlat._calibrate`).

    Resumable: run it again with the same `out` and settings after an interruption and it goes
    on where it stopped; after a complete run it measures nothing and fits again (another
    `base`, `exclude_base` or `statistic` then changes only the fit).

    Args:
      out: the output directory (created): `predictor/`, `card.json`, `card.md`, `data/`.
      budget_min: minutes of measurement, probe and test-retest included (the fit comes after).
        A budget below the smallest suite is exceeded, with a warning saying by how much.
      base: base predictors to adapt: shipped names (`jaxlat.list_predictors()`) or predictor
        directories; default every shipped predictor.
      exclude_base: names of `base` left out (e.g. the shipped predictor of this very machine,
        to see what a machine nobody measured would get).
      modules: module types of the suite (default: every type of the catalogue).
      families: generated-network families (default: resnet, mbconv, vit, text).
      register: record the predictor in `$JAXLAT_HOME/calibrated.json` for this CPU model, so
        that `jaxlat.load_predictor()` and `jaxlat predict` prefer it.
      seed: of the samplers, the generated networks and the held-out split.
      statistic: the latency statistic to learn, `median` or `p10`, or `auto`: the one whose
        module labels repeated better in this run's test-retest.
      min_run_time_s: timing of one module config (`profilers.TimerConfig.min_run_time_s`).
      network_min_run_time_s: timing of one network at one batch size.
      rounds: measurements per config and network, spread in time and pooled (run_profile's
        `rounds`). On a shared machine whose speed switches between states within seconds, the
        pooled 10th percentile of several rounds finds the fast state where one window often
        does not (`benchmarks/results/label_repeat.md`); `statistic="auto"` then picks it.
      tune: also score each base with its networks fine-tuned on the module rows.
      objective: what chooses the candidate: `split` (the default: the best for the module
        rows answers module queries; whole models are composed by the mean of the best for
        the networks and the next two of its base, a predictor carrying two,
        `LatencyPredictor.with_whole_models`), `both` (one candidate, the held-out errors of the module rows
        and of the networks averaged), `networks` (one, whole models alone) or `modules` (one,
        module rows alone). Changing it after a complete run only refits.
      progress: a progress bar on stderr (None: on a terminal only).

    Returns:
      A `Calibrated`: paths, the card, where it was registered.

    Raises:
      ValueError: a bad argument (naming it and what is allowed), an `out` that holds a
        calibration planned with other settings or cannot be written, a base that cannot
        predict the suite.
      KeyboardInterrupt: the measurement was interrupted (run the same call again to resume).
    """
    t_session = time.monotonic()
    settings = check_settings(
        budget_min=budget_min,
        modules=modules,
        families=families,
        seed=seed,
        min_run_time_s=min_run_time_s,
        network_min_run_time_s=network_min_run_time_s,
        rounds=rounds,
    )
    if statistic not in ("auto", *STATISTICS):
        raise ValueError(
            f"statistic={statistic!r} is not valid (--statistic): expected auto, {', '.join(STATISTICS)}"
        )
    if not isinstance(register, bool):
        raise ValueError(f"register={register!r} is not valid: expected True or False")  # noqa: TRY004
    check_objective(objective)
    bases = _bases(base, exclude_base)
    paths = _Paths(check_output_dir(out))
    paths.data.mkdir(parents=True, exist_ok=True)
    state = _Progress(paths.progress)
    try:
        plan = _plan(settings, paths, state, predicted_ms_screen(next(iter(bases.values()))))
        _measure(plan, settings, paths, state, progress)
        _retest(plan, settings, paths, state)
    except KeyboardInterrupt:
        state.save()
        _log.warning("interrupted: run the same command again to resume (%s)", paths.plan)
        raise
    state.save()
    t_fit = time.monotonic()
    retest = retest_agreement(paths)
    stat = choose_statistic(retest, statistic)
    df = profilers.read_dataset(paths.modules)
    df = df[df["module"].isin(settings.modules)].reset_index(drop=True)
    records = [r for r in read_records(paths.networks) if r.measured]
    if df.empty or not records:
        raise ValueError(
            f"{paths.out}: {len(df)} module rows and {len(records)} networks measured; too few to "
            "calibrate (see the warnings above)"
        )
    adaptation = adapt(
        bases, df, records, statistic=stat, seed=settings.seed, tune=tune, objective=objective
    )
    meta = df.attrs["jaxlat"][0]
    predictor = _this_machine(adaptation.predictor, meta, adaptation, stat)
    predictor.save(paths.out / "predictor")
    c = adaptation.choice
    fingerprint = profilers.host_fingerprint()
    card = {
        "format_version": CARD_VERSION,
        "created_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "jaxlat_version": _version(),
        "machine": {**fingerprint, "device_id": meta.get("device_id"), "libraries": meta.get("libraries")},
        "budget_min": settings.budget_min,
        "batch_sizes": list(settings.batch_sizes),
        "settings": settings.as_json(),
        "measured": _measured_summary(plan, paths, df, records, state, time.monotonic() - t_fit),
        "test_retest": retest,
        "statistic": stat,
        "statistic_reason": (
            "asked for"
            if statistic != "auto"
            else "its module labels repeated at least as well as the other's in the test-retest"
        ),
        "choice": {
            "base": c.base,
            "module_correction": c.correction,
            "composition": c.composition,
            "label": c.label,
            "objective": objective,
            "by_objective": c.by_objective,
            "candidates": c.candidates,
            "folds": adaptation.folds,
            "selection_rows": adaptation.selection_rows,
            "selection_networks": adaptation.selection_networks,
            "module_scale": predictor.device["calibration"]["module_scale"],
            "roofline": adaptation.local,
            # The module part's own (for a split predictor, `whole_models` composes whole models).
            "composition_coef": dict(predictor.with_whole_models(None).composition.coef),
            "whole_models": None if c.whole is None else {
                **{k: c.whole[k] for k in ("base", "modules", "composition")},
                **({"members": c.whole["members"]} if "members" in c.whole else {}),
                "module_mean_abs_log_err": c.whole["module_mean_abs_log_err"],
                "network_mean_abs_log_err": c.whole["network_mean_abs_log_err"],
                "label": part_label(c.whole),
                "module_scale": predictor.whole_models.device["calibration"]["module_scale"],
                "composition_coef": dict(predictor.whole_models.composition.coef),
            },
        },
        "held_out": adaptation.held_out,
        "predictor": str(paths.out / "predictor"),
        "session_wall_s": time.monotonic() - t_session,
        "registered": None,
    }
    registered = None
    if register:
        from ._shipped import register_calibrated

        registered = register_calibrated(
            fingerprint["cpu_model"],
            paths.out / "predictor",
            card=str((paths.out / "card.json").resolve()),
            base=c.base,
            correction=c.label,
            statistic=stat,
        )
        card["registered"] = str(registered)
    card = metrics_for_json(card)
    write_json(paths.out / "card.json", card)
    (paths.out / "card.md").write_text(card_markdown(card))
    result = Calibrated(paths.out, paths.out / "predictor", card, registered)
    _log.info("calibration written: %s (card %s)", result.predictor_dir, paths.out / "card.md")
    return result


def _version() -> str:
    from . import __version__  # the installed distribution's version, read once at import

    return __version__
