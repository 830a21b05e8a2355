"""Per-category statistics, error tables, round deltas, verifier health and the round table."""
from __future__ import annotations

import pytest

from loop.analysis import analyze, classify, compare, error_table, format_round_table, verifier_health
from loop.records import ERROR_CLASSES, RoundAnalysis, Verdict
from tests.test_analysis import problem, row

OK = "<think>\n7+5=12\n12*11=132\n</think>\nAnswer: 132"
BAD_CALC = "<think>\n7+5=12\n12*11=122\n</think>\nAnswer: 122"
BAD_LOGIC = "<think>\n7+5=12\n12+11=23\n</think>\nAnswer: 23"


def v_ok():
    return {"format": ("pass", {}), "exact_match": ("pass", {}), "process": ("pass", {})}


def v_calc():
    return {"format": ("pass", {}), "exact_match": ("fail", {}),
            "process": ("fail", {"wrong": [{"step": "12*11=122"}]})}


def v_logic():
    return {"format": ("pass", {}), "exact_match": ("fail", {}), "process": ("pass", {})}


@pytest.fixture
def rows():
    a = problem("What is (7+5)*11?", "132", difficulty=1)
    b = problem("What is (7+5)*11 with 7 and 5 swapped?", "132", difficulty=2)
    c = problem("Sum 1 and 2.", "3", category="add", difficulty=1)
    return [
        # a: 2 of 4 pass; one infra error (not decided); plus a hinted pass that must not count
        row(a, OK, v_ok(), 0), row(a, OK + " ", v_ok(), 1), row(a, BAD_CALC, v_calc(), 2),
        row(a, OK, {"format": ("pass", {}), "exact_match": ("error", {"reason": "crash"})}, 3),
        row(a, OK, v_ok(), 4, hinted=True),
        # b: 0 of 2 pass
        row(b, BAD_LOGIC, v_logic(), 0), row(b, BAD_CALC, v_calc(), 1),
        # c: 1 of 1
        row(c, "<think>\n1+2=3\n</think>\nAnswer: 3", v_ok(), 0),
    ]


def test_analyze_category_stats(rows):
    an = analyze(3, rows, heldout_by_category={"arith/mixed": 0.5, "arith/add": 1.0})
    assert set(an.categories) == {"arith/mixed", "arith/add"}
    m = an.categories["arith/mixed"]
    assert (m.samples, m.passed, m.problems) == (6, 2, 2)        # hinted left out
    a_id, b_id = rows[0].problem.id, rows[5].problem.id
    assert m.problem_pass_rates == {a_id: pytest.approx(2 / 3), b_id: 0.0}   # the error is not decided
    assert m.pass_at_1 == pytest.approx((2 / 3 + 0) / 2)
    assert m.pass_at_k == 0.5
    assert m.by_difficulty == {1: [3, 2], 2: [2, 0]}
    assert m.errors == {"calculation": 2, "infra": 1, "logic": 1}
    assert an.heldout_accuracy == pytest.approx(0.75)
    # survives the JSON round trip the run directory uses
    assert RoundAnalysis.model_validate_json(an.model_dump_json()) == an


def test_existing_error_record_wins(rows):
    """A record already on the row (e.g. refined by the judge) is counted, not re-derived."""
    err = classify(rows[2]).model_copy(update={"error_class": "logic", "decided_by": "judge"})
    rows[2] = rows[2].model_copy(update={"error": err})
    assert analyze(0, rows).categories["arith/mixed"].errors == {"calculation": 1, "infra": 1, "logic": 2}


def test_error_table_and_compare(rows):
    prev = analyze(0, rows[5:], heldout_by_category={"arith/mixed": 0.25})
    cur = analyze(1, rows, heldout_by_category={"arith/mixed": 0.5, "arith/add": 1.0})
    tbl = error_table(cur)
    assert tbl[0] == ["category", *ERROR_CLASSES, "total"]
    mixed = next(r for r in tbl if r[0] == "arith/mixed")
    assert mixed[1 + ERROR_CLASSES.index("calculation")] == 2 and mixed[-1] == 4
    assert tbl[-1][0] == "all" and tbl[-1][-1] == 4
    d = compare(prev, cur)
    assert d["arith/mixed"]["d_heldout"] == pytest.approx(0.25)
    assert d["arith/mixed"]["d_pass_at_k"] == pytest.approx(0.5)   # prev held only problem b (0 of 2)
    assert d["arith/mixed"]["d_errors"] == {"calculation": 1, "infra": 1, "logic": 0}
    assert d["arith/add"]["d_pass_at_1"] == 0.0
    assert compare(None, cur)["arith/mixed"]["d_pass_at_1"] is None


def test_verifier_health_counts_and_judge_agreement(rows):
    extra = [r.model_copy(deep=True) for r in rows[:3]]
    # the judge agrees on the two passes and disagrees on the calculation failure
    for r, out in zip(extra, ["pass", "pass", "pass"]):
        r.verdicts.append(Verdict(sample_id=r.sample.id, verifier="llm_judge", outcome=out))
    h = verifier_health(extra + rows[3:4], required={"format", "exact_match", "llm_judge"})
    assert h["verifiers"]["exact_match"] == {"pass": 2, "fail": 1, "abstain": 0, "error": 1}
    assert h["verifiers"]["llm_judge"]["pass"] == 3
    assert h["judge"]["compared"] == 3 and h["judge"]["agree"] == 2
    assert h["judge"]["agreement"] == pytest.approx(2 / 3)
    assert verifier_health(rows)["judge"]["agreement"] is None


def test_format_round_table(rows):
    prev = analyze(0, rows[5:], heldout_by_category={"arith/mixed": 0.25})
    cur = analyze(1, rows, heldout_by_category={"arith/mixed": 0.5, "arith/add": 1.0})
    text = format_round_table(cur, prev)
    lines = text.splitlines()
    assert lines[0] == "round 1"
    mixed = next(line for line in lines if line.startswith("arith/mixed"))
    assert "0.50 (+0.25)" in mixed and "calculation 2" in mixed
    assert len({len(line) for line in lines[1:3]}) == 1     # header and rule have one width
    assert lines[-1].startswith("overall") and "0.75 (+0.50)" in lines[-1]
    assert lines[-1].index("0.75") == lines[1].index("held-out")   # in the held-out column
    assert "round 1" in format_round_table(cur)              # no previous round
