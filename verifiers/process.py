"""Process check: recompute every arithmetic step the chain states in its reasoning."""
from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from loop.records import Problem, Sample, Verdict
from verifiers.answer import gold_of
from verifiers.arith import Step, find_steps
from verifiers.base import VERIFIERS, Verifier
from verifiers.extract import extract_answer, split_think


def _value(x: Fraction | None) -> int | float | str:
    if x is None:
        return "undefined (division by zero)"
    if x.denominator == 1 and abs(x.numerator) < 2**63:
        return int(x)
    try:
        return round(float(x), 10)
    except OverflowError:
        return str(x)


def step_evidence(step: Step) -> dict:
    return {"line": step.line, "expr": step.expr, "claimed": step.claimed, "actual": _value(step.actual)}


@VERIFIERS.register("process")
class ProcessCheck(Verifier):
    """Every arithmetic step stated in the reasoning (a op b = c) recomputes to its claimed result."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        scope: Literal["think", "all"] = Field(
            "think", description="'think': steps inside the think section (the whole text when it has no tags); "
                                 "'all': the whole chain")
        max_steps: int = Field(200, ge=1, description="check at most this many steps per chain")
        max_reported: int = Field(20, ge=1, description="wrong steps listed in the evidence at most")

    def verify(self, problems: Sequence[Problem], samples: Sequence[Sample]) -> list[Verdict]:
        return [self._one(p, s) for p, s in zip(problems, samples)]

    def _one(self, p: Problem, s: Sample) -> Verdict:
        text = s.text if isinstance(s.text, str) else ""
        region, first_line = text, 1
        split = split_think(text)
        if self.options.scope == "think" and split.think is not None:
            region, first_line = split.think, text.count("\n", 0, split.think_start) + 1
        steps = find_steps(region, first_line)[: self.options.max_steps]
        ex = extract_answer(text)
        common = dict(gold=gold_of(p), steps_checked=len(steps), **ex.evidence())
        if not steps:
            return self.verdict(s, "abstain", 0.0, "no checkable arithmetic step in the reasoning", **common)
        wrong = [st for st in steps if not st.ok]
        score = (len(steps) - len(wrong)) / len(steps)
        if not wrong:
            return self.verdict(s, "pass", 1.0, f"all {len(steps)} arithmetic steps are right", **common)
        first = wrong[0]
        return self.verdict(
            s, "fail", score,
            f"{len(wrong)} of {len(steps)} arithmetic steps are wrong; first at line {first.line}: "
            f"{first.expr} = {first.claimed} (actual {_value(first.actual)})",
            wrong=[step_evidence(st) for st in wrong[: self.options.max_reported]],
            error_class="calculation", **common)
