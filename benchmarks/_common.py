"""Shared benchmark plumbing: describe the machine, write results as JSON and Markdown, calibrate
a predictor to this machine from measured networks."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from jaxlat._data import STATISTICS as DATA_STATISTICS
from jaxlat._data import measured_ms


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
#: (the key in `measured`, from `jaxlat._data.STATISTICS`). The median is the datasets' figure;
#: on a machine whose speed wanders (other tenants of a shared host), the 10th percentile is the
#: repeatable one (see the NAS benchmark's report).
STATISTICS = {name: key for name, (_, key) in DATA_STATISTICS.items()}
STATISTIC_WORDS = {"median": "median", "p10": "10th percentile"}


def adapt_to_records(pred: Any, records: list, label: str, methods: tuple[str, ...] = ("reuse", "affine"),
                     statistic: str = "median", force: str | None = None) -> tuple[dict[str, Any], Any]:
    """Few-shot transfer of `pred` to this machine (`jaxlat.transfer.adapt` among `methods`, chosen
    by leave-one-out error, or `force`d: every candidate is still scored and reported) from
    measured architecture records; prints what was chosen and returns `(summary, adapted)`: the
    summary (JSON-ready: method, log-affine map or refitted composition where the method has
    one, report, measured and predicted latencies) and the adapted predictor."""
    import numpy as np

    from jaxlat.transfer import adapt, predictor_proxy

    ms = [measured_ms(r, statistic) for r in records]
    proxy = predictor_proxy(pred)
    scored = adapt(records, ms, [proxy], methods=tuple(dict.fromkeys(methods + ((force,) if force else ()))))
    adapted = adapt(records, ms, [proxy], methods=(force,)) if force else scored
    rho = scored.report["spearman_primary"]
    log_affine = list(adapted.log_affine()) if adapted.method in ("reuse", "affine") else None
    composition = dict(adapted.predictor().composition.coef) if adapted.method == "recompose" else None
    form = (f"target ms = {np.exp(log_affine[0]):.3f} * predicted ** {log_affine[1]:.3f}" if log_affine else
            "composition refitted: " + ", ".join(f"{k} {v:.4g}" for k, v in composition.items()) if composition else
            "a learned correction on the predictor")
    how = "forced" if force else "by leave-one-out error"
    print(f"{label} calibration on {len(ms)} measured networks: {adapted.method} ({how}), {form} (Spearman {rho:.3f}; "
          "LOO log RMSE " + ", ".join(f"{m} {v['log_rmse']:.3f}" for m, v in scored.report["candidates"].items()) + ")",
          flush=True)
    summary = {"k": len(ms), "statistic": statistic, "method": adapted.method, "forced": bool(force),
               "log_affine": log_affine, "composition": composition, "spearman": rho,
               "report": {**scored.report, "chosen": adapted.method}, "measured_ms": ms,
               "predicted_ms": list(map(float, proxy.fn(records)))}
    return summary, adapted


def calibrate_to_records(pred: Any, records: list, label: str, statistic: str = "median") -> dict[str, Any]:
    """`adapt_to_records` restricted to maps that stay affine in log latency (`reuse`, `affine`),
    which a JAX latency function can apply; returns the summary."""
    return adapt_to_records(pred, records, label, statistic=statistic)[0]


#: Ops that add little latency (chosen with falling probability by `spanning_archs`).
LIGHT_OPS = ("skip", "none", "skip_connect", "avg_pool_3x3")


def spanning_archs(space: Any, k: int, seed: int = 0, *, corner_widths: bool = False) -> list:
    """`k` random architectures of a `MobileSpace` or the NAS-Bench-201 space that span its
    latency range, for calibration: the chance that a layer takes a light op (of `LIGHT_OPS`;
    else a convolution, uniformly among them) runs evenly from 0.9 down to 0 over them; widths
    uniform. Uniform random architectures cluster in the middle of the range, where a
    correction fitted on them has to extrapolate to the light and the heavy ends.

    `corner_widths`: every second architecture has all its stages at one end of the width range
    (the widest, then the narrowest, in turn), light to heavy like the rest: where
    `jaxlat.nas.fit_to_target`, which scales all stages by one factor, often ends."""
    import numpy as np

    from profilers.spaces import NB201_EDGES, MobileArch, MobileSpace, Nb201Arch

    rng = np.random.default_rng(seed)
    light = [op for op in space.ops if op in LIGHT_OPS]
    heavy = [op for op in space.ops if op not in LIGHT_OPS]
    mobile = isinstance(space, MobileSpace)
    n = len(space.layers()) if mobile else len(NB201_EDGES)
    out = []
    for i, p_light in enumerate(np.linspace(0.9 if light else 0.0, 0.0, k)):
        ops = tuple((light[0] if len(light) == 1 else str(rng.choice(light))) if rng.random() < p_light
                    else str(rng.choice(heavy)) for _ in range(n))
        if not mobile:
            out.append(space.check(Nb201Arch(ops)))
            continue
        widths = tuple(float(round(rng.uniform(*space.width_range), 3)) for _ in space.stages) if space.width_range else ()
        if corner_widths and widths and i % 2 == 1:
            widths = (float(space.width_range[1] if i % 4 == 1 else space.width_range[0]),) * len(widths)
        out.append(space.check(MobileArch(ops, widths)))
    return out
