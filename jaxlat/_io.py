"""Saving parameters without pickle: arrays in `.npz`, structure in the key paths, strings and
other static values in JSON, every file checksummed."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: Subdirectory of a predictor directory holding the predictor its whole models are composed
#: from (format 5, `LatencyPredictor.with_whole_models`).
WHOLE_MODELS_DIR = "whole_models"


class ArtifactError(ValueError):
    """A saved artifact that cannot be loaded, with the reason."""


def _key(segment: Any) -> str:
    if isinstance(segment, bool) or not isinstance(segment, (str, int)):
        raise TypeError(f"cannot save a tree keyed by {type(segment).__name__}")
    if isinstance(segment, int):
        return f"%{segment}"  # an int dict key (nnx state)
    if "/" in segment or segment[:1] in "%#":
        raise TypeError(f"cannot save the key {segment!r}: '/', or a leading '%' or '#'")
    return segment


def flatten_tree(tree: Any, prefix: str = "") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """`(arrays, static)`: array leaves by path, and non-array leaves (str, None, ...) by path."""
    arrays: dict[str, np.ndarray] = {}
    static: dict[str, Any] = {}
    if isinstance(tree, Mapping):
        items = [(_key(k), v) for k, v in tree.items()]
        if not items:
            static[prefix + "{}"] = None
    elif isinstance(tree, (list, tuple)) and not (tree and all(isinstance(x, str) for x in tree)):
        items = [(f"#{i}", v) for i, v in enumerate(tree)]
        if not items:
            static[prefix + "[]"] = None
    else:
        leaf = prefix.rstrip("/")
        if isinstance(tree, (str, type(None), list, tuple)):
            static[leaf] = list(tree) if isinstance(tree, tuple) else tree
        else:
            arrays[leaf] = np.asarray(tree)
        return arrays, static
    for k, v in items:
        a, s = flatten_tree(v, f"{prefix}{k}/")
        arrays.update(a)
        static.update(s)
    return arrays, static


def unflatten_tree(arrays: Mapping[str, np.ndarray], static: Mapping[str, Any]) -> Any:
    """Inverse of `flatten_tree`."""
    root: dict[Any, Any] = {}

    def put(path: str, value: Any) -> None:
        parts = path.split("/")
        node = root
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value

    for k, v in arrays.items():
        put(k, v)
    for k, v in static.items():
        if k.endswith("{}") or k.endswith("[]"):
            put(k[:-2].rstrip("/") or "", {} if k.endswith("{}") else [])
        else:
            put(k, v)

    def fix(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if node and all(k.startswith("#") for k in node):
            return [fix(node[f"#{i}"]) for i in range(len(node))]
        return {(int(k[1:]) if k.startswith("%") else k): fix(v) for k, v in node.items()}

    out = fix(root)
    return out.get("", out) if isinstance(out, dict) and list(out) == [""] else out


def check_output_dir(directory: str | os.PathLike, *, what: str = "--out") -> Path:
    """Check that an artifact directory can be written at `directory` (creating it), before
    the work that fills it (training): a path that is a file, under a file, or not writable
    is an `ArtifactError` now, not after the work is done.

    Args:
      directory: where the artifact goes.
      what: the argument's name, for the message.

    Raises:
      ArtifactError: naming `what`, the path and the reason.
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ArtifactError(f"{what} {d}: is an existing file; expected a directory (new, or a saved predictor "
                            "to replace)")
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ArtifactError(f"{what} {d}: cannot write here ({e.strerror or e})") from None
    return d


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_tree(path: Path, tree: Any) -> dict[str, Any]:
    """Write a tree's arrays to `path` (.npz); returns its JSON record (static values, sha256)."""
    arrays, static = flatten_tree(tree)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return {"file": path.name, "sha256": sha256_file(path), "static": static}


def load_tree(directory: Path, record: Mapping[str, Any]) -> Any:
    """Read a tree saved by `save_tree`, checking its checksum."""
    path = directory / record["file"]
    if not path.exists():
        raise ArtifactError(f"{path}: missing parameter file")
    if sha256_file(path) != record["sha256"]:
        raise ArtifactError(f"{path}: checksum mismatch (the file is truncated or corrupted)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as e:
        raise ArtifactError(f"{path}: unreadable parameter file ({e})") from None
    return unflatten_tree(arrays, record.get("static", {}))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())
