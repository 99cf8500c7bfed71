import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Few examples in CI (2 cores), more when asked for: HYPOTHESIS_PROFILE=thorough.
settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

TESTS_DIR = Path(__file__).parent


def pytest_configure(config):
    """Made once by the main process, before test workers start, and inherited by the workers
    (`pytest -n`), notebook kernels and CLI subprocesses through the environment; removed when
    the run ends:

    - `JAXLAT_HOME`, an empty one: the tests never see (or register into) the user's
      calibrated predictors in `~/.cache/jaxlat`;
    - one fresh persistent XLA compilation cache, so that the processes reuse each other's
      programs instead of compiling them again (a `JAX_COMPILATION_CACHE_DIR` of your own is
      kept, and left in place).
    """
    if hasattr(config, "workerinput"):
        return
    run_dir = Path(tempfile.mkdtemp(prefix="jaxlat-test-run-"))
    config._jaxlat_run_dir = run_dir
    os.environ["JAXLAT_HOME"] = str(run_dir / "home")
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(run_dir / "xla-cache")
        config._jaxlat_xla_cache = True
        # Small programs too: the tests' programs are small and compiled in many processes.
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.05"


#: Test files that take the longest (minutes, mostly notebooks, searches and real measurements),
#: run first: with `pytest -n 2 --dist loadfile` a long file started last would leave the other
#: worker idle at the end.
SLOW_FIRST = ("test_notebooks.py", "test_nas.py", "test_calibrate.py", "test_selection.py", "test_cli.py",
              "test_models.py", "test_transfer.py", "test_tflite.py", "test_predict.py", "test_optimize.py",
              "test_runner.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise


def pytest_unconfigure(config):
    run_dir = getattr(config, "_jaxlat_run_dir", None)
    if run_dir is not None:
        shutil.rmtree(run_dir, ignore_errors=True)
        os.environ.pop("JAXLAT_HOME", None)
        if getattr(config, "_jaxlat_xla_cache", False):
            os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
            os.environ.pop("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", None)



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
