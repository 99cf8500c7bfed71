"""One step from a model to a latency: capture a torch model (or read an ONNX file) and predict.

torch is imported only inside `predict_torch` (through `profilers.capture_torch`), so that
`import jaxlat` stays torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._predictor import LatencyPredictor


def _predictor(predictor: LatencyPredictor | str | os.PathLike | None) -> LatencyPredictor:
    if isinstance(predictor, LatencyPredictor):
        return predictor
    from ._shipped import load_predictor

    return load_predictor(predictor)


def predict_torch(
    model: Any,
    example_inputs: Any,
    *,
    predictor: LatencyPredictor | str | os.PathLike | None = None,
    name: str = "model",
    threads: int = 1,
    utilization: float = 0.0,
) -> dict[str, Any]:
    """Predict the latency of a torch model called on `example_inputs`, in one step.

    The model is captured with `torch.export` into an architecture record
    (`profilers.capture_torch`, as `jaxlat-profile torch-model --no-measure` does) and
    predicted with the predictor's `predict_model`. Nothing is timed.

    Args:
      model: a `torch.nn.Module` (put in eval mode).
      example_inputs: a tensor or a tuple of tensors; their shapes (batch size included) and
        dtype are what the latency is predicted for.
      predictor: a `LatencyPredictor`, a predictor directory, a shipped predictor's name
        (`jaxlat.list_predictors()`), or None for the shipped predictor of this machine's CPU
        model, else the default one.
      name: the record's name (the `name` of the result).
      threads: predict at this many intra-op threads.
      utilization: predict at this background device utilization (0 to 1).

    Returns:
      A dict: `latency_ms` (whole model, corrected), `lo_ms` and `hi_ms` (80 % interval),
      `plain_sum_ms` (sum of module predictions), `n_modules`, `n_extrapolated` (modules
      outside the training ranges), `n_unmapped_compute`, and `name`.

    Raises:
      ValueError: no such predictor, or a record the predictor cannot predict.
      RuntimeError: `torch.export` cannot capture the model (its message).
    """
    from profilers import capture_torch

    record = capture_torch(model, example_inputs, name=name, threads=threads, utilization=utilization)
    return _predictor(predictor).predict_model(record)


def predict_onnx(
    path: str | os.PathLike,
    *,
    predictor: LatencyPredictor | str | os.PathLike | None = None,
    input_shapes: Mapping[str, Sequence[int]] | Sequence[Sequence[int]] | None = None,
    threads: int = 1,
    utilization: float = 0.0,
) -> dict[str, Any]:
    """Predict the latency of an ONNX model (read with the `onnx` package; nothing is run).

    Args:
      path: the `.onnx` file.
      predictor: as in `predict_torch`.
      input_shapes: shapes of the graph inputs, by name or in order, for symbolic dimensions.
      threads: predict at this many intra-op threads.
      utilization: predict at this background device utilization (0 to 1).

    Returns:
      The dict of `predict_torch`, named after the file.

    Raises:
      ValueError: not a `.onnx` file, an unreadable model, a symbolic input shape not given.
      FileNotFoundError: no such file.
    """
    from profilers import capture_onnx

    record = capture_onnx(Path(path), input_shapes=input_shapes, threads=threads, utilization=utilization)
    return _predictor(predictor).predict_model(record)
