import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Few examples in CI (2 cores), more when asked for: HYPOTHESIS_PROFILE=thorough.
settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

TESTS_DIR = Path(__file__).parent

# The tests' JAX programs are small and run a few steps, so XLA's compile time dominates them:
# compile without LLVM optimization (about half the compile time; results are the same). Set here,
# before any JAX backend starts, so notebook kernels and CLI subprocesses inherit it; an
# XLA_FLAGS of your own is kept. Benchmarks do not go through this file.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")



@pytest.fixture
def plugin_path(monkeypatch):
    """Makes tests/plugins importable here and in worker subprocesses."""
    path = str(TESTS_DIR / "plugins")
    monkeypatch.syspath_prepend(path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([path, os.environ.get("PYTHONPATH", "")]))
    return path


@pytest.fixture(autouse=True)
def _measurement_env(monkeypatch):
    # Same heap settings as the profilers' worker processes, for in-process measurements.
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "2147483647")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "2147483647")


def python() -> str:
    return sys.executable
