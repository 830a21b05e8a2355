"""The consumer profile (issue 26): a whole-device GPU memory budget, NF4 serving, KV-sized max_num_seqs.
CPU tests of the arithmetic and the config/preflight checks; the measured side is benchmarks/gpu_h200.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from loop.cluster import gpu_memory as gm
from loop.config import ROOT, TINY_MODEL, load_config
from loop.preflight import check_gpu_budget

GIB = 2**30
QWEN3_4B = dict(hidden_size=2560, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                intermediate_size=9728, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=40960)


@pytest.fixture
def qwen3_4b_dir(tmp_path) -> Path:
    d = tmp_path / "qwen3-4b"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "qwen3", **QWEN3_4B}))
    return d


def test_the_model_size_of_qwen3_4b_comes_from_its_config(qwen3_4b_dir):
    s = gm.model_size(qwen3_4b_dir)
    assert 4.0e9 < s.params < 4.05e9  # Qwen3-4B: 4.02 B parameters
    assert s.kv_bytes_per_token == 36 * 8 * 128 * 2 * 2
    assert 7.4 < s.weight_bytes(nf4=False) / GIB < 7.6
    # NF4 keeps the tied embedding in bf16: a third of bf16's bytes, not a quarter
    assert 2.3 < s.weight_bytes(nf4=True) / GIB < 2.6


def test_max_num_seqs_is_what_the_kv_cache_holds_at_full_length(qwen3_4b_dir):
    s = gm.model_size(qwen3_4b_dir)
    total = 80 * GIB
    util = gm.utilization(22, total)
    assert util == pytest.approx(22 / 80)
    bf16, nf4 = (gm.max_num_seqs(s, q, util, total, 1024 + 256) for q in (False, True))
    assert 16 <= bf16 < nf4 <= gm.AUTO_SEQS_CAP  # NF4's freed weights become KV cache
    kv = util * total - s.weight_bytes(False) - gm.ENGINE_OVERHEAD_GIB * GIB
    assert bf16 * s.kv_bytes_per_token * 1280 <= kv < (bf16 + 1) * s.kv_bytes_per_token * 1280
    assert gm.max_num_seqs(s, False, 0.9, 141 * GIB, 300) == gm.AUTO_SEQS_CAP == 512  # room for more, capped


def test_a_budget_too_small_for_the_model_is_refused_with_what_would_fit(qwen3_4b_dir):
    s = gm.model_size(qwen3_4b_dir)
    assert gm.budget_problems(s, 22, nf4_serving=True, max_model_len=4096) == []
    bad = gm.budget_problems(s, 9, nf4_serving=False, max_model_len=4096)
    assert any("cannot hold the sampler" in b and "bf16 weights" in b and "bitsandbytes" in b for b in bad), bad
    assert any("cannot hold the QLoRA trainer" in b for b in bad), bad


def _consumer(model_dir: Path, *more: str):
    return load_config(ROOT / "configs" / "qwen3-4b-24gb.yaml", [f"model.path={model_dir}", *more])


def test_the_24gb_config_serves_nf4_within_22_gib_and_passes_the_budget_check(qwen3_4b_dir):
    cfg = _consumer(qwen3_4b_dir)
    assert cfg.cluster.gpu_memory_budget_gib == 22 and cfg.cluster.gpu_sharing == "sleep"
    assert cfg.serving_quantization() == "bitsandbytes" and cfg.cluster.sampler.max_num_seqs == "auto"
    problems: list[str] = []
    check_gpu_budget(cfg, problems)
    assert problems == []
    small: list[str] = []
    check_gpu_budget(_consumer(qwen3_4b_dir, "cluster.gpu_memory_budget_gib=6"), small)
    assert small and all(p.startswith("cluster.gpu_memory_budget_gib: 6 GiB cannot hold") for p in small)


@pytest.mark.parametrize("override, says", [
    ("cluster.gpu_sharing=none", "needs cluster.gpu_sharing: sleep"),
    ("cluster.sampler.lora_mode=merged", "NF4 serving .* does not take"),
    ("cluster.sampler.num_gpus=0", "set cluster.sampler.num_gpus and cluster.trainer_num_gpus"),
])
def test_a_budget_without_one_shared_gpu_is_a_config_error(qwen3_4b_dir, override, says):
    with pytest.raises(ValueError, match=says):
        _consumer(qwen3_4b_dir, override)


def test_nf4_serving_is_refused_without_a_gpu_and_auto_means_none_on_the_cpu():
    cfg = load_config(ROOT / "configs" / "default.yaml")
    assert cfg.cluster.sampler.num_gpus == 0 and cfg.serving_quantization() == "none"
    with pytest.raises(ValueError, match="bitsandbytes serves NF4 weights on a GPU only"):
        load_config(ROOT / "configs" / "default.yaml", ["cluster.sampler.quantization=bitsandbytes"])
    with pytest.raises(ValueError, match="quantization"):
        load_config(ROOT / "configs" / "default.yaml", ["cluster.sampler.quantization=gptq"])


def test_the_tiny_model_size_matches_its_weights():
    s = gm.model_size(TINY_MODEL)
    from safetensors import safe_open

    with safe_open(str(TINY_MODEL / "model.safetensors"), "pt") as f:
        n = sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())
    assert s.params == n


def _prod(shape) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def test_the_hf_baseline_batch_is_bounded_by_free_memory(qwen3_4b_dir):
    """benchmarks/gpu_h200.py's transformers-generate baseline ran out of memory with 256 prompts x 8 in one
    batch: it now runs in batches whose KV cache and logits fit half the free memory."""
    bench = _bench()
    size = gm.model_size(qwen3_4b_dir)
    plenty = bench.hf_batch_prompts(str(qwen3_4b_dir), 200, 512, 8, 70 * GIB)
    tight = bench.hf_batch_prompts(str(qwen3_4b_dir), 200, 512, 8, 8 * GIB)
    assert plenty == 256 // 8  # capped at 256 sequences
    assert 1 <= tight < plenty
    per_seq = size.kv_bytes_per_token * 712 + 8 * QWEN3_4B["vocab_size"]
    assert tight * 8 * per_seq <= 4 * GIB  # half of the free 8 GiB
    assert bench.hf_batch_prompts(str(qwen3_4b_dir), 4000, 4000, 8, 1 * GIB) == 1  # never zero


def _bench():
    from tests.conftest import load_benchmark

    return load_benchmark("gpu_h200")


def test_scale_engines_and_the_summary_of_the_fullsize_part():
    """--scale-engines names engines by their max_num_seqs; the fullsize part's own loop keys do not overwrite
    the loop part's in the summary."""
    bench = _bench()
    assert bench.scale_engines("kv_sized,seqs256") == {"kv_sized": ["cluster.sampler.max_num_seqs=auto"],
                                                       "seqs256": ["cluster.sampler.max_num_seqs=256"]}
    assert bench.scale_engines("vllm_default") == {"vllm_default": ["cluster.sampler.max_num_seqs=null"]}
    for bad in ("kv", "seqs0", "seqsX"):
        with pytest.raises(SystemExit, match="unknown engine"):
            bench.scale_engines(bad)
    out = bench.summary({"loop": {"loop_rounds_completed": 2},
                         "fullsize": {"loop_rounds_completed": 1, "fullsize_rounds_completed": 1}})
    assert out["loop_rounds_completed"]["value"] == 2 and out["fullsize_rounds_completed"]["met"] is True


def test_device_memory_makes_no_cuda_context_and_is_none_without_nvml(monkeypatch):
    """The sampler actor reads the device through NVML (a CUDA context would cost ~0.5 GiB nothing counts);
    on a machine without a GPU driver it says None and the caller falls back."""
    import sys

    import torch

    monkeypatch.setitem(sys.modules, "pynvml", None)  # no nvidia-ml-py
    got = gm.device_memory()
    assert got is None or (len(got) == 2 and got[0] <= got[1])
    if not torch.cuda.is_available():
        assert got is None
