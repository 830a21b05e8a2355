"""The sampler worker: one vLLM engine for the whole run, adapters hot-loaded per round.

`SamplerWorker` is a plain class; `loop.cluster` wraps it as a Ray actor. Each round's
adapter is registered under a new name and id (`LoRARequest`), so the engine is never
rebuilt. On one GPU shared with the trainer, `sleep()`/`wake_up()` free its memory.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

log = logging.getLogger(__name__)


class SamplerWorker:
    def __init__(self, model_path: str, max_model_len: int, dtype: str, seed: int, max_lora_rank: int,
                 kv_cache_gib: int, gpu_memory_utilization: float, enforce_eager: bool, sleep_mode: bool):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        from vllm import LLM

        t0 = time.time()
        kwargs: dict[str, Any] = dict(
            model=model_path, max_model_len=max_model_len, seed=seed, enable_lora=True,
            max_lora_rank=max_lora_rank, max_loras=2, enforce_eager=enforce_eager,
        )
        if dtype != "auto":
            kwargs["dtype"] = dtype
        import torch

        if torch.cuda.is_available():
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
            kwargs["enable_sleep_mode"] = sleep_mode
        self.llm = LLM(**kwargs)
        self.adapters: dict[str, Any] = {}
        self.build_seconds = time.time() - t0
        log.info("vLLM engine for %s built in %.1fs", model_path, self.build_seconds)

    def ready(self) -> float:
        return self.build_seconds

    def load_adapter(self, name: str, path: str) -> None:
        """Register an adapter under a new name; ids are never reused, so vLLM never
        serves a stale cached adapter of the same id."""
        from vllm.lora.request import LoRARequest

        if name not in self.adapters:
            self.adapters[name] = LoRARequest(name, len(self.adapters) + 1, path)

    def generate(self, prompts: list[list[dict]], n: int, temperature: float, top_p: float, max_tokens: int,
                 seed: int, adapter: str | None) -> list[list[dict]]:
        """Per prompt, `n` completions as {text, num_tokens, finish_reason}."""
        from vllm import SamplingParams

        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
        lora = self.adapters[adapter] if adapter else None
        outs = self.llm.chat(prompts, params, lora_request=lora, use_tqdm=False)
        return [[{"text": c.text, "num_tokens": len(c.token_ids), "finish_reason": c.finish_reason or "stop"}
                 for c in o.outputs] for o in outs]

    def prompt_logprobs(self, token_ids: list[list[int]], adapter: str | None) -> list[list[float]]:
        """Log-probability of each token given its prefix (index 0 is None -> skipped)."""
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        lora = self.adapters[adapter] if adapter else None
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=t) for t in token_ids], params,
                                 lora_request=lora, use_tqdm=False)
        res = []
        for ids, o in zip(token_ids, outs):
            res.append([lp[tok].logprob for tok, lp in zip(ids[1:], o.prompt_logprobs[1:])])
        return res

    def sleep(self) -> None:
        self.llm.sleep(level=1)

    def wake_up(self) -> None:
        self.llm.wake_up()
