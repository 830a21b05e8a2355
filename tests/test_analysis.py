"""Error taxonomy rules on realistic failing chains, and the combine rule."""
from __future__ import annotations

import pytest

from loop.analysis import classify, combine, refine_with_judge
from loop.records import Message, Problem, Reference, Row, Sample, Verdict

REQ = {"exact_match", "format"}


def problem(question: str, gold: str | None, family: str = "arith", category: str = "mixed",
            difficulty: int = 2) -> Problem:
    return Problem(family=family, category=category, difficulty=difficulty,
                   prompt=[Message(role="user", content=question)], reference=Reference(answer=gold))


def row(p: Problem, text: str, verdicts: dict[str, tuple[str, dict]], index: int = 0,
        finish: str = "stop", hinted: bool = False, required: set[str] = REQ) -> Row:
    s = Sample(id=Sample.make_id(p.id, 0, index, hinted), problem_id=p.id, round=0, index=index, text=text,
               num_tokens=len(text), finish_reason=finish, hinted=hinted)
    vs = [Verdict(sample_id=s.id, verifier=name, outcome=out, score=float(out == "pass"),
                  reason=ev.pop("reason", ""), evidence=ev)
          for name, (out, ev) in ((n, (o, dict(e))) for n, (o, e) in verdicts.items())]
    return Row(problem=p, sample=s, verdicts=vs, outcome=combine(vs, required))


MUL = problem("What is 12*11+7?", "139")


def test_combine_order_and_required_only():
    def vs(*outs):
        return [Verdict(sample_id="s", verifier=f"v{i}", outcome=o) for i, o in enumerate(outs)]
    assert combine(vs("pass", "fail", "error"), {"v0", "v1", "v2"}) == "fail"
    assert combine(vs("pass", "error", "abstain"), {"v0", "v1", "v2"}) == "error"
    assert combine(vs("abstain", "abstain"), {"v0", "v1"}) == "abstain"
    assert combine(vs("pass", "abstain"), {"v0", "v1"}) == "pass"
    assert combine(vs("pass", "fail"), {"v0"}) == "pass"          # v1 not required
    assert combine(vs("pass"), set()) == "abstain"                # nothing required ran


def test_calculation_wrong_step_is_evidence():
    text = "<think>\n12*11=132\n132+7=149\n</think>\nAnswer: 149"
    wrong = [{"line": 3, "expr": "132+7", "claimed": "149", "actual": 139}]
    r = row(MUL, text, {"format": ("pass", {}), "exact_match": ("fail", {"answer": "149"}),
                        "process": ("fail", {"wrong": wrong, "reason": "1 of 2 arithmetic steps are wrong"})})
    rec = classify(r)
    assert rec.error_class == "calculation" and rec.decided_by == "rule"
    assert rec.evidence["wrong_steps"] == wrong
    assert rec.category == "arith/mixed" and rec.problem_id == MUL.id


def test_logic_consistent_steps_wrong_plan():
    p = problem("Tom has 12 apples, gives away 5 and buys 3. How many apples does he have?", "10")
    text = "<think>\n12+5=17\n17+3=20\n</think>\nAnswer: 20"
    r = row(p, text, {"format": ("pass", {}), "exact_match": ("fail", {}), "process": ("pass", {})})
    rec = classify(r)
    assert rec.error_class == "logic"
    assert rec.evidence["answer"] == "20" and rec.evidence["gold"] == "10"
    # abstain (no checkable step) is also "consistent"
    r2 = row(p, "<think>\nhe has more now\n</think>\nAnswer: 20",
             {"format": ("pass", {}), "exact_match": ("fail", {}), "process": ("abstain", {})})
    assert classify(r2).error_class == "logic"


def test_format_unclosed_think():
    text = "<think>\n12*11=132\n132+7=139\nso the answer is 139"
    r = row(MUL, text, {"format": ("fail", {"reason": "unclosed think", "problems": ["unclosed_think"]}),
                        "exact_match": ("fail", {}), "process": ("pass", {})})
    rec = classify(r)
    assert rec.error_class == "format" and rec.evidence["reason"] == "unclosed think"


def test_truncated_outranks_format():
    text = "<think>\n12*11=132\n132+7=139\n139-0=139\n139-0=1"
    r = row(MUL, text, {"format": ("fail", {"reason": "unclosed think"}), "exact_match": ("fail", {}),
                        "process": ("fail", {"wrong": [{"step": "139-0=1"}]})}, finish="length")
    assert classify(r).error_class == "truncated"


def test_prompt_too_long_is_infra_not_a_model_error():
    """Nothing was sampled (the prompt did not fit the engine): not the model's fault, never
    trained on, and the fix is named."""
    r = row(MUL, "", {"format": ("fail", {"reason": "no final answer"}), "exact_match": ("fail", {})},
            finish="prompt_too_long")
    rec = classify(r)
    assert rec.error_class == "infra" and "max_model_len" in rec.evidence["fix"]


def test_infra_outranks_everything():
    p = problem("Write add(a, b).", None, family="code", category="functions")
    text = "<think>\nreturn the sum\n</think>\n```python\ndef add(a, b):\n    return a + b\n```"
    r = row(p, text, {"format": ("fail", {}), "code_tests": ("error", {"status": "sandbox_error",
                                                                       "reason": "sandbox timed out"})},
            finish="length", required={"format", "code_tests"})
    assert r.outcome == "fail"   # a required fail outranks the error in the combined outcome ...
    rec = classify(r)
    assert rec.error_class == "infra"   # ... but a broken sandbox means nothing can be blamed
    assert rec.evidence["verifiers"] == {"code_tests": "sandbox timed out"}
    # a required verifier error without sandbox status is infra when `required` is known
    r2 = row(MUL, "<think>\n12*11=132\n</think>\nAnswer: 140", {"exact_match": ("fail", {}),
                                                                "format": ("error", {})})
    assert classify(r2, required=REQ).error_class == "infra"
    assert classify(r2, required={"exact_match"}).error_class != "infra"


def test_comprehension_type_and_different_question():
    r = row(MUL, "<think>\n12 elevens and seven\n</think>\nAnswer: one hundred thirty-nine",
            {"format": ("pass", {}), "exact_match": ("fail", {}), "process": ("abstain", {})})
    rec = classify(r)
    assert rec.error_class == "comprehension" and "is a number" in rec.evidence["reason"]
    # echoes an operand instead of computing: answers another question
    r2 = row(MUL, "<think>\nthe first number is 12\n</think>\nAnswer: 12",
             {"format": ("pass", {}), "exact_match": ("fail", {}), "process": ("abstain", {})})
    assert classify(r2).error_class == "comprehension"
    # a list answer with the wrong number of items
    p = problem("Sort 3, 1, 2 ascending.", "1, 2, 3", category="sort")
    r3 = row(p, "<think>\n1 is smallest\n</think>\nAnswer: 1, 2",
             {"format": ("pass", {}), "exact_match": ("fail", {}), "process": ("abstain", {})})
    assert classify(r3).error_class == "comprehension"
    # a plausible wrong number is not comprehension
    r4 = row(MUL, "<think>\n12*11=132\n132+7=139\n</think>\nAnswer: 138",
             {"format": ("pass", {}), "exact_match": ("fail", {}), "process": ("pass", {})})
    assert classify(r4).error_class == "logic"


def test_other_when_no_rule_decides_and_judge_refines():
    text = "<think>\n12*11=132\n132+7=139\n</think>\nAnswer: 140"
    r_other = row(MUL, text, {"format": ("pass", {}), "exact_match": ("fail", {})}, index=0)
    r_calc = row(MUL, "<think>\n12*11=131\n</think>\nAnswer: 138",
                 {"format": ("pass", {}), "exact_match": ("fail", {}),
                  "process": ("fail", {"wrong": [{"step": "12*11=131"}]})}, index=1)
    r_pass = row(MUL, "<think>\n12*11=132\n132+7=139\n</think>\nAnswer: 139",
                 {"format": ("pass", {}), "exact_match": ("pass", {})}, index=2)
    assert classify(r_pass) is None
    recs = [classify(r_other), classify(r_calc)]
    assert recs[0].error_class == "other" and "no process verifier" in recs[0].evidence["reason"]

    seen = []

    def judge(rows):
        seen.extend(r.sample.id for r in rows)
        return [("logic", "the chain is right but the answer line contradicts it")]

    out = refine_with_judge(recs, [r_other, r_calc, r_pass], judge)
    assert seen == [r_other.sample.id]                      # only "other" goes to the judge
    assert out[0].error_class == "logic" and out[0].decided_by == "judge"
    assert "contradicts" in out[0].evidence["judge_reason"]
    assert out[1] == recs[1]
    # None or an unknown class keeps the rule record; a wrong count is a clear error
    assert refine_with_judge(recs, [r_other], lambda rows: [(None, "unsure")])[0] == recs[0]
    assert refine_with_judge(recs, [r_other], lambda rows: [("bogus", "x")])[0] == recs[0]
    with pytest.raises(ValueError, match="one .* per row"):
        refine_with_judge(recs, [r_other], lambda rows: [])

    def broken(rows):
        raise RuntimeError("judge engine died")
    assert refine_with_judge(recs, [r_other], broken) == recs


@pytest.mark.parametrize("text,finish,cls", [
    ("<think>\n12*11=132\n132+7=149\n</think>\nAnswer: 149", "stop", "calculation"),
    ("<think>\n12*11=132\n132-7=125\n</think>\nAnswer: 125", "stop", "logic"),
    ("<think>\n12*11=132\n132+7=139\nAnswer: 139", "stop", "format"),
    ("<think>\n12*11=132\n</think>\nAnswer: 139\nAnswer: 140", "stop", "format"),
    ("<think>\n12*11=132\n132+7=13", "length", "truncated"),
    ("<think>\nmultiply then add\n</think>\nAnswer: twelve", "stop", "comprehension"),
    ("<think>\n12*11=132\n132+7=139\n</think>\nAnswer: 139", "stop", None),
])
def test_rules_on_verdicts_of_the_real_verifiers(text, finish, cls):
    """The rules read what the shipped format/process/exact_match verifiers write."""
    import verifiers  # noqa: F401  (registers them)
    from verifiers.base import VERIFIERS
    s = Sample(id=Sample.make_id(MUL.id, 0, 0), problem_id=MUL.id, round=0, index=0, text=text,
               num_tokens=len(text), finish_reason=finish)
    vs = [VERIFIERS.build(n).verify([MUL], [s])[0] for n in ("format", "process", "exact_match")]
    r = Row(problem=MUL, sample=s, verdicts=vs, outcome=combine(vs, REQ))
    rec = classify(r, required=REQ)
    assert (rec.error_class if rec else None) == cls, (rec, vs)
    if cls == "calculation":
        assert rec.evidence["wrong_steps"][0]["expr"] == "132+7"
