"""A user-defined module type for tests: registered without editing the catalogue."""

import time

from profilers import Costs, Field, ModuleSpec, register_module, register_torch_builder

NAME = "test_scale"


def _costs(v):
    numel = v["batch_size"] * v["size"]
    return Costs(1.0 * numel, 0.0, 1.0, 4.0 * numel, 4.0 * numel, 4.0)  # array-friendly


if NAME not in __import__("profilers").module_types():
    register_module(
        ModuleSpec(
            NAME,
            (
                Field("size", int, 64, 1, 1 << 20, log=True),
                # 'raise' makes the builder fail, 'hang' makes the forward sleep: failure paths.
                Field("behaviour", str, "ok", choices=("ok", "raise", "hang")),
            ),
            _costs,
            doc="x * 2, with switchable failures",
        )
    )


def _build(cfg, dtype):
    import torch

    class Scale(torch.nn.Module):
        def forward(self, x):
            if cfg["behaviour"] == "hang":
                time.sleep(3600)
            return x * 2

    if cfg["behaviour"] == "raise":
        raise RuntimeError("deliberate failure from the test plugin")
    return Scale(), (torch.randn(cfg["batch_size"], cfg["size"], dtype=dtype),)


register_torch_builder(NAME, _build, overwrite=True)
