"""Gradient-based NAS with a differentiable latency penalty through the learned predictor.

    from jaxlat import nas
    from profilers.spaces import mobile_space

    space = mobile_space(resolution=96)
    lat = nas.expected_latency_fn(predictor, space)          # (probs, widths) -> ms, pure JAX
    result = nas.search(space, predictor, nas.proxyless_penalty(0.05))
    space.torch_model(result.arch)                           # measure it (profilers, torch)

On another machine than the predictor's, calibrate first (`jaxlat.transfer.calibrate` on a few
measured `jaxlat.transfer.spanning_archs`), search with `calibrated_latency_fn(predictor, space,
cal)`, and close the loop at a target with `refine_to_target`.

Spaces (`profilers.spaces`): a MobileNetV2/FBNet-like space with searchable kernels, expansions,
skips and stage widths, HW-NAS-Bench's FBNet space and NAS-Bench-201's cell space.
"""

from ._calibrated import ExpectedLatencyFn as ExpectedLatencyFn
from ._calibrated import calibrated_latency_fn as calibrated_latency_fn
from ._calibrated import log_affine_latency_fn as log_affine_latency_fn
from ._latency import RelaxedSpace as RelaxedSpace
from ._latency import expected_latency_fn as expected_latency_fn
from ._latency import one_hot as one_hot
from ._penalties import Penalty as Penalty
from ._penalties import fbnet_penalty as fbnet_penalty
from ._penalties import no_penalty as no_penalty
from ._penalties import proxyless_penalty as proxyless_penalty
from ._penalties import tfnas_penalty as tfnas_penalty
from ._refine import RecordsLatencyFn as RecordsLatencyFn
from ._refine import RefineStep as RefineStep
from ._refine import refine_to_target as refine_to_target
from ._refine import scaled_latency_fn as scaled_latency_fn
from ._search import ArchParams as ArchParams
from ._search import Data as Data
from ._search import SearchConfig as SearchConfig
from ._search import SearchResult as SearchResult
from ._search import derive as derive
from ._search import digits_data as digits_data
from ._search import fit_to_target as fit_to_target
from ._search import fit_widths as fit_widths
from ._search import make_steps as make_steps
from ._search import search as search
from ._search import train_derived as train_derived
from ._supernet import MobileSupernet as MobileSupernet
from ._supernet import Nb201Supernet as Nb201Supernet
from ._supernet import init_supernet as init_supernet
