"""Which objective lets the tiny model learn to verify its chains? A sweep on a GPU (not the loop's path).

Data: the round-0 verification examples of benchmarks/verifier_efficacy.py's main runs (training side,
balanced) and their held-out best-of-8 chains with the programmatic outcome, written to
state/lvexp/data.json by `python benchmarks/verifier_objective.py --prepare` (on the CPU machine);
then, where a GPU is: `python benchmarks/verifier_objective.py '[{"lr": 0.001, "epochs": 2}, ...]'`.
A hand-written LoRA (r=16, alpha=32, every Linear of the decoder layers) on the fp32 base; the loss is
either the Yes-vs-No cross-entropy at the reply's first token or (completion=True) the loop's earlier
objective, every completion token (Yes/No, end of turn, newline). AUC over all held-out chains, over
3-digit chains, and within a problem (mean over problems with passing and failing chains).
"""

import json
import math
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from verifier_learnability import attach_lora  # benchmarks/ is on sys.path when run as a script


def prepare() -> None:
    import glob
    from pathlib import Path

    from loop.records import Problem, Sample
    from loop.run.state import read_jsonl
    from loop.verifier_data import read_examples, training_set
    from verifiers.learned import verification_messages

    runs = sorted(glob.glob("state/runs/verifier-main-s*"))
    cur = [e for r in runs for e in read_examples(Path(r) / "round-000/verifier_examples.jsonl")]
    ex, info = training_set(cur, [], 0, 4096)
    train = [{"prompt": e["prompt"], "label": e["completion"][0]["content"] == "Yes"} for e in ex]
    test = []
    for r in map(Path, runs):
        hp = {p.id: p for p in read_jsonl(r / "eval/problems.jsonl", Problem)}
        oc = {json.loads(x)["sample_id"]: json.loads(x) for x in open(r / "round-000/heldout/selection_outcomes.jsonl")}
        for s in read_jsonl(r / "round-000/heldout/selection_samples.jsonl", Sample):
            o, p = oc[s.id], hp[s.problem_id]
            if o["outcome"] in ("pass", "fail"):
                test.append(
                    {
                        "run": r.name,
                        "difficulty": p.difficulty,
                        "prompt": verification_messages(p, s.text, 1200),
                        "label": o["outcome"] == "pass",
                        "loop_p_yes": o["p_yes"],
                        "problem_id": p.id,
                    }
                )
    Path("state/lvexp").mkdir(parents=True, exist_ok=True)
    json.dump({"train": train, "test": test, "info": info}, open("state/lvexp/data.json", "w"))


if sys.argv[1:] == ["--prepare"]:
    prepare()
    sys.exit()
torch.manual_seed(int(os.environ.get("SEED", 0)))
D = json.load(open("state/lvexp/data.json"))
M = "loop/assets/tiny-qwen3"
tok = AutoTokenizer.from_pretrained(M)
tok.padding_side = "left"
Y, N = (tok.encode(w, add_special_tokens=False)[0] for w in ("Yes", "No"))
dev = "cuda"


def auc(s, y):
    pos = [a for a, b in zip(s, y) if b]
    neg = [a for a, b in zip(s, y) if not b]
    if not pos or not neg:
        return None
    wins = 0.0
    neg_t = torch.tensor(neg)
    for p in pos:
        wins += (p > neg_t).sum().item() + 0.5 * (p == neg_t).sum().item()
    return wins / (len(pos) * len(neg))


def build(r, alpha, full):
    model = AutoModelForCausalLM.from_pretrained(M, dtype=torch.float32).to(dev)
    if full:
        return model, [p for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    return model, attach_lora(model, r, alpha)


def encode(rows):
    texts = [tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows]
    return tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(dev)


def scores(model, rows, bs=256):
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), bs):
            enc = encode(rows[i : i + bs])
            out += torch.softmax(model(**enc).logits[:, -1][:, [Y, N]].float(), -1)[:, 0].tolist()
    model.train()
    return out


test = D["test"]
three = [t for t in test if t["difficulty"] == 3]


def report(tag, model):
    s = scores(model, test)
    s3 = [x for x, t in zip(s, test) if t["difficulty"] == 3]
    res = {
        "tag": tag,
        "auc_all": round(auc(s, [t["label"] for t in test]), 4),
        "auc_3digit": round(auc(s3, [t["label"] for t in three]), 4),
    }
    # best-of-8 per problem (3-digit and all) vs majority would need answers; report best-of-8 accuracy
    by = {}
    for x, t in zip(s, test):
        by.setdefault((t["run"], t["problem_id"]), []).append((x, t["label"]))
    res["best_of_8"] = round(sum(max(v)[1] for v in by.values()) / len(by), 4)
    within = [auc([a for a, _ in v], [b for _, b in v]) for v in by.values()]
    within = [w for w in within if w is not None]
    res["auc_within_problem"] = round(sum(within) / len(within), 4) if within else None
    res["mixed_problems"] = len(within)
    res["mean_correct"] = round(sum(t["label"] for t in test) / len(test), 4)
    print(json.dumps(res), flush=True)
    return res


def run(
    r=16,
    alpha=32,
    lr=4e-3,
    epochs=40,
    bs=32,
    full=False,
    checkpoints=(1, 2, 5, 10, 20, 40),
    completion=False,
    cosine=False,
):
    sched = None
    model, params = build(r, alpha, full)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    train = D["train"]
    t0 = time.time()
    for ep in range(1, epochs + 1):
        perm = torch.randperm(len(train)).tolist()
        tot = 0.0
        for i in range(0, len(train), bs):
            rows = [train[j] for j in perm[i : i + bs]]
            enc = encode(rows)
            if sched is None and cosine:
                total = epochs * math.ceil(len(train) / bs)
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
            if (
                completion
            ):  # the loop's objective: every completion token (Yes/No<|im_end|>\n), two-way decision inside it
                texts = [
                    tok.apply_chat_template(
                        r_["prompt"] + [{"role": "assistant", "content": "Yes" if r_["label"] else "No"}],
                        tokenize=False,
                    )
                    for r_ in rows
                ]
                pre = [
                    len(
                        tok(
                            tok.apply_chat_template(r_["prompt"], tokenize=False, add_generation_prompt=True),
                            add_special_tokens=False,
                        )["input_ids"]
                    )
                    for r_ in rows
                ]
                tok.padding_side = "right"
                full_enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(dev)
                tok.padding_side = "left"
                labels = full_enc["input_ids"].clone()
                for k, n in enumerate(pre):
                    labels[k, :n] = -100
                labels[full_enc["attention_mask"] == 0] = -100
                out = model(**full_enc).logits[:, :-1]
                loss = torch.nn.functional.cross_entropy(
                    out.reshape(-1, out.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100
                )
            else:
                logits = model(**enc).logits[:, -1][:, [Y, N]]
                target = torch.tensor([0 if r_["label"] else 1 for r_ in rows], device=dev)
                loss = torch.nn.functional.cross_entropy(logits.float(), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.item() * len(rows)
            if sched is not None:
                sched.step()
        if ep in checkpoints:
            print(
                f"r={r} lr={lr} full={full} completion={completion} cosine={cosine} epoch {ep} train loss {tot / len(train):.4f} ({time.time() - t0:.0f}s)",
                flush=True,
            )
            report(f"r{r}-lr{lr}-full{full}-ep{ep}", model)


loop_s = [t["loop_p_yes"] for t in test]
print(
    "loop round-0 verifier:",
    json.dumps(
        {
            "auc_all": round(auc(loop_s, [t["label"] for t in test]), 4),
            "auc_3digit": round(auc([t["loop_p_yes"] for t in three], [t["label"] for t in three]), 4),
        }
    ),
    flush=True,
)
for cfg in json.loads(sys.argv[1]):
    run(**cfg)
