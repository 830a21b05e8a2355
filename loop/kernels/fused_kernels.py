"""Liger's fused Triton kernels for a model's RMSNorm, SwiGLU MLP and rotary embedding (CUDA).

In transformers' eager modules each of these is several elementwise passes over
`tokens x hidden` (RMSNorm upcasts to fp32, squares, averages, scales, casts back; SwiGLU writes
silu(gate) before multiplying; RoPE builds rotate_half's copy); Liger computes each in one
kernel, forward and backward, and saves less for the backward pass. The LM head and the loss
stay TRL's (its fused head); LoRA stays PEFT's parameters.

`training.fused_kernels`: `auto` uses Liger where it can run (a CUDA device and the
`liger-kernel` package, in the `gpu` extra), `liger` insists (preflight says what is missing),
`off` keeps transformers' modules.

Liger swaps the modules' forward on the model instance, but the rotary function and module
classes are swapped in the model's modeling module, i.e. for the whole process. `applied()`
puts the modeling module back when training ends, so a later model in the same process (the
benchmark's other rungs, a trainer actor's next round with `off`) is untouched.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys

log = logging.getLogger(__name__)


def liger_installed() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def why_not(cuda: bool) -> str | None:
    """None when Liger can run here, else what is missing and how to get it."""
    if not cuda:
        return "Liger's kernels are Triton kernels for CUDA devices; this trainer runs on the CPU"
    if not liger_installed():
        return "the liger-kernel package is not installed (pip install -e '.[gpu]' installs it)"
    return None


def _unavailable(mode: str, reason: str) -> str:
    """'off' under auto (said in the log); an error under 'liger'."""
    if mode == "liger":
        raise RuntimeError(f"training.fused_kernels is 'liger' but {reason}; set it to 'auto' or 'off'")
    log.info("fused kernels off: %s", reason)
    return "off"


def resolve(mode: str, cuda: bool) -> str:
    """'liger' or 'off' for a `training.fused_kernels` value on this device."""
    if mode == "off":
        return "off"
    reason = why_not(cuda)
    return "liger" if reason is None else _unavailable(mode, reason)


@contextlib.contextmanager
def applied(model, mode: str, cuda: bool):
    """Within the block, `model` runs Liger's RMSNorm, SwiGLU and RoPE kernels when `mode`
    resolves to 'liger'. Yields the resolved mode ('liger' or 'off'). Apply before PEFT wraps
    the model: Liger patches the decoder's norms and MLPs, which call the (LoRA) linears by name."""
    use = resolve(mode, cuda)
    if use == "off":
        yield "off"
        return
    # Liger looks for optional backends (CuTe DSL, Ascend) and warns for each it cannot import; the
    # Triton kernels used here do not need them
    logging.getLogger("liger_kernel.backends.registry").setLevel(logging.ERROR)
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN, _apply_liger_kernel_to_instance

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        yield _unavailable(mode, f"Liger has no kernels for model type {model_type!r}")
        return
    module = sys.modules[type(model).__module__]
    saved = dict(vars(module))
    try:
        _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                        fused_linear_cross_entropy=False)
        yield "liger"
    finally:
        for name in [n for n in vars(module) if n not in saved]:
            delattr(module, name)
        for name, value in saved.items():
            if vars(module).get(name) is not value:
                setattr(module, name, value)
