"""The fused LoRA forward (loop/kernels/fused_lora.py) computes PEFT's LoRA exactly, forward and backward,
on plain and bitsandbytes 4-bit layers, and hands every case it does not cover back to PEFT."""
from __future__ import annotations

import copy

import pytest
import torch

from loop.kernels import fused_lora


def _model(four_bit: bool, **lora):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)
    model = Qwen3ForCausalLM(cfg)
    if four_bit:
        import tempfile

        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        with tempfile.TemporaryDirectory() as d:
            model.save_pretrained(d)
            model = AutoModelForCausalLM.from_pretrained(
                d, device_map={"": "cpu"}, dtype=torch.float32,
                quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_use_double_quant=True,
                                                       bnb_4bit_compute_dtype=torch.float32))
    # init_lora_weights=False: B is random too, so the adapter changes the output from the start
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                            init_lora_weights=False, **lora))


def _run(model, ids):
    out = model(input_ids=ids).logits
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return out.detach(), grads


def _compare(model, ids, atol):
    want, want_g = _run(model, ids)
    fused = copy.deepcopy(model)
    n = fused_lora.install(fused)
    before = dict(fused_lora.CALLS)
    got, got_g = _run(fused, ids)
    assert torch.allclose(got, want, atol=atol), (got - want).abs().max()
    assert want_g.keys() == got_g.keys()
    for k in want_g:
        assert torch.allclose(got_g[k], want_g[k], atol=atol, rtol=1e-4), (k, (got_g[k] - want_g[k]).abs().max())
    return n, {k: fused_lora.CALLS[k] - before[k] for k in before}


@pytest.mark.parametrize("four_bit", [False, True], ids=["fp32", "nf4"])
def test_fused_lora_matches_peft_forward_and_gradients(four_bit):
    model = _model(four_bit)
    ids = torch.randint(0, 97, (2, 11))
    n, calls = _compare(model, ids, atol=1e-5)
    assert n == 2 * 7  # q k v o gate up down in each of 2 layers
    assert len([p for p in model.parameters() if p.requires_grad]) == 2 * n  # A and B of each, all compared
    assert calls == {"fused": n, "peft": 0}


def test_fused_lora_with_dropout_draws_the_same_mask():
    model = _model(False, lora_dropout=0.3).train()
    ids = torch.randint(0, 97, (2, 9))
    torch.manual_seed(5)
    want, _ = _run(model, ids)
    fused = copy.deepcopy(model)
    fused_lora.install(fused)
    torch.manual_seed(5)
    got, _ = _run(fused, ids)
    assert torch.allclose(got, want, atol=1e-5)


def test_fused_lora_under_bf16_autocast():
    model = _model(False)
    ids = torch.randint(0, 97, (2, 9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = model(input_ids=ids).logits.float()
    fused = copy.deepcopy(model)
    fused_lora.install(fused)
    before = fused_lora.CALLS["fused"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fused(input_ids=ids).logits.float()
    assert fused_lora.CALLS["fused"] > before
    assert (got - want).abs().max() <= 0.05 * want.abs().max()  # bf16: a few ulps apart


def test_cases_it_does_not_cover_go_to_peft():
    from transformers import Qwen3ForCausalLM

    model = _model(False)
    torch.manual_seed(0)
    base = Qwen3ForCausalLM(model.get_base_model().config)  # the same base weights, no adapter
    ids = torch.randint(0, 97, (1, 8))
    fused_lora.install(model)
    with torch.no_grad():
        want_base = base(input_ids=ids).logits
        assert not torch.allclose(model(input_ids=ids).logits, want_base, atol=1e-4)  # the adapter acts
        before = dict(fused_lora.CALLS)
        with model.disable_adapter():
            off = model(input_ids=ids).logits
    # every layer's call went to PEFT's forward, and off means off (disable_adapter's contract)
    assert fused_lora.CALLS["peft"] - before["peft"] == 14 and fused_lora.CALLS["fused"] == before["fused"]
    assert torch.allclose(off, want_base, atol=1e-6)


def test_dora_is_left_to_peft():
    model = _model(False, use_dora=True)
    ids = torch.randint(0, 97, (1, 8))
    n, calls = _compare(model, ids, atol=1e-5)
    assert calls == {"fused": 0, "peft": n}


def test_bf16_adapter_on_an_fp32_base_without_autocast():
    """TRL casts a quantized model's LoRA to bf16; on the CPU the base computes in fp32 without
    autocast. The fused path then adds the B product in fp32 (PEFT: in bf16): a bf16 rounding apart."""
    model = _model(True)
    for _, p in model.named_parameters():
        if p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        want = model(input_ids=ids).logits
        fused_lora.install(model)
        before = fused_lora.CALLS["fused"]
        got = model(input_ids=ids).logits
    assert fused_lora.CALLS["fused"] - before == 14 and got.dtype == torch.float32
    assert (got - want).abs().max() <= 0.02 * want.abs().max()


def test_an_fp32_base_output_under_autocast_keeps_peft_sum():
    """Under bf16 autocast a base output that stays fp32 (fp32 norms upstream, as with
    prepare_model_for_kbit_training) is not rounded to bf16: PEFT's sum, in fp32."""
    model = _model(False)
    layer = model.base_model.model.model.layers[0].mlp.down_proj
    base_forward = layer.base_layer.forward
    layer.base_layer.forward = lambda x: base_forward(x).float()
    x = torch.randn(2, 5, 128)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = type(layer).forward(layer, x)
        fused_lora.install(model)
        before = dict(fused_lora.CALLS)
        got = layer(x)
    assert got.dtype == want.dtype == torch.float32 and torch.allclose(got, want)
    assert fused_lora.CALLS["peft"] - before["peft"] == 1 and fused_lora.CALLS["fused"] == before["fused"]
