"""Sampler stage tokens/s against calling `LLM.generate` directly on the same prompts.

    python benchmarks/sampler_throughput.py [--prompts 128] [--n 4] [--max-tokens 96]

Both run on this machine in this one script: first vLLM's `LLM` in-process (the baseline),
then the loop's sampler stage (Ray actor + chunked calls + progress), each on the same
prompts after a warm-up. Prints output tokens/s for both and the ratio.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def prompts(k: int) -> list[list[dict]]:
    import generators  # noqa: F401
    from generators.base import GENERATORS

    gen = GENERATORS.build("arithmetic", {})
    ps = gen.generate("add", 3, k, seed=1) + gen.generate("sub", 3, k, seed=2)
    return [[m.model_dump() for m in p.prompt] for p in ps[:k]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=96)
    args = ap.parse_args()
    from loop.config import load_config
    from loop.run.logs import setup_logging

    setup_logging()
    cfg = load_config("configs/default.yaml", [f"sampling.n={args.n}", f"sampling.max_tokens={args.max_tokens}"])
    ps = prompts(args.prompts)

    from vllm import LLM, SamplingParams

    llm = LLM(model=cfg.model.resolved_path(), max_model_len=cfg.model.max_model_len, dtype=cfg.model.dtype,
              seed=0, enable_lora=True, max_lora_rank=16, max_loras=2, enforce_eager=True)
    sp = SamplingParams(n=args.n, temperature=1.0, max_tokens=args.max_tokens)
    llm.chat(ps[:8], sp, use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    outs = llm.chat(ps, sp, use_tqdm=False)
    direct_s = time.perf_counter() - t0
    direct_tok = sum(len(c.token_ids) for o in outs for c in o.outputs)
    del llm, outs
    gc.collect()

    from loop.cluster.driver import Cluster

    cluster = Cluster(cfg)
    try:
        cluster.generate(ps[:8], n=args.n, temperature=1.0, max_tokens=args.max_tokens, seed=0, adapter=None,
                         desc="warm-up")
        t0 = time.perf_counter()
        res = cluster.generate(ps, n=args.n, temperature=1.0, max_tokens=args.max_tokens, seed=0, adapter=None,
                               desc="sampler stage")
        stage_s = time.perf_counter() - t0
        stage_tok = sum(c["num_tokens"] for o in res for c in o)
    finally:
        cluster.shutdown()
    d, s = direct_tok / direct_s, stage_tok / stage_s
    print(f"\nprompts {len(ps)} x n={args.n}, max_tokens {args.max_tokens}, model {cfg.model.path}")
    print(f"LLM.generate direct : {direct_tok:7d} tokens in {direct_s:6.2f} s = {d:8.0f} tokens/s")
    print(f"loop sampler stage  : {stage_tok:7d} tokens in {stage_s:6.2f} s = {s:8.0f} tokens/s")
    print(f"ratio stage/direct  : {s / d:.2f}")


if __name__ == "__main__":
    main()
