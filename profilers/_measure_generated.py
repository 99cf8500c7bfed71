"""`python -m profilers._measure_generated < spec.json`: time generated networks in a process of
their own, for callers that must not time them in theirs (`jaxlat calibrate`, whose process holds
JAX). Torch only; the caller sets the measurement environment (`profilers.MEASUREMENT_ENV`).

The spec, one JSON object on stdin:

    {"out": "networks.jsonl",                       # records file, resumed by name
     "archs": [{"seed": 3, "family": "mbconv", "explicit_padding": true}, ...],
     "batch_sizes": [1, 8], "timer": {...TimerConfig fields...}, "rounds": 1}
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any


def measure_generated(spec: Mapping[str, Any]) -> int:
    """Measure every network of `spec` at every batch size into `spec["out"]`; the count."""
    from ._models import generated_jobs, profile_many
    from ._timer import TimerConfig

    jobs = []
    for a in spec["archs"]:
        jobs += generated_jobs([a["seed"]], spec["batch_sizes"], family=a["family"],
                               explicit_padding=a["explicit_padding"])
    records = profile_many(spec["out"], jobs, timer=TimerConfig(**spec["timer"]), progress=False,
                           rounds=spec["rounds"])
    return len(records)


if __name__ == "__main__":
    measure_generated(json.load(sys.stdin))
