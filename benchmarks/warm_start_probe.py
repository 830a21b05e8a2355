"""What a warm start solves at each difficulty: greedy accuracy and first-line restatement, by category.

    python benchmarks/warm_start_probe.py [--model loop/assets/tiny-qwen3] [--difficulties 3 4 5] [--count 40]
    python benchmarks/warm_start_probe.py --build-peel 2000 --model /tmp/tiny-peel   # the variant tried, then probed
    python benchmarks/warm_start_probe.py --build-extra add:4=200 --build-extra sub:4=200 --model /tmp/tiny-4

Issue 22's curriculum needs the warm start to solve *something* one difficulty past where the loop starts: the
loop keeps only verified chains, so at a level it solves 0 % of it has nothing to keep. The probe greedy-decodes
`--count` problems a (category, difficulty) with transformers and counts right answers and chains whose first
line restates the operands as the reference does. `--build-peel N` first builds the variant that was tried: the
shipped warm start (loop/models/tiny_model.py, same steps and seed) plus N "Peel a+b." examples whose chains
restate and peel numbers of 1 to 8 digits with no sums, to see whether longer numbers become readable (on 2
cores the build takes about 10 minutes). `--build-extra CAT:D=N` (repeatable) instead adds N aligned-chain problems of
category CAT at D digits to the warm start: does a model trained up to D digits solve any at D + 1? Prints one JSON
object.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peel_examples(seed: int, n: int) -> list[tuple[list[dict], str]]:
    rng, out = random.Random(seed), []
    for _ in range(n):
        a, b = (rng.randint(0 if d == 1 else 10 ** (d - 1), 10 ** d - 1) for d in (rng.randint(1, 8), rng.randint(1, 8)))
        op, sa, sb, lines = rng.choice("+-"), str(a), str(b), []
        while sa or sb:
            lines.append(f"{sa}{op}{sb}")
            sa, sb = sa[:-1], sb[:-1]
        lines.append(op)
        out.append(([{"role": "user", "content": f"Peel {a}{op}{b}."}],
                    "<think>\n" + "\n".join(lines) + "\n</think>\nAnswer: done"))
    return out


def extra_examples(specs: list[str], seed: int) -> list[tuple[list[dict], str]]:
    """CAT:D=N -> N problems of CAT at D digits with their reference chains (held-out problems skipped)."""
    import generators  # noqa: F401
    from generators.base import GENERATORS

    gen, out = GENERATORS.build("arithmetic", {"chain": "aligned"}), []
    for spec in specs:
        try:
            cat, rest = spec.split(":")
            d, n = (int(x) for x in rest.split("="))
        except ValueError:
            raise SystemExit(f"--build-extra {spec!r}: write CAT:DIGITS=COUNT, e.g. add:4=200") from None
        out += [([m.model_dump() for m in p.prompt], p.reference.chain)
                for p in gen.generate(cat, d, n, seed + 1000 + d) if not p.is_heldout(0.25)]
    return out


def build_peel(out: Path, n: int, steps: int = 1000, seed: int = 0, extra: list[str] | None = None) -> None:
    import torch

    from loop.models import tiny_model as tm

    torch.set_num_threads(2)
    tok = tm.build_tokenizer()
    model = tm.build_model(len(tok), seed)
    model.generation_config.eos_token_id = model.config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    examples = tm.warm_start_examples(seed) + peel_examples(seed + 99, n) + extra_examples(extra or [], seed)
    random.Random(seed).shuffle(examples)
    tm.train(model, tok, examples, steps, 32, 3e-3, seed)
    tm.snap_to_nf4_grid(model)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def probe(model_dir: Path, categories: list[str], difficulties: list[int], count: int, seed: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import generators  # noqa: F401
    from generators.base import GENERATORS

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    gen = GENERATORS.build("arithmetic", {"chain": "aligned", "max_digits": max(5, *difficulties)})
    res: dict = {}
    for cat in categories:
        for d in difficulties:
            right = first = 0
            for p in gen.generate(cat, d, count, seed):
                head = tok.apply_chat_template([m.model_dump() for m in p.prompt], add_generation_prompt=True,
                                               tokenize=False)
                ids = tok(head, return_tensors="pt", add_special_tokens=False).input_ids
                with torch.no_grad():
                    out = model.generate(ids, max_new_tokens=320, do_sample=False, eos_token_id=tok.eos_token_id)
                text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
                ref = p.reference.chain.strip()
                right += text.split("\n")[-1] == ref.split("\n")[-1]
                lines = text.split("\n")
                first += len(lines) > 1 and lines[1] == ref.split("\n")[1]
            res[f"{cat}/{d}"] = {"accuracy": right / count, "first_line_right": first / count, "problems": count}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "loop" / "assets" / "tiny-qwen3")
    ap.add_argument("--categories", nargs="+", default=["add", "sub"])
    ap.add_argument("--difficulties", nargs="+", type=int, default=[3, 4, 5])
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--build-peel", type=int, default=0, metavar="N", help="first build the peel variant into --model")
    ap.add_argument("--build-extra", action="append", default=[], metavar="CAT:D=N",
                    help="first build a warm start with N more CAT problems at D digits into --model (repeatable)")
    a = ap.parse_args()
    if a.build_peel or a.build_extra:
        build_peel(a.model, a.build_peel, extra=a.build_extra)
    print(json.dumps({"model": str(a.model), "peel_examples": a.build_peel, "extra": a.build_extra,
                      "by_level": probe(a.model, a.categories, a.difficulties, a.count, a.seed)}))


if __name__ == "__main__":
    main()
