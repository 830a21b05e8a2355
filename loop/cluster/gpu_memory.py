"""What a model needs on one GPU, from its config.json and weight files, before anything loads.

Used three ways: preflight refuses a `cluster.gpu_memory_budget_gib` that cannot hold the model
(and says what would fit); the sampler turns the budget into vLLM's `gpu_memory_utilization` of
the device it finds; and `max_num_seqs: None` becomes as many sequences as the KV cache holds at
full length, so vLLM does not admit more than it can finish and then preempt (recompute) them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30
# What vLLM needs beyond weights and KV cache: CUDA context, activations of a 16k-token step,
# sampler buffers, CUDA graphs. Measured on an H200 for the 4B shape: 1.3 to 2.2 GiB.
ENGINE_OVERHEAD_GIB = 2.5
# The trainer beyond its NF4 weights: LoRA weights + Adam states + activations of a 20k-token
# packed micro-batch with gradient checkpointing (9.4 GiB peak for the 4B shape, 2.6 of them weights).
TRAINER_OVERHEAD_GIB = 7.0
# What vLLM's gpu_memory_utilization does not count but nvidia-smi does (CUDA graphs' pools, cuBLAS
# workspaces, the engine's CUDA context): kept out of the engine's share of a budget. Measured on an
# H100 for the 4B shape in NF4: 21.0 GiB of utilization showed as 23.1 GiB device-wide (2.1 GiB).
UNCOUNTED_GIB = 2.5
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 * 1.0 + 1 / 256 * 4 / 64  # 4-bit codes + double-quantized absmax per 64


@dataclass(frozen=True)
class ModelSize:
    params: int            # all parameters
    embed_params: int      # the (tied) embedding's, which NF4 loading keeps in the compute dtype
    kv_bytes_per_token: int  # K and V of every layer in bf16/fp16

    def weight_bytes(self, nf4: bool, bytes_per_param: int = 2) -> int:
        if not nf4:
            return self.params * bytes_per_param
        return int(self.embed_params * bytes_per_param + (self.params - self.embed_params) * NF4_BYTES_PER_PARAM)


def model_size(model_dir: Path) -> ModelSize:
    """From config.json's shape (a Qwen3/Llama-style decoder); no weights are read."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    h, layers, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", heads)
    hd = cfg.get("head_dim") or h // heads
    inter = cfg["intermediate_size"]
    per_layer = h * hd * heads * 2 + h * hd * kv * 2 + 3 * h * inter + 2 * h + 2 * hd
    embed = vocab * h
    params = layers * per_layer + embed * (1 if cfg.get("tie_word_embeddings", False) else 2) + h
    return ModelSize(params=params, embed_params=embed * (1 if cfg.get("tie_word_embeddings", False) else 2),
                     kv_bytes_per_token=2 * layers * kv * hd * 2)


def sampler_need_gib(size: ModelSize, nf4: bool, max_model_len: int) -> float:
    """The least vLLM can start with: weights, one full-length sequence of KV cache, the overhead."""
    return (size.weight_bytes(nf4) + size.kv_bytes_per_token * max_model_len) / GIB + ENGINE_OVERHEAD_GIB


def trainer_need_gib(size: ModelSize) -> float:
    return size.weight_bytes(nf4=True) / GIB + TRAINER_OVERHEAD_GIB


def budget_problems(size: ModelSize, budget_gib: float, nf4_serving: bool, max_model_len: int) -> list[str]:
    """Why `budget_gib` cannot hold the sampler or the trainer (they take turns), one line each."""
    out = []
    need = sampler_need_gib(size, nf4_serving, max_model_len) + UNCOUNTED_GIB
    if need > budget_gib:
        other = sampler_need_gib(size, not nf4_serving, max_model_len) + UNCOUNTED_GIB
        hint = (f"; served in NF4 (cluster.sampler.quantization: bitsandbytes) it needs {other:.1f} GiB"
                if not nf4_serving and other < need else "")
        out.append(f"cluster.gpu_memory_budget_gib: {budget_gib:g} GiB cannot hold the sampler: "
                   f"{size.weight_bytes(nf4_serving) / GIB:.1f} GiB of {'NF4' if nf4_serving else 'bf16'} weights, "
                   f"one {max_model_len}-token sequence of KV cache, {ENGINE_OVERHEAD_GIB} GiB of engine overhead and "
                   f"{UNCOUNTED_GIB} GiB it does not count need {need:.1f} GiB{hint}; raise the budget or lower "
                   "model.max_model_len")
    t = trainer_need_gib(size)
    if t > budget_gib:
        out.append(f"cluster.gpu_memory_budget_gib: {budget_gib:g} GiB cannot hold the QLoRA trainer: about {t:.1f} "
                   f"GiB (NF4 weights + {TRAINER_OVERHEAD_GIB} GiB for LoRA, optimizer and a packed micro-batch); "
                   "raise the budget, or lower training.batch_size / training.max_seq_len")
    return out


def sampler_utilization(budget_gib: float, device_total_bytes: int) -> float:
    """vLLM's `gpu_memory_utilization` for a whole-device budget: the budget less what vLLM does not count."""
    return utilization(budget_gib - UNCOUNTED_GIB, device_total_bytes)


def utilization(budget_gib: float, device_total_bytes: int) -> float:
    """A share of the whole device for a budget in GiB (vLLM's `gpu_memory_utilization`, torch's memory fraction)."""
    return max(0.05, min(0.95, budget_gib * GIB / device_total_bytes))


# `max_num_seqs: auto` never goes above this: vLLM's largest CUDA-graph batch by default. On an H100 (NF4,
# 512-token samples, gpu_memory_utilization 0.78, benchmarks/issue26_concurrency.sh) one wave of 512 sequences
# ran at 17,781 tokens/s against 13,246 for 256, and 2,048 sequences at 512 at once went 1.24x faster than 256
# sequences. An earlier cap of 256 was set from 2,048 at a KV-sized 292 (0.91x of 256): that was 2,048 = 7 x 292 + 4,
# an eighth wave of 4 sequences taking a whole wave's steps, not concurrency that stopped paying.
AUTO_SEQS_CAP = 512


def max_num_seqs(size: ModelSize, nf4: bool, util: float, device_total_bytes: int, seq_tokens: int,
                 cap: int = AUTO_SEQS_CAP, floor: int = 16) -> int:
    """Sequences whose whole length (`seq_tokens`: prompt + max_tokens) fits the KV cache at once, at most `cap`."""
    kv = util * device_total_bytes - size.weight_bytes(nf4) - ENGINE_OVERHEAD_GIB * GIB
    fit = int(kv // (size.kv_bytes_per_token * max(seq_tokens, 1)))
    return max(floor, min(cap, fit))


def device_id() -> str:
    """The GPU this process uses, as NVML and nvidia-smi name it (Ray and vLLM set CUDA_VISIBLE_DEVICES to an
    index or a UUID)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return visible or "0"


def nvml_device():
    """(pynvml, handle) of this process's GPU; raises where NVML cannot answer (no binding, driver or device)."""
    try:
        import pynvml
    except ImportError:  # vLLM carries its own copy (the GPU image has no nvidia-ml-py)
        from vllm.third_party import pynvml  # type: ignore[no-redef]

    pynvml.nvmlInit()
    dev = device_id()
    return pynvml, (pynvml.nvmlDeviceGetHandleByUUID(dev) if not dev.isdigit()
                    else pynvml.nvmlDeviceGetHandleByIndex(int(dev)))


def device_memory() -> tuple[int, int] | None:
    """(used, total) bytes of this process's GPU, device-wide, from NVML: no CUDA context is made (one costs
    ~0.5 GiB that nothing else counts; torch.cuda.mem_get_info makes one). None without NVML or a GPU."""
    try:
        pynvml, h = nvml_device()
        info = pynvml.nvmlDeviceGetMemoryInfo(h)
        return int(info.used), int(info.total)
    except Exception:  # noqa: BLE001 - no nvidia-ml-py, no driver, or a device NVML does not know
        return None
