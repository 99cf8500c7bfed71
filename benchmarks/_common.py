"""Shared benchmark plumbing: describe the machine, write results as JSON and Markdown."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import jax

    from profilers import host_fingerprint

    info: dict[str, Any] = {**host_fingerprint(), "jax": jax.__version__, "jax_devices": [str(d) for d in jax.devices()]}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    info["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return info


def write_results(out_dir: str | os.PathLike, name: str, payload: dict[str, Any], markdown: str) -> Path:
    """Write `<name>.json` and `<name>.md` into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    (out / f"{name}.md").write_text(markdown)
    return out / f"{name}.md"


def machine_markdown(m: dict[str, Any]) -> str:
    parts = [f"{m.get('cpu_model')} ({m.get('cpu_logical_cores')} logical cores, {m.get('memory_gib')} GiB)"]
    if m.get("gpu"):
        parts.append(m["gpu"])
    parts.append(f"JAX {m.get('jax')} on {', '.join(m.get('jax_devices', []))}")
    return "Machine: " + "; ".join(parts) + f"; {m.get('date')}.\n"
