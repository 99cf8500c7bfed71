"""Closed-loop target refinement: measure the network fitted to a latency target, correct the
prediction there, and fit the search's probabilities to the target again.

A calibration (`jaxlat.transfer.calibrate`) is fitted on other networks; at the fitted network
its error may be a few percent, and the machine's speed moves between calibration and
deployment. One measurement of the fitted network itself fixes both locally: the prediction is
scaled by measured / predicted there, and `fit_to_target` runs again under the scaled
prediction. A few steps converge when the local scale varies slowly across the candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ._search import fit_to_target

if TYPE_CHECKING:
    from profilers import ArchRecord
    from profilers.spaces import MobileArch, MobileSpace, Nb201Arch, Nb201Space

#: Whole networks -> predicted latency (ms), `[n]`.
RecordsLatencyFn = Callable[[Sequence["ArchRecord"]], np.ndarray]


def scaled_latency_fn(latency_ms: RecordsLatencyFn, scale: float) -> RecordsLatencyFn:
    """`latency_ms` times `scale`."""

    def scaled(records: Sequence[ArchRecord]) -> np.ndarray:
        return scale * np.asarray(latency_ms(records), float)

    return scaled


class RefineStep(NamedTuple):
    """One closed-loop step (see `refine_to_target`).

    Attributes:
      arch: the architecture fitted to the target under the scaled prediction.
      predicted_ms: its latency under the scaled prediction.
      local_scale: the scale of the prediction, measured / predicted at the measured network
        (cumulative over steps).
      latency_ms: the scaled prediction, records -> ms.
    """

    arch: MobileArch | Nb201Arch
    predicted_ms: float
    local_scale: float
    latency_ms: RecordsLatencyFn


def refine_to_target(
    space: MobileSpace | Nb201Space,
    probs: np.ndarray,
    searched_arch: MobileArch | Nb201Arch,
    latency_ms: RecordsLatencyFn,
    target_ms: float,
    *,
    measured_ms: float,
    predicted_ms: float,
    local_scale: float = 1.0,
) -> RefineStep:
    """One closed-loop step towards `target_ms`.

    Args:
      space: the searched space.
      probs: `[n_layers, n_ops]` op probabilities of the search (`SearchResult.probs`).
      searched_arch: the search's derived architecture (what `fit_to_target` starts from).
      latency_ms: the (calibrated) prediction, records -> ms, without local scale.
      target_ms: the target.
      measured_ms: the latency measured at the currently fitted architecture.
      predicted_ms: that architecture's latency as predicted at the last step (with the
        previous `local_scale` applied).
      local_scale: the previous step's scale (1 at the first step).

    Returns:
      The `RefineStep`: the new fitted architecture, its predicted latency, the new scale and
      the scaled prediction.

    Raises:
      ValueError: non-positive latencies or target.
    """
    if not (measured_ms > 0 and predicted_ms > 0 and target_ms > 0):
        raise ValueError(
            f"refine_to_target: measured_ms={measured_ms}, predicted_ms={predicted_ms} and "
            f"target_ms={target_ms} must be > 0"
        )
    scale = local_scale * measured_ms / predicted_ms
    scaled = scaled_latency_fn(latency_ms, scale)
    arch, ms = fit_to_target(space, np.asarray(probs), searched_arch, scaled, target_ms)
    return RefineStep(arch, ms, scale, scaled)
