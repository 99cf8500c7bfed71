"""profilers: measure the latency of neural-network modules on a target device.

Runs on the target with numpy and a framework (torch, or LiteRT); never imports JAX, and
imports no framework until a measurement asks for one. The module catalogue and the dataset
schema defined here are the contract with `jaxlat`.
"""

from importlib.metadata import PackageNotFoundError, version

from ._arch import ARCH_FORMAT_VERSION as ARCH_FORMAT_VERSION
from ._arch import COPY_OPS as COPY_OPS
from ._arch import COST_TOTALS as COST_TOTALS
from ._arch import ArchError as ArchError
from ._arch import ArchModule as ArchModule
from ._arch import ArchRecord as ArchRecord
from ._arch import UnmappedOp as UnmappedOp
from ._arch import append_record as append_record
from ._arch import capture_torch as capture_torch
from ._arch import load_record as load_record
from ._arch import load_records as load_records
from ._arch import module_cost_totals as module_cost_totals
from ._arch import unique_configs as unique_configs
from ._catalogue import ACTIVATIONS as ACTIVATIONS
from ._catalogue import CATALOGUE_VERSION as CATALOGUE_VERSION
from ._catalogue import COMMON_FIELD_NAMES as COMMON_FIELD_NAMES
from ._catalogue import COMMON_FIELDS as COMMON_FIELDS
from ._catalogue import COST_COLUMNS as COST_COLUMNS
from ._catalogue import DTYPE_BYTES as DTYPE_BYTES
from ._catalogue import DTYPES as DTYPES
from ._catalogue import WEIGHT_DTYPE_BYTES as WEIGHT_DTYPE_BYTES
from ._catalogue import Costs as Costs
from ._catalogue import Field as Field
from ._catalogue import Interval as Interval
from ._catalogue import ModuleConfig as ModuleConfig
from ._catalogue import ModuleSpec as ModuleSpec
from ._catalogue import ModuleType as ModuleType
from ._catalogue import Tie as Tie
from ._catalogue import all_field_columns as all_field_columns
from ._catalogue import config_from_row as config_from_row
from ._catalogue import costs_of_columns as costs_of_columns
from ._catalogue import dtype_bytes as dtype_bytes
from ._catalogue import get_spec as get_spec
from ._catalogue import make_config as make_config
from ._catalogue import module_types as module_types
from ._catalogue import register_module as register_module
from ._catalogue import unregister_module as unregister_module
from ._catalogue import weight_dtype_bytes as weight_dtype_bytes
from ._dataset import READABLE_SCHEMA_VERSIONS as READABLE_SCHEMA_VERSIONS
from ._dataset import REQUIRED_COLUMNS as REQUIRED_COLUMNS
from ._dataset import SCHEMA_VERSION as SCHEMA_VERSION
from ._dataset import DatasetError as DatasetError
from ._dataset import DatasetWriter as DatasetWriter
from ._dataset import measurement_row as measurement_row
from ._dataset import read_dataset as read_dataset
from ._dataset import read_metadata as read_metadata
from ._dataset import write_dataset as write_dataset
from ._device import MEASUREMENT_ENV as MEASUREMENT_ENV
from ._device import host_fingerprint as host_fingerprint
from ._onnx import capture_onnx as capture_onnx
from ._runner import RunSummary as RunSummary
from ._runner import retest_agreement as retest_agreement
from ._runner import retest_ceiling as retest_ceiling
from ._runner import retest_summary as retest_summary
from ._runner import run_profile as run_profile
from ._samplers import expand as expand
from ._samplers import parse_range as parse_range
from ._samplers import sample_configs as sample_configs
from ._timer import LatencyStats as LatencyStats
from ._timer import TimerConfig as TimerConfig
from ._timer import Timing as Timing
from ._timer import summarize as summarize
from ._timer import time_function as time_function
from ._timer import wall_clock_block_timer as wall_clock_block_timer

try:
    __version__ = version("jaxlat")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

# Torch-backed names load on first use, so `import profilers` stays framework-free.
_TORCH_NAMES = ("build_torch_module", "flush_denormals", "register_torch_builder", "time_torch_module", "torch_threads")
_MODEL_NAMES = ("MODEL_TIMER", "TFLiteRuntime", "TorchRuntime", "generated_jobs", "profile_many", "profile_torch_model",
                "time_torch_model", "zoo_jobs")


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        from . import _torch_backend

        return getattr(_torch_backend, name)
    if name in _MODEL_NAMES:
        from . import _models

        return getattr(_models, name)
    if name == "generated_network":
        from ._netgen import generated_network

        return generated_network
    raise AttributeError(f"module 'profilers' has no attribute {name!r}")
