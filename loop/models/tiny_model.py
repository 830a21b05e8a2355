"""The embedded default model: a ~2.4M-parameter Qwen3 with a byte-level tokenizer.

`python -m loop.models.tiny_model --device cuda` rebuilds `loop/assets/tiny-qwen3/` from scratch:
a random-init Qwen3 (transformers `Qwen3Config`), a byte-level BPE tokenizer with no merges
(one token per byte, so one per ASCII character) carrying Qwen's chat template and think
tags, then a full-parameter warm start on easy problems of the default families (12,000 steps:
about 5 minutes on an H200, about 100 on 2 CPU cores with `--device cpu`), so the loop starts from
"clearly non-zero but weak" at its levels. It loads unchanged in transformers, vLLM and PEFT
because it *is* a Qwen3 checkpoint. The shipped asset was trained on an H200 (2026-12-06).
"""
from __future__ import annotations

import argparse
import logging
import math
import random
import time
from pathlib import Path

log = logging.getLogger(__name__)

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK = ["<think>", "</think>"]  # added tokens that stay visible in decoded text, as in Qwen3
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tokenizer():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE, model_max_length=1024, clean_up_tokenization_spaces=False,
    )


def build_model(vocab_size: int, seed: int):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=int(math.ceil(vocab_size / 64) * 64), hidden_size=256, intermediate_size=512,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        max_position_embeddings=1024, tie_word_embeddings=True, rope_theta=10000.0,
        bos_token_id=None, eos_token_id=None, pad_token_id=None, torch_dtype="float32",
    )
    return Qwen3ForCausalLM(cfg)


# Warm-start curriculum: easy levels of the default families. add/sub use the digit-aligned chain of
# configs/default.yaml; mul keeps partial products (configs/eval-tiny.yaml). No add/sub problem has two
# operands of 4 digits or more, so the loop's levels (configs/default.yaml) are not in the warm start.
WARM_START = [  # (family, options, category, {difficulty: examples})
    ("arithmetic", {"chain": "aligned"}, "add", {1: 1000, 2: 2000, 3: 200}),
    ("arithmetic", {"chain": "aligned"}, "sub", {1: 1000, 2: 2000, 3: 200}),
    ("arithmetic", {}, "mul", {1: 2000, 2: 150}),
]
# Each problem is asked in one of these wordings (the loop's own, the first, for a third of them). With one
# wording the model copies the operands into its first line from a fixed distance back, which holds for no
# other wording and no longer number: asked `What is 347+285?` it answered 555 (benchmarks/warm_start_variants.py).
TEMPLATES = ["Compute {expr}.", "What is {expr}?", "{expr}", "{expr} = ?", "Calculate {expr}.",
             "Please work out {expr} and give the answer.", "Find the value of {expr}.", "Q: {expr}",
             "Solve: {expr}", "Evaluate {expr} step by step.", "I need {expr}, please.",
             "Here is a sum for you to do carefully: {expr}"]
# add/sub problems with one operand of 4 to 8 digits and the other of 1 to 3 (`48213+57`): long numbers in the
# chain's own format, with the column arithmetic of short ones. With them (and the wordings) the model solves
# 4- and 5-digit problems it never saw (both operands that long); without, it solves none.
LONG_SHORT = 3000


def retemplate(prompt: list[dict], expr: str, rng: random.Random) -> list[dict]:
    """`prompt` asked with a random wording of TEMPLATES (`Compute {expr}.` a third of the time)."""
    tpl = TEMPLATES[0] if rng.random() < 1 / 3 else rng.choice(TEMPLATES[1:])
    return [{"role": "user", "content": tpl.format(expr=expr)}] if len(prompt) == 1 else prompt


def mixed_length_examples(seed: int, n: int, long: bool) -> list[tuple[list[dict], str]]:
    """n add/sub problems with operands of different lengths, retemplated: one of 4 to 8 digits and the other of 1
    to 3 with `long`, else 1 to 3 digits each. Held-out problems are skipped."""
    import generators  # noqa: F401
    from generators.base import GENERATORS

    gen, rng, out = GENERATORS.build("arithmetic", {"chain": "aligned"}), random.Random(seed), []
    while len(out) < n:
        cat = rng.choice(["add", "sub"])
        da, db = rng.randint(1, 3), rng.randint(1, 3)
        if long:
            da = rng.randint(4, 8)
            if rng.random() < 0.5:
                da, db = db, da
        if da == db:
            continue
        a, b = (rng.randint(0 if d == 1 else 10 ** (d - 1), 10 ** d - 1) for d in (da, db))
        if cat == "sub" and b > a:
            a, b = b, a
        p = gen.make(cat, a, b, max(da, db))
        if p.is_heldout(0.25):
            continue
        out.append((retemplate([m.model_dump() for m in p.prompt], f"{a}{'+' if cat == 'add' else '-'}{b}", rng),
                    p.reference.chain))
    return out


def warm_start_examples(seed: int, templates: bool = True, long_short: int = LONG_SHORT,
                        ) -> list[tuple[list[dict], str]]:
    """The warm start's (prompt, reply) pairs: WARM_START's problems (held-out ones skipped), asked in TEMPLATES'
    wordings, plus `long_short` long-and-short problems. `templates=False, long_short=0` is the warm start shipped
    before 2026-12-06 (one wording, 3 digits at most)."""
    import generators  # noqa: F401
    from generators.base import GENERATORS

    rng, out = random.Random(seed + 7), []
    for fam, options, cat, levels in WARM_START:
        gen = GENERATORS.build(fam, options)
        for d, count in levels.items():
            for p in gen.generate(cat, d, count, seed + d):
                if p.is_heldout(0.25):  # never warm-start on what the loop holds out
                    continue
                prompt = [m.model_dump() for m in p.prompt]
                if templates:
                    a, b = p.metadata["operands"]
                    prompt = retemplate(prompt, f"{a}{p.metadata['op']}{b}", rng)
                out.append((prompt, p.reference.chain))
    if long_short:
        out += mixed_length_examples(seed + 13, long_short, long=True)
    random.Random(seed).shuffle(out)
    return out


def encode(tokenizer, prompt: list[dict], reply: str, max_len: int) -> tuple[list[int], list[int]]:
    """Token ids and labels with the loss on the assistant turn only (prompt masked with -100)."""
    head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    p_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(reply + "<|im_end|>", add_special_tokens=False)["input_ids"]
    ids = (p_ids + r_ids)[:max_len]
    labels = ([-100] * len(p_ids) + r_ids)[:max_len]
    return ids, labels


def train(model, tokenizer, examples, steps: int, batch: int, lr: float, seed: int, device: str = "cpu") -> None:
    train_encoded(model, [encode(tokenizer, p, r, 512) for p, r in examples], steps, batch, lr, seed, device)


def train_encoded(model, data: list[tuple[list[int], list[int]]], steps: int, batch: int, lr: float, seed: int,
                  device: str = "cpu") -> None:
    """The warm start's loop on already-encoded (ids, labels) pairs: needs torch only (no tokenizer, no
    generators), so it also runs where the project's own dependencies are not installed."""
    import torch

    torch.manual_seed(seed)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    rng = random.Random(seed)
    t0 = time.time()
    for step in range(steps):
        chunk = rng.sample(data, batch)
        n = max(len(i) for i, _ in chunk)
        ids = torch.tensor([i + [0] * (n - len(i)) for i, _ in chunk], device=device)
        lab = torch.tensor([lb + [-100] * (n - len(lb)) for _, lb in chunk], device=device)
        att = torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i, _ in chunk], device=device)
        loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 50 == 0 or step == steps - 1:
            log.info("warm start step %d/%d loss %.3f (%.0fs)", step, steps, loss.item(), time.time() - t0)
    model.to("cpu")


def snap_to_nf4_grid(model, blocksize: int = 64) -> None:
    """Replace every quantizable Linear weight by its NF4 (double-quant) round trip.

    QLoRA trains the adapter against the NF4-dequantized base, while vLLM serves the
    checkpoint's own weights. For a 4B model the two differ by little; for this 2.4M model
    NF4 moves weights by ~15% of their range, and adapters learned against one base
    hurt the other. Snapped weights are fixed points of the round trip (re-quantizing
    changes them by ~1e-6), so training and serving see the same base.
    """
    import bitsandbytes.functional as F
    import torch

    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and not name.endswith("lm_head"):
                q, state = F.quantize_4bit(mod.weight.data, quant_type="nf4", compress_statistics=True,
                                           blocksize=blocksize)
                mod.weight.data = F.dequantize_4bit(q, state).to(mod.weight.dtype)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "assets" / "tiny-qwen3"))
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="torch device for the warm start (cpu, or cuda where there is one)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.set_num_threads(2)
    tok = build_tokenizer()
    model = build_model(len(tok), args.seed)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    log.info("tiny Qwen3: %.2fM parameters, vocab %d", sum(p.numel() for p in model.parameters()) / 1e6, len(tok))
    if args.steps:
        train(model, tok, warm_start_examples(args.seed), args.steps, args.batch, args.lr, args.seed, args.device)
    snap_to_nf4_grid(model)
    model.eval()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tok.save_pretrained(args.out)
    log.info("saved to %s", args.out)


if __name__ == "__main__":
    main()
