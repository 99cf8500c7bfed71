"""Predictors shipped with the package, so that `jaxlat predict` works right after install.

Each lives in `jaxlat/predictors/NAME/` with a README.md that states the device it was
measured on, the data and the command that built it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from importlib import resources
from pathlib import Path

_log = logging.getLogger(__name__)

#: The default of `jaxlat predict`: this project's reference CPU, PyTorch, 1 thread.
DEFAULT_REFERENCE = "cpu_torch_1t"


def reference_names() -> tuple[str, ...]:
    """Names of the shipped predictors."""
    root = resources.files("jaxlat") / "predictors"
    if not root.is_dir():
        return ()
    return tuple(sorted(p.name for p in root.iterdir() if (p / "predictor.json").is_file()))


def reference_path(name: str = DEFAULT_REFERENCE) -> Path:
    """Directory of a shipped predictor.

    Raises:
      ValueError: no shipped predictor of that name (the message lists them).
    """
    names = reference_names()
    if name not in names:
        raise ValueError(
            f"reference predictor {name!r} is not shipped: expected one of {', '.join(names) or '(none)'}"
        )
    return Path(str(resources.files("jaxlat") / "predictors" / name))


def reference_predictor(name: str = DEFAULT_REFERENCE):
    """Load a shipped predictor (`LatencyPredictor`)."""
    from ._predictor import LatencyPredictor

    return LatencyPredictor.load(reference_path(name))


def _shipped_cpu_model(name: str) -> str | None:
    manifest = json.loads((reference_path(name) / "predictor.json").read_text())
    return (manifest.get("device") or {}).get("fingerprint", {}).get("cpu_model")


def matching_reference(cpu_model: str | None = None) -> str:
    """The shipped predictor measured on this machine's CPU model (`cpu_model`, default: read from
    this machine), else `DEFAULT_REFERENCE`. Only the model name is compared: another host with
    the same CPU model may still run at another speed."""
    if cpu_model is None:
        from profilers import host_fingerprint

        cpu_model = host_fingerprint()["cpu_model"]
    same = [n for n in reference_names() if _shipped_cpu_model(n) == cpu_model]
    return DEFAULT_REFERENCE if DEFAULT_REFERENCE in same or not same else same[0]


def load_predictor(spec: str | Path | None = None):
    """A predictor from a directory, or a shipped predictor by name; None: the shipped predictor
    of this machine's CPU model where one ships, else the default (`matching_reference`).

    A directory wins over a shipped name, so a local `./epyc_torch_1t/` is what it loads.

    Args:
      spec: a predictor directory (one that holds `predictor.json`), the name of a shipped
        predictor (`list_predictors()`), or None.

    Returns:
      The `LatencyPredictor`.

    Raises:
      ValueError: `spec` is neither an existing predictor directory nor a shipped name (the
        message lists the shipped names).
    """
    from ._predictor import LatencyPredictor

    if spec is None:
        return reference_predictor(matching_reference())
    path = Path(spec)
    if path.is_dir():
        return LatencyPredictor.load(path)
    if str(spec) in reference_names():
        return reference_predictor(str(spec))
    raise ValueError(
        f"predictor {str(spec)!r} is neither a predictor directory nor a shipped predictor: "
        f"shipped ones are {', '.join(reference_names()) or '(none)'}"
    )


@dataclasses.dataclass(frozen=True, slots=True)
class PredictorInfo:
    """What a predictor is for, read from its `predictor.json` alone (no JAX work)."""

    name: str  # shipped name, or the directory's path for a local predictor
    path: Path  # the predictor directory
    shipped: bool  # ships with the package (loadable by name)
    backend: str  # framework the training data was measured with: torch, tflite, ...
    device: str  # cpu, cuda, ...
    hardware: str  # CPU model (and GPU name) of the measuring machine
    statistic: str  # latency statistic learned: median or p10
    modules: tuple[str, ...]  # module types it predicts
    whole_models: bool  # has a composition correction (whole-model prediction)


def _info(path: Path, *, name: str, shipped: bool) -> PredictorInfo:
    manifest = json.loads((path / "predictor.json").read_text())
    device = manifest.get("device") or {}
    fp = device.get("fingerprint") or {}
    hardware = " + ".join(str(h) for h in (fp.get("cpu_model"), fp.get("gpu_name")) if h) or "unknown"
    return PredictorInfo(
        name=name,
        path=path,
        shipped=shipped,
        backend=str(device.get("backend", "unknown")),
        device=str(device.get("device", "unknown")),
        hardware=hardware,
        statistic=str(manifest.get("statistic", "median")),
        modules=tuple(sorted(manifest.get("modules", {}))),
        whole_models=manifest.get("composition") is not None,
    )


def list_predictors(directory: str | Path | None = None) -> list[PredictorInfo]:
    """The shipped predictors, and with `directory` also every predictor found under it.

    Args:
      directory: a folder searched recursively for predictor directories (those holding a
        `predictor.json`); None lists the shipped ones only.

    Returns:
      One `PredictorInfo` per predictor: the shipped ones first, by name, then the local ones
      by path. A local `predictor.json` that cannot be read is skipped with a warning.

    Raises:
      FileNotFoundError: `directory` does not exist.

    Examples:
      >>> import jaxlat
      >>> [p.name for p in jaxlat.list_predictors()]
      ['cpu_torch_1t', 'epyc_torch_1t']
    """
    out = [_info(reference_path(n), name=n, shipped=True) for n in reference_names()]
    if directory is None:
        return out
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    for manifest in sorted(root.rglob("predictor.json")):
        try:
            out.append(_info(manifest.parent, name=str(manifest.parent), shipped=False))
        except (OSError, ValueError) as e:  # a broken artifact should not hide the others
            _log.warning("skipped %s: %s", manifest, e)
    return out
