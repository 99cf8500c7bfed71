"""Predictors shipped with the package, so that `jaxlat predict` works right after install, and
the predictors calibrated on this machine (`jaxlat calibrate`), which it prefers.

Each shipped predictor lives in `jaxlat/predictors/NAME/` with a README.md that states the
device it was measured on, the data and the command that built it. A calibrated predictor lives
wherever `jaxlat calibrate --out DIR` wrote it (`DIR/predictor`, with `DIR/card.md`); the
registry `$JAXLAT_HOME/calibrated.json` (default `~/.cache/jaxlat/calibrated.json`) lists them
by CPU model string, so that `load_predictor()` finds the one of this machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._predictor import LatencyPredictor

_log = logging.getLogger(__name__)

#: The default of `jaxlat predict`: this project's reference CPU, PyTorch, 1 thread.
DEFAULT_REFERENCE = "cpu_torch_1t"
#: Version of the calibrated-predictor registry file; a file of another version is ignored.
REGISTRY_VERSION = 1
_REGISTRY_NAME = "calibrated.json"


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


# -- calibrated predictors (`jaxlat calibrate`) ---------------------------------------------


def jaxlat_home() -> Path:
    """Where jaxlat keeps per-user state: `$JAXLAT_HOME`, default `~/.cache/jaxlat`."""
    home = os.environ.get("JAXLAT_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "jaxlat"


def registry_path() -> Path:
    """The registry of calibrated predictors, `jaxlat_home() / "calibrated.json"`."""
    return jaxlat_home() / _REGISTRY_NAME


def _read_registry(path: Path) -> dict[str, Any]:
    """The registry's content; a missing file is empty, an unreadable one is empty with a warning."""
    empty: dict[str, Any] = {"format_version": REGISTRY_VERSION, "predictors": {}}
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        return empty
    except (OSError, ValueError) as e:
        _log.warning("ignored the calibrated-predictor registry %s: %s", path, e)
        return empty
    if (
        not isinstance(obj, dict)
        or obj.get("format_version") != REGISTRY_VERSION
        or not isinstance(obj.get("predictors"), dict)
    ):
        _log.warning(
            "ignored the calibrated-predictor registry %s: not a version-%d registry", path, REGISTRY_VERSION
        )
        return empty
    return obj


@contextlib.contextmanager
def _registry_lock(path: Path) -> Iterator[None]:
    """Holds `<registry>.lock` (`fcntl.flock`): registrations from several processes serialize."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_registry(path: Path, obj: Mapping[str, Any]) -> None:
    """Replace the registry atomically (a temporary file in the same directory, then a rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(obj, indent=1, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def register_calibrated(cpu_model: str, predictor_dir: str | Path, **info: Any) -> Path:
    """Record a calibrated predictor for `cpu_model` in the registry (`registry_path()`).

    An entry for the same directory is replaced; entries whose directory is gone are dropped.
    The file is rewritten atomically under a lock.

    Args:
      cpu_model: the CPU model string of the machine it was calibrated on
        (`profilers.host_fingerprint()["cpu_model"]`): the registry's key.
      predictor_dir: the predictor directory (holding `predictor.json`).
      info: more JSON values to keep with the entry (card path, base, correction, ...).

    Returns:
      The registry file.

    Raises:
      ValueError: `predictor_dir` holds no `predictor.json`.
      OSError: the registry cannot be written.
    """
    d = Path(predictor_dir).resolve()
    if not (d / "predictor.json").is_file():
        raise ValueError(
            f"register_calibrated: {d} holds no predictor.json; expected a saved predictor directory"
        )
    path = registry_path()
    entry = {
        **info,
        "path": str(d),
        "registered_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "registered_unix": time.time(),
    }
    with _registry_lock(path):
        reg = _read_registry(path)
        by_cpu: dict[str, list[dict[str, Any]]] = reg["predictors"]
        for key in list(by_cpu):
            kept = [
                e
                for e in by_cpu[key]
                if isinstance(e, dict)
                and e.get("path") != str(d)
                and (Path(str(e.get("path"))) / "predictor.json").is_file()
            ]
            if kept:
                by_cpu[key] = kept
            else:
                del by_cpu[key]
        by_cpu.setdefault(cpu_model, []).append(entry)
        _write_registry(path, reg)
    return path


def calibrated_entries(cpu_model: str | None = None) -> list[dict[str, Any]]:
    """Registered calibrated predictors whose directory still holds a predictor, newest first.

    Args:
      cpu_model: only those of this CPU model string (None: every CPU model).

    Returns:
      The registry entries (`path`, `cpu_model`, `registered_at`, and what the calibration
      recorded), newest registration first.
    """
    reg = _read_registry(registry_path())
    out = []
    for key, entries in reg["predictors"].items():
        if cpu_model is not None and key != cpu_model:
            continue
        for e in entries if isinstance(entries, list) else []:
            # An entry written by hand or by another version may lack fields: skipped, not fatal.
            when = e.get("registered_unix", 0.0) if isinstance(e, dict) else None
            if (isinstance(when, (int, float)) and not isinstance(when, bool)
                    and (Path(str(e.get("path"))) / "predictor.json").is_file()):
                out.append({**e, "cpu_model": key})
    return sorted(out, key=lambda e: -float(e.get("registered_unix", 0.0)))


def _this_cpu_model() -> str:
    from profilers import host_fingerprint

    return host_fingerprint()["cpu_model"]


def matching_reference(cpu_model: str | None = None, *, calibrated: bool = True) -> str:
    """The predictor for a CPU model (default: this machine's), what `jaxlat predict` takes
    without `--predictor`.

    In order: the newest predictor calibrated on that CPU model (`jaxlat calibrate`, listed in
    the registry `registry_path()`), as its directory; else the shipped predictor measured on
    that CPU model; else `DEFAULT_REFERENCE`. Only the model name is compared: another host with
    the same CPU model may still run at another speed.

    Args:
      cpu_model: a CPU model string (`profilers.host_fingerprint()["cpu_model"]`); None reads
        this machine's.
      calibrated: consult the registry of calibrated predictors (False: shipped ones only).

    Returns:
      A calibrated predictor's directory, or a shipped predictor's name.
    """
    if cpu_model is None:
        cpu_model = _this_cpu_model()
    if calibrated:
        entries = calibrated_entries(cpu_model)
        if entries:
            e = entries[0]
            _log.info(
                "predictor: calibrated on this CPU model (%s) by jaxlat calibrate, %s: %s",
                cpu_model,
                e.get("registered_at", "?"),
                e["path"],
            )
            return str(e["path"])
    same = [n for n in reference_names() if _shipped_cpu_model(n) == cpu_model]
    return DEFAULT_REFERENCE if DEFAULT_REFERENCE in same or not same else same[0]


def default_predictor() -> tuple[str, LatencyPredictor]:
    """The predictor to use when none is named, and its name: the newest one calibrated on this
    CPU model, else the shipped one of this CPU model, else the default (`matching_reference`).

    A calibrated predictor that cannot be loaded (deleted files, a format this version does not
    read) is reported with a warning and the shipped choice is used instead: a broken
    calibration never breaks prediction.

    Returns:
      `(name, LatencyPredictor)`: a shipped name, or the calibrated predictor's directory.
    """
    from ._io import ArtifactError
    from ._predictor import LatencyPredictor

    chosen = matching_reference()
    if chosen in reference_names():
        _log.debug("predictor: %s (shipped)", chosen)  # a calibrated one is logged at INFO
        return chosen, reference_predictor(chosen)
    try:
        return chosen, LatencyPredictor.load(chosen)
    except (ArtifactError, OSError) as e:
        fallback = matching_reference(calibrated=False)
        _log.warning("the calibrated predictor %s cannot be loaded (%s); using %s", chosen, e, fallback)
        return fallback, reference_predictor(fallback)


def load_predictor(spec: str | Path | None = None):
    """A predictor from a directory, or a shipped predictor by name; None: the newest predictor
    calibrated on this machine's CPU model (`jaxlat calibrate`), else the shipped predictor of
    this CPU model where one ships, else the default (`matching_reference`). Which one it took
    is logged at INFO.

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
        return default_predictor()[1]
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

    name: str  # shipped name, or the directory's path for a local or calibrated predictor
    path: Path  # the predictor directory
    shipped: bool  # ships with the package (loadable by name)
    backend: str  # framework the training data was measured with: torch, tflite, ...
    device: str  # cpu, cuda, ...
    hardware: str  # CPU model (and GPU name) of the measuring machine
    statistic: str  # latency statistic learned: median or p10
    modules: tuple[str, ...]  # module types it predicts
    whole_models: bool  # has a composition correction (whole-model prediction)
    calibrated: bool = False  # written by `jaxlat calibrate` and registered for its CPU model
    split: bool = False  # whole models composed by a second predictor (`with_whole_models`)


def _info(path: Path, *, name: str, shipped: bool, calibrated: bool = False) -> PredictorInfo:
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
        whole_models=manifest.get("composition") is not None or "whole_models" in manifest,
        calibrated=calibrated,
        split="whole_models" in manifest,
    )


def list_predictors(directory: str | Path | None = None, *, calibrated: bool = True) -> list[PredictorInfo]:
    """The shipped predictors, the registered calibrated ones, and with `directory` also every
    predictor found under it.

    Args:
      directory: a folder searched recursively for predictor directories (those holding a
        `predictor.json`); None lists no local ones.
      calibrated: also list the predictors registered by `jaxlat calibrate` (every CPU model;
        `calibrated_entries`), newest first.

    Returns:
      One `PredictorInfo` per predictor: the shipped ones first, by name, then the calibrated
      ones, then the local ones by path (a directory listed already is not repeated; the
      second part of a split predictor is not listed apart). A `predictor.json` that cannot be
      read is skipped with a warning.

    Raises:
      FileNotFoundError: `directory` does not exist.

    Examples:
      >>> import jaxlat
      >>> [p.name for p in jaxlat.list_predictors(calibrated=False)]
      ['cpu_torch_1t', 'epyc_torch_1t', 'xeon_amx_torch_1t']
    """
    out = [_info(reference_path(n), name=n, shipped=True) for n in reference_names()]
    seen: set[Path] = set()

    def add(path: Path, *, is_calibrated: bool) -> None:
        key = path.resolve()
        if key in seen:
            return
        try:
            out.append(_info(path, name=str(path), shipped=False, calibrated=is_calibrated))
            seen.add(key)
        except (OSError, ValueError) as e:  # a broken artifact should not hide the others
            _log.warning("skipped %s: %s", path / "predictor.json", e)

    if calibrated:
        for e in calibrated_entries():
            add(Path(str(e["path"])), is_calibrated=True)
    if directory is None:
        return out
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    from ._io import WHOLE_MODELS_DIR

    for manifest in sorted(root.rglob("predictor.json")):
        if manifest.parent.name == WHOLE_MODELS_DIR and (manifest.parent.parent / "predictor.json").exists():
            continue  # the second part of a split predictor, listed with it
        add(manifest.parent, is_calibrated=False)
    return out
