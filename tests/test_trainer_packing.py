"""Padding-free packed training: per-sequence attention is exact, and the loop's trainer trains with it."""
from __future__ import annotations

import pytest
import torch

from loop.config import TINY_MODEL, LoraCfg, QuantCfg, TrainingCfg


def _tiny(attn: str):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)
    cfg._attn_implementation = attn
    return Qwen3ForCausalLM(cfg).eval()


def test_segment_attention_matches_separate_sequences():
    from loop.kernels.packed_attention import register

    name = register()
    packed, plain = _tiny(name), _tiny("sdpa")
    packed.load_state_dict(plain.state_dict())
    seqs = [torch.randint(0, 97, (n,)) for n in (7, 3, 12)]
    ids = torch.cat(seqs)[None]
    pos = torch.cat([torch.arange(len(s)) for s in seqs])[None]
    cu = torch.tensor([0, 7, 10, 22], dtype=torch.int32)
    with torch.no_grad():
        got = packed(input_ids=ids, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                     max_length_q=12, max_length_k=12).logits[0]
        want = torch.cat([plain(input_ids=s[None]).logits[0] for s in seqs])
        # Without the boundaries the same row attends across sequences: a different answer.
        leaked = plain(input_ids=ids).logits[0]
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(leaked[7:], want[7:], atol=1e-3)


def test_segment_attention_falls_back_to_masked_sdpa_for_padded_batches():
    from loop.kernels.packed_attention import register

    name = register()
    packed, plain = _tiny(name), _tiny("sdpa")
    packed.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 97, (2, 9))
    mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4])
    with torch.no_grad():
        assert torch.allclose(packed(input_ids=ids, attention_mask=mask).logits,
                              plain(input_ids=ids, attention_mask=mask).logits, atol=1e-5)


@pytest.mark.integration
def test_packed_qlora_training_counts_real_tokens(tmp_path):
    import generators  # noqa: F401
    from generators.base import GENERATORS
    from loop.cluster.trainer import TrainerWorker

    gen = GENERATORS.build("arithmetic", {})
    problems = gen.generate("add", 3, 24, seed=3)
    examples = [{"prompt": [m.model_dump() for m in p.prompt],
                 "completion": [{"role": "assistant", "content": p.reference.chain}]} for p in problems]
    tr = TrainingCfg(epochs=2, batch_size=2, learning_rate=5e-3, max_seq_len=256, packing=True).model_dump()
    m = TrainerWorker(str(TINY_MODEL), QuantCfg().model_dump(), LoraCfg().model_dump(), tr).train(
        examples, str(tmp_path), None, seed=0)
    assert (tmp_path / "adapter_model.safetensors").exists()
    # The byte-level tiny tokenizer: a chain's tokens are at least its characters.
    assert m["tokens"] >= sum(len(p.reference.chain) for p in problems)
    assert 0 < m["loss_tokens"] < m["tokens"]
    assert m["last_loss"] < m["first_loss"]
    assert m["packed_attention"] == "segments"  # the CPU's kernel (varlen serves CUDA in bf16/fp16)
    # every LoRA linear took the one-addmm forward (loop/kernels/fused_lora.py), none fell back to PEFT's
    assert m["fused_lora_layers"] > 0 and m["lora_calls"]["fused"] > 0 and m["lora_calls"]["peft"] == 0
    assert m["fused_kernels"] == "off"  # Liger's kernels are for CUDA
    # 24 chains of ~60-90 tokens packed into rows of 256: far fewer steps than 24 / 2 per epoch.
    assert m["steps"] < 24 // 2 * 2


def test_group_by_length_cuts_padding(tmp_path):
    """Chains of two very different lengths: batches grouped by length carry far less padding
    than random ones (measured on the trainer's own dataloader), and training still runs."""
    import generators  # noqa: F401
    from generators.base import GENERATORS
    from loop.cluster.trainer import TrainerWorker

    gen = GENERATORS.build("arithmetic", {})
    # (transformers sorts "megabatches" of up to 50 batches, fewer for a small set: 96 chains -> 6)
    problems = gen.generate("add", 1, 48, seed=3) + gen.generate("add", 5, 48, seed=4)
    examples = [{"prompt": [m.model_dump() for m in p.prompt],
                 "completion": [{"role": "assistant", "content": p.reference.chain}]} for p in problems]
    shares = {}
    for grouped in (False, True):
        tr = TrainingCfg(epochs=1, batch_size=4, learning_rate=5e-3, max_seq_len=512,
                         group_by_length=grouped).model_dump()
        m = TrainerWorker(str(TINY_MODEL), QuantCfg().model_dump(), LoraCfg().model_dump(), tr).train(
            examples, str(tmp_path / str(grouped)), None, seed=0)
        assert m["group_by_length"] is grouped and m["steps"] == 24
        shares[grouped] = m["padding_share"]
    assert 0 <= shares[True] < shares[False] / 2, shares


def _packed_batch(lens=(7, 3, 12), pad: int = 0):
    seqs = [torch.randint(0, 97, (n,)) for n in lens]
    ids = torch.cat(seqs + ([torch.zeros(pad, dtype=torch.long)] if pad else []))[None]
    pos = torch.cat([torch.arange(len(s)) for s in seqs] + ([torch.arange(pad)] if pad else []))[None]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    return seqs, ids, pos, cu


def test_boundaries_are_read_once_per_forward_not_per_layer():
    """A device->host read of the boundaries in every layer stalls a GPU; one read per forward
    pass (per cu tensor) serves all layers, here 2."""
    from loop.kernels import packed_attention as pa

    name = pa.register()
    model = _tiny(name)
    _, ids, pos, cu = _packed_batch()
    before = dict(pa.CALLS)
    with torch.no_grad():
        model(input_ids=ids, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=12, max_length_k=12)
        model(input_ids=ids, position_ids=pos, cu_seq_lens_q=cu.clone(), cu_seq_lens_k=cu, max_length_q=12,
              max_length_k=12)
    assert pa.CALLS["segments"] - before["segments"] == 4
    assert pa.CALLS["bounds_reads"] - before["bounds_reads"] == 2


def _reference_varlen(signature: str):
    """Stands in for PyTorch's CUDA-only varlen flash kernel in a CPU test of the code around it:
    causal attention per sequence of a [T, heads, dim] row, with either of torch's signatures."""
    import torch.nn.functional as F

    seen = []

    def attend(q, k, v, cu_q, cu_k, max_q, max_k, scale):
        b = cu_q.tolist()
        assert max_q == max(e - s for s, e in zip(b[:-1], b[1:])) and cu_q.dtype == torch.int32
        outs = [F.scaled_dot_product_attention(q[s:e].transpose(0, 1), k[s:e].transpose(0, 1), v[s:e].transpose(0, 1),
                                               is_causal=True, scale=scale).transpose(0, 1)
                for s, e in zip(b[:-1], b[1:])]
        seen.append(b)
        return torch.cat(outs)

    if signature == "window":  # torch >= 2.11 public API
        def varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, *, return_aux=None, scale=None, window_size=(-1, -1)):
            assert tuple(window_size) == (-1, 0)
            return attend(q, k, v, cu_q, cu_k, max_q, max_k, scale)
    else:
        def varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, is_causal=False, return_aux=None, scale=None):
            assert is_causal
            return attend(q, k, v, cu_q, cu_k, max_q, max_k, scale)
    return varlen_attn, seen


@pytest.mark.parametrize("signature", ["window", "is_causal"])
@pytest.mark.parametrize("pad", [0, 5])
def test_varlen_path_lays_out_the_row_for_the_kernel(monkeypatch, signature, pad):
    """The varlen path's layout ([1, heads, T, dim] -> [T, heads, dim] and back), its int32
    boundaries (a trailing pad becomes a sequence of its own) and both torch signatures."""
    from loop.kernels import packed_attention as pa

    name = pa.register()
    packed, plain = _tiny(name), _tiny("sdpa")
    packed.load_state_dict(plain.state_dict())
    fn, seen = _reference_varlen(signature)
    monkeypatch.setattr(pa, "_varlen_fn", lambda: fn)
    monkeypatch.setattr(pa, "use_varlen", lambda query: True)
    seqs, ids, pos, cu = _packed_batch(pad=pad)
    before = pa.CALLS["varlen"]
    with torch.no_grad():
        got = packed(input_ids=ids, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                     max_length_q=12, max_length_k=12).logits[0]
        want = torch.cat([plain(input_ids=s[None]).logits[0] for s in seqs])
    assert pa.CALLS["varlen"] - before == 2
    assert seen[0] == [0, 7, 10, 22] + ([27] if pad else [])
    assert torch.allclose(got[:22], want, atol=1e-5)


def test_a_failing_varlen_kernel_falls_back_to_segments_and_says_so(monkeypatch, caplog):
    from loop.kernels import packed_attention as pa

    name = pa.register()
    packed, plain = _tiny(name), _tiny("sdpa")
    packed.load_state_dict(plain.state_dict())

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(pa, "_varlen_fn", lambda: broken)
    monkeypatch.setattr(pa, "_varlen_broken", False)
    real_use = pa.use_varlen
    monkeypatch.setattr(pa, "use_varlen", lambda query: not pa._varlen_broken)
    seqs, ids, pos, cu = _packed_batch()
    with torch.no_grad(), caplog.at_level("WARNING", logger="loop.kernels.packed_attention"):
        got = packed(input_ids=ids, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                     max_length_q=12, max_length_k=12).logits[0]
        want = torch.cat([plain(input_ids=s[None]).logits[0] for s in seqs])
    assert torch.allclose(got, want, atol=1e-5)
    assert pa._varlen_broken and sum("varlen flash attention failed" in r.message for r in caplog.records) == 1
    assert real_use(torch.zeros(1)) is False  # and the real check now says no (CPU, and broken)
