"""Attention for padding-free packed batches, with plain SDPA: one causal call per sequence.

TRL's padding-free collator concatenates a micro-batch's sequences into one row and passes
the boundaries as `cu_seq_lens_q`. With transformers' "sdpa", a packed row gets a
block-diagonal boolean mask of the whole row: that rules out the flash kernel and computes
every (query, key) pair of the row, (sum of lengths)^2, most of it masked away. Flash
attention's varlen kernel avoids both but is not always installed (it is not on the H200
image). `sdpa_segments` slices the row at the boundaries and runs SDPA with `is_causal=True`
on each sequence: exact, no mask is built, and the flash kernel serves each call.

Registered under the name `sdpa_segments` for both the attention function and the mask.
The mask function builds nothing when there is no 2-D padding mask (each call is causal by
itself) and SDPA's usual mask otherwise. Without `cu_seq_lens_q` (generation, padded
batches) the attention falls back to transformers' SDPA with the mask it is given.
"""
from __future__ import annotations

NAME = "sdpa_segments"
_registered = False


def segment_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                         is_causal=None, **kwargs):
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or query.shape[0] != 1 or query.shape[2] <= 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    bounds = cu.tolist() if isinstance(cu, torch.Tensor) else list(cu)
    total = query.shape[2]
    parts = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e > s:
            parts.append(F.scaled_dot_product_attention(
                query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], is_causal=True, scale=scaling,
                dropout_p=dropout if module.training else 0.0))
    if bounds[-1] < total:  # trailing padding (pad_to_multiple_of): attends to nothing, outputs zeros
        parts.append(query.new_zeros(query.shape[0], query.shape[1], total - bounds[-1], value.shape[-1]))
    out = torch.cat(parts, dim=2)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register `sdpa_segments` with transformers (idempotent); returns the name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(NAME, segment_sdpa_forward)
        sdpa_mask = AttentionMaskInterface._global_mapping["sdpa"]

        def mask(*args, **kwargs):
            if kwargs.get("attention_mask") is None:
                return None
            return sdpa_mask(*args, **kwargs)

        AttentionMaskInterface.register(NAME, mask)
        _registered = True
    return NAME
