"""A LoRA linear's forward in one GEMM after the base layer: `addmm(base(x), A(x), B^T, alpha=scaling)`.

PEFT's LoRA forward for a (4-bit) linear is, per call:
`result = base(x).clone(); result = result + lora_B(lora_A(dropout(x))) * scaling`: a clone of
the base output, the B product written out, a scaling pass and an add, each a full pass over an
output of `tokens x out_features` (for Qwen3-4B's MLP, 20k tokens x 9,728 x 2 bytes = 400 MB).
Here the B product, the scaling and the add are one `addmm` that reads the base output once and
writes the sum once; its backward folds the scaling into the small GEMMs. The parameters, the
saved adapter and the arithmetic are PEFT's (the same sum, in one kernel).

Only the plain case takes this path: one active adapter, no DoRA or other variant, no LoRA
bias, not merged, adapters enabled, no per-sample `adapter_names`. Anything else goes to PEFT's
own forward, call by call, so `disable_adapter()`, merging and multi-adapter use behave as PEFT
documents. Without autocast and with the adapter in another dtype than the base output (TRL
keeps a quantized model's LoRA in bf16; on the CPU the base computes in fp32) the B product and
the sum are computed in the base output's dtype, where PEFT computes B in the adapter's dtype.
"""
from __future__ import annotations

import types

# calls served by each path since import (tests and the trainer's metrics read it)
CALLS = {"fused": 0, "peft": 0}


def _plain_adapter(layer, args, kwargs) -> str | None:
    """The active adapter's name when this call can take the fused path, else None."""
    if args or kwargs or layer.disable_adapters or layer.merged:
        return None
    active = [a for a in layer.active_adapters if a in layer.lora_A]
    if len(active) != 1:
        return None
    name = active[0]
    if name in getattr(layer, "lora_variant", {}) or layer.lora_B[name].bias is not None:
        return None
    return name


def fused_forward(self, x, *args, **kwargs):
    import torch

    name = _plain_adapter(self, args, kwargs)
    if name is None:
        CALLS["peft"] += 1
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    lora_a, weight = self.lora_A[name], self.lora_B[name].weight
    if torch.is_autocast_enabled(x.device.type):
        if result.dtype != torch.get_autocast_dtype(x.device.type):
            # a base output kept in fp32 under bf16 autocast (fp32 norms upstream): PEFT's sum, in fp32
            CALLS["peft"] += 1
            return result + self.lora_B[name](lora_a(self.lora_dropout[name](x))) * self.scaling[name]
        h, weight_t = lora_a(self.lora_dropout[name](x)), weight.t()
    else:
        # like PEFT: the adapter's input in the adapter's dtype (TRL keeps a quantized model's LoRA in
        # bf16); the B product and the sum in the base output's dtype
        h = lora_a(self.lora_dropout[name](x.to(lora_a.weight.dtype))).to(result.dtype)
        weight_t = weight.t().to(result.dtype)
    CALLS["fused"] += 1
    shape = result.shape
    out = torch.addmm(result.reshape(-1, shape[-1]), h.reshape(-1, h.shape[-1]), weight_t, alpha=self.scaling[name])
    return out.view(shape)


def install(model) -> int:
    """Gives every PEFT LoRA linear of `model` the fused forward (on the instance; the class is
    untouched). Returns how many layers got it."""
    from peft.tuners.lora.layer import Linear

    classes: tuple = (Linear,)
    try:
        from peft.tuners.lora import bnb as lora_bnb

        classes += tuple(getattr(lora_bnb, n) for n in ("Linear4bit", "Linear8bitLt") if hasattr(lora_bnb, n))
    except ImportError:
        pass
    count = 0
    for module in model.modules():
        if type(module) in classes:  # exactly PEFT's classes: a subclass may change the formula
            module.forward = types.MethodType(fused_forward, module)
            count += 1
    return count
