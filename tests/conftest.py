"""Shared fixtures. Integration tests use the real tiny model, vLLM, Ray, bitsandbytes and TRL."""
from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Small enough for a 2-core CPU, big enough that every stage does real work: the tiny
# model solves 2-digit addition often, so rounds accept chains and train.
TINY_RUN = {
    "run": {"name": "t", "seed": 0},
    "model": {"path": "builtin:tiny-qwen3", "max_model_len": 1024, "dtype": "float32"},
    "sampling": {"n": 4, "temperature": 1.0, "max_tokens": 144},  # the warm start is sure of itself: 0.7 left most 5-digit problems at a pass rate of 0 or 1
    # add at 2 digits (the tiny model solves it), sub at 5 (it solves about 40 %: export's RL
    # groups need train problems with a pass rate strictly between 0 and 1; a 5-digit chain is ~125 tokens).
    "generators": [{"family": "arithmetic",
                    "categories": {"add": {"budget": 12, "difficulty": 2}, "sub": {"budget": 8, "difficulty": 5}}}],
    "heldout": {"per_category": 8},
    "verifiers": [{"name": "exact_match"}, {"name": "format", "required": False},
                  {"name": "process", "required": False}],
    "policies": {"acceptance": {"name": "verified"}, "targeting": {"name": "uniform"}, "stopping": {"name": "never"}},
    "training": {"epochs": 1, "batch_size": 8, "max_seq_len": 192, "learning_rate": 0.002},
    "loop": {"rounds": 2},
}


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (the benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def tiny_run_config():
    """A function: (state_dir, **section overrides) -> config dict."""
    def make(state_dir: Path, **over) -> dict:
        cfg = copy.deepcopy(TINY_RUN)
        cfg["run"]["state_dir"] = str(state_dir)
        for k, v in over.items():
            cfg[k] = v
        return cfg
    return make


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
