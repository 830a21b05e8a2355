"""Final-answer verifiers against the gold answer: exact string match and numeric match."""
from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field

from loop.records import Problem, Sample, Verdict
from verifiers.base import VERIFIERS, Verifier
from verifiers.extract import Extraction, extract_answer, normalize, parse_number


def gold_of(problem: Problem) -> str | None:
    """The gold answer text, or None when the problem carries none (or an empty one)."""
    gold = problem.reference.answer
    return gold if isinstance(gold, str) and gold.strip() else None


def no_answer(v: Verifier, sample: Sample, ex: Extraction, gold: str | None) -> Verdict:
    return v.verdict(sample, "fail", 0.0, f"no final answer: {ex.reason}", gold=gold, **ex.evidence())


@VERIFIERS.register("exact_match")
class ExactMatch(Verifier):
    """Final answer equals the gold answer after normalization (dashes, $, trailing period, 1,234)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        casefold: bool = Field(True, description="compare case-insensitively")
        ignore_spaces: bool = Field(False, description="also drop all whitespace before comparing ('x + 1' == 'x+1')")

    def _norm(self, s: str | None) -> str:
        t = normalize(s, casefold=self.options.casefold)
        return t.replace(" ", "") if self.options.ignore_spaces else t

    def verify(self, problems: Sequence[Problem], samples: Sequence[Sample]) -> list[Verdict]:
        out = []
        for p, s in zip(problems, samples):
            gold = gold_of(p)
            if gold is None:
                out.append(self.verdict(s, "abstain", 0.0, "problem has no gold answer", gold=None))
                continue
            ex = extract_answer(s.text)
            if ex.answer is None:
                out.append(no_answer(self, s, ex, gold))
                continue
            got, want = self._norm(ex.answer), self._norm(gold)
            ok = got == want
            out.append(self.verdict(
                s, "pass" if ok else "fail", float(ok),
                "answer matches gold" if ok else f"answer {got!r} != gold {want!r}",
                gold=gold, normalized=got, **ex.evidence()))
        return out


@VERIFIERS.register("numeric")
class Numeric(Verifier):
    """Final answer is a number equal to the numeric gold within a relative/absolute tolerance."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        rel_tol: float = Field(1e-6, ge=0, description="relative tolerance |a-g| <= rel_tol*|g|")
        abs_tol: float = Field(1e-9, ge=0, description="absolute tolerance |a-g| <= abs_tol")

    def close(self, a: Fraction, g: Fraction) -> bool:
        diff = abs(a - g)
        return diff <= Fraction(self.options.abs_tol) or diff <= Fraction(self.options.rel_tol) * abs(g)

    def verify(self, problems: Sequence[Problem], samples: Sequence[Sample]) -> list[Verdict]:
        out = []
        for p, s in zip(problems, samples):
            gold = gold_of(p)
            gval = parse_number(gold)
            if gold is None or gval is None:
                why = "problem has no gold answer" if gold is None else f"gold answer {gold!r} is not a number"
                out.append(self.verdict(s, "abstain", 0.0, why, gold=gold))
                continue
            ex = extract_answer(s.text)
            if ex.answer is None:
                out.append(no_answer(self, s, ex, gold))
                continue
            aval = parse_number(ex.answer)
            if aval is None:
                out.append(self.verdict(s, "fail", 0.0, f"answer {ex.answer!r} is not a number",
                                        gold=gold, **ex.evidence()))
                continue
            ok = self.close(aval, gval)
            out.append(self.verdict(
                s, "pass" if ok else "fail", float(ok),
                "answer equals gold within tolerance" if ok else f"answer {_num(aval)} != gold {_num(gval)}",
                gold=gold, value=_num(aval), gold_value=_num(gval), **ex.evidence()))
        return out


def _num(x: Fraction) -> int | float | str:
    """JSON-friendly value: int when integral, float when representable, else the fraction text."""
    if x.denominator == 1 and abs(x.numerator) < 2**63:
        return int(x)
    try:
        return float(x)
    except OverflowError:
        return str(x)
