"""Random-weight models of real shapes, saved locally: for throughput and memory, not accuracy.

    python -m loop.models.shape_model --shape qwen3-4b --out state/models/qwen3-4b-random          # on a GPU: ~1 min
    python -m loop.models.shape_model --shape qwen3-4b --out DIR --device cpu                       # 16 GiB of RAM

The weights are random (transformers' own init, std = initializer_range) and saved in bf16,
so a config can point `model.path` at the directory and run with no hub access. The
tokenizer has exactly `vocab_size` entries, so every id the model can emit decodes:

- ids 0..255: one per byte (byte-level, no merges: encoding is one token per byte, as in
  the tiny model, so prompts of any text encode);
- Qwen3's special tokens at Qwen3's own ids (<|endoftext|> 151643, <|im_start|> 151644,
  <|im_end|> 151645, <think> 151667, </think> 151668) and its chat template's markers;
- every other id a filler word (" w123") that encoding never produces but decoding does,
  which is what a random model's samples are made of.

A random model almost never emits <|im_end|>, so its chains run to `max_tokens`: the
worst case for the sampler and the chain lengths the trainer is measured on.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

# name -> Qwen3Config fields. qwen3-4b is Qwen/Qwen3-4B's config.json (shape only).
SHAPES: dict[str, dict] = {
    "qwen3-4b": dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                     tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6),
    "qwen3-1.7b": dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                       tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6),
    # Qwen3's vocabulary on a toy body: the tokenizer and the 151,936-wide head at CPU-test cost.
    "qwen3-vocab-toy": dict(vocab_size=151936, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=4096,
                            tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6),
}

# Qwen3's tokenizer places these at these ids (tokenizer_config.json of Qwen/Qwen3-*).
QWEN3_SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
QWEN3_THINK_IDS = {"<think>": 151667, "</think>": 151668}
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tokenizer(vocab_size: int, model_max_length: int = 40960):
    """A byte-level tokenizer of exactly `vocab_size` ids with Qwen3's special ids (module doc)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    fixed = {**QWEN3_SPECIAL_IDS, **QWEN3_THINK_IDS}
    if vocab_size <= max(fixed.values()):
        raise ValueError(f"vocab_size {vocab_size} is too small for Qwen3's special ids (up to {max(fixed.values())})")
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    by_id = {i: t for t, i in fixed.items()}
    for i in range(len(alphabet), vocab_size):
        # "Ġ" is the byte-level form of a space: fillers decode to " w<id>".
        vocab[by_id.get(i, f"Ġw{i}")] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    # Already in the vocabulary, so they keep their ids; marking them makes encoding match them whole.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN3_SPECIAL_IDS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN3_THINK_IDS])
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length, clean_up_tokenization_spaces=False,
    )
    for t, i in fixed.items():
        got = out.convert_tokens_to_ids(t)
        if got != i:
            raise RuntimeError(f"tokenizer placed {t} at id {got}, expected {i}")
    if len(out) != vocab_size:
        raise RuntimeError(f"tokenizer has {len(out)} ids, expected {vocab_size}")
    return out


def qwen3_config(shape: str):
    from transformers import Qwen3Config

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    s = dict(SHAPES[shape])
    rope_theta = s.pop("rope_theta")
    return Qwen3Config(**s, rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
                       bos_token_id=None, eos_token_id=QWEN3_SPECIAL_IDS["<|im_end|>"],
                       pad_token_id=QWEN3_SPECIAL_IDS["<|endoftext|>"], torch_dtype="bfloat16")


def build(shape: str, out: str | Path, device: str = "auto", seed: int = 0) -> Path:
    """Build and save a random-weight model of `shape` with its tokenizer; returns `out`.
    An existing complete build of the same shape is reused (its config matches)."""
    import torch
    from transformers import Qwen3ForCausalLM

    out = Path(out)
    cfg = qwen3_config(shape)
    marker = out / "shape.json"
    if marker.exists() and json.loads(marker.read_text()).get("shape") == shape:
        log.info("%s already holds a %s model; reusing it", out, shape)
        return out
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.time()
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = Qwen3ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    model.generation_config.eos_token_id = cfg.eos_token_id
    model.generation_config.pad_token_id = cfg.pad_token_id
    n = sum(p.numel() for p in model.parameters())
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    build_tokenizer(cfg.vocab_size).save_pretrained(out)
    marker.write_text(json.dumps({"shape": shape, "parameters": n, "random_weights": True, "seed": seed}))
    log.info("%s: %.2fB parameters (random) saved to %s in %.0fs", shape, n / 1e9, out, time.time() - t0)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Build a random-weight model of a real shape (see module doc).")
    ap.add_argument("--shape", default="qwen3-4b", choices=sorted(SHAPES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    build(args.shape, args.out, args.device, args.seed)


if __name__ == "__main__":
    main()
