"""jaxlat: learned, differentiable latency prediction for neural-network modules and models.

Imports JAX, never torch. Reads the datasets that `profilers` writes.
"""

from importlib.metadata import PackageNotFoundError, version

from ._base import FitFn as FitFn
from ._base import PredictFn as PredictFn
from ._base import Regressor as Regressor
from ._base import params_nbytes as params_nbytes
from ._base import predict_batch as predict_batch
from ._calibrate import CALIBRATION_OBJECTIVES as CALIBRATION_OBJECTIVES
from ._calibrate import calibrate_machine as calibrate_machine
from ._composition import Composition as Composition
from ._composition import count_rows as count_rows
from ._composition import design_rows as design_rows
from ._composition import fit_composition as fit_composition
from ._data import STATISTICS as STATISTICS
from ._data import measured_ms as measured_ms
from ._data import split_by_config as split_by_config
from ._data import statistic_column as statistic_column
from ._data import type_arrays as type_arrays
from ._features import FEATURE_SCHEMA_VERSION as FEATURE_SCHEMA_VERSION
from ._features import FeatureSchema as FeatureSchema
from ._features import encode_columns as encode_columns
from ._features import encode_frame as encode_frame
from ._features import feature_schema as feature_schema
from ._finetune import fine_tuned as fine_tuned
from ._io import ArtifactError as ArtifactError
from ._mass import predict_chunks as predict_chunks
from ._mass import predict_latency_ms as predict_latency_ms
from ._mass import single_query as single_query
from ._metrics import evaluate as evaluate
from ._metrics import evaluate_table as evaluate_table
from ._predict import Head as Head
from ._predict import ModelBatch as ModelBatch
from ._predict import ModelPrediction as ModelPrediction
from ._predict import PredictorParams as PredictorParams
from ._predict import compose as compose
from ._predict import model_latency as model_latency
from ._predict import module_outputs as module_outputs
from ._predict import module_sum as module_sum
from ._predict import stack_batches as stack_batches
from ._predictor import LatencyPredictor as LatencyPredictor
from ._predictor import train_predictor as train_predictor
from ._select import Budgets as Budgets
from ._select import Selection as Selection
from ._select import select_regressors as select_regressors
from ._shipped import PredictorInfo as PredictorInfo
from ._shipped import list_predictors as list_predictors
from ._shipped import load_predictor as load_predictor
from ._torch_predict import predict_onnx as predict_onnx
from ._torch_predict import predict_torch as predict_torch
from ._train import TrainConfig as TrainConfig

try:
    __version__ = version("jaxlat")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
