"""Offline: a step-level (process) learned verifier against the loop's outcome-level one, on a finished run.

    python benchmarks/verifier_steps.py state/runs/verifier-main-s0-<stamp> [--seed 0] [--out F]

The loop's learned verifier answers "Is this solution correct?" once a chain, trained on the outcome label; on
the tiny model it tells problems apart but hardly two chains of one problem (within-problem AUC about 0.54,
benchmarks/verifier_offline.py). This trains a fresh adapter (the loop's trainer and Yes/No objective) on
*prefixes* of the run's verification chains instead, one example per line: Yes while every line so far is the
line the problem's reference chain has there, No at the first line that is not (later lines are dropped). That
is dense, local supervision (process reward model style, Lightman et al. 2023); the labels come from the
reference chain, which exists for the arithmetic family whose correct chain is unique. A chain's score is the
lowest P(Yes) over its prefixes. It scores the last round's held-out selection samples (n chains a problem) and
prints pooled AUC, within-problem AUC and best-of-n accuracy next to majority vote, as verifier_offline.py does.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

STEP_QUESTION = "Is every line so far correct? Answer Yes or No."


def chain_of(prompt: list[dict]) -> str:
    """The chain inside a verification prompt (between 'Solution:' and the question)."""
    text = prompt[0]["content"]
    return text.split("\n\nSolution:\n", 1)[1].rsplit("\n\n", 1)[0]


def step_examples(chain: str, reference: str) -> list[tuple[str, bool]]:
    """(prefix, every line so far right) for each line after <think>, up to and including the first wrong one."""
    lines, ref = chain.split("\n"), reference.split("\n")
    out = []
    for k in range(1, len(lines)):
        ok = lines[: k + 1] == ref[: k + 1]
        out.append(("\n".join(lines[: k + 1]), ok))
        if not ok:
            break
    return out


def messages(task: str, prefix: str) -> list[dict]:
    return [{"role": "user", "content": f"{task}\n\nSolution:\n{prefix}\n\n{STEP_QUESTION}"}]


def main() -> None:
    from verifier_offline import emit, heldout_selection, majority, ranking, score

    from loop.cluster.trainer import TrainerWorker
    from loop.config import load_config
    from loop.records import Problem
    from loop.verifier_data import read_examples
    from verifiers.learned import NO, YES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-examples", type=int, default=2048, help="prefix examples, half Yes half No at most")
    ap.add_argument("--rounds", type=int, default=3, help="the last this many rounds' chains")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="append the result line to this file")
    a = ap.parse_args()

    rounds = sorted(p for p in a.run.glob("round-*") if (p / "verifier_examples.jsonl").exists())
    if not (a.run / "config.yaml").exists() or not rounds or \
            not (rounds[-1] / "heldout" / "selection_samples.jsonl").exists():
        sys.exit(f"{a.run}: needs config.yaml, round-*/verifier_examples.jsonl and the last round's "
                 "heldout/selection_samples.jsonl (a run with learned_verifier.selection_n > 0, e.g. "
                 "benchmarks/verifier_efficacy.py's main runs)")
    cfg = load_config(str(a.run / "config.yaml"), [])
    problems = {}
    for f in [*(r / "problems.jsonl" for r in rounds), a.run / "eval" / "problems.jsonl"]:
        for x in f.read_text().splitlines():
            if x.strip():
                p = Problem.model_validate_json(x)
                problems[p.id] = p
    yes, no = [], []
    for r in rounds[-a.rounds:]:
        for e in read_examples(r / "verifier_examples.jsonl"):
            p = problems.get(e["problem_id"])
            if p is None or not p.reference.chain:
                continue
            task = e["prompt"][0]["content"].split("\n\nSolution:\n", 1)[0]
            for prefix, ok in step_examples(chain_of(e["prompt"]), p.reference.chain):
                (yes if ok else no).append(messages(task, prefix))
    rng = random.Random(a.seed)
    k = min(len(yes), len(no), a.max_examples // 2)
    chosen = [(m, True) for m in rng.sample(yes, k)] + [(m, False) for m in rng.sample(no, k)]
    rng.shuffle(chosen)
    examples = [{"prompt": m, "completion": [{"role": "assistant", "content": YES if ok else NO}]} for m, ok in chosen]
    info = {"yes_pool": len(yes), "no_pool": len(no), "examples": len(examples)}

    tr = {**cfg.training.model_dump(), "device": "cpu"}
    model_path = str(cfg.model.resolved_path())
    out = Path(tempfile.mkdtemp(prefix="verifier-steps-"))
    t0 = time.time()
    m = TrainerWorker(model_path, cfg.quantization.model_dump(), cfg.lora.model_dump(), tr).train(
        examples, str(out), None, a.seed,
        overrides={"mode": "continue", "epochs": a.epochs, "learning_rate": a.lr, "loss_on_words": [YES, NO],
                   "max_seq_len": max(tr["max_seq_len"], cfg.model.max_model_len)})
    train_s = time.time() - t0

    held = rounds[-1] / "heldout"
    samples, outcome = heldout_selection(held)
    samples = [s for s in samples if outcome.get(s["id"]) in ("pass", "fail")]
    prompts, owner = [], []
    for i, s in enumerate(samples):
        task = problems[s["problem_id"]].prompt[0].content
        lines = s["text"].split("\n")
        for k in range(1, len(lines)):
            prompts.append(messages(task, "\n".join(lines[: k + 1])))
            owner.append(i)
    t1 = time.time()
    flat = score(model_path, out, prompts)
    per: dict[int, list[float]] = defaultdict(list)
    for i, p in zip(owner, flat):
        per[i].append(p)
    res = {"run": a.run.name, "mode": "steps", "epochs": a.epochs, "lr": a.lr, "seed": a.seed, "train": info,
           "first_loss": m.get("first_loss"), "last_loss": m.get("last_loss"), "train_seconds": round(train_s, 1),
           "score_seconds": round(time.time() - t1, 1), "prefixes_scored": len(prompts)}
    for name, agg in (("min", min), ("last", lambda v: v[-1])):
        res[name] = ranking([(s["problem_id"], agg(per[i]) if per[i] else 0.0, outcome[s["id"]] == "pass")
                             for i, s in enumerate(samples)])
    res["majority"] = majority(samples, outcome)
    emit(res, a.out)


if __name__ == "__main__":
    main()
