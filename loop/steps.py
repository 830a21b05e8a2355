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


def make_problems(cfg: Config, plan: Plan, round_: int) -> list[Problem]:
    gens = generators_by_family(cfg)
    out: list[Problem] = []
    for key, cp in plan.categories.items():
        if cp.budget == 0:
            continue
        family, category = key.split("/", 1)
        got = draw(gens[family], category, cp.difficulty, cp.budget, _seed(cfg.run.seed, round_, key),
                   "train", cfg.heldout.fraction)
        if len(got) < cp.budget:
            log.warning("%s difficulty %d: only %d distinct training problems (asked %d)", key, cp.difficulty,
                        len(got), cp.budget)
        out.extend(got)
    return out


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
