# Two entry points for a fresh clone; each sets up .venv first (once, or when deps change).
#   make demo   the main job on this machine's CPU
#   make test   the test suite (what CI runs)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Large malloc thresholds keep a measurement process's heap stable (see profilers/_device.py).
export MALLOC_MMAP_THRESHOLD_ := 2147483647
export MALLOC_TRIM_THRESHOLD_ := 2147483647

.PHONY: demo test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: this CPU build is on disk; an unpinned torch pulls a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e '.[jax,torch,reference,dev]'
	touch $(STAMP)

# Main job: profile a fresh sample of every module type on this CPU, train a MEDN predictor on
# the committed reference dataset of this CPU, and check it against the fresh measurements.
demo: $(STAMP)
	$(BIN)/python -m profilers._cli torch --module all --n 20 --sampler lhs --seed 7 --max-gflops 0.5 \
	  --threads 1 --utilization 0,0.5 --min-run-time 0.1 --out runs/demo/cpu_torch.parquet
	$(BIN)/python -m profilers._cli summary runs/demo/cpu_torch.parquet
	$(BIN)/python -m jaxlat._cli train --data data/cpu_torch_1t.parquet --epochs 200 --out runs/demo/predictor
	$(BIN)/python -m jaxlat._cli evaluate --predictor runs/demo/predictor --data runs/demo/cpu_torch.parquet

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf runs/demo .pytest_cache
