"""Measurement worker: a subprocess that builds and times modules, one JSON line per task.

Run by the runner as `python -m profilers._worker --backend torch --device cpu` (or
`--backend tflite --models DIR --delegate xnnpack`), with the
measurement environment (malloc thresholds) set before the interpreter starts. Isolation in a
process means a crash, an out-of-memory kill or a hang costs one config, not the run.

Protocol (newline-delimited JSON): the worker first writes `{"hello": {...}}` with library
versions and accelerator details; then for every task line
`{"config": {...}, "timer": {...}}` it writes `{"ok": true, "samples_ms": [...],
"number_per_run": n, "utilization_achieved": u|null}` or `{"ok": false, "error": "..."}`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from typing import Any

from ._catalogue import config_from_row
from ._timer import TimerConfig


def _torch_hello(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "libraries": {"torch": torch.__version__, "numpy": __import__("numpy").__version__},
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(
            gpu_name=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_multiprocessors=props.multi_processor_count,
            cuda=torch.version.cuda,
        )
    return info


class _TorchTasks:
    def __init__(self, device: str):
        import torch

        from . import _torch_backend as tb

        self.tb, self.torch, self.device = tb, torch, device
        torch.set_num_interop_threads(1)
        self.load = tb.CudaLoad(torch.device(device)) if device.startswith("cuda") else None

    def run(self, task: dict[str, Any]) -> dict[str, Any]:
        cfg = config_from_row(task["config"])
        timer = TimerConfig(**task.get("timer", {}))
        if self.load is not None:
            self.load.set(cfg["utilization"])
            self.load.reset()
        try:
            timing = self.tb.time_torch_module(cfg, device=self.device, config=timer)
        finally:
            achieved = self.load.achieved() if self.load is not None else None
            if self.device.startswith("cuda"):
                self.torch.cuda.empty_cache()
        return {
            "ok": True,
            "samples_ms": list(timing.samples_ms),
            "number_per_run": timing.number_per_run,
            "utilization_achieved": achieved,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m profilers._worker")
    parser.add_argument("--backend", required=True, choices=("torch", "tflite"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--plugin", action="append", default=[], help="module to import first (user module types)")
    parser.add_argument("--models", help="tflite: the models directory (jaxlat-profile tflite-export)")
    parser.add_argument("--delegate", default="xnnpack", help="tflite: xnnpack or none")
    parser.add_argument("--describe", action="store_true", help="measure the device descriptor for the hello")
    args = parser.parse_args(argv)
    # Keep the protocol channel clean: anything a library prints to fd 1 goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj: dict[str, Any]) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        for name in args.plugin:
            importlib.import_module(name)
        if args.backend == "torch":
            hello, tasks = _torch_hello(args.device), _TorchTasks(args.device)
        else:
            from . import _tflite_backend as tfl

            if not args.models:
                raise ValueError("the tflite worker needs --models DIR")
            tasks = tfl.WorkerTasks(args.models, args.delegate)
            hello = tfl.worker_hello(args.delegate)
    except Exception as e:  # the parent records this as every task's error
        send({"hello": None, "error": f"{type(e).__name__}: {e}"})
        return 1
    if args.describe and args.device == "cpu":
        from ._descriptor import measure_descriptor

        hello["descriptor"] = measure_descriptor(args.backend)
    send({"hello": hello})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = tasks.run(json.loads(line))
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            msg = f"{type(e).__name__}: {e}".strip()
            reply = {"ok": False, "error": msg[:2000]}
        send(reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
