"""The learned verifier's data and measurements, as plain functions (verifiers/learned.py is the plug-in).

- `examples_from_rows`: every training-side sample whose programmatic outcome is pass or fail becomes
  a verification example (problem, chain, "Is this solution correct?" -> Yes/No); abstain and error
  outcomes, held-out problems and replayed gold chains never do. Deduplicated by (problem, chain).
- `training_set`: this round's examples plus earlier rounds' (replay), deduplicated, class-balanced
  (the larger class is cut to the smaller one's size) and capped, in TRL's prompt/completion form.
- `agreement`: the learned verdicts against the programmatic outcome (AUC, accuracy at the
  threshold, a calibration table); `selection`: greedy, majority vote, verifier-ranked best-of-n and
  verifier-weighted vote on the same held-out problems.
- `check_adapter`: a verifier adapter is a PEFT LoRA whose every tensor fits the run's base model.
"""
from __future__ import annotations

import json
import random
import struct
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from loop.records import Problem, Row, Verdict, verdict_of
from verifiers.extract import extract_answer, normalize
from verifiers.learned import NO, YES, verification_messages

LEARNED = "learned"


class VerifierDataError(ValueError):
    """No usable data or adapter; str() says what is missing and what to do."""


def examples_from_rows(rows: Iterable[Row], heldout_fraction: float, max_chain_chars: int) -> list[dict]:
    out, seen = [], set()
    for r in rows:
        if r.outcome not in ("pass", "fail") or r.sample.gold or r.problem.is_heldout(heldout_fraction):
            continue
        key = (r.problem.id, r.sample.text)
        if key in seen:
            continue
        seen.add(key)
        out.append({"problem_id": r.problem.id, "sample_id": r.sample.id, "category": r.category_key,
                    "label": r.outcome == "pass",
                    "prompt": verification_messages(r.problem, r.sample.text, max_chain_chars)})
    return out


def read_examples(path: Path) -> list[dict]:
    """A round's verification examples (verifier_examples.jsonl); [] when that round wrote none."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def training_set(current: list[dict], earlier: Sequence[list[dict]], seed: int,
                 max_examples: int) -> tuple[list[dict], dict]:
    """(TRL examples, what went in). Raises VerifierDataError when a class is empty."""
    pool, seen = [], set()
    for ex in [*current, *(e for batch in earlier for e in batch)]:
        key = json.dumps(ex["prompt"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            pool.append(ex)
    n_current = len({json.dumps(e["prompt"], sort_keys=True) for e in current})
    yes = [e for e in pool if e["label"]]
    no = [e for e in pool if not e["label"]]
    info = {"current": n_current, "replayed": len(pool) - n_current, "pool_yes": len(yes), "pool_no": len(no)}
    if not yes or not no:
        raise VerifierDataError(f"no {'passing' if not yes else 'failing'} training-side samples to train the verifier "
                                f"on ({len(yes)} pass, {len(no)} fail, abstain/error and held-out excluded): it needs "
                                "both classes")
    rng = random.Random(seed)
    k = min(len(yes), len(no), max_examples // 2)
    chosen = rng.sample(yes, k) + rng.sample(no, k)
    rng.shuffle(chosen)
    info.update(examples=len(chosen), per_class=k)
    return [{"prompt": e["prompt"], "completion": [{"role": "assistant", "content": YES if e["label"] else NO}],
             "problem_id": e["problem_id"], "sample_id": e["sample_id"]} for e in chosen], info


# ---- measurements ---------------------------------------------------------------------------------

def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """ROC AUC (Mann-Whitney, ties count half); None without both classes."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    ranked = sorted((s, i) for i, s in enumerate(scores))
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for t in range(i, j + 1):
            ranks[ranked[t][1]] = (i + j) / 2 + 1
        i = j + 1
    rank_pos = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def scored(rows: Iterable[Row], name: str = LEARNED) -> list[tuple[float, bool, Verdict]]:
    """(P(Yes), programmatic pass, the learned verdict) where the learned verifier scored and the
    programmatic outcome is pass or fail."""
    out = []
    for r in rows:
        v = verdict_of(r, name)
        if v is not None and v.outcome in ("pass", "fail") and r.outcome in ("pass", "fail"):
            out.append((v.score, r.outcome == "pass", v))
    return out


def agreement(rows: Sequence[Row], name: str = LEARNED, bins: int = 10) -> dict:
    """The learned verifier against the programmatic truth: AUC, accuracy at its own threshold
    (its pass/fail), and a calibration table (mean P(Yes) vs pass rate per score bin)."""
    got = scored(rows, name)
    outcomes = Counter(v.outcome for r in rows for v in r.verdicts if v.verifier == name)
    if not got:
        why = next((v.reason for r in rows for v in r.verdicts if v.verifier == name), "not configured")
        return {"compared": 0, "auc": None, "accuracy": None, "outcomes": dict(outcomes), "why": why}
    scores, labels = [s for s, _, _ in got], [y for _, y, _ in got]
    calib = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(s, y) for s, y in zip(scores, labels) if lo <= s < hi or (b == bins - 1 and s == 1.0)]
        if inside:
            calib.append({"bin": [lo, hi], "n": len(inside), "mean_score": sum(s for s, _ in inside) / len(inside),
                          "pass_rate": sum(y for _, y in inside) / len(inside)})
    return {"compared": len(got), "auc": auc(scores, labels),
            "accuracy": sum((v.outcome == "pass") == y for _, y, v in got) / len(got),
            "positives": sum(labels), "outcomes": dict(outcomes), "calibration": calib}


def selection(greedy: Sequence[Row], sampled: Sequence[Row], name: str = LEARNED) -> dict:
    """Held-out accuracy per selection rule, each over the problems of `greedy`:
    greedy (one greedy chain), majority vote over the n sampled chains' final answers,
    verifier best-of-n (the chain with the highest P(Yes)), verifier-weighted vote (answers
    weighted by P(Yes)), and pass@n (some chain passes: the ceiling of any selector)."""
    by: dict[str, list[Row]] = defaultdict(list)
    for r in sampled:
        by[r.problem.id].append(r)
    n = max((len(v) for v in by.values()), default=0)
    res = Counter()
    unscored = 0
    within: list[float] = []  # per-problem AUC where a problem's chains both pass and fail
    for g in greedy:
        res["greedy"] += g.outcome == "pass"
        chains = sorted(by.get(g.problem.id, []), key=lambda r: r.sample.index)
        if not chains:
            continue
        answers = [_vote_key(extract_answer(r.sample.text).answer) for r in chains]
        votes = Counter(a for a in answers if a is not None)
        if votes:
            top = votes.most_common(1)[0][0]
            res["majority"] += chains[answers.index(top)].outcome == "pass"
        scores = []
        for r in chains:
            v = verdict_of(r, name)
            scores.append(v.score if v is not None and v.outcome in ("pass", "fail") else None)
        unscored += sum(s is None for s in scores)
        a = auc([s for s in scores if s is not None], [r.outcome == "pass" for r, s in zip(chains, scores)
                                                       if s is not None])
        if a is not None:
            within.append(a)
        known = [(s, -i) for i, s in enumerate(scores) if s is not None]
        if known:
            best = -max(known)[1]
            res["verifier_best_of_n"] += chains[best].outcome == "pass"
            weighted: Counter = Counter()
            for a, s in zip(answers, scores):
                if a is not None and s is not None:
                    weighted[a] += s
            if weighted:
                top = max(weighted, key=lambda a: (weighted[a], -answers.index(a)))
                res["verifier_weighted_vote"] += chains[answers.index(top)].outcome == "pass"
        res["pass_at_n"] += any(r.outcome == "pass" for r in chains)
    total = len(greedy)
    keys = ("greedy", "majority", "verifier_best_of_n", "verifier_weighted_vote", "pass_at_n")
    # what best-of-n needs: the ranking of one problem's chains (a pooled AUC also rewards knowing which
    # problems are hard)
    return {"n": n, "problems": total, "unscored_chains": unscored,
            **{k: (res[k] / total if total else None) for k in keys},
            "within_problem_auc": sum(within) / len(within) if within else None, "mixed_problems": len(within)}


def _vote_key(answer: str | None) -> str | None:
    """Answers that the programmatic check would call equal vote together ("1,234" and "1234.")."""
    return None if answer is None else normalize(answer, casefold=True) or None


# ---- categories without gold answers ---------------------------------------------------------------

def withhold_answers(problems: list[Problem], categories: Sequence[str]) -> list[Problem]:
    """Training problems of `categories` without their gold answer (ids unchanged, so the split holds)."""
    hide = set(categories)
    return [p.model_copy(update={"reference": p.reference.model_copy(update={"answer": None})})
            if f"{p.family}/{p.category}" in hide else p for p in problems]


def choose_threshold(rows: Sequence[Row], precision: float, min_support: int = 10, name: str = LEARNED,
                     max_fpr: float = 0.1) -> tuple[float | None, str]:
    """The lowest P(Yes) at which the labelled chains scored at or above it pass at least `precision` of the
    time (at least `min_support` of them) *and* at most `max_fpr` of the labelled failing chains score at or
    above it; or (None, why) when no threshold does. Precision alone follows the labelled chains' pass rate:
    where they already pass 93 % of the time, every threshold reaches 0.9 and the lowest one accepts every
    chain, whatever the verifier says (seen in an answerless run, 2026-12-07). The false-positive bound does not
    depend on that rate: the verifier must turn away most chains known to be wrong before its word counts."""
    got = sorted(((s, y) for s, y, _ in scored(rows, name)), reverse=True)
    negatives = sum(not y for _, y in got)
    if len(got) < min_support or not any(y for _, y in got):
        return None, (f"{len(got)} labelled chains scored by the learned verifier ({sum(y for _, y in got)} passing); "
                      f"at least {min_support}, some passing, are needed to choose a threshold")
    if not negatives:
        return None, (f"all {len(got)} labelled chains scored by the learned verifier pass, so how often it accepts "
                      "a wrong chain cannot be measured; no threshold is chosen")
    best, passed = None, 0
    for i, (s, y) in enumerate(got, 1):
        passed += y
        last_of_tie = i == len(got) or got[i][0] != s
        if last_of_tie and i >= min_support and passed / i >= precision and (i - passed) / negatives <= max_fpr:
            best = (s, passed / i, i, (i - passed) / negatives)
    if best is None:
        return None, (f"no P(Yes) threshold reaches precision {precision:g} while accepting at most {max_fpr:.0%} of "
                      f"the failing ones, on the {len(got)} labelled chains (their pass rate is "
                      f"{sum(y for _, y in got) / len(got):.2f}, {negatives} fail)")
    return best[0], (f"P(Yes) >= {best[0]:.4f}: {best[2]} labelled chains above it, precision {best[1]:.3f}, "
                     f"{best[3]:.0%} of the {negatives} failing ones accepted")


def accept_answerless(rows: Sequence[Row], categories: Sequence[str], mode: str, precision: float,
                      name: str = LEARNED, max_fpr: float = 0.1) -> tuple[list[Row], dict]:
    """(rows accepted without a gold answer, what was decided). `learned`: P(Yes) at or above a threshold
    chosen on the labelled rows of the other categories; `all`: every chain (the control)."""
    hide = set(categories)
    mine = [r for r in rows if r.category_key in hide and r.outcome == "abstain" and not r.sample.gold]
    if mode == "all":
        return mine, {"mode": "all", "candidates": len(mine), "accepted": len(mine),
                      "sample_ids": [r.sample.id for r in mine]}
    labelled = [r for r in rows if r.category_key not in hide]
    t, why = choose_threshold(labelled, precision, name=name, max_fpr=max_fpr)
    if t is None:
        return [], {"mode": "learned", "candidates": len(mine), "accepted": 0, "threshold": None, "why": why,
                    "sample_ids": []}
    took = []
    for r in mine:
        v = verdict_of(r, name)
        if v is not None and v.outcome in ("pass", "fail") and v.score >= t:
            took.append(r)
    return took, {"mode": "learned", "candidates": len(mine), "accepted": len(took), "threshold": t, "why": why,
                  "sample_ids": [r.sample.id for r in took]}


# ---- the adapter on disk --------------------------------------------------------------------------

def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > path.stat().st_size - 8:
            raise ValueError(f"its header claims {size} bytes, more than the file holds")
        header = json.loads(f.read(size))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def base_shapes(model_dir: Path) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        shapes.update(_safetensors_shapes(f))
    return shapes


def check_adapter(adapter_dir: Path, model_dir: Path, what: str = "verifier adapter") -> None:
    """Raises VerifierDataError unless `adapter_dir` is a readable PEFT LoRA adapter whose every
    LoRA tensor matches a Linear weight of the base at `model_dir` (an adapter of another base fails)."""
    d = Path(adapter_dir)
    cfg_file, weights = d / "adapter_config.json", d / "adapter_model.safetensors"
    missing = [f.name for f in (cfg_file, weights) if not f.is_file()]
    if missing:
        raise VerifierDataError(f"{what} {d} is missing {', '.join(missing)}")
    try:
        json.loads(cfg_file.read_text())
        shapes = _safetensors_shapes(weights)
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as e:
        raise VerifierDataError(f"{what} {d} is damaged (cannot read it: {type(e).__name__}: {e})") from None
    base = base_shapes(Path(model_dir))
    if not shapes:
        raise VerifierDataError(f"{what} {d} holds no tensors")
    for key, shape in shapes.items():
        target = key.removeprefix("base_model.model.")
        for part in (".lora_A.weight", ".lora_B.weight"):
            if target.endswith(part):
                target = target.removesuffix(part) + ".weight"
        want = base.get(target)
        if want is None or len(want) != 2 or len(shape) != 2:
            raise VerifierDataError(f"{what} {d} is not an adapter of this base ({model_dir}): its tensor {key} "
                                    "has no matching Linear weight in the base")
        if (".lora_A." in key and shape[1] != want[1]) or (".lora_B." in key and shape[0] != want[0]):
            raise VerifierDataError(f"{what} {d} is not an adapter of this base ({model_dir}): {key} has shape "
                                    f"{shape}, the base's {target} is {want}")


def adapter_rank(adapter_dir: Path) -> int | None:
    """The LoRA rank an adapter directory was saved with (None when its config is missing or unreadable)."""
    try:
        r = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8")).get("r")
    except (OSError, ValueError, AttributeError):
        return None
    return r if isinstance(r, int) else None
