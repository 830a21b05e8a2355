"""STaR rationalization: the hinted prompt, and the check that a hinted chain did not copy the hint.

A chain sampled with the gold answer in its prompt is only worth training on if it
*derives* the answer. `leaks_hint` rejects chains that talk about the hint, state the
gold answer in the think section before a step that produces it, or skip the reasoning
altogether. It errs on the strict side: a false leak costs one hinted chain, a missed one
teaches the model to write the answer first and justify it after.
"""
from __future__ import annotations

import re
from fractions import Fraction

from generators.base import Generator
from loop.records import Message, Problem
from verifiers.arith import find_steps
from verifiers.extract import extract_answer, normalize, parse_number, split_think

_HINT_TALK = re.compile(
    r"\bhint|\bgiven answer\b|\bthe answer is given\b|\bwe are told the answer\b"
    r"|\bthe answer (?:was|is) provided\b|\bprovided answer\b",
    re.IGNORECASE)
# A number as written in a chain; a sign only when it does not follow a digit ("132-32" holds 32, not -32).
_NUM = re.compile(r"(?<![\d.])-?\d+(?:,\d{3})*(?:\.\d+)?(?!\d)")
# ASCII arrows only with spaces around them: symbol-string answers may contain "=>" or "->".
_ARROW = re.compile(r"\s(?:->|=>)\s|→|⇒")


def hinted_prompt(gen: Generator, problem: Problem) -> list[Message]:
    """The problem's prompt with its gold answer as a hint (the family decides the wording)."""
    return gen.hint_prompt(problem)


class _Gold:
    """The gold answer and how to find it in a line of text."""

    def __init__(self, answer: str):
        self.text = normalize(answer)
        value = parse_number(self.text)
        # Bit strings and codes like "0101" are text: their leading zeros matter.
        self.value: Fraction | None = None if re.match(r"-?0\d", self.text) else value
        if self.value is None:
            left = r"(?<!\w)" if self.text[:1].isalnum() else ""
            right = r"(?!\w)" if self.text[-1:].isalnum() else ""
            self.pattern = re.compile(left + re.escape(self.text) + right)

    def in_text(self, text: str) -> bool:
        if self.value is None:
            return bool(self.pattern.search(text))
        return any(parse_number(m.group(0)) == self.value for m in _NUM.finditer(text))

    def matches(self, answer: str | None) -> bool:
        if answer is None:
            return False
        if normalize(answer) == self.text:
            return True
        return self.value is not None and parse_number(answer) == self.value


def _derives(line: str, gold: _Gold) -> bool:
    """The line produces the gold: a correct step `a op b = gold`, or `x -> gold` where x is not the gold."""
    if gold.value is not None and any(
            s.ok and parse_number(s.claimed) == gold.value for s in find_steps(line)):
        return True
    parts = _ARROW.split(line)
    return len(parts) > 1 and gold.in_text(parts[-1]) and not any(gold.in_text(p) for p in parts[:-1])


def _prompt_text(problem: Problem) -> str:
    return "\n".join(m.content for m in problem.prompt)


def leaks_hint(text: str, problem: Problem) -> str | None:
    """Why a chain sampled with the hint leaks it, or None when it is clean."""
    text = text if isinstance(text, str) else ""
    talk = _HINT_TALK.search(text)
    if talk:
        return f"mentions the hint ({talk.group(0)!r})"
    answer = problem.reference.answer
    if not answer or not normalize(answer):
        return None
    gold = _Gold(answer)
    split = split_think(text)
    if (split.think is None or not split.think.strip()) and gold.matches(extract_answer(text).answer):
        return "right final answer with no reasoning in the think section (answer copied)"
    if split.think is None or gold.in_text(_prompt_text(problem)):
        # The gold is one of the problem's own numbers/strings: seeing it proves nothing.
        return None
    for n, line in enumerate(split.think.splitlines(), start=1):
        if not gold.in_text(line):
            continue
        if _derives(line, gold):
            return None  # derived here; later mentions restate a result
        return (f"states the gold answer {gold.text!r} in the think section before deriving it "
                f"(think line {n}: {line.strip()[:80]!r})")
    return None
