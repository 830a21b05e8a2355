"""The error taxonomy: combine verdicts into one outcome and classify failures by rules.

Error taxonomy (loop.records.ERROR_CLASSES). `classify` applies these rules in order and
the first that matches decides; the order puts the explanations that make later ones
meaningless first:

1. infra          a required verifier answered `error`, any verifier's evidence has
                  status "sandbox_error", or the prompt did not fit the engine's context
                  (finish_reason "prompt_too_long"). The judgment itself is broken, so nothing can
                  be said about the model; never trained on, never counted as wrong.
2. tamper         a verifier's evidence has status "tamper": the program reached for the
                  harness (a result imitating a built-in, a forged result channel, heap or
                  frame walks, tracing, native code). Reward hacking, counted per round.
3. truncated      sample.finish_reason == "length": the chain was cut off, which also
                  explains a missing answer or an unclosed think block, so it outranks format.
4. format         the format verifier failed (unclosed <think>, no final answer, several
                  answers): the answer could not be read, so its content is not judged.
5. calculation    the process verifier failed: a step's arithmetic is wrong
                  (evidence: its wrong steps). A wrong step explains a wrong answer.
6. comprehension  the answer has the wrong type or shape for the gold (gold numeric but
                  answer not, or the reverse; a different number of list items; a very
                  different length) or repeats a number from the question that the gold
                  is not: the model answered a different question.
7. logic          steps consistent (process verifier pass or abstain) but an answer
                  verifier failed: the reasoning was carried out correctly on a wrong plan.
8. other          none of the above could decide (e.g. no process verifier ran, or only the
                  judge failed the chain); `refine_with_judge` may replace it.

The format, process and judge verifiers are found by name ("format", "process",
"llm_judge" by default; `classify` takes other names as arguments). Any other verifier
that fails is taken to be an answer check (exact match, math equivalence, code tests).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence

from loop.records import (  # noqa: F401  (the five vocabulary names are re-exported for older policies)
    ERROR_CLASSES,
    FORMAT_VERIFIER,
    JUDGE_VERIFIER,
    PROCESS_VERIFIER,
    TRAINABLE_CLASSES,
    ErrorRecord,
    Outcome,
    Row,
    Verdict,
    verdict_of,
)
from verifiers.extract import extract_answer, normalize, parse_number

log = logging.getLogger(__name__)


_PROMPT_NUMBERS = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?")


def combine(verdicts: Iterable[Verdict], required: set[str]) -> Outcome:
    """Combined outcome over the required verifiers: fail > error > all abstain > pass."""
    outs = [v.outcome for v in verdicts if v.verifier in required]
    if "fail" in outs:
        return "fail"
    if "error" in outs:
        return "error"
    if all(o == "abstain" for o in outs):  # also when none ran
        return "abstain"
    return "pass"


def final_answer(row: Row) -> str | None:
    """The model's final answer: as a verifier extracted it, else extracted here the
    same way (verifiers.extract)."""
    for v in row.verdicts:
        val = v.evidence.get("answer")
        if isinstance(val, (str, int, float)) and str(val).strip():
            return str(val).strip()
    return extract_answer(row.sample.text).answer


def _shape_mismatch(row: Row, answer: str) -> str | None:
    """Why the answer looks like an answer to another question, or None."""
    gold = row.problem.reference.answer
    if gold is None:
        return None
    g, a = normalize(gold), normalize(answer)
    gv, av = parse_number(g), parse_number(a)
    if gv is not None and av is None:
        return f"gold {g!r} is a number but the answer {a!r} is not"
    if av is not None and gv is None and not re.search(r"\d", g):
        return f"gold {g!r} is not a number but the answer {a!r} is"
    if gv is None and "," in g and len(g.split(",")) != len(a.split(",")):
        return f"gold has {len(g.split(','))} items, the answer {len(a.split(','))}"
    if gv is None or av is None:
        short, long_ = sorted((len(g), len(a)))
        if long_ >= 3 * max(short, 1) and long_ - short >= 6:
            return f"answer length {len(a)} vs gold length {len(g)}"
        return None
    prompt = " ".join(m.content for m in row.problem.prompt if m.role == "user")
    numbers = {parse_number(n) for n in _PROMPT_NUMBERS.findall(normalize(prompt))}
    if av in numbers and gv not in numbers:
        return f"answer {a!r} repeats a number from the question; gold {g!r}"
    return None


def classify(row: Row, required: set[str] | None = None, format_verifier: str = FORMAT_VERIFIER,
             process_verifier: str = PROCESS_VERIFIER, judge_verifier: str = JUDGE_VERIFIER) -> ErrorRecord | None:
    """The error record of a failed (or errored) row by the rules above; None otherwise."""
    if row.outcome not in ("fail", "error"):
        return None

    def rec(cls: str, **evidence) -> ErrorRecord:
        return ErrorRecord(sample_id=row.sample.id, problem_id=row.problem.id, category=row.category_key,
                           error_class=cls, evidence=evidence, decided_by="rule")

    sandbox = [v for v in row.verdicts if v.evidence.get("status") == "sandbox_error"]
    # Without `required`, an erroring verifier is known to be required only when it made
    # the combined outcome `error` (a required fail outranks it).
    errored = [v for v in row.verdicts if v.outcome == "error" and (required is None or v.verifier in required)]
    if row.sample.finish_reason == "prompt_too_long":
        return rec("infra", rule="prompt longer than model.max_model_len: nothing was sampled",
                   fix="raise model.max_model_len or shorten the category's prompts")
    if row.outcome == "error" or sandbox or (required is not None and errored):
        return rec("infra", rule="verifier error", verifiers={v.verifier: v.reason for v in sandbox + errored})
    tampered = [v for v in row.verdicts if v.evidence.get("status") == "tamper"]
    if tampered:
        return rec("tamper", rule="the program reached for the harness",
                   verifiers={v.verifier: v.reason for v in tampered},
                   tamper=[t for v in tampered for t in v.evidence.get("tamper", [])][:10])
    if row.sample.finish_reason == "length":
        return rec("truncated", rule="finish_reason == length", num_tokens=row.sample.num_tokens)
    fmt = verdict_of(row, format_verifier)
    if fmt is not None and fmt.outcome == "fail":
        return rec("format", rule="format verifier failed", reason=fmt.reason, detail=fmt.evidence)
    proc = verdict_of(row, process_verifier)
    if proc is not None and proc.outcome == "fail":
        steps = proc.evidence.get("wrong", proc.evidence)
        return rec("calculation", rule="process verifier found a wrong step", reason=proc.reason, wrong_steps=steps)
    answer = final_answer(row)
    why = _shape_mismatch(row, answer) if answer is not None else None
    if why:
        return rec("comprehension", rule="answer type/shape differs from gold", reason=why,
                   answer=answer, gold=row.problem.reference.answer)
    skip = {format_verifier, process_verifier, judge_verifier}
    answer_fails = [v for v in row.verdicts if v.verifier not in skip and v.outcome == "fail"]
    if proc is not None and proc.outcome in ("pass", "abstain") and answer_fails:
        return rec("logic", rule="steps consistent but final answer wrong", process=proc.outcome,
                   failed={v.verifier: v.reason for v in answer_fails}, answer=answer,
                   gold=row.problem.reference.answer)
    why_not = "no process verifier ran" if proc is None else "no answer verifier failed"
    return rec("other", rule="no rule decided", reason=why_not,
               failed={v.verifier: v.reason for v in row.verdicts if v.outcome == "fail"})


JudgeFn = Callable[[list[Row]], list[tuple[str | None, str]]]


def refine_with_judge(records: Sequence[ErrorRecord], rows: Sequence[Row], classify_fn: JudgeFn) -> list[ErrorRecord]:
    """Ask the judge about the records the rules left as "other"; a class it returns
    replaces the record (decided_by="judge"). A judge crash keeps the rule records."""
    by_sample = {r.sample.id: r for r in rows}
    todo = [i for i, rec in enumerate(records) if rec.error_class == "other" and rec.sample_id in by_sample]
    out = list(records)
    if not todo:
        return out
    try:
        answers = classify_fn([by_sample[records[i].sample_id] for i in todo])
    except Exception as e:  # noqa: BLE001 - the judge is an optional refinement
        log.warning("judge refinement failed, keeping rule classes: %s", e)
        return out
    if len(answers) != len(todo):
        raise ValueError(f"judge classify_fn returned {len(answers)} answers for {len(todo)} rows; "
                         "it must return one (class or None, reason) per row")
    for i, (cls, reason) in zip(todo, answers):
        if cls is None:
            continue
        if cls not in ERROR_CLASSES:
            log.warning("judge returned unknown error class %r for %s; keeping 'other'", cls, records[i].sample_id)
            continue
        old = records[i]
        out[i] = old.model_copy(update={"error_class": cls, "decided_by": "judge",
                                        "evidence": {**old.evidence, "judge_reason": reason}})
    return out
