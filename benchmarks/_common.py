"""Shared benchmark plumbing: describe the machine, write results as JSON and Markdown, calibrate
a predictor to this machine from measured networks."""

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


def calibrate_to_records(pred: Any, records: list, label: str) -> dict[str, Any]:
    """Few-shot transfer of `pred` to this machine (`jaxlat.transfer.adapt`, reuse or affine in
    log latency) from measured architecture records; prints the map and returns it with its
    report, the measured and the predicted latencies."""
    import numpy as np

    from jaxlat.transfer import adapt, predictor_proxy

    ms = [r.measured["latency_ms"] for r in records]
    proxy = predictor_proxy(pred)
    adapted = adapt(records, ms, [proxy], methods=("reuse", "affine"))
    a, b = adapted.log_affine()
    rho = adapted.report["spearman_primary"]
    print(f"{label} calibration on {len(ms)} measured networks: {adapted.method}, target ms = "
          f"{np.exp(a):.3f} * predicted ** {b:.3f} (Spearman {rho:.3f})", flush=True)
    return {"k": len(ms), "method": adapted.method, "log_affine": [a, b], "spearman": rho, "report": adapted.report,
            "measured_ms": ms, "predicted_ms": list(map(float, proxy.fn(records)))}
