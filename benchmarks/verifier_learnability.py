"""Can the warm start learn to verify its own chains? Outcome vs step labels, offline, on a GPU.

    python benchmarks/verifier_learnability.py prepare [--dir .ws/lv]          # here: the problems (needs pydantic)
    python benchmarks/verifier_learnability.py run [--dir .ws/lv] [--device cuda]   # where a GPU is: torch + transformers

Not the loop's path: a fast probe of what the loop's learned verifier (verifiers/learned.py) could learn from
the shipped warm start (loop/assets/tiny-qwen3), run where the loop's stack is not installed. `prepare` draws the
default's problems (configs/default.yaml: aligned chains, "Compute {expr}."): a training side at 5 digits and a
held-out side at 5 and 6 digits, with their reference chains. `run` then, in one process:

1. samples the training problems `--train-n` times and the held-out ones 8 times (temperature 0.8, the default's)
   and once greedily, with `generate` of transformers; labels each chain by its final answer against the gold one,
   and each line by whether every line so far equals the reference chain's (the first line that differs is
   wrong, later lines are dropped): the outcome and step labels the loop's verifiers give;
2. trains a LoRA (r=16, alpha=32, every Linear of the decoder; the loss on the Yes/No decision token only, as the
   loop does) per objective: `outcome` ("Is this solution correct?" after the whole chain, classes balanced)
   and `steps` (the same question after each prefix, "Is every line so far correct?"; a chain's score is its
   lowest P(Yes));
3. scores the held-out chains and prints, per objective and checkpoint: pooled AUC, within-problem AUC (problems
   whose chains both pass and fail), verifier best-of-8 accuracy, next to greedy, majority vote and pass@8.

Writes `<dir>/result-s<seed>.json` (and the same under $OUT when it is set).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "Is this solution correct? Answer Yes or No."  # verifiers/learned.py QUESTION
STEP_QUESTION = "Is every line so far correct? Answer Yes or No."  # benchmarks/verifier_steps.py


def prepare(d: Path, train_per_cat: int, test_per_level: int, seed: int) -> None:
    sys.path.insert(0, str(ROOT))
    from generators.arithmetic import Arithmetic

    gen = Arithmetic(Arithmetic.Options(chain="aligned", max_digits=8))
    rows = []
    for cat in ("add", "sub"):
        for split, levels, k in (("train", [5], train_per_cat), ("test", [5, 6], test_per_level)):
            for lv in levels:
                for p in gen.generate(cat, lv, k, seed + (0 if split == "train" else 1000)):
                    rows.append({"id": p.id, "split": split, "category": cat, "difficulty": lv,
                                 "task": p.prompt[0].content, "answer": p.reference.answer,
                                 "reference": p.reference.chain})
    d.mkdir(parents=True, exist_ok=True)
    (d / "problems.json").write_text(json.dumps(rows))
    print(f"wrote {len(rows)} problems to {d / 'problems.json'}")


def attach_lora(model, r: int = 16, alpha: int = 32) -> list:
    """Wrap every Linear of the decoder layers (attention and MLP) in a LoRA (A random, B zero: the model is
    unchanged until trained); returns the trainable A and B of each. Also used by benchmarks/verifier_objective.py."""
    import torch

    class LoRA(torch.nn.Module):
        def __init__(self, lin):
            super().__init__()
            self.lin, self.scale = lin, alpha / r
            dev = lin.weight.device
            self.A = torch.nn.Parameter(torch.randn(r, lin.in_features, device=dev) / math.sqrt(lin.in_features))
            self.B = torch.nn.Parameter(torch.zeros(lin.out_features, r, device=dev))

        def forward(self, x):
            return self.lin(x) + (x @ self.A.T @ self.B.T) * self.scale

    params = []
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    w = LoRA(child)
                    setattr(parent, name, w)
                    params += [w.A, w.B]
    return params


def train_step(opt, sched, loss) -> float:
    """One optimizer step (and scheduler step, if any) on `loss`; its value."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()
    return loss.item()


def answer_of(text: str) -> str | None:
    if "</think>" not in text:
        return None
    m = re.findall(r"Answer:\s*(-?\d+)", text.split("</think>", 1)[1])
    return m[-1] if m else None


def auc(s, y):
    pos = [a for a, b in zip(s, y) if b]
    neg = [a for a, b in zip(s, y) if not b]
    if not pos or not neg:
        return None
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def run(d: Path, device: str, train_n: int, configs: list[dict], seed: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    random.seed(seed)
    M = str(ROOT / "loop/assets/tiny-qwen3")
    tok = AutoTokenizer.from_pretrained(M)
    tok.padding_side = "left"
    Y, N = (tok.encode(w, add_special_tokens=False)[0] for w in ("Yes", "No"))
    problems = json.loads((d / "problems.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(M, dtype=torch.float32).to(device).eval()
    t0 = time.time()

    def chat(task):
        return tok.apply_chat_template([{"role": "user", "content": task}], tokenize=False, add_generation_prompt=True)

    def sample(rows, n, greedy=False, bs=256):
        out = []
        for i in range(0, len(rows), bs):
            enc = tok([chat(r["task"]) for r in rows[i:i + bs]], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(device)
            with torch.no_grad():
                g = base.generate(**enc, max_new_tokens=224, do_sample=not greedy, temperature=0.8 if not greedy else None,
                                  top_p=None, top_k=None, num_return_sequences=n, pad_token_id=tok.pad_token_id)
            texts = tok.batch_decode(g[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for j, t in enumerate(texts):
                out.append((rows[i + j // n], t))
        return out

    train_p = [p for p in problems if p["split"] == "train"]
    test_p = [p for p in problems if p["split"] == "test"]
    tr = sample(train_p, train_n)
    te = sample(test_p, 8)
    gr = sample(test_p, 1, greedy=True)
    sample_s = time.time() - t0

    def label(p, t):
        return answer_of(t) == p["answer"]

    def steps(p, t):
        lines, ref = t.strip().split("\n"), p["reference"].split("\n")
        out = []
        for k in range(1, len(lines)):
            if lines[k].startswith("</think>"):
                break
            ok = lines[: k + 1] == ref[: k + 1]
            out.append(("\n".join(lines[: k + 1]), ok))
            if not ok:
                break
        return out

    def prompt(task, chain, q):
        return [{"role": "user", "content": f"{task}\n\nSolution:\n{chain}\n\n{q}"}]

    # the training side: outcome examples (balanced) and step examples (balanced)
    seen, yes, no = set(), [], []
    for p, t in tr:
        if (p["id"], t) in seen:
            continue
        seen.add((p["id"], t))
        (yes if label(p, t) else no).append(prompt(p["task"], t, QUESTION))
    syes, sno = [], []
    for p, t in {(p["id"], t): (p, t) for p, t in tr}.values():
        for prefix, ok in steps(p, t):
            (syes if ok else sno).append(prompt(p["task"], prefix, STEP_QUESTION))
    # a chain whose answer is right but whose lines are not the reference's would mean the step labels are wrong
    mismatch = [(t, p["reference"]) for p, t in tr if label(p, t) and not all(ok for _, ok in steps(p, t))]
    info = {"example_text": tr[0][1], "pass_but_step_wrong": len(mismatch), "pass_but_step_wrong_examples": mismatch[:3], "train_chains": len(tr), "distinct": len(seen), "outcome_yes": len(yes), "outcome_no": len(no),
            "step_yes": len(syes), "step_no": len(sno), "sample_seconds": round(sample_s, 1)}
    print(json.dumps(info), flush=True)

    # the held-out side: baselines
    by = defaultdict(list)
    for p, t in te:
        by[p["id"]].append((t, label(p, t)))
    greedy = {p["id"]: label(p, t) for p, t in gr}
    maj = {}
    for p in test_p:
        answers = Counter(answer_of(t) for t, _ in by[p["id"]] if answer_of(t) is not None)
        maj[p["id"]] = bool(answers) and answers.most_common(1)[0][0] == p["answer"]
    base_res = {"greedy": sum(greedy.values()) / len(test_p), "majority": sum(maj.values()) / len(test_p),
                "pass_at_8": sum(any(y for _, y in by[p["id"]]) for p in test_p) / len(test_p),
                "mean_correct": sum(y for v in by.values() for _, y in v) / len(te),
                "mixed_problems": sum(len({y for _, y in v}) == 2 for v in by.values())}
    print(json.dumps(base_res), flush=True)

    def fresh():
        m = AutoModelForCausalLM.from_pretrained(M, dtype=torch.float32).to(device)
        for q in m.parameters():
            q.requires_grad_(False)
        return m, attach_lora(m)

    def p_yes(m, prompts, bs=512, top_k=0):
        """P(Yes) normalised over Yes and No; top_k > 0: as the loop's scorer reads it from vLLM's top-k
        logprobs (a word outside the top k counts 0; neither inside: 0.5, where the loop abstains)."""
        out = []
        m.eval()
        with torch.no_grad():
            for i in range(0, len(prompts), bs):
                enc = tok([tok.apply_chat_template(x, tokenize=False, add_generation_prompt=True)
                           for x in prompts[i:i + bs]], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(device)
                logits = m(**enc).logits[:, -1].float()
                if not top_k:
                    out += torch.softmax(logits[:, [Y, N]], -1)[:, 0].tolist()
                    continue
                prob = torch.softmax(logits, -1)
                top = prob.topk(top_k, -1).indices
                py = prob[:, Y] * (top == Y).any(-1)
                pn = prob[:, N] * (top == N).any(-1)
                out += torch.where(py + pn > 0, py / (py + pn).clamp_min(1e-30), torch.full_like(py, 0.5)).tolist()
        m.train()
        return out

    # held-out prompts for each objective
    te_list = [(p, t, y) for p in test_p for t, y in by[p["id"]]]
    out_prompts = [prompt(p["task"], t, QUESTION) for p, t, _ in te_list]
    step_prompts, owner = [], []
    for i, (p, t, _) in enumerate(te_list):
        lines = t.strip().split("\n")
        for k in range(1, len(lines)):
            if lines[k].startswith("</think>"):
                break
            step_prompts.append(prompt(p["task"], "\n".join(lines[: k + 1]), STEP_QUESTION))
            owner.append(i)

    def measure(scores):
        labels = [y for _, _, y in te_list]
        per = defaultdict(list)
        for (p, _, y), s in zip(te_list, scores):
            per[p["id"]].append((s, y))
        within = [auc([s for s, _ in v], [y for _, y in v]) for v in per.values()]
        within = [w for w in within if w is not None]
        return {"pooled_auc": auc(scores, labels),
                "within_problem_auc": sum(within) / len(within) if within else None,
                # ties go to the first chain drawn, as loop/verifier_data.py `selection` does (not to a passing one)
                "best_of_8": sum(max((s, -i, y) for i, (s, y) in enumerate(v))[2] for v in per.values()) / len(test_p)}

    # not learned: the policy's own confidence in each held-out chain (lowest and mean token log-probability)
    conf_min, conf_mean = [], []
    with torch.no_grad():
        for i in range(0, len(te_list), 256):
            part = te_list[i:i + 256]
            heads = [chat(p["task"]) for p, _, _ in part]
            tok.padding_side = "right"
            enc = tok([h + t for h, (_, t, _) in zip(heads, part)], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(device)
            tok.padding_side = "left"
            lp = torch.log_softmax(base(**enc).logits[:, :-1].float(), -1)
            got = lp.gather(-1, enc["input_ids"][:, 1:, None])[..., 0]
            for j, h in enumerate(heads):
                start = len(tok(h, add_special_tokens=False)["input_ids"])
                end = int(enc["attention_mask"][j].sum())
                v = got[j, start - 1:end - 1]
                conf_min.append(v.min().item() if len(v) else -99.0)
                conf_mean.append(v.mean().item() if len(v) else -99.0)
    base_res["confidence_min_logprob"] = measure(conf_min)
    base_res["confidence_mean_logprob"] = measure(conf_mean)
    print(json.dumps(base_res), flush=True)

    results = []
    for cfg in configs:
        obj, lr, epochs, cap = cfg["objective"], cfg["lr"], cfg["epochs"], cfg.get("max_examples", 4096)
        pos, neg = (yes, no) if obj == "outcome" else (syes, sno)
        rng = random.Random(seed)
        k = min(len(pos), len(neg), cap // 2)
        data = [(x, True) for x in rng.sample(pos, k)] + [(x, False) for x in rng.sample(neg, k)]
        m, params = fresh()
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        bs = cfg.get("batch", 32)
        # "cosine": to 0 over the last checkpoint's epochs, as the loop's trainer (TRL, warmup 0) does
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs) * math.ceil(len(data) / bs)) \
            if cfg.get("schedule") == "cosine" else None
        t1 = time.time()
        for ep in range(1, max(epochs) + 1):
            rng.shuffle(data)
            tot, nb = 0.0, 0
            for i in range(0, len(data), bs):
                batch = data[i:i + bs]
                enc = tok([tok.apply_chat_template(x, tokenize=False, add_generation_prompt=True) for x, _ in batch],
                          return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                if cfg.get("loss", "two_way") == "two_way":  # Yes vs No only
                    logits = m(**enc).logits[:, -1][:, [Y, N]].float()
                    target = torch.tensor([0 if y else 1 for _, y in batch], device=device)
                else:  # the whole vocabulary; hybrid: plus Yes vs No (the loop's trainer before 3f8860a)
                    logits = m(**enc).logits[:, -1].float()
                    target = torch.tensor([Y if y else N for _, y in batch], device=device)
                loss = torch.nn.functional.cross_entropy(logits, target)
                if cfg.get("loss") == "hybrid":
                    loss = loss + torch.nn.functional.cross_entropy(logits[:, [Y, N]], (target == N).long())
                tot, nb = tot + train_step(opt, sched, loss), nb + 1
            if ep in epochs:
                extra = {}
                if obj == "outcome":
                    sc = p_yes(m, out_prompts)
                    extra = {"loop_top20_scoring": measure(p_yes(m, out_prompts, top_k=20))}
                else:
                    flat = p_yes(m, step_prompts)
                    per = defaultdict(list)
                    for i, s in zip(owner, flat):
                        per[i].append(s)
                    sc = [min(per[i]) if per[i] else 0.0 for i in range(len(te_list))]
                res = {"objective": obj, "loss": cfg.get("loss", "two_way"), "lr": lr, "epoch": ep, "batch": bs,
                       "schedule": cfg.get("schedule", "constant"), "examples": len(data), "train_loss": tot / nb,
                       "train_seconds": round(time.time() - t1, 1), **measure(sc), **extra}
                print(json.dumps(res), flush=True)
                results.append(res)
        del m, opt
    full = {"what": __doc__.splitlines()[0], "device": torch.cuda.get_device_name() if device == "cuda" else device,
            "seed": seed, "train_n": train_n, "data": info, "heldout": base_res, "runs": results}
    (d / f"result-s{seed}.json").write_text(json.dumps(full, indent=1))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], f"result-s{seed}.json").write_text(json.dumps(full, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["prepare", "run"])
    ap.add_argument("--dir", type=Path, default=ROOT / ".ws" / "lv")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--train-per-category", type=int, default=600)
    ap.add_argument("--test-per-level", type=int, default=64)
    ap.add_argument("--train-n", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", default=json.dumps([
        {"objective": "outcome", "loss": "two_way", "lr": 1e-3, "epochs": [2, 4]},
        {"objective": "outcome", "loss": "two_way", "lr": 1e-3, "epochs": [2, 4], "max_examples": 772},
        {"objective": "outcome", "loss": "hybrid", "lr": 1e-3, "epochs": [2, 4]},
        {"objective": "outcome", "loss": "full", "lr": 1e-3, "epochs": [2, 12]},
        {"objective": "steps", "lr": 1e-3, "epochs": [1, 3]}]),
        help="JSON list of {objective: outcome|steps, loss: two_way|full|hybrid (outcome), lr, epochs: "
             "[checkpoints], max_examples, batch (32), schedule: constant|cosine}")
    a = ap.parse_args()
    if a.what == "prepare":
        prepare(a.dir, a.train_per_category, a.test_per_level, a.seed)
    else:
        run(a.dir, a.device, a.train_n, json.loads(a.configs), a.seed)


if __name__ == "__main__":
    main()
