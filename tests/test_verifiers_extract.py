"""Final-answer extraction and normalization (verifiers/extract.py)."""
from fractions import Fraction

import pytest

from verifiers.extract import extract_answer, find_boxed, normalize, parse_number, split_think


def test_answer_after_think():
    ex = extract_answer("<think>\n12 * 11 = 132\nAnswer: 5\n</think>\nAnswer: 132")
    assert (ex.answer, ex.method) == ("132", "answer_line")


def test_unclosed_think_has_no_answer_even_with_answer_inside():
    ex = extract_answer("<think>\n3 + 4 = 7\nAnswer: 7")
    assert ex.answer is None and ex.method == "none" and "never closed" in ex.reason


def test_template_opened_think_only_close_tag_in_completion():
    split = split_think("steps here\n</think>\nAnswer: 9")
    assert split.think == "steps here\n" and split.after == "\nAnswer: 9"
    assert extract_answer("steps here\n</think>\nAnswer: 9").answer == "9"


def test_nested_boxed_wins_over_answer_line():
    ex = extract_answer("<think>x</think>\nAnswer: 0.5, i.e. \\boxed{\\frac{1}{2}}")
    assert (ex.answer, ex.method) == ("\\frac{1}{2}", "boxed")
    assert find_boxed("\\boxed{a{b{c}}d} and \\boxed{2}") == ["a{b{c}}d", "2"]
    assert find_boxed("\\boxed{unbalanced") == []


def test_last_answer_line_and_final_answer_marker():
    ex = extract_answer("<think>..</think>\nAnswer: 3\nOn reflection,\nFinal answer: 4\nthanks")
    assert (ex.answer, ex.method) == ("4", "answer_line")
    assert extract_answer("**Answer:** 12").answer == "12"


def test_last_nonempty_line_fallback_and_empty():
    ex = extract_answer("<think>a</think>\nThe result\n  42.  \n\n")
    assert (ex.answer, ex.method) == ("42.", "last_line")
    assert extract_answer("<think>a</think>\n   \n").answer is None
    assert extract_answer("").answer is None


@pytest.mark.parametrize("raw, want", [
    ("\u22124", "-4"), ("$\u22124$", "-4"), ("\u20137", "-7"), ("132.", "132"), ("  **5**. ", "5"),
    ("1,234", "1234"), ("1,234,567.5", "1234567.5"), ("1,2,3", "1,2,3"), ("12,3456", "12,3456"),
    ("\\(x+1\\)", "x+1"), ("a   b", "a b"),
])
def test_normalize(raw, want):
    assert normalize(raw) == want


def test_normalize_casefold_and_non_string():
    assert normalize("Yes.", casefold=True) == "yes"
    assert normalize(None) == ""  # type: ignore[arg-type]


@pytest.mark.parametrize("raw, want", [
    ("\u22124", Fraction(-4)), ("1,234", Fraction(1234)), ("0.5", Fraction(1, 2)), ("3/4", Fraction(3, 4)),
    ("\\frac{3}{4}", Fraction(3, 4)), ("-\\dfrac{1}{2}", Fraction(-1, 2)), ("x = 7", Fraction(7)),
    ("1e3", Fraction(1000)), (".5", Fraction(1, 2)),
    ("abc", None), ("1/0", None), ("3 apples", None), ("1e99999", None), ("", None),
])
def test_parse_number(raw, want):
    assert parse_number(raw) == want
