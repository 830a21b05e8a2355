"""training.fused_kernels: where Liger's kernels run, what a user is told when they cannot, and that
the process-wide patches Liger makes are undone when training ends (the kernels themselves need
CUDA: benchmarks/gpu_h200.py measures them, with a parity check, on the H200)."""
from __future__ import annotations

import sys
import types

import pytest

from loop.kernels import fused_kernels


def test_auto_is_off_on_the_cpu_and_liger_insists(monkeypatch):
    assert fused_kernels.resolve("auto", cuda=False) == "off"
    assert fused_kernels.resolve("off", cuda=True) == "off"
    with pytest.raises(RuntimeError, match="CUDA devices.*set it to 'auto' or 'off'"):
        fused_kernels.resolve("liger", cuda=False)
    monkeypatch.setattr(fused_kernels, "liger_installed", lambda: False)
    assert fused_kernels.resolve("auto", cuda=True) == "off"
    with pytest.raises(RuntimeError, match=r"liger-kernel package is not installed \(pip install -e '.\[gpu\]'"):
        fused_kernels.resolve("liger", cuda=True)


def test_the_modeling_module_is_restored_after_training(monkeypatch):
    """Liger swaps functions and classes in the model's modeling module (process-wide): after the
    block a model built later gets transformers' own modules again. A stand-in for Liger's entry
    point makes the same kind of swap (the real one needs Triton)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from transformers.models.qwen3 import modeling_qwen3 as mq

    def fake_apply(model, **kwargs):
        assert kwargs["rope"] and kwargs["rms_norm"] and kwargs["swiglu"]
        assert not kwargs["fused_linear_cross_entropy"] and not kwargs["cross_entropy"]  # TRL's head stays
        mq.apply_rotary_pos_emb = lambda *a, **k: None
        mq.Qwen3RMSNorm = type("FakeNorm", (), {})
        mq.liger_added = True

    fake = types.ModuleType("liger_kernel.transformers.monkey_patch")
    fake._apply_liger_kernel_to_instance = fake_apply
    fake.MODEL_TYPE_TO_APPLY_LIGER_FN = {"qwen3": None}
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.monkey_patch", fake)
    monkeypatch.setattr(fused_kernels, "why_not", lambda cuda: None)
    rope, norm = mq.apply_rotary_pos_emb, mq.Qwen3RMSNorm
    model = Qwen3ForCausalLM(Qwen3Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, head_dim=16))
    with fused_kernels.applied(model, "auto", cuda=True) as use:
        assert use == "liger" and mq.Qwen3RMSNorm is not norm
    assert mq.apply_rotary_pos_emb is rope and mq.Qwen3RMSNorm is norm and not hasattr(mq, "liger_added")
    with pytest.raises(ZeroDivisionError), fused_kernels.applied(model, "auto", cuda=True):
        _ = 1 / 0  # a training that fails restores them too
    assert mq.apply_rotary_pos_emb is rope and mq.Qwen3RMSNorm is norm


def test_preflight_refuses_liger_on_a_cpu_trainer():
    from loop.config import load_config
    from loop.preflight import PreflightError, check_devices

    for device in ("cpu", "auto"):  # auto with no GPU for the trainer's actor is the CPU too
        cfg = load_config("configs/default.yaml", ["training.fused_kernels=liger", f"training.device={device}"])
        problems: list[str] = []
        check_devices(cfg, problems)
        assert any("training.fused_kernels: 'liger' needs a CUDA device but the trainer runs on the CPU" in p
                   for p in problems), problems
    cfg = load_config("configs/default.yaml", ["training.fused_kernels=auto"])
    problems = []
    check_devices(cfg, problems)
    assert problems == []  # auto: Liger where it can run, quietly off elsewhere
    assert issubclass(PreflightError, Exception)


def test_a_model_type_liger_does_not_know_is_said_not_claimed(monkeypatch):
    """auto: off, and the trainer's metrics say off (not 'liger' with nothing patched); liger: an error."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    fake = types.ModuleType("liger_kernel.transformers.monkey_patch")
    fake._apply_liger_kernel_to_instance = lambda model, **kw: pytest.fail("must not be called")
    fake.MODEL_TYPE_TO_APPLY_LIGER_FN = {"llama": None}
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.monkey_patch", fake)
    monkeypatch.setattr(fused_kernels, "why_not", lambda cuda: None)
    model = Qwen3ForCausalLM(Qwen3Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, head_dim=16))
    with fused_kernels.applied(model, "auto", cuda=True) as use:
        assert use == "off"
    with pytest.raises(RuntimeError, match="Liger has no kernels for model type 'qwen3'"), \
            fused_kernels.applied(model, "liger", cuda=True):
        pass
