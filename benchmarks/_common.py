"""Shared benchmark plumbing: describe the machine, write results as JSON and Markdown, run the
package's command-line tools, calibrate a predictor to this machine (`jaxlat.transfer.calibrate`)
and say what was chosen."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jaxlat import STATISTICS as DATA_STATISTICS

if TYPE_CHECKING:
    from jaxlat import LatencyPredictor
    from jaxlat.transfer import Calibration
    from profilers import ArchRecord


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


#: `--statistic` choices: which statistic of a record's pooled samples is its measured latency
#: (the key in `measured`, from `jaxlat.STATISTICS`). The median is the datasets' figure;
#: on a machine whose speed wanders (other tenants of a shared host), the 10th percentile is the
#: repeatable one (see the NAS benchmark's report).
STATISTICS = {name: key for name, (_, key) in DATA_STATISTICS.items()}
STATISTIC_WORDS = {"median": "median", "p10": "10th percentile"}


def cli(name: str) -> str:
    """The path of one of the package's console scripts (`jaxlat`, `jaxlat-profile`): the one
    beside this interpreter, else the first on PATH."""
    here = Path(sys.executable).with_name(name)
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name}: not found beside {sys.executable} nor on PATH (pip install -e . first)")
    return found


def calibrate_to_records(pred: LatencyPredictor, records: Sequence[ArchRecord], label: str, *,
                         methods: Sequence[str] = ("reuse", "affine"), statistic: str = "median",
                         force: str | None = None) -> Calibration:
    """`jaxlat.transfer.calibrate` of `pred` on measured `records`; prints what was chosen
    (prefixed by `label`) and returns the `Calibration`."""
    from jaxlat.transfer import calibrate

    cal = calibrate(pred, records, statistic=statistic, methods=methods, force=force)
    print(f"{label} {cal.describe()}", flush=True)
    return cal
