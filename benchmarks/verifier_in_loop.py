"""Why does the learned verifier separate chains worse inside the loop than offline? Two probes on a finished run.

    python benchmarks/verifier_in_loop.py parity  RUN --round R [--nf4]
    python benchmarks/verifier_in_loop.py retrain RUN --train-rounds 0,1,2 --eval-round 2 \
        [--extra 'state/runs/efficacy-dt-*/round-00*/verifier_examples.jsonl'] [--configs JSON]

RUN is a run made with `learned_verifier.selection_n > 0` (benchmarks/verifier_efficacy.py makes them), so each
round's heldout/ holds `selection_samples.jsonl` (n sampled chains per held-out problem) and
`selection_outcomes.jsonl` (programmatic outcome + the loop's P(Yes), read from vLLM).

- parity: the round's verifier adapter is loaded with transformers + peft (the fp32 base, or with --nf4 the NF4
  base it was trained on) and scores the same chains. If its P(Yes) matches the loop's, the serving path (merged
  adapter, chat template, the forced-token logprob read) is exact and any weakness is in what was trained.
- retrain: plain-torch LoRA verifiers (Yes-vs-No cross-entropy, the loop's objective) trained on the run's own
  verification examples of --train-rounds, optionally plus other runs' (--extra; examples of this run's held-out
  problems are dropped), scored on --eval-round's held-out chains. It separates "the recipe" (epochs, lr, schedule)
  from "the data" (how many examples, from which policies).

Each result is one JSON line appended to benchmarks/results/verifier_in_loop.jsonl (and printed). CPU is enough:
the embedded model has 2.4M parameters (about 30 s an epoch per 1,000 examples on 2 cores).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import random
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# plain imports only (no pydantic): `retrain` also runs on a GPU machine that has torch + transformers alone
from verifier_learnability import QUESTION, attach_lora, auc, train_step  # noqa: E402

YES, NO = "Yes", "No"  # verifiers/learned.py YES, NO

OUT = ROOT / "benchmarks" / "results" / "verifier_in_loop.jsonl"
MODEL = ROOT / "loop" / "assets" / "tiny-qwen3"


def heldout_chains(run: Path, r: int) -> tuple[list, list[bool], list[str], list[float | None]]:
    """(verifier prompts, programmatic pass, problem id, the loop's P(Yes)) of round r's held-out selection chains."""
    problems = {p["id"]: p for p in map(json.loads, (run / "eval" / "problems.jsonl").read_text().splitlines())}
    rd = run / f"round-{r:03d}" / "heldout"
    if not (rd / "selection_outcomes.jsonl").exists():
        sys.exit(f"{rd}/selection_outcomes.jsonl is missing: make the run with learned_verifier.selection_n > 0 "
                 "(benchmarks/verifier_efficacy.py does)")
    outs = {o["sample_id"]: o for o in map(json.loads, (rd / "selection_outcomes.jsonl").read_text().splitlines())}
    prompts, labels, pids, loop = [], [], [], []
    for s in map(json.loads, (rd / "selection_samples.jsonl").read_text().splitlines()):
        o = outs[s["id"]]
        if o["outcome"] not in ("pass", "fail"):
            continue
        task = "\n".join(m["content"] for m in problems[s["problem_id"]]["prompt"] if m["role"] == "user")
        prompts.append([{"role": "user", "content": f"{task}\n\nSolution:\n{s['text']}\n\n{QUESTION}"}])
        labels.append(o["outcome"] == "pass")
        pids.append(s["problem_id"])
        loop.append(o.get("p_yes"))
    return prompts, labels, pids, loop


def measure(scores: list[float], labels: list[bool], pids: list[str]) -> dict:
    """Pooled AUC, mean within-problem AUC (problems whose chains both pass and fail) and best-of-n accuracy."""
    per = defaultdict(list)
    for p, s, y in zip(pids, scores, labels):
        per[p].append((s, y))
    within = [a for a in (auc([s for s, _ in v], [y for _, y in v]) for v in per.values()) if a is not None]
    best = sum(max((s, -i, y) for i, (s, y) in enumerate(v))[2] for v in per.values()) / len(per)
    return {"pooled_auc": round(auc(scores, labels), 4), "within_problem_auc": round(sum(within) / len(within), 4),
            "mixed_problems": len(within), "best_of_n": round(best, 4)}


def corrupt_numbers(text: str, rng: random.Random) -> str | None:
    """retrain's `corrupt`: a copy of a chain with one number edited (a digit changed, dropped or doubled), or
    None when it has no digits: a synthetic hard negative one edit away from a passing chain. Measured on
    verifier-base-main-s0 (2026-12-07): it made the verifier worse (within-problem AUC 0.50-0.55 against 0.67-0.68
    without; the tiny verifier does not even fit them, loss 0.52), so the loop does not use it."""
    spans = [m.span() for m in re.finditer(r"\d+", text)]
    if not spans:
        return None
    a, b = spans[rng.randrange(len(spans))]
    digits = text[a:b]
    i = rng.randrange(len(digits))
    op = rng.random()
    if op < 0.15 and len(digits) > 1:
        new = digits[:i] + digits[i + 1:]
    elif op < 0.3:
        new = digits[:i] + digits[i] + digits[i:]
    else:
        new = digits[:i] + rng.choice([d for d in "0123456789" if d != digits[i]]) + digits[i + 1:]
    return text[:a] + new + text[b:]


class Scorer:
    def __init__(self, device: str = "cpu"):
        from transformers import AutoTokenizer

        self.device = device

        self.tok = AutoTokenizer.from_pretrained(str(MODEL))
        self.tok.padding_side = "left"
        self.ids = [self.tok.encode(w, add_special_tokens=False)[0] for w in (YES, NO)]

    def encode(self, prompts: list):
        return self.tok([self.tok.apply_chat_template(x, tokenize=False, add_generation_prompt=True) for x in prompts],
                        return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)

    def decision_logits(self, model, prompts: list):
        return model(**self.encode(prompts)).logits[:, -1][:, self.ids].float()

    def p_yes(self, model, prompts: list, bs: int = 128) -> list[float]:
        import torch

        out: list[float] = []
        was = model.training
        model.eval()
        with torch.no_grad():
            for i in range(0, len(prompts), bs):
                out += torch.softmax(self.decision_logits(model, prompts[i:i + bs]), -1)[:, 0].tolist()
        model.train(was)
        return out


def parity(run: Path, r: int, nf4: bool) -> dict:
    import numpy as np
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    prompts, labels, pids, loop = heldout_chains(run, r)
    keep = [i for i, s in enumerate(loop) if s is not None]
    prompts, labels, pids, loop = ([x[i] for i in keep] for x in (prompts, labels, pids, loop))
    kw = {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32)} if nf4 else {}
    base = AutoModelForCausalLM.from_pretrained(str(MODEL), dtype=torch.float32, **kw)
    adapter = json.loads((run / f"round-{r:03d}" / "verifier.json").read_text())["adapter"]
    model = PeftModel.from_pretrained(base, str(run / adapter)).eval()
    hf = Scorer().p_yes(model, prompts)
    diff = np.abs(np.array(hf) - np.array(loop))
    return {"probe": "parity", "run": run.name, "round": r, "base": "nf4" if nf4 else "fp32", "chains": len(hf),
            "hf": measure(hf, labels, pids), "loop": measure(loop, labels, pids),
            "mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max())}


def retrain(run: Path, train_rounds: list[int], r: int, extra: str | None, configs: list[dict],
            device: str = "cpu") -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM

    prompts, labels, pids, loop = heldout_chains(run, r)
    held = {p[0]["content"].split("\n\nSolution:")[0] for p in prompts}
    pool, dropped = {}, 0
    files = [run / f"round-{t:03d}" / "verifier_examples.jsonl" for t in train_rounds]
    files += [Path(f) for f in sorted(glob.glob(extra))] if extra else []
    for f in files:
        for e in map(json.loads, f.read_text().splitlines()):
            if e["prompt"][0]["content"].split("\n\nSolution:")[0] in held:
                dropped += 1
                continue
            pool[json.dumps(e["prompt"])] = (e["prompt"], e["label"])
    yes = [x for x, y in pool.values() if y]
    no = [x for x, y in pool.values() if not y]
    sc = Scorer(device)
    head = {"probe": "retrain", "run": run.name, "train_rounds": train_rounds, "eval_round": r,
            "extra_files": len(files) - len(train_rounds), "dropped_heldout_examples": dropped,
            "device": torch.cuda.get_device_name() if device == "cuda" else device,
            "pool_yes": len(yes), "pool_no": len(no), "heldout_chains": len(prompts), "heldout_pass": sum(labels)}
    kept = [i for i, s in enumerate(loop) if s is not None]
    head["loop"] = measure([loop[i] for i in kept], [labels[i] for i in kept], [pids[i] for i in kept])
    print(json.dumps(head), flush=True)
    results = []
    for cfg in configs:
        seed = cfg.get("seed", 0)
        torch.manual_seed(seed)
        rng = random.Random(seed)
        k = min(len(yes), len(no), cfg.get("max_examples", 1 << 30) // 2)
        data = [(x, True) for x in rng.sample(yes, k)] + [(x, False) for x in rng.sample(no, k)]
        if cfg.get("corrupt"):  # m copies of each passing chain with one number edited, labelled No
            for x, y in list(data):
                for _ in range(cfg["corrupt"] if y else 0):
                    head_, rest = x[0]["content"].split("\n\nSolution:\n", 1)
                    chain, question = rest.rsplit("\n\n", 1)
                    bad = corrupt_numbers(chain, rng)
                    if bad is not None:
                        data.append(([{"role": "user", "content": f"{head_}\n\nSolution:\n{bad}\n\n{question}"}], False))
            if cfg.get("corrupt_balance"):  # repeat the passing chains so both classes weigh the same
                data += [(x, True) for x, y in list(data) if y] * cfg["corrupt"]
        model = AutoModelForCausalLM.from_pretrained(str(MODEL), dtype=torch.float32).to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        rank = cfg.get("r", 16)
        opt = torch.optim.AdamW(attach_lora(model, r=rank, alpha=2 * rank), lr=cfg["lr"], weight_decay=0.0)
        bs, epochs = cfg.get("batch", 32), cfg["epochs"]
        sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs) * math.ceil(len(data) / bs))
                 if cfg.get("schedule") == "cosine" else None)
        t0 = time.time()
        for ep in range(1, max(epochs) + 1):
            rng.shuffle(data)
            tot = nb = 0
            for i in range(0, len(data), bs):
                batch = data[i:i + bs]
                target = torch.tensor([0 if y else 1 for _, y in batch], device=device)
                loss = torch.nn.functional.cross_entropy(sc.decision_logits(model, [x for x, _ in batch]), target)
                tot, nb = tot + train_step(opt, sched, loss), nb + 1
            if ep in epochs:
                res = {**head, "config": cfg, "epoch": ep, "examples": len(data), "train_loss": round(tot / nb, 4),
                       "train_seconds": round(time.time() - t0), **measure(sc.p_yes(model, prompts), labels, pids)}
                res.pop("loop")
                print(json.dumps(res), flush=True)
                results.append(res)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("probe", choices=["parity", "retrain"])
    ap.add_argument("run", type=Path, help="a run directory (state/runs/verifier-main-s0-...)")
    ap.add_argument("--round", type=int, default=0, help="parity: the round whose verifier and chains to compare")
    ap.add_argument("--nf4", action="store_true", help="parity: load the base in NF4, as the trainer did")
    ap.add_argument("--train-rounds", default="0", help="retrain: rounds of RUN whose examples train (0,1,2)")
    ap.add_argument("--eval-round", type=int, default=0, help="retrain: the round whose held-out chains are scored")
    ap.add_argument("--extra", help="retrain: a glob of other runs' verifier_examples.jsonl to add")
    ap.add_argument("--configs", default=json.dumps([{"lr": 1e-3, "epochs": [2, 4, 6], "batch": 32}]),
                    help="retrain: JSON list of {lr, epochs: [checkpoints], batch, schedule, max_examples, seed, r (LoRA rank, "
                         "alpha = 2r), corrupt (m one-edit copies of each passing chain, labelled No)}")
    ap.add_argument("--device", default="cpu", help="retrain: cpu or cuda")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    if not a.run.is_dir():
        sys.exit(f"{a.run} is not a run directory")
    rows = [parity(a.run, a.round, a.nf4)] if a.probe == "parity" else retrain(
        a.run, [int(x) for x in a.train_rounds.split(",")], a.eval_round, a.extra, json.loads(a.configs), a.device)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with a.out.open("a") as f:
        for row in rows:
            if a.probe == "parity":
                print(json.dumps(row))
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
