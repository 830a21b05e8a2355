"""Symbolic equivalence of the final answer and the gold answer with HuggingFace math-verify."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loop.records import Problem, Sample, Verdict
from verifiers.answer import gold_of, no_answer
from verifiers.base import VERIFIERS, Verifier
from verifiers.extract import extract_answer, normalize


@VERIFIERS.register("math_verify")
class MathVerify(Verifier):
    """Final answer is mathematically equivalent to the gold answer (math-verify: LaTeX, fractions, sets)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        float_rounding: int = Field(6, ge=0, description="decimal places floats are rounded to before comparing")
        timeout_s: int = Field(5, ge=1, description="per parse/verify timeout (signal based; only on the main thread)")
        max_answer_chars: int = Field(
            300, ge=1, description="longer final answers fail without parsing (sympy on garbage can take seconds)")

    def _parse(self, text: str, timeout: int | None) -> list[Any]:
        from math_verify import parse

        # Unicode dashes and thousands separators are normalized first; bare LaTeX such as
        # "\sqrt{2}" only parses inside $...$, plain text like "1/2" parses either way.
        # A result holding only strings is math-verify's raw-text fallback: kept as a last
        # resort so that non-math golds ("(B)") still compare as text.
        t = normalize(text)
        fallback: list[Any] = []
        for candidate in (f"${t}$", t):
            parsed = parse(candidate, parsing_timeout=timeout)
            if any(not isinstance(x, str) for x in parsed):
                return parsed
            fallback = fallback or parsed
        return fallback

    def verify(self, problems: Sequence[Problem], samples: Sequence[Sample]) -> list[Verdict]:
        from math_verify import verify

        # math-verify's timeout uses signal.alarm, which only works on the main thread.
        timeout = self.options.timeout_s if threading.current_thread() is threading.main_thread() else None
        out = []
        for p, s in zip(problems, samples):
            gold = gold_of(p)
            gparsed = self._parse(gold, timeout) if gold is not None else []
            if not gparsed:
                why = "problem has no gold answer" if gold is None else f"math-verify cannot parse gold {gold!r}"
                out.append(self.verdict(s, "abstain", 0.0, why, gold=gold))
                continue
            ex = extract_answer(s.text)
            if ex.answer is None:
                out.append(no_answer(self, s, ex, gold))
                continue
            if len(ex.answer) > self.options.max_answer_chars:
                out.append(self.verdict(s, "fail", 0.0, f"answer is {len(ex.answer)} characters long, over "
                                        f"max_answer_chars={self.options.max_answer_chars}", gold=gold,
                                        **ex.evidence()))
                continue
            aparsed = self._parse(ex.answer, timeout)
            if not aparsed:
                out.append(self.verdict(s, "fail", 0.0, f"math-verify cannot parse answer {ex.answer!r}",
                                        gold=gold, **ex.evidence()))
                continue
            ok = bool(verify(gparsed, aparsed, float_rounding=self.options.float_rounding, timeout_seconds=timeout))
            why = "answer is equivalent to gold" if ok else \
                f"answer {aparsed[-1]} is not equivalent to gold {gparsed[-1]}"
            out.append(self.verdict(s, "pass" if ok else "fail", float(ok), why, gold=gold, **ex.evidence()))
        return out
