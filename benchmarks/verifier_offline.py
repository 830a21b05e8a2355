"""Offline learned-verifier sweep: other training settings on a finished run's own verification data.

    python benchmarks/verifier_offline.py state/runs/verifier-main-s0-<stamp> [--mode balanced|contrastive]
                                          [--epochs 2] [--lr 1e-3] [--rank 16] [--seed 0]

Trains a fresh verifier adapter (the loop's trainer and objective: Yes/No at the decision token) on the run's
verifier_examples.jsonl of every round, scores the last round's held-out selection samples
(heldout/selection_samples.jsonl, n chains a problem, labelled by the programmatic verifiers) with a
transformers forward, and prints one JSON line: pooled AUC, within-problem AUC (over the problems whose chains
both pass and fail) and verifier best-of-n accuracy. `--out F` appends that line to F.

- balanced: what the loop trains on (loop.verifier_data.training_set: last round + replay, classes balanced);
- contrastive: only problems whose chains both pass and fail, as many passing as failing chains of each, so
  the only signal left is what tells two chains of one problem apart.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def contrastive_set(batches: list[list[dict]], seed: int) -> list[dict]:
    from verifiers.learned import NO, YES

    by: dict[str, list[dict]] = defaultdict(list)
    for e in (e for b in batches for e in b):
        by[e["problem_id"]].append(e)
    rng, chosen = random.Random(seed), []
    for es in by.values():
        yes, no = [e for e in es if e["label"]], [e for e in es if not e["label"]]
        k = min(len(yes), len(no))
        chosen += rng.sample(yes, k) + rng.sample(no, k)
    rng.shuffle(chosen)
    return [{"prompt": e["prompt"], "completion": [{"role": "assistant", "content": YES if e["label"] else NO}]}
            for e in chosen]


def score(model_path: str, adapter: Path, prompts: list[list[dict]]) -> list[float]:
    """P(Yes) / (P(Yes) + P(No)) of the first reply token, as the sampler scores it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verifiers.learned import NO, YES

    tok = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32),
                                      str(adapter)).eval()
    yes, no = (tok.encode(w, add_special_tokens=False)[0] for w in (YES, NO))
    texts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            batch = tok(texts[i:i + 64], return_tensors="pt", padding=True, add_special_tokens=False)
            logp = model(**batch).logits[:, -1].float().log_softmax(-1)
            out += torch.stack([logp[:, yes], logp[:, no]], -1).softmax(-1)[:, 0].tolist()
    return out


def heldout_selection(held: Path) -> tuple[list[dict], dict[str, str]]:
    """A round's held-out selection samples (n chains a problem) and their programmatic outcome by sample id."""
    samples = [json.loads(x) for x in (held / "selection_samples.jsonl").read_text().splitlines() if x.strip()]
    outcome = {r["sample_id"]: r["outcome"] for r in
               (json.loads(x) for x in (held / "selection_outcomes.jsonl").read_text().splitlines() if x.strip())}
    return samples, outcome


def ranking(rows: list[tuple[str, float, bool]]) -> dict:
    """(problem id, score, passed) rows -> pooled AUC, mean within-problem AUC over the problems whose chains both
    pass and fail, and the accuracy of each problem's top-scored chain."""
    from loop.verifier_data import auc

    by: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for pid, p, y in rows:
        by[pid].append((p, y))
    within = [x for v in by.values() if (x := auc([p for p, _ in v], [y for _, y in v])) is not None]
    return {"pooled_auc": auc([p for _, p, _ in rows], [y for _, _, y in rows]),
            "within_problem_auc": sum(within) / len(within) if within else None, "mixed_problems": len(within),
            "verifier_best_of_n": sum(max(v)[1] for v in by.values()) / len(by)}


def emit(res: dict, out: Path | None) -> None:
    """Print the result line, and append it to `out` if given."""
    line = json.dumps(res)
    print(line)
    if out:
        with out.open("a") as f:
            f.write(line + "\n")


def majority(samples: list[dict], outcome: dict[str, str]) -> float:
    """Held-out accuracy of the most common final answer among each problem's chains (ties: the first seen)."""
    from collections import Counter

    from loop.verifier_data import _vote_key
    from verifiers.extract import extract_answer

    by: dict[str, list[tuple[str | None, bool]]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: s["index"]):
        by[s["problem_id"]].append((_vote_key(extract_answer(s["text"]).answer), outcome.get(s["id"]) == "pass"))
    right = 0
    for chains in by.values():  # as loop.verifier_data.selection counts it: the top answer's first chain
        top = Counter(a for a, _ in chains if a is not None).most_common(1)
        right += bool(top) and [ok for a, ok in chains if a == top[0][0]][0]
    return right / len(by)


def main() -> None:
    from loop.cluster.trainer import TrainerWorker
    from loop.config import load_config
    from loop.records import Problem
    from loop.verifier_data import read_examples, training_set
    from verifiers.learned import NO, YES, verification_messages

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--mode", choices=["balanced", "contrastive"], default="balanced")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--max-examples", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="append the result line to this file")
    a = ap.parse_args()

    cfg = load_config(str(a.run / "config.yaml"), [])
    rounds = sorted(p for p in a.run.glob("round-*") if (p / "verifier_examples.jsonl").exists())
    if not rounds or not (rounds[-1] / "heldout" / "selection_samples.jsonl").exists():
        sys.exit(f"{a.run}: needs round-*/verifier_examples.jsonl and the last round's heldout/selection_samples.jsonl "
                 "(a run with learned_verifier.selection_n > 0, e.g. benchmarks/verifier_efficacy.py's main runs)")
    batches = [read_examples(p / "verifier_examples.jsonl") for p in rounds]
    if a.mode == "balanced":
        examples, info = training_set(batches[-1], batches[-2::-1], a.seed, a.max_examples)
    else:
        examples = contrastive_set(batches, a.seed)
        info = {"examples": len(examples)}
    tr = {**cfg.training.model_dump(), "device": "cpu"}
    lora = {**cfg.lora.model_dump(), "r": a.rank, "alpha": 2 * a.rank}
    model_path = str(cfg.model.resolved_path())
    out = Path(tempfile.mkdtemp(prefix="verifier-offline-"))
    t0 = time.time()
    m = TrainerWorker(model_path, cfg.quantization.model_dump(), lora, tr).train(
        examples, str(out), None, a.seed,
        overrides={"mode": "continue", "epochs": a.epochs, "learning_rate": a.lr, "loss_on_words": [YES, NO],
                   "max_seq_len": max(tr["max_seq_len"], cfg.model.max_model_len)})
    train_s = time.time() - t0

    held = rounds[-1] / "heldout"
    problems = {p.id: p for p in (Problem.model_validate_json(x) for x in
                                  (a.run / "eval" / "problems.jsonl").read_text().splitlines() if x.strip())}
    samples, outcome = heldout_selection(held)
    lv = cfg.learned_verifier
    scores = score(model_path, out, [verification_messages(problems[s["problem_id"]], s["text"], lv.max_chain_chars)
                                     for s in samples])
    rows = [(s["problem_id"], p, outcome[s["id"]] == "pass") for s, p in zip(samples, scores)
            if outcome.get(s["id"]) in ("pass", "fail")]
    res = {"run": a.run.name, "mode": a.mode, "epochs": a.epochs, "lr": a.lr, "rank": a.rank, "seed": a.seed,
           "train": info, "first_loss": m.get("first_loss"), "last_loss": m.get("last_loss"), **ranking(rows),
           "train_seconds": round(train_s, 1)}
    res["majority"] = majority(samples, outcome)
    emit(res, a.out)


if __name__ == "__main__":
    main()
