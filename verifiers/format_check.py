"""The shape of a chain: think section opened and closed, one final answer, not truncated."""
from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from loop.records import Problem, Sample, Verdict
from verifiers.answer import gold_of
from verifiers.base import VERIFIERS, Verifier
from verifiers.extract import THINK_CLOSE, THINK_OPEN, answer_lines, extract_answer, find_boxed, split_think


def count_final_answers(after: str) -> int:
    """Lines after the think section that state a final answer ("Answer:" or \\boxed)."""
    return sum(1 for line in after.splitlines() if answer_lines(line) or find_boxed(line))


@VERIFIERS.register("format")
class FormatCheck(Verifier):
    """Chain has a closed think section, exactly one final answer, and was not truncated."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        require_think: bool = Field(True, description="the chain must contain a <think>...</think> section")
        think_in_prompt: bool = Field(
            False, description="the chat template already opened <think>, so only </think> is expected")
        require_marker: bool = Field(
            True, description="the final answer must be marked ('Answer: ...' or \\boxed{}); else any last line counts")
        max_tokens: int | None = Field(None, ge=1, description="length budget on sample.num_tokens; None = no budget")

    def verify(self, problems: Sequence[Problem], samples: Sequence[Sample]) -> list[Verdict]:
        return [self._one(p, s) for p, s in zip(problems, samples)]

    def _one(self, p: Problem, s: Sample) -> Verdict:
        o = self.options
        text = s.text if isinstance(s.text, str) else ""
        split = split_think(text)
        n_open, n_close = text.count(THINK_OPEN), text.count(THINK_CLOSE)
        problems: list[str] = []
        if s.finish_reason == "length":
            problems.append("truncated: generation stopped at the token limit (finish_reason 'length')")
        if o.max_tokens is not None and s.num_tokens > o.max_tokens:
            problems.append(f"over length budget: {s.num_tokens} tokens > {o.max_tokens}")
        if o.require_think:
            want_open = 0 if o.think_in_prompt else 1
            if n_open != want_open:
                problems.append(f"expected {want_open} {THINK_OPEN} tag(s), found {n_open}")
            if n_close != 1:
                problems.append(f"expected 1 {THINK_CLOSE} tag, found {n_close}")
            elif n_open == 1 and text.find(THINK_OPEN) > text.find(THINK_CLOSE):
                problems.append(f"{THINK_CLOSE} comes before {THINK_OPEN}")
        elif split.after is None:
            problems.append(f"{THINK_OPEN} opened and never closed")
        n_answers = count_final_answers(split.after) if split.after is not None else 0
        ex = extract_answer(text)
        if n_answers > 1:
            problems.append(f"{n_answers} final answers after the think section; expected exactly one")
        elif n_answers == 0 and (o.require_marker or ex.answer is None):
            problems.append("no final answer ('Answer: ...' or \\boxed{}) after the think section")
        if problems:
            cls = "truncated" if s.finish_reason == "length" else "format"
            return self.verdict(s, "fail", 0.0, "; ".join(problems), gold=gold_of(p), problems=problems,
                                error_class=cls, final_answers=n_answers, **ex.evidence())
        return self.verdict(s, "pass", 1.0, "well-formed chain", gold=gold_of(p), final_answers=n_answers,
                            **ex.evidence())
