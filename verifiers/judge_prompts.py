"""The LLM judge's prompts and the tolerant parsing of its replies.

Replies from small models are often garbage: parsing looks for the last well-formed
"VERDICT: PASS|FAIL" / "CLASS: <name>" anywhere in the reply (any case, any spacing,
markdown around it) and returns None when there is none, so that garbage can never pass.
"""
from __future__ import annotations

import re
from typing import Any

from loop.records import ERROR_CLASSES, Problem, Sample, Verdict
from verifiers.untrusted import defang, quote

# The judge cannot see infrastructure failures or the sandbox, so it is not offered "infra" or "tamper".
JUDGE_CLASSES = tuple(c for c in ERROR_CLASSES if c not in ("infra", "tamper"))
CLASS_HELP = {
    "format": "the answer is missing, stated several times, or the chain is malformed",
    "truncated": "the chain stops before reaching an answer",
    "calculation": "an arithmetic or algebra slip in an otherwise sensible approach",
    "logic": "a wrong rule, method or inference",
    "comprehension": "the problem was misread or a different question was answered",
    "other": "none of the above",
}
_ALIASES = {
    "calc": "calculation", "arithmetic": "calculation", "computation": "calculation",
    "computational": "calculation", "logical": "logic", "rule": "logic", "reasoning": "logic",
    "misread": "comprehension", "misunderstanding": "comprehension", "understanding": "comprehension",
    "formatting": "format", "truncation": "truncated", "incomplete": "truncated",
}
_SEP = r"[\s:*=_>\-\"'`]*"
# "PASS/FAIL" and "PASS or FAIL" echo the instruction; they are not a verdict.
_NOT_ECHO = r"\b(?!\s*(?:/|\||\bor\b))"
_VERDICT = re.compile(rf"verdict{_SEP}(pass|fail){_NOT_ECHO}", re.IGNORECASE)
_CLASS_WORDS = "|".join(sorted({*ERROR_CLASSES, *_ALIASES}, key=len, reverse=True))
_CLASS = re.compile(rf"class{_SEP}({_CLASS_WORDS}){_NOT_ECHO}", re.IGNORECASE)
_ECHO_PAIR = re.compile(r"verdict\W*pass\W+or\W+verdict\W*fail", re.IGNORECASE)
_REASON = re.compile(r"reason\s*[:=]\s*(.+)", re.IGNORECASE)

CHECK_INSTRUCTION = ('Reply with one line "REASON: <one sentence>" and then a last line that is exactly '
                     '"VERDICT: PASS" or "VERDICT: FAIL".')
CLASSIFY_INSTRUCTION = ('Reply with one line "REASON: <one sentence>" and then a last line "CLASS: <name>" '
                        f'where <name> is one of: {", ".join(JUDGE_CLASSES)}.')
SYSTEM = "You are a careful, strict grader of step-by-step solutions. You follow the reply format exactly."


def parse_verdict(reply: Any) -> str | None:
    """'pass' | 'fail' from the last well-formed verdict in the reply, else None."""
    text = _strip_instructions(reply)
    found = _VERDICT.findall(text)
    return found[-1].lower() if found else None


def parse_class(reply: Any) -> str | None:
    """An error class from the last well-formed "CLASS: name" in the reply, else None."""
    text = _strip_instructions(reply)
    found = _CLASS.findall(text)
    if not found:
        return None
    name = found[-1].lower()
    name = _ALIASES.get(name, name)
    return name if name in JUDGE_CLASSES else None


def parse_reason(reply: Any, limit: int = 300) -> str:
    text = _strip_instructions(reply)
    found = _REASON.findall(text)
    return (found[-1] if found else "").strip()[:limit]


def _strip_instructions(reply: Any) -> str:
    text = reply if isinstance(reply, str) else ""
    for echoed in (CHECK_INSTRUCTION, CLASSIFY_INSTRUCTION):
        text = text.replace(echoed, " ")
    return _ECHO_PAIR.sub(" ", text)


def problem_text(problem: Problem) -> str:
    return "\n".join(m.content for m in problem.prompt if m.role == "user")


def check_messages(problem: Problem, sample: Sample, answer: str, gold: str | None,
                   max_chars: int) -> list[dict[str, str]]:
    ref = f"Reference answer: {gold}\n\n" if gold is not None else ""
    user = (f"Problem:\n{problem_text(problem)}\n\n{ref}Candidate solution:\n{quote(sample.text, max_chars)}\n\n"
            f"Candidate's final answer: {defang(answer)}\n\n"
            "Does the reasoning correctly justify this final answer? Check every step. " + CHECK_INSTRUCTION)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def classify_messages(problem: Problem, sample: Sample, gold: str | None, verdicts: list[Verdict],
                      max_chars: int) -> list[dict[str, str]]:
    ref = f"Reference answer: {gold}\n\n" if gold is not None else ""
    findings = "\n".join(f"- {v.verifier}: {v.outcome}: {defang(v.reason)}" for v in verdicts if v.outcome != "pass")
    findings = f"Automatic checks:\n{findings}\n\n" if findings else ""
    classes = "\n".join(f"- {c}: {CLASS_HELP[c]}" for c in JUDGE_CLASSES)
    user = (f"Problem:\n{problem_text(problem)}\n\n{ref}Wrong solution:\n{quote(sample.text, max_chars)}\n\n"
            f"{findings}What is the main error? The classes are:\n{classes}\n\n" + CLASSIFY_INSTRUCTION)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
