"""The two packages stay independent: profilers without JAX, jaxlat without torch."""

import subprocess
import sys

import pytest

_BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError(f'{{name}} is blocked in this test')
sys.meta_path.insert(0, Block())
"""


def _run(blocked: set[str], body: str) -> subprocess.CompletedProcess:
    code = _BLOCK.format(blocked=blocked) + body
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_profilers_imports_and_samples_with_jax_blocked():
    res = _run(
        {"jax", "jaxlib", "flax", "optax"},
        "import profilers\n"
        "cfgs = profilers.sample_configs('conv2d', 5)\n"
        "assert 'torch' not in sys.modules, 'import profilers must not import torch'\n"
        "print(len(cfgs))\n",
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "5"


def test_profilers_measures_with_jax_blocked():
    res = _run(
        {"jax", "jaxlib", "flax", "optax"},
        "import profilers\n"
        "t = profilers.time_torch_module(profilers.make_config('add'), config=profilers.TimerConfig(min_run_time_s=0.01))\n"
        "print(t.stats.median_ms > 0)\n",
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "True"


def test_jaxlat_imports_with_torch_blocked():
    res = _run({"torch", "torchvision"}, "import jaxlat, profilers\nprint(jaxlat.__version__)\n")
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("pkg, heavy", [("profilers", ("torch", "jax", "matplotlib", "pandas")), ("jaxlat", ("torch", "matplotlib", "pandas", "sklearn"))])
def test_import_does_no_work(pkg, heavy):
    res = _run(set(), f"import {pkg}, sys\nprint(sorted(m for m in {heavy!r} if m in sys.modules))\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
