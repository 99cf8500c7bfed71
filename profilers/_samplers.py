"""Samplers over the module catalogue: seeded random, Latin hypercube, and grid designs.

Every sampler draws each field from its range (the catalogue's default, a sampling family's,
or the user's override), resolves ties (`groups=Tie("cin")`), validates the result with
`make_config` and keeps only valid, distinct configs: an invalid combination is never
emitted.
"""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from ._catalogue import Field, Interval, ModuleConfig, ModuleSpec, Range, Tie, get_spec, make_config

Method = Literal["random", "lhs", "grid"]
METHODS: tuple[str, ...] = ("random", "lhs", "grid")
_MAX_ROUNDS = 60
_MAX_GRID_POINTS = 2_000_000


def parse_range(field: Field, text: str) -> Range:
    """Parse a command-line range for `field`.

    Forms: `16:512` (interval, the field's default scale), `16:512:8` (multiples of 8),
    `16:512:log` / `16:512:lin` (explicit scale), `1,3,5,7` (choices), `=cin` (tie), `3`
    (fixed).

    Examples:
      >>> from profilers import get_spec
      >>> parse_range(get_spec("conv2d").field("cin"), "16:512:8")
      Interval(low=16, high=512, step=8, log=None)
      >>> parse_range(get_spec("conv2d").field("kernel"), "1,3")
      (1, 3)
    """
    text = text.strip()
    if text.startswith("="):
        return Tie(text[1:])

    def value(tok: str) -> Any:
        tok = tok.strip()
        if field.kind is bool:
            if tok.lower() in ("1", "true", "yes"):
                return True
            if tok.lower() in ("0", "false", "no"):
                return False
            raise ValueError(f"{field.name}: {tok!r} is not a boolean (true/false)")
        if field.kind is str:
            return tok
        try:
            x = float(tok)
        except ValueError:
            raise ValueError(f"{field.name}: {tok!r} in {text!r} is not a number") from None
        if not math.isfinite(x):
            raise ValueError(f"{field.name}: {tok!r} in {text!r} is not a finite number")
        if field.kind is int:
            if not x.is_integer():
                raise ValueError(f"{field.name}: {tok!r} in {text!r} is not an integer")
            return int(x)
        return x

    if not text:
        raise ValueError(f"{field.name}: empty range; expected low:high, a,b,c, =field or a value")
    if ":" in text:
        if field.kind not in (int, float):
            raise ValueError(f"{field.name}: intervals need a numeric field, {field.name} is {field.kind.__name__}")
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"{field.name}: interval {text!r} must be low:high[:step|log|lin]")
        low, high = value(parts[0]), value(parts[1])
        try:
            if len(parts) == 2:
                return Interval(low, high)
            if parts[2] in ("log", "lin"):
                return Interval(low, high, log=parts[2] == "log")
            return Interval(low, high, step=value(parts[2]))
        except ValueError as e:  # low > high, step <= 0
            raise ValueError(f"{field.name}: interval {text!r}: {e}") from None
    if "," in text:
        out = tuple(value(t) for t in text.split(",") if t.strip())
        if not out:
            raise ValueError(f"{field.name}: {text!r} lists no values")
        return out
    return value(text)


def _field_ranges(spec: ModuleSpec, family: Mapping[str, Range], user: Mapping[str, Range]) -> dict[str, Range]:
    for name in user:
        spec.field(name)  # raises, naming the fields, on a typo
    return {f.name: user.get(f.name, family.get(f.name, f.sampling_range())) for f in spec.all_fields}


def check_range(spec: ModuleSpec, name: str, r: Range) -> None:
    """Raise `ValueError` unless every value range `r` can give is valid for the field: an
    interval inside the catalogue's limits (and only on a numeric field without a fixed list
    of choices), choices and fixed values each valid, a tie to a field of the same kind.

    The message names the module, the field, the range and the allowed values.
    """
    f = spec.field(name)
    where = f"{spec.name}.{name}"
    if isinstance(r, Tie):
        other = spec.field(r.field)
        if other.name == name or other.kind is not f.kind:
            raise ValueError(f"{where}: a tie to {r.field!r} is not valid: expected another {f.kind.__name__} "
                             f"field of {spec.name}")
        return
    if isinstance(r, Interval):
        if f.kind not in (int, float) or f.choices is not None:
            raise ValueError(f"{where}: an interval {r.low}:{r.high} is not valid: expected {f.allowed()} "
                             f"(give the values as a list, e.g. {name}=" + ",".join(map(str, f.choices or ())) + ")")
        if not (math.isfinite(r.low) and math.isfinite(r.high)):
            raise ValueError(f"{where}: interval {r.low}:{r.high} is not finite: expected {f.allowed()}")
        lo = -math.inf if f.low is None else f.low
        hi = math.inf if f.high is None else f.high
        if r.low < lo or r.high > hi:
            raise ValueError(f"{where}: interval {r.low:g}:{r.high:g} is beyond the catalogue's limits: "
                             f"expected {f.allowed()}")
        return
    values = r if isinstance(r, (tuple, list)) else (r,)
    if not values:
        raise ValueError(f"{where}: empty list of choices: expected {f.allowed()}")
    for v in values:
        f.coerce(v, spec.name)  # names the field, the value and the allowed values


def _interval_step(field: Field, r: Interval) -> float | None:
    if field.kind is int:
        return max(1, int(r.step or 1))
    return None if r.step in (None, 1) else r.step


def _from_unit(u: float, field: Field, r: Any) -> Any:
    """Map u in [0, 1) onto range `r` of `field`."""
    if isinstance(r, Interval):
        use_log = field.log if r.log is None else r.log
        step = _interval_step(field, r)
        lo, hi = r.low, r.high
        top = hi + (step or 0)  # half-open on the last step so it is drawn as often as others
        if use_log and lo > 0:
            x = math.exp(math.log(lo) + u * (math.log(top) - math.log(lo)))
        else:
            x = lo + u * (top - lo)
        if step is not None:
            x = lo + math.floor((x - lo) / step) * step
            x = min(x, lo + math.floor((hi - lo) / step) * step)
        x = min(max(x, lo), hi)
        return int(x) if field.kind is int else float(x)
    if isinstance(r, (tuple, list)):
        if not r:
            raise ValueError(f"{field.name}: empty list of choices")
        return r[min(int(u * len(r)), len(r) - 1)]
    if isinstance(r, Tie):
        return r
    return r  # a fixed value


def _levels(field: Field, r: Any, n_levels: int) -> list[Any]:
    if isinstance(r, Interval):
        use_log = field.log if r.log is None else r.log
        if use_log and r.low > 0:
            xs = np.geomspace(r.low, r.high, n_levels)
        else:
            xs = np.linspace(r.low, r.high, n_levels)
        step = _interval_step(field, r)
        if step is not None:
            xs = r.low + np.round((xs - r.low) / step) * step
        out = [int(x) if field.kind is int else float(x) for x in xs]
        return list(dict.fromkeys(out))
    if isinstance(r, (tuple, list)):
        return list(r)
    return [r]


def _resolve(values: dict[str, Any], spec: ModuleSpec) -> dict[str, Any]:
    for _ in range(len(values)):
        pending = {k: v for k, v in values.items() if isinstance(v, Tie)}
        if not pending:
            return values
        for k, tie in pending.items():
            spec.field(tie.field)
            target = values[tie.field]
            if not isinstance(target, Tie):
                values[k] = target
    raise ValueError(f"{spec.name}: circular ties among {sorted(pending)}")


def _accept(
    values: dict[str, Any], spec: ModuleSpec, max_flops: float | None, rejected: collections.Counter | None = None
) -> ModuleConfig | None:
    """The config of drawn values, or None when it is invalid or too costly; `rejected`
    counts why draws were rejected, for the message when too few are valid."""
    try:
        cfg = make_config(spec.name, **_resolve(values, spec))
    except ValueError as e:
        if rejected is not None:
            rejected[_reason(str(e))] += 1
        return None
    if max_flops is not None and cfg.costs().flops > max_flops:
        if rejected is not None:
            rejected[f"FLOPs over max_flops={max_flops:g}"] += 1
        return None
    return cfg


def _reason(message: str) -> str:
    """A rejection message without the drawn values, so that equal rules count together."""
    return message.split(" (got ")[0]


def _why(rejected: collections.Counter, draws: int) -> str:
    if not rejected:
        return ""
    top = "; ".join(f"{msg} ({k} of {draws} draws)" for msg, k in rejected.most_common(2))
    return f". Rejected most: {top}"


def _unit_design(method: str, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    if method == "random":
        return rng.random((n, d))
    # Latin hypercube: one point in each of n strata per dimension, strata shuffled per dim.
    strata = np.stack([rng.permutation(n) for _ in range(d)], axis=1)
    return (strata + rng.random((n, d))) / n


def _split(n: int, weights: Sequence[float]) -> list[int]:
    total = sum(weights)
    raw = [n * w / total for w in weights]
    counts = [math.floor(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def sample_configs(
    module: str,
    n: int | None,
    *,
    method: Method = "random",
    seed: int = 0,
    ranges: Mapping[str, Range] | None = None,
    families: Iterable[str] | None = None,
    max_flops: float | None = None,
    grid_levels: int = 4,
) -> list[ModuleConfig]:
    """Draw `n` distinct, valid configs of `module`.

    Args:
      module: a registered module type.
      n: how many configs; with `method="grid"`, `None` keeps every valid grid point and a
        number keeps a seeded random subset of that size.
      method: `"random"` (each field uniform or log-uniform on its range), `"lhs"` (Latin
        hypercube: space-filling) or `"grid"` (`grid_levels` levels per interval).
      seed: the same seed and arguments give the same configs, in the same order.
      ranges: per-field overrides of the sampling range, applied in every family: an
        `Interval`, a tuple of choices, a `Tie`, or a fixed value.
      families: which of the module's sampling families to mix (default: all, by weight).
      max_flops: drop configs whose analytic FLOPs exceed this (keeps runs affordable).
      grid_levels: levels per interval field for the grid.

    Returns:
      The configs, in draw order.

    Raises:
      ValueError: unknown module, field or family; `n` not a count >= 1; a range that gives
        values the catalogue does not allow (`check_range`: the message names the field, the
        range and the limits); or too few valid configs in the ranges (the message says which
        rule rejected most draws).

    Examples:
      >>> from profilers import Interval
      >>> cfgs = sample_configs("conv2d", 5, seed=1, ranges={"kernel": (1, 3), "cin": Interval(16, 64)})
      >>> len(cfgs), all(c["kernel"] in (1, 3) and 16 <= c["cin"] <= 64 for c in cfgs)
      (5, True)
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not valid: expected one of {', '.join(METHODS)}")
    spec = get_spec(module)
    user = dict(ranges or {})
    for name, r in user.items():
        check_range(spec, name, r)
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"n={n!r} is not valid (--n): expected a count >= 1")
    if max_flops is not None and not (isinstance(max_flops, (int, float)) and max_flops > 0):
        raise ValueError(f"max_flops={max_flops!r} is not valid (--max-gflops): expected a number > 0")
    if isinstance(grid_levels, bool) or not isinstance(grid_levels, int) or grid_levels < 1:
        raise ValueError(f"grid_levels={grid_levels!r} is not valid: expected an int >= 1")
    fam_names = list(spec.families) if families is None else list(families)
    for name in fam_names:
        if name not in spec.families:
            raise ValueError(f"{spec.name}: family={name!r} is not valid: expected one of {', '.join(spec.families)}")
    if not fam_names:
        raise ValueError(f"{spec.name}: families must not be empty")
    rng = np.random.default_rng(seed)
    if method == "grid":
        return _grid(spec, n, fam_names, user, rng, max_flops, grid_levels)
    if n is None:
        raise ValueError(f"n=None is only valid with method='grid'; method={method!r} needs a count >= 1")
    counts = _split(n, [spec.families[f][0] for f in fam_names])
    out: dict[str, ModuleConfig] = {}
    fields = spec.all_fields
    for fam, n_f in zip(fam_names, counts):
        franges = _field_ranges(spec, spec.families[fam][1], user)
        want = len(out) + n_f
        draws = 0
        rejected: collections.Counter = collections.Counter()
        for _ in range(_MAX_ROUNDS):
            if len(out) >= want:
                break
            m = 2 * (want - len(out)) + 8
            design = _unit_design(method, m, len(fields), rng)
            draws += m
            for row in design:
                values = {f.name: _from_unit(u, f, franges[f.name]) for f, u in zip(fields, row)}
                cfg = _accept(values, spec, max_flops, rejected)
                if cfg is not None and cfg.key not in out:
                    out[cfg.key] = cfg
                    if len(out) >= want:
                        break
        if len(out) < want:
            raise ValueError(
                f"{spec.name} (family {fam!r}): only {len(out) - (want - n_f)} distinct valid configs "
                f"of {n_f} after {draws} draws; widen the ranges, raise max_flops or lower n{_why(rejected, draws)}"
            )
    return list(out.values())


def _grid(spec, n, fam_names, user, rng, max_flops, grid_levels) -> list[ModuleConfig]:
    out: dict[str, ModuleConfig] = {}
    rejected: collections.Counter = collections.Counter()
    for fam in fam_names:
        franges = _field_ranges(spec, spec.families[fam][1], user)
        levels = [_levels(f, franges[f.name], grid_levels) for f in spec.all_fields]
        size = math.prod(len(lv) for lv in levels)
        if size > _MAX_GRID_POINTS:
            raise ValueError(
                f"{spec.name}: the grid has {size} points (over {_MAX_GRID_POINTS}); "
                "fix some fields or lower grid_levels"
            )
        for combo in itertools.product(*levels):
            values = {f.name: v for f, v in zip(spec.all_fields, combo)}
            cfg = _accept(values, spec, max_flops, rejected)
            if cfg is not None:
                out.setdefault(cfg.key, cfg)
    cfgs = list(out.values())
    if not cfgs:
        raise ValueError(f"{spec.name}: the grid has no valid points{_why(rejected, sum(rejected.values()))}")
    if n is not None:
        if n > len(cfgs):
            raise ValueError(f"{spec.name}: the grid has {len(cfgs)} valid points, fewer than n={n}"
                             f"{_why(rejected, sum(rejected.values()) + len(cfgs))}")
        idx = np.sort(rng.choice(len(cfgs), size=n, replace=False))
        cfgs = [cfgs[i] for i in idx]
    return cfgs


def expand(configs: Iterable[ModuleConfig], **settings: Sequence[Any]) -> list[ModuleConfig]:
    """Cross configs with run settings, e.g. `expand(cfgs, threads=[1, 2], utilization=[0, 0.5])`.

    Each setting is a field name (usually a common field) and the values to run it at.
    """
    names = list(settings)
    out = []
    for cfg in configs:
        for combo in itertools.product(*(settings[k] for k in names)):
            out.append(cfg.replace(**dict(zip(names, combo))))
    return out
