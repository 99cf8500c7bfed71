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

.PHONY: demo test setup docs clean reference-predictor reference-predictor-epyc reference-predictor-xeon

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: this CPU build is on disk; an unpinned torch pulls a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e '.[torch,tflite,onnx,reference,models,dev]'
	touch $(STAMP)

# Main job, the whole path on this machine's CPU: profile a fresh sample of every module type;
# train a predictor with per-type auto-selection on this project's reference datasets and fit the
# whole-model correction on the generated networks' end-to-end measurements; check it on the
# fresh modules; then measure real architectures end to end and print predicted against measured.
# The fresh sample is timed in one window a config (--protocol single), as the reference data were.
DEMO_MODELS := resnet18,mobilenet_v2,efficientnet_b0,convnext_tiny,deit_small,bert_base

demo: $(STAMP)
	$(BIN)/python -m profilers._cli torch --module all --n 20 --sampler lhs --seed 7 --max-gflops 0.5 \
	  --threads 1 --utilization 0,0.5 --protocol single --min-run-time 0.1 --out runs/demo/cpu_torch.parquet
	$(BIN)/python -m profilers._cli summary runs/demo/cpu_torch.parquet
	$(BIN)/python -m jaxlat._cli train --data data/cpu_torch_1t.parquet --data data/cpu_torch_1t_arch.parquet \
	  --select accuracy --folds 2 --epochs 150 --archs data/cpu_generated_models.jsonl --out runs/demo/predictor
	$(BIN)/python -m jaxlat._cli evaluate --predictor runs/demo/predictor --data runs/demo/cpu_torch.parquet
	$(BIN)/python -m profilers._cli zoo --model $(DEMO_MODELS) --batch 1 --out runs/demo/zoo.jsonl
	$(BIN)/python -m jaxlat._cli predict --predictor runs/demo/predictor --arch runs/demo/zoo.jsonl

# The shipped reference predictor (jaxlat/predictors/cpu_torch_1t), from the committed data.
reference-predictor: $(STAMP)
	$(BIN)/python -m jaxlat._cli train --data data/cpu_torch_1t.parquet --data data/cpu_torch_1t_arch.parquet \
	  --select accuracy --archs data/cpu_generated_models.jsonl --out jaxlat/predictors/cpu_torch_1t

# The second shipped predictor (jaxlat/predictors/epyc_torch_1t: AMD EPYC, 1 thread), from the committed data;
# it learns the 10th percentile of samples pooled over rounds (this VM's speed wanders, data/README.md).
reference-predictor-epyc: $(STAMP)
	$(BIN)/python -m jaxlat._cli train --data data/epyc_torch_1t.parquet --data data/epyc_torch_1t_arch.parquet \
	  --data data/epyc_torch_1t_space.parquet --select accuracy --archs data/epyc_generated_models.jsonl \
	  --archs data/epyc_generated_padded.jsonl \
	  --statistic p10 --out jaxlat/predictors/epyc_torch_1t

# The third shipped predictor (jaxlat/predictors/xeon_amx_torch_1t: an Intel Xeon with AMX, 1 thread),
# from the committed data, measured in the default profiling protocol (spread: 5 rounds a config);
# it learns the 10th percentile, the statistic that repeated better in the data's own retest.
reference-predictor-xeon: $(STAMP)
	$(BIN)/python -m jaxlat._cli train --data data/xeon_amx_torch_1t.parquet --data data/xeon_amx_torch_1t_arch.parquet \
	  --select accuracy --archs data/xeon_amx_generated_models.jsonl --archs data/xeon_amx_generated_padded.jsonl \
	  --statistic p10 --out jaxlat/predictors/xeon_amx_torch_1t

# Two test processes (pytest-xdist), a file each at a time, slowest files first (tests/conftest.py);
# TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# API reference from the docstrings, into site/ (open site/index.html).
docs: $(STAMP)
	$(BIN)/python -m pdoc -o site --docformat google jaxlat jaxlat.regressors jaxlat.nas jaxlat.transfer \
	  jaxlat.optimize profilers profilers.spaces profilers.zoo

clean:
	rm -rf runs/demo .pytest_cache site dist
