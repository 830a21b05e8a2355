"""What each stage of a round does, as plain functions of their inputs.

The controller (loop/controller.py) calls these in order and the run directory makes
each one happen once; nothing here knows about resume.
"""
from __future__ import annotations

import hashlib
import logging
from collections import defaultdict

from generators.base import GENERATORS, draw
from loop.config import Config
from loop.records import CategoryPlan, Plan, Problem, Row, Sample, Verdict

log = logging.getLogger("loop")


def _seed(*parts) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


def generators_by_family(cfg: Config) -> dict:
    return {g.family: GENERATORS.build(g.family, g.options) for g in cfg.generators}


def difficulty_ranges(cfg: Config) -> dict[str, tuple[int, int]]:
    gens = generators_by_family(cfg)
    return {f"{g.family}/{c}": gens[g.family].difficulties(c) for g in cfg.generators for c in g.categories}


def initial_plan(cfg: Config) -> Plan:
    return Plan(round=0, policy="config", categories={
        f"{g.family}/{c}": CategoryPlan(budget=cc.budget, difficulty=cc.difficulty, reason="round 0: from the config")
        for g in cfg.generators for c, cc in g.categories.items()})


def freeze_heldout(cfg: Config) -> list[Problem]:
    """The held-out set: per category, `per_category` problems spread over its held-out
    difficulties, all from the held-out side of the id-hash split."""
    gens = generators_by_family(cfg)
    out: list[Problem] = []
    for g in cfg.generators:
        for c, cc in g.categories.items():
            levels = cc.heldout_difficulties or [cc.difficulty]
            for i, d in enumerate(levels):
                k = cfg.heldout.per_category // len(levels) + (i < cfg.heldout.per_category % len(levels))
                got = draw(gens[g.family], c, d, k, _seed(cfg.run.seed, "heldout", g.family, c, d),
                           "heldout", cfg.heldout.fraction)
                if len(got) < k:
                    log.warning("held-out %s/%s difficulty %d: only %d distinct problems (asked %d)",
                                g.family, c, d, len(got), k)
                out.extend(got)
    return out


def make_problems(cfg: Config, plan: Plan, round_: int, previous: list[Problem] = ()) -> list[Problem]:
    """The round's training problems: per category, the plan's augment variants of `previous`
    (last round's problems) first, then fresh draws at each level of its mix."""
    gens = generators_by_family(cfg)
    prev = {p.id: p for p in previous}
    out: list[Problem] = []
    for key, cp in plan.categories.items():
        if cp.budget == 0:
            continue
        family, category = key.split("/", 1)
        variants = augmented(gens[family], [prev[i] for i in cp.augment if i in prev],
                             _seed(cfg.run.seed, round_, key, "augment"), cfg.heldout.fraction)
        if cp.augment and not variants:
            log.warning("%s: the plan asks for variants of %d failed problems but %s offers no augment(); drawing "
                        "fresh problems instead", key, len(cp.augment), family)
        out.extend(variants)
        mix = dict(cp.mix) or {cp.difficulty: cp.budget}
        mix[cp.difficulty] = max(0, mix.get(cp.difficulty, 0) - len(variants))
        for d, n in sorted(mix.items()):
            if n == 0:
                continue
            # The main level keeps the seed it always had, so a plan without a mix draws as before.
            seed = _seed(cfg.run.seed, round_, key) if d == cp.difficulty else _seed(cfg.run.seed, round_, key, d)
            got = draw(gens[family], category, d, n, seed, "train", cfg.heldout.fraction,
                       exclude={p.id for p in variants})
            if len(got) < n:
                log.warning("%s difficulty %d: only %d distinct training problems (asked %d)", key, d, len(got), n)
            out.extend(got)
    return out


def verifier_problems(cfg: Config, plan: Plan, round_: int, times: float, exclude: set[str]) -> list[Problem]:
    """Fresh training-split problems for the learned verifier's examples alone: `times` x each category's
    share of the plan at each of its levels, none of `exclude` (the round's own) and none held-out."""
    gens = generators_by_family(cfg)
    out: list[Problem] = []
    for key, cp in plan.categories.items():
        family, category = key.split("/", 1)
        for d, n in sorted((dict(cp.mix) or {cp.difficulty: cp.budget}).items()):
            k = round(n * times)
            if k:
                out.extend(draw(gens[family], category, d, k, _seed(cfg.run.seed, round_, key, d, "verifier"), "train",
                                cfg.heldout.fraction, exclude=exclude))
    return out


def augmented(gen, failed: list[Problem], seed: int, heldout_fraction: float) -> list[Problem]:
    """One training-split variant per failed problem through the family's `augment` hook (none if it
    has none); each records the problem it came from in metadata.augmented_from."""
    out: dict[str, Problem] = {}
    for i, p in enumerate(failed):
        for attempt in range(8):
            v = gen.augment(p, seed * 100 + i * 8 + attempt)
            if v is None:
                return list(out.values())
            if v.id != p.id and v.id not in out and not v.is_heldout(heldout_fraction):
                out[v.id] = v.model_copy(update={"metadata": {**v.metadata, "augmented_from": p.id}})
                break
    return list(out.values())


def token_groups(problems: list[Problem], plan: Plan, max_tokens: int, max_model_len: int) -> dict[int, list[Problem]]:
    """Problems grouped by their sampling token budget (the plan's per-category token_scale)."""
    out: dict[int, list[Problem]] = defaultdict(list)
    for p in problems:
        cp = plan.categories.get(f"{p.family}/{p.category}")
        scale = cp.token_scale if cp else 1.0
        out[min(int(round(max_tokens * scale)), max_model_len - 1)].append(p)
    return dict(sorted(out.items()))


def rationalized(cfg: Config, plan: Plan, problems: list[Problem]) -> list[Problem]:
    """The problems whose failures get answer-hinted retries: all with sampling.rationalize,
    else those of categories whose plan says so."""
    if cfg.sampling.rationalize:
        return problems
    keys = {k for k, cp in plan.categories.items() if cp.rationalize}
    return [p for p in problems if f"{p.family}/{p.category}" in keys]


def to_samples(problems: list[Problem], outputs: list[list[dict]], round_: int, adapter: str | None,
               hinted: bool = False) -> list[Sample]:
    return [Sample(id=Sample.make_id(p.id, round_, i, hinted), problem_id=p.id, round=round_, index=i,
                   text=o["text"], num_tokens=o["num_tokens"], finish_reason=o["finish_reason"],
                   adapter=adapter, hinted=hinted)
            for p, outs in zip(problems, outputs) for i, o in enumerate(outs)]


def build_rows(cfg: Config, problems: dict[str, Problem], samples: list[Sample],
               verdicts: dict[str, list[Verdict]]) -> list[Row]:
    from loop.analysis import combine

    required = {v.name for v in cfg.verifiers if v.required}
    return [Row(problem=problems[s.problem_id], sample=s, verdicts=verdicts[s.id],
                outcome=combine(verdicts[s.id], required)) for s in samples]


def _pass_rates(rows: list[Row], key) -> dict[str, float]:
    by: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        by[key(r)][0] += 1
        by[key(r)][1] += r.outcome == "pass"
    return {k: p / n for k, (n, p) in sorted(by.items())}


def accuracy(rows: list[Row]) -> tuple[float, dict[str, float]]:
    """Held-out accuracy overall and per category (pass = every required verifier passed)."""
    overall = sum(r.outcome == "pass" for r in rows) / len(rows) if rows else 0.0
    return overall, _pass_rates(rows, lambda r: r.category_key)


def accuracy_by_difficulty(rows: list[Row]) -> dict[str, float]:
    """{"family/category@difficulty": accuracy}."""
    return _pass_rates(rows, lambda r: f"{r.category_key}@{r.problem.difficulty}")


def training_examples(rows: list[Row]) -> list[dict]:
    """Prompt/completion pairs (conversational), so the loss falls on the assistant turn.
    Rationalized chains are trained on the plain prompt, not the hinted one (STaR)."""
    return [{"prompt": [m.model_dump() for m in r.problem.prompt],
             "completion": [{"role": "assistant", "content": r.sample.text}],
             "problem_id": r.problem.id, "sample_id": r.sample.id} for r in rows]


def format_replay(round_dirs: list, keys: set[str]) -> list[tuple[Problem, Sample]]:
    """Accepted chains of the `keys` categories from these earlier round directories that the format
    verifier passed: the plan's `format_replay` action (a category that started failing on format)."""
    from loop.run.state import read_jsonl
    from loop.taxonomy import FORMAT_VERIFIER

    out = []
    for rd in round_dirs:
        if not keys or not (rd / "accepted.jsonl").exists():
            continue
        probs = {p.id: p for p in read_jsonl(rd / "problems.jsonl", Problem)}
        good = {v.sample_id for v in read_jsonl(rd / "verdicts.jsonl", Verdict)
                if v.verifier == FORMAT_VERIFIER and v.outcome == "pass"}
        out += [(probs[s.problem_id], s) for s in read_jsonl(rd / "accepted.jsonl", Sample)
                if s.id in good and s.problem_id in probs
                and f"{probs[s.problem_id].family}/{probs[s.problem_id].category}" in keys]
    return out
