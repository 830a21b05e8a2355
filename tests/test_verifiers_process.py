"""The process verifier: it recomputes the arithmetic steps a chain states."""
import pytest

from loop.records import Message, Problem, Reference, Sample
from verifiers import VERIFIERS
from verifiers.arith import find_steps


def run(text, options=None):
    p = Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content="q")],
                reference=Reference(answer="132"))
    s = Sample(id="p:r0:0", problem_id=p.id, round=0, index=0, text=text, num_tokens=1, finish_reason="stop")
    [v] = VERIFIERS.build("process", options).verify([p], [s])
    return v


def test_all_steps_right_passes():
    v = run("<think>\n12 × 11 = 132\n132 − 2 = 130\n130 + 2 = 132\n</think>\nAnswer: 132")
    assert v.outcome == "pass" and v.evidence["steps_checked"] == 3 and v.evidence["answer"] == "132"


def test_wrong_intermediate_step_is_reported_with_its_line():
    text = "<think>\nFirst, 12 * 11 = 132.\nThen 132 + 45 = 167\nSo 167 / 2 = 83.5\n</think>\nAnswer: 83.5"
    v = run(text)
    assert v.outcome == "fail" and v.evidence["error_class"] == "calculation"
    assert v.evidence["wrong"] == [{"line": 3, "expr": "132 + 45", "claimed": "167", "actual": 177}]
    assert v.score == pytest.approx(2 / 3) and v.evidence["gold"] == "132"
    assert "line 3" in v.reason


def test_line_numbers_count_from_the_start_of_the_text():
    v = run("Solve it.\n<think>\nok\n\n3 + 4 = 8\n</think>\nAnswer: 8")
    assert v.evidence["wrong"][0]["line"] == 5


def test_no_checkable_step_abstains():
    assert run("<think>\nI just know it.\n</think>\nAnswer: 5").outcome == "abstain"
    assert run("").outcome == "abstain"
    # steps after </think> are not reasoning unless scope is 'all'
    assert run("<think>hm</think>\n2 + 2 = 5\nAnswer: 5").outcome == "abstain"
    assert run("<think>hm</think>\n2 + 2 = 5\nAnswer: 5", {"scope": "all"}).outcome == "fail"


def test_unclosed_think_is_still_checked():
    v = run("<think>\n5 - 3 - 6 = -2\n")
    assert v.outcome == "fail" and v.evidence["wrong"][0]["actual"] == -4 and v.evidence["answer"] is None


def test_division_by_zero_claim_is_wrong():
    v = run("<think>\n5 / 0 = 0\n</think>\nAnswer: 0")
    assert v.outcome == "fail" and "undefined" in str(v.evidence["wrong"][0]["actual"])


def steps(line):
    return [(s.expr, s.claimed, s.ok) for s in find_steps(line)]


@pytest.mark.parametrize("line, want", [
    ("5 \u2212 3 \u2212 6 = \u22124", [("5 - 3 - 6", "-4", True)]),
    ("2 - -1 = 3", [("2 - -1", "3", True)]),
    ("48 ÷ 6 = 8, then 8 · 3 = 25", [("48 ÷ 6", "8", True), ("8 · 3", "25", False)]),
    ("$3 \\times 4 = 13$", [("3 × 4", "13", False)]),
    ("3 x 4 = 12", [("3 x 4", "12", True)]),
    ("(3 + 4) * 2 = 14", [("(3 + 4) * 2", "14", True)]),
    ("2 + 3 * 4 = 20", [("2 + 3 * 4", "20", False)]),
    ("1,234 + 1 = 1,235", [("1,234 + 1", "1,235", True)]),
    ("0.1 + 0.2 = 0.3", [("0.1 + 0.2", "0.3", True)]),
    ("0.3 + 0.4 = 0.8", [("0.3 + 0.4", "0.8", False)]),
    ("10 / 3 = 3.33", [("10 / 3", "3.33", True)]),
    ("2 / 3 = 0.66", [("2 / 3", "0.66", True)]),
    ("10 / 3 = 3.4", [("10 / 3", "3.4", False)]),
    ("7 / 2 = 3", [("7 / 2", "3", False)]),
    ("36 = 12 * 3", [("12 * 3", "36", True)]),
    ("x = 12 / 4 = 3", [("12 / 4", "3", True)]),
    ("2 + 3 = 5 + 4 = 9", [("2 + 3", "5 + 4", True), ("5 + 4", "9", True)]),
    ("**3 + 4 = 7**", [("3 + 4", "7", True)]),
    ("(so 3 + 4 = 8)", [("3 + 4", "8", False)]),
    ("Step 1: 2 * 3 = 6", [("2 * 3", "6", True)]),
])
def test_steps_found_and_checked(line, want):
    assert steps(line) == want


@pytest.mark.parametrize("line", [
    "2x + 3 = 7", "3^2 + 1 = 10", "3 * 4 = 12cm", "a + 2 * 3 = 7", "3! = 6", "x = 5",
    "2024-01-05 is the date", "2 * x = 10 + 4", "f(2) = 4", "is -3 + 5 = 9",
])
def test_steps_that_are_not_self_contained_are_skipped(line):
    assert steps(line) == []
