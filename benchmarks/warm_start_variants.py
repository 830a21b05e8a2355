"""Warm-start variants that might read numbers longer than those they were trained on (issue 22's curriculum).

    python benchmarks/warm_start_variants.py prepare --variant templates --out /tmp/ws/templates
    python benchmarks/warm_start_variants.py train --dir /tmp/ws/templates --steps 4000 --device cuda
    python benchmarks/warm_start_variants.py finish --dir /tmp/ws/templates     # NF4 snap, then the probe

The shipped warm start answers `Compute 347+285.` and fails `What is 347+285?`: it copies the operands
into its first line from a *fixed distance* back, which only holds for the one template and for the
lengths it was trained on, so 4-digit operands are never even restated (benchmarks/warm_start_probe.py).
The variants here keep every add/sub operand at 1 to 3 digits, as the shipped one does, and change how
the copy can be learnt:

- `fixed_template`: the recipe shipped before 2026-12-06, every problem asked as `Compute a+b.`;
- `templates`: the same problems, each asked with one of TEMPLATES (prompts of many lengths), so a copy
  from a fixed distance no longer works and the model must find the operands by their content;
- `templates_mixed`: also problems whose operands differ in length (a 3-digit and a 1-digit), so the
  column rule is seen at every offset;
- `templates_peel`: also 3,000 "peel" exercises (benchmarks/warm_start_probe.py) asked with PEEL_TEMPLATES:
  restate `a+b` (1 to 8 digits each) and drop the last digit of both, line by line, with no sums. Numbers
  longer than 3 digits are then seen, and copied, but never added or subtracted: the model is taught to
  read long numbers, as a pretrained model has, and to do arithmetic on 3 digits at most;
- `templates_long`: also 3,000 add/sub problems with one operand of 4 to 8 digits and the other of 1 to 3
  (`48213+57`): long numbers in the very chain format, but never two operands of 4 digits or more, so the
  level the loop is measured on (both operands at 4 digits) is not in the warm start. This is the recipe
  loop/models/tiny_model.py now ships (trained 12,000 steps).

The `templates_peel` model probed on 2026-12-06 (benchmarks/results/warm_start_probe.jsonl) was trained on the
same parts in another order and other peel wordings (an earlier form of this script). `prepare` runs here (it needs the generators); `train` needs torch and transformers only, so it runs on
the GPU machine, which has no pydantic; `finish` snaps the weights to the NF4 grid as the shipped asset
is, then probes 3, 4 and 5 digits. The held-out split is that of the `Compute ...` problems the loop asks.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = ("fixed_template", "templates", "templates_mixed", "templates_peel", "templates_long")
PEEL_TEMPLATES = ["Peel {expr}.", "Peel the digits of {expr}", "{expr}: peel it", "Strip {expr} one digit at a time.",
                  "Please peel {expr} for me.", "Peel: {expr}"]


def examples(variant: str, seed: int) -> list[tuple[list[dict], str]]:
    from loop.models import tiny_model as tm

    if variant == "fixed_template":
        return tm.warm_start_examples(seed, templates=False, long_short=0)
    if variant == "templates_long":  # the recipe shipped since 2026-12-06
        return tm.warm_start_examples(seed)
    out = tm.warm_start_examples(seed, long_short=0)
    if variant == "templates_mixed":
        out += tm.mixed_length_examples(seed + 11, 2000, long=False)
    if variant == "templates_peel":
        from benchmarks.warm_start_probe import peel_examples

        rng = random.Random(seed + 7)
        for prompt, reply in peel_examples(seed + 99, 3000):
            expr = prompt[0]["content"][len("Peel "):-1]
            out.append(([{"role": "user", "content": rng.choice(PEEL_TEMPLATES).format(expr=expr)}], reply))
    if variant != "templates":
        random.Random(seed).shuffle(out)
    return out


def prepare(variant: str, out: Path, seed: int) -> None:
    from loop.models import tiny_model as tm

    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    tok = tm.build_tokenizer()
    model = tm.build_model(len(tok), seed)
    model.generation_config.eos_token_id = model.config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out / "init", safe_serialization=True)
    tok.save_pretrained(out / "tokenizer")
    ex = examples(variant, seed)
    data = [tm.encode(tok, p, r, 512) for p, r in ex]
    (out / "data.json").write_text(json.dumps({"variant": variant, "seed": seed, "data": data}))
    print(json.dumps({"variant": variant, "examples": len(data), "out": str(out)}))


def train(d: Path, steps: int, batch: int, lr: float, device: str, save: str) -> None:
    import logging

    import torch
    from transformers import AutoModelForCausalLM

    from loop.models import tiny_model as tm

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    blob = json.loads((d / "data.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(d / "init", torch_dtype=torch.float32)
    tm.train_encoded(model, [tuple(x) for x in blob["data"]], steps, batch, lr, blob["seed"], device)
    model.save_pretrained(d / save, safe_serialization=True)


def finish(d: Path, name: str, count: int, difficulties: list[int]) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.warm_start_probe import probe
    from loop.models import tiny_model as tm

    model = AutoModelForCausalLM.from_pretrained(d / name)
    tm.snap_to_nf4_grid(model)
    model.eval()
    out = d / f"{name}-nf4"
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(d / "tokenizer").save_pretrained(out)
    return probe(out, ["add", "sub"], difficulties, count, 123)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="examples + random-init model into --out (here)")
    p.add_argument("--variant", choices=VARIANTS, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("train", help="train a prepared variant (torch + transformers only)")
    t.add_argument("--dir", type=Path, required=True)
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--device", default="cpu")
    t.add_argument("--save", default="trained", help="folder under --dir for the trained model")
    f = sub.add_parser("finish", help="NF4 snap into DIR/NAME-nf4, probe 3-5 digits; prints JSON")
    f.add_argument("--dir", type=Path, required=True)
    f.add_argument("--name", default="trained", help="the trained model's folder under --dir")
    f.add_argument("--count", type=int, default=40)
    f.add_argument("--label", default="")
    f.add_argument("--difficulties", nargs="+", type=int, default=[3, 4, 5])
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a.variant, a.out, a.seed)
    elif a.cmd == "train":
        train(a.dir, a.steps, a.batch, a.lr, a.device, a.save)
    else:
        print(json.dumps({"model": a.label or str(a.dir), "by_level": finish(a.dir, a.name, a.count, a.difficulties)}))


if __name__ == "__main__":
    main()
