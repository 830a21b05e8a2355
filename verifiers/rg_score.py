"""reasoning-gym's own scorer for problems that came from a reasoning-gym dataset."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loop.records import Problem, Sample, Verdict
from verifiers.answer import gold_of
from verifiers.base import VERIFIERS, Verifier
from verifiers.extract import extract_answer


@VERIFIERS.register("reasoning_gym")
class ReasoningGymScore(Verifier):
    """Scores the final answer with reasoning-gym's score_answer for the problem's dataset."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        threshold: float = Field(1.0, ge=0, le=1, description="a score at or above this passes")

    def __init__(self, options: BaseModel):
        super().__init__(options)
        self._scorers: dict[str, Callable[[Any, dict], float]] = {}

    def _scorer(self, dataset: str) -> Callable[[Any, dict], float]:
        if dataset not in self._scorers:
            import reasoning_gym

            self._scorers[dataset] = reasoning_gym.get_score_answer_fn(dataset)
        return self._scorers[dataset]

    def verify(self, problems: Sequence[Problem], samples: Sequence[Sample]) -> list[Verdict]:
        return [self._one(p, s) for p, s in zip(problems, samples)]

    def _one(self, p: Problem, s: Sample) -> Verdict:
        dataset, entry = p.metadata.get("rg_dataset"), p.metadata.get("rg_entry")
        gold = gold_of(p)
        if not isinstance(dataset, str) or not isinstance(entry, dict):
            return self.verdict(s, "abstain", 0.0, "problem has no reasoning-gym metadata (rg_dataset, rg_entry)",
                                gold=gold)
        gold = gold or (str(entry["answer"]) if entry.get("answer") is not None else None)
        ex = extract_answer(s.text)
        if ex.answer is None:
            return self.verdict(s, "fail", 0.0, f"no final answer: {ex.reason}", gold=gold,
                                dataset=dataset, **ex.evidence())
        # A scorer that raises (unknown dataset, a bug on odd input) is a broken verifier for
        # this sample, not a wrong answer: it becomes `error`, never a 0 score.
        try:
            raw = self._scorer(dataset)(ex.answer, entry)
            score = float(raw)
        except Exception as e:  # noqa: BLE001 - third-party scorers may raise anything
            return self.verdict(s, "error", 0.0, f"reasoning-gym scorer for {dataset!r} failed: "
                                f"{type(e).__name__}: {e}", gold=gold, dataset=dataset, **ex.evidence())
        if math.isnan(score):
            return self.verdict(s, "error", 0.0, f"reasoning-gym scorer for {dataset!r} returned NaN",
                                gold=gold, dataset=dataset, **ex.evidence())
        ok = score >= self.options.threshold
        return self.verdict(s, "pass" if ok else "fail", score,
                            f"reasoning-gym score {score:g} {'>=' if ok else '<'} threshold {self.options.threshold:g}",
                            gold=gold, dataset=dataset, rg_score=score, **ex.evidence())
