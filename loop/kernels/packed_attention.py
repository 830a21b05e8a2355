"""Attention for padding-free packed batches: one causal attention per sequence of a packed row.

TRL's padding-free collator concatenates a micro-batch's sequences into one row and passes
the boundaries as `cu_seq_lens_q`. With transformers' "sdpa", a packed row gets a
block-diagonal boolean mask of the whole row: that rules out the flash kernel and computes
every (query, key) pair of the row, (sum of lengths)^2, most of it masked away. The
flash-attn package's varlen kernel avoids both but is not always installed (it is not on the
H200 image). Registered here under the name `sdpa_segments`, two exact backends:

- `varlen`: PyTorch's own flash varlen kernel (`torch.nn.attention.varlen.varlen_attn`,
  CUDA, bf16/fp16): the whole row in one call, no Python loop over sequences;
- `segments`: slice the row at the boundaries and run SDPA with `is_causal=True` on each
  sequence (no mask is built; the flash kernel serves each call on a GPU). Used on the CPU,
  for fp32, and wherever `varlen` is unavailable.

`BACKEND` ("auto", "varlen" or "segments") picks one; auto = varlen where it can run.
The boundaries are read to the host once per forward pass (cached per `cu_seq_lens_q`
tensor), not once per layer: a device->host copy in every layer stalls the GPU while the
CPU queues the next layer's kernels.

The mask function builds nothing when there is no 2-D padding mask (each call is causal by
itself) and SDPA's usual mask otherwise. Without `cu_seq_lens_q` (generation, padded
batches) the attention falls back to transformers' SDPA with the mask it is given.
"""
from __future__ import annotations

import functools
import inspect
import logging

NAME = "sdpa_segments"
BACKEND = "auto"
log = logging.getLogger(__name__)
_registered = False
_bounds: tuple[object, list[int], dict] | None = None  # (cu tensor, its values, device copies)
_varlen_broken = False
# attention calls served by each backend, and host reads of the boundaries (benchmarks and tests read it)
CALLS = {"varlen": 0, "segments": 0, "bounds_reads": 0}


def _host_bounds(cu) -> tuple[list[int], dict]:
    """The boundaries as Python ints, read once per cu tensor (the layers of one forward pass,
    and its recomputation under gradient checkpointing, share the same tensor object)."""
    global _bounds
    if _bounds is None or _bounds[0] is not cu:
        values = cu.tolist() if hasattr(cu, "tolist") else list(cu)
        CALLS["bounds_reads"] += 1
        _bounds = (cu, [int(v) for v in values], {})
    return _bounds[1], _bounds[2]


def _varlen_fn():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def _why_not_varlen(query) -> str | None:
    """None when the varlen kernel can serve this call, else why not."""
    import torch

    if _varlen_broken:
        return "it failed earlier in this process"
    if BACKEND == "segments":
        return "BACKEND is 'segments'"
    if not query.is_cuda:
        return "not on a CUDA device"
    if query.dtype not in (torch.bfloat16, torch.float16):
        return f"compute dtype {str(query.dtype).replace('torch.', '')} (it needs bfloat16 or float16)"
    if _varlen_fn() is None:
        return "this torch has no torch.nn.attention.varlen"
    return None


def use_varlen(query) -> bool:
    return _why_not_varlen(query) is None


_warned = False


def _warn_segments_on_gpu(query) -> None:
    """Per-sequence SDPA on a GPU is slow (2.85x slower than varlen on an H200): say so, once."""
    global _warned
    if not _warned and query.is_cuda:
        _warned = True
        why = _why_not_varlen(query)
        log.warning("packed rows use per-sequence SDPA on the GPU (%s); on an H200 that trained at 0.35x the "
                    "tokens/s of the varlen kernel%s", why,
                    ": set quantization.compute_dtype to bfloat16" if why and why.startswith("compute dtype") else "")


def _varlen(query, key, value, bounds: list[int], cache: dict, scaling):
    """query/key/value: [1, heads, T, head_dim] with equal head counts. Returns [T, heads, head_dim]."""
    import torch

    fn = _varlen_fn()
    total = query.shape[2]
    if bounds[-1] < total:  # trailing padding (pad_to_multiple_of): its own sequence, outside the loss
        bounds = bounds + [total]
    cu = cache.get(query.device)
    if cu is None:
        cu = cache[query.device] = torch.tensor(bounds, dtype=torch.int32, device=query.device)
    longest = max(e - s for s, e in zip(bounds[:-1], bounds[1:]))
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [T, heads, dim]
    causal, takes_scale = _signature(fn)
    return fn(q, k, v, cu, cu, longest, longest, **causal, **({"scale": scaling} if takes_scale else {}))


@functools.lru_cache(maxsize=4)
def _signature(fn) -> tuple[dict, bool]:
    """How this torch's varlen_attn is told "causal": `is_causal=True` in its first form, a (-1, 0)
    window in later ones (torch 2.11 on the H200, 2.13 here); and whether it takes `scale`."""
    params = inspect.signature(fn).parameters
    causal = {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}
    return causal, "scale" in params


def segment_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                         is_causal=None, **kwargs):
    global _varlen_broken
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
    bounds, cache = _host_bounds(cu)
    drop = dropout if module.training else 0.0
    if drop == 0.0 and use_varlen(query):
        try:
            out = _varlen(query, key, value, bounds, cache, scaling).unsqueeze(0)
            CALLS["varlen"] += 1
            return out, None
        except Exception as e:  # noqa: BLE001 - an unusable kernel build: fall back for good, say so once
            _varlen_broken = True
            log.warning("varlen flash attention failed (%s: %s); packed rows use per-sequence SDPA from now on",
                        type(e).__name__, e)
    CALLS["segments"] += 1
    _warn_segments_on_gpu(query)
    total = query.shape[2]
    parts = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e > s:
            parts.append(F.scaled_dot_product_attention(
                query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], is_causal=True, scale=scaling, dropout_p=drop))
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
