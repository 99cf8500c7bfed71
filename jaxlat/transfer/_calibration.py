"""Calibration of a predictor to a machine from whole networks measured there.

A shipped predictor was trained on another machine, or on this one at another time; a few
networks measured here, end to end, map its predictions onto this machine's latency. The
networks should span the latency range of what will be predicted (`spanning_archs`): uniform
random architectures cluster in the middle, where a correction fitted on them has to
extrapolate to the light and the heavy ends.

    archs = spanning_archs(space, 16, seed=0)
    ...                                                     # measure space.torch_model(a) here
    cal = calibrate(predictor, measured_records, statistic="p10")
    cal.predict(other_records)                              # ms on this machine
    cal.log_affine                                          # (a, b): ms = exp(a) * predicted ** b

The correction is one of `jaxlat.transfer.adapt`'s (a rescaling or an affine map in log latency,
the composition refitted, or AdaProxy's feature reweighting), chosen by held-out error on the
K networks (`adapt`'s folds), or forced. `reuse`, `affine` and `recompose` keep a pure JAX latency:
`jaxlat.nas.calibrated_latency_fn` turns a calibration into a NAS penalty's latency.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .._data import measured_ms
from ._adapt import Adapted, adapt, predictor_proxy

if TYPE_CHECKING:
    from profilers import ArchRecord
    from profilers.spaces import MobileArch, MobileSpace, Nb201Arch, Nb201Space

    from .._predictor import LatencyPredictor

logger = logging.getLogger(__name__)

#: The corrections that map the predictor's whole-model latency alone (in log latency), so that
#: they carry over to a JAX latency function unchanged; `calibrate`'s default candidates.
LOG_AFFINE_METHODS = ("reuse", "affine")

#: Ops that add little latency: `spanning_archs` chooses them with falling probability.
LIGHT_OPS = ("skip", "none", "skip_connect", "avg_pool_3x3")


def log_affine_ms(latency_ms: ArrayLike, log_scale: float, power: float) -> np.ndarray | jax.Array:
    """The log-affine latency map `exp(log_scale) * latency_ms ** power`.

    One formula for the host and for JAX: a `jax.Array` (or a tracer, inside `jit` or `grad`)
    is mapped with `jax.numpy`, anything else with numpy in float64, so that host tables keep
    their precision and a NAS penalty keeps its gradient.

    Args:
      latency_ms: predicted latencies, any shape `[...]`, ms.
      log_scale: `a`, the log of the scale.
      power: `b`, the exponent.

    Returns:
      Latencies of the same shape, ms.

    Examples:
      >>> float(log_affine_ms(2.0, 0.0, 2.0))
      4.0
    """
    if isinstance(latency_ms, jax.Array):
        return jnp.exp(log_scale) * latency_ms**power
    return np.exp(log_scale) * np.asarray(latency_ms, float) ** power


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A predictor calibrated to a machine from K measured networks (see `calibrate`).

    Attributes:
      statistic: what a measured latency is (`median` or `p10` of the pooled samples).
      forced: the method was forced rather than chosen by held-out error.
      measured_ms: the K networks' measured latencies, ms.
      predicted_ms: the uncalibrated predictor's latencies of the K networks, ms.
      report: `adapt`'s report over every candidate scored (rank correlation, held-out log RMSE
        and ±10 % accuracy per method), with `chosen` the method in use.
      adapted: the adapted proxy that predicts (`jaxlat.transfer.Adapted`).
    """

    statistic: str
    forced: bool
    measured_ms: tuple[float, ...]
    predicted_ms: tuple[float, ...]
    report: dict[str, Any]
    adapted: Adapted

    @property
    def method(self) -> str:
        """The correction in use (one of `jaxlat.transfer.METHODS`)."""
        return self.adapted.method

    @property
    def k(self) -> int:
        """The number of measured networks."""
        return len(self.measured_ms)

    @property
    def spearman(self) -> float:
        """Rank correlation of the uncalibrated predictions with the measurements."""
        return float(self.report["spearman_primary"])

    @property
    def log_affine(self) -> tuple[float, float] | None:
        """`(a, b)` with ms = exp(a) * predicted ** b for `reuse` and `affine`; else None."""
        return self.adapted.log_affine() if self.method in LOG_AFFINE_METHODS else None

    @property
    def composition(self) -> dict[str, float] | None:
        """The refitted composition coefficients for `recompose`; else None."""
        return dict(self.adapted.predictor().composition.coef) if self.method == "recompose" else None

    def predictor(self) -> LatencyPredictor:
        """The calibrated `LatencyPredictor` of `recompose` (pure JAX: gradients, NAS).

        Raises:
          ValueError: another method is in use.
        """
        return self.adapted.predictor()

    def predict(self, records: Sequence[ArchRecord]) -> np.ndarray:
        """Latency (ms) of whole networks on the calibrated machine, `[n]`."""
        return np.asarray(self.adapted.predict(records), float)

    def describe(self) -> str:
        """One line: the method, how it was chosen, its form and its scores."""
        la, comp = self.log_affine, self.composition
        form = (
            f"target ms = {np.exp(la[0]):.3f} * predicted ** {la[1]:.3f}"
            if la
            else "composition refitted: " + ", ".join(f"{k} {v:.4g}" for k, v in comp.items())
            if comp
            else "a learned correction on the predictor"
        )
        how = "forced" if self.forced else "by held-out error"
        loo = ", ".join(f"{m} {v['log_rmse']:.3f}" for m, v in self.report["candidates"].items())
        return (
            f"calibration on {self.k} measured networks: {self.method} ({how}), {form} "
            f"(Spearman {self.spearman:.3f}; held-out log RMSE {loo})"
        )

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready summary: `k`, `statistic`, `method`, `forced`, `log_affine`,
        `composition`, `spearman`, `report`, `measured_ms`, `predicted_ms`."""
        la = self.log_affine
        return {
            "k": self.k,
            "statistic": self.statistic,
            "method": self.method,
            "forced": self.forced,
            "log_affine": list(la) if la else None,
            "composition": self.composition,
            "spearman": self.spearman,
            "report": self.report,
            "measured_ms": list(self.measured_ms),
            "predicted_ms": list(self.predicted_ms),
        }


def calibrate(
    predictor: LatencyPredictor,
    records: Sequence[ArchRecord],
    *,
    statistic: str = "median",
    methods: Sequence[str] = LOG_AFFINE_METHODS,
    force: str | None = None,
) -> Calibration:
    """Calibrate `predictor` to the machine that measured `records` (few-shot transfer).

    Every method of `methods` (and `force`) is scored by held-out error on the K records
    (`jaxlat.transfer.adapt`'s folds); the best is used, or `force` whatever its score.

    Args:
      predictor: the `LatencyPredictor` to calibrate.
      records: K architecture records measured end to end on the machine (`measured` set).
      statistic: which statistic of a record's samples is its latency (`median`, `p10`).
      methods: candidate corrections (see `jaxlat.transfer.METHODS`); the default keeps a map
        of the predicted latency alone, which a JAX latency function can carry.
      force: use this method (scored with the others, for the report).

    Returns:
      The `Calibration`.

    Raises:
      ValueError: a record was not measured or lacks the statistic; fewer than 3 records;
        an unknown method.
    """
    ms = [measured_ms(r, statistic) for r in records]
    proxy = predictor_proxy(predictor)
    candidates = tuple(dict.fromkeys(tuple(methods) + ((force,) if force else ())))
    scored = adapt(records, ms, [proxy], methods=candidates)
    adapted = adapt(records, ms, [proxy], methods=(force,)) if force else scored
    cal = Calibration(
        statistic=statistic,
        forced=bool(force),
        measured_ms=tuple(ms),
        predicted_ms=tuple(map(float, proxy.fn(records))),
        report={**scored.report, "chosen": adapted.method},
        adapted=adapted,
    )
    logger.info("%s", cal.describe())
    return cal


def spanning_archs(
    space: MobileSpace | Nb201Space, k: int, seed: int = 0, *, corner_widths: bool = False
) -> list[MobileArch | Nb201Arch]:
    """`k` random architectures of a space that span its latency range, for calibration.

    The chance that a layer takes a light op (of `LIGHT_OPS`; else one of the others, uniformly)
    runs evenly from 0.9 down to 0 over the `k`; widths are uniform in the space's range.

    Args:
      space: a `profilers.spaces.MobileSpace` or the NAS-Bench-201 space.
      k: how many.
      seed: of the random generator.
      corner_widths: every second architecture has all its stages at one end of the width range
        (the widest, then the narrowest, in turn), light to heavy like the rest: where
        `jaxlat.nas.fit_to_target`, which scales all stages by one factor, often ends.

    Returns:
      The architectures, checked by the space, lightest first (in expectation).
    """
    from profilers.spaces import NB201_EDGES, MobileArch, MobileSpace, Nb201Arch

    rng = np.random.default_rng(seed)
    light = [op for op in space.ops if op in LIGHT_OPS]
    heavy = [op for op in space.ops if op not in LIGHT_OPS]
    mobile = isinstance(space, MobileSpace)
    n = len(space.layers()) if mobile else len(NB201_EDGES)
    out: list[MobileArch | Nb201Arch] = []
    for i, p_light in enumerate(np.linspace(0.9 if light else 0.0, 0.0, k)):
        ops = tuple(
            (light[0] if len(light) == 1 else str(rng.choice(light)))
            if rng.random() < p_light
            else str(rng.choice(heavy))
            for _ in range(n)
        )
        if not mobile:
            out.append(space.check(Nb201Arch(ops)))
            continue
        widths = (
            tuple(float(round(rng.uniform(*space.width_range), 3)) for _ in space.stages)
            if space.width_range
            else ()
        )
        if corner_widths and widths and i % 2 == 1:
            widths = (float(space.width_range[1] if i % 4 == 1 else space.width_range[0]),) * len(widths)
        out.append(space.check(MobileArch(ops, widths)))
    return out
