"""Programmatic verifiers: pass / fail / abstain / error on tricky real inputs."""
import random

import pytest
import reasoning_gym

from loop.records import Message, Problem, Reference, Sample
from loop.registry import RegistryError
from verifiers import VERIFIERS, Verifier, as_reward_func, safe_verify


def prob(answer=None, **metadata):
    return Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content="q?")],
                   reference=Reference(answer=answer), metadata=metadata)


def samp(text, finish="stop", tokens=10, i=0):
    return Sample(id=f"p:r0:{i}", problem_id="p", round=0, index=i, text=text, num_tokens=tokens,
                  finish_reason=finish)


def run(name, problem, text, options=None, **kw):
    v = VERIFIERS.build(name, options)
    [verdict] = safe_verify(v, [problem], [samp(text, **kw)])
    return verdict


CHAIN = "<think>\n12 * 11 = 132\n</think>\nAnswer: {}"


# ---- exact_match ----
def test_exact_match_pass_with_unicode_minus_and_period():
    v = run("exact_match", prob("-4"), CHAIN.format("\u22124."))
    assert v.outcome == "pass" and v.score == 1.0
    assert v.evidence["answer"] == "\u22124." and v.evidence["gold"] == "-4"


def test_exact_match_fail_casefold_option_and_abstain():
    assert run("exact_match", prob("Paris"), CHAIN.format("paris")).outcome == "pass"
    assert run("exact_match", prob("Paris"), CHAIN.format("paris"), {"casefold": False}).outcome == "fail"
    v = run("exact_match", prob("132"), CHAIN.format("133"))
    assert v.outcome == "fail" and "133" in v.reason and v.score == 0.0
    assert run("exact_match", prob(None), CHAIN.format("1")).outcome == "abstain"
    assert run("exact_match", prob("  "), CHAIN.format("1")).outcome == "abstain"


def test_exact_match_unclosed_think_fails():
    v = run("exact_match", prob("7"), "<think>\n3 + 4 = 7\nAnswer: 7")
    assert v.outcome == "fail" and "never closed" in v.reason and v.evidence["answer"] is None


# ---- numeric ----
def test_numeric_tolerance_and_formats():
    assert run("numeric", prob("1234"), CHAIN.format("1,234")).outcome == "pass"
    assert run("numeric", prob("0.5"), "<think>a</think>\n\\boxed{\\frac{1}{2}}").outcome == "pass"
    assert run("numeric", prob("3.14159"), CHAIN.format("3.1416")).outcome == "fail"
    assert run("numeric", prob("3.14159"), CHAIN.format("3.1416"), {"rel_tol": 1e-4}).outcome == "pass"
    assert run("numeric", prob("0"), CHAIN.format("0.0000001"), {"abs_tol": 1e-6}).outcome == "pass"
    v = run("numeric", prob("-4"), CHAIN.format("\u22124"))
    assert v.outcome == "pass" and v.evidence["value"] == -4


def test_numeric_non_numeric_answer_fails_missing_gold_abstains():
    v = run("numeric", prob("12"), CHAIN.format("twelve"))
    assert v.outcome == "fail" and "not a number" in v.reason and v.evidence["gold"] == "12"
    assert run("numeric", prob(None), CHAIN.format("12")).outcome == "abstain"
    v = run("numeric", prob("blue"), CHAIN.format("12"))
    assert v.outcome == "abstain" and "not a number" in v.reason


def test_numeric_huge_numbers_do_not_crash():
    v = run("numeric", prob("1e999"), CHAIN.format("1e998"))
    assert v.outcome == "fail"


# ---- math_verify ----
def test_math_verify_equivalence():
    assert run("math_verify", prob("\\frac{1}{2}"), CHAIN.format("0.5")).outcome == "pass"
    assert run("math_verify", prob("\\sqrt{2}"), "<think>a</think>\n\\boxed{2^{1/2}}").outcome == "pass"
    assert run("math_verify", prob("-4"), CHAIN.format("\u22124")).outcome == "pass"
    v = run("math_verify", prob("\\frac{1}{3}"), CHAIN.format("0.5"))
    assert v.outcome == "fail" and v.evidence["answer"] == "0.5"


def test_math_verify_garbage_answer_fails_missing_gold_abstains():
    v = run("math_verify", prob("12"), CHAIN.format("@@@"))
    assert v.outcome == "fail" and "not equivalent" in v.reason and v.evidence["gold"] == "12"
    assert run("math_verify", prob("(B)"), CHAIN.format("(B)")).outcome == "pass"
    assert run("math_verify", prob(None), CHAIN.format("1")).outcome == "abstain"
    v = run("math_verify", prob("4"), CHAIN.format(" + ".join(["2"] * 20)), {"max_answer_chars": 30})
    assert v.outcome == "fail" and "max_answer_chars" in v.reason


# ---- reasoning_gym ----
@pytest.fixture(scope="module")
def rg_problems():
    ds = reasoning_gym.create_dataset("basic_arithmetic", size=2, seed=1)
    return [prob(e["answer"], rg_dataset="basic_arithmetic", rg_entry=dict(e)) for e in ds]


def test_reasoning_gym_pass_fail(rg_problems):
    p = rg_problems[0]
    gold = p.reference.answer
    v = run("reasoning_gym", p, CHAIN.format(gold))
    assert v.outcome == "pass" and v.score == 1.0 and v.evidence["dataset"] == "basic_arithmetic"
    v = run("reasoning_gym", p, CHAIN.format(str(int(gold) + 1)))
    assert v.outcome == "fail" and v.evidence["gold"] == gold
    assert run("reasoning_gym", p, "<think>never closed").outcome == "fail"


def test_reasoning_gym_threshold_abstain_and_broken_scorer(rg_problems):
    p = rg_problems[1]
    wrong = CHAIN.format("999999")
    assert run("reasoning_gym", p, wrong, {"threshold": 0.0}).outcome == "pass"
    assert run("reasoning_gym", prob("3"), CHAIN.format("3")).outcome == "abstain"
    broken = prob("3", rg_dataset="no_such_dataset_xyz", rg_entry={"answer": "3"})
    v = run("reasoning_gym", broken, CHAIN.format("3"))
    assert v.outcome == "error" and "no_such_dataset_xyz" in v.reason
    with pytest.raises(RegistryError, match="threshold"):
        VERIFIERS.build("reasoning_gym", {"threshold": 2})


# ---- format ----
def test_format_pass_and_fail_modes():
    assert run("format", prob("1"), "<think>\nok\n</think>\nAnswer: 1").outcome == "pass"
    v = run("format", prob("1"), "<think>\nok\n</think>\nAnswer: 1\nAnswer: 2")
    assert v.outcome == "fail" and "2 final answers" in v.reason and v.evidence["error_class"] == "format"
    v = run("format", prob("1"), "<think>\nok\nAnswer: 1")
    assert v.outcome == "fail" and "</think>" in v.reason
    v = run("format", prob("1"), "no think at all\nAnswer: 1")
    assert v.outcome == "fail"
    assert run("format", prob("1"), "<think>a</think>\n1").outcome == "fail"
    assert run("format", prob("1"), "<think>a</think>\n1", {"require_marker": False}).outcome == "pass"
    assert run("format", prob("1"), "a\n</think>\nAnswer: 1", {"think_in_prompt": True}).outcome == "pass"
    assert run("format", prob("1"), "</think>x<think>\nAnswer: 1").outcome == "fail"


def test_format_truncated_and_length_budget():
    v = run("format", prob("1"), "<think>\nlong", finish="length")
    assert v.outcome == "fail" and "truncated" in v.reason and v.evidence["error_class"] == "truncated"
    ok = "<think>\nok\n</think>\nAnswer: 1"
    assert run("format", prob("1"), ok, {"max_tokens": 50}, tokens=50).outcome == "pass"
    v = run("format", prob("1"), ok, {"max_tokens": 50}, tokens=51)
    assert v.outcome == "fail" and "budget" in v.reason


# ---- safe_verify, reward adapter, registry ----
class Crashing(Verifier):
    name = "crashing"

    def verify(self, problems, samples):
        raise ZeroDivisionError("boom")


def test_crashing_verifier_gives_error_verdicts():
    out = safe_verify(Crashing(None), [prob("1")] * 2, [samp("x", i=0), samp("y", i=1)])
    assert [v.outcome for v in out] == ["error", "error"]
    assert "ZeroDivisionError" in out[0].reason and out[1].sample_id == "p:r0:1"


def test_as_reward_func_maps_abstain_and_error_to_none():
    p_gold, p_none = prob("132"), prob(None)
    reward = as_reward_func(VERIFIERS.build("exact_match"), {p_gold.id: p_gold, p_none.id: p_none})
    completions = [CHAIN.format("132"), CHAIN.format("7"), CHAIN.format("132")]
    assert reward(["q"] * 3, completions, problem_id=[p_gold.id, p_gold.id, p_none.id]) == [1.0, 0.0, None]
    chat = [[{"role": "assistant", "content": CHAIN.format("132")}]]
    assert reward(["q"], chat, problem_id=[p_gold.id]) == [1.0]
    crash = as_reward_func(Crashing(None), {p_gold.id: p_gold})
    assert crash(["q"], ["x"], problem_id=[p_gold.id]) == [None]


def test_unknown_option_is_rejected():
    with pytest.raises(RegistryError, match="allowed options"):
        VERIFIERS.build("numeric", {"tolerance": 0.1})


GARBAGE = ["", "<think>", "</think>", "\\boxed{", "\\boxed{}}}", "Answer:", "=" * 50, "1/0 = 0", "(((((",
           "<think></think><think>", "\u2212\u2212\u2212", "9" * 500 + " * 9 = 1", "\x00\ud7ff\n\r\t",
           # pathological sizes: must stay fast (no quadratic scans, no recursion overflow)
           "(" * 3000 + "1" + ")" * 3000 + " = 1", "-" * 3000 + "1 + 1 = 2", "</think>" + "{" * 20000 + "\\boxed{" * 2000,
           " x ".join(["2"] * 2000) + " = 4"]


@pytest.mark.parametrize("name", ["exact_match", "numeric", "math_verify", "reasoning_gym", "format", "process"])
def test_verifiers_never_raise_on_garbage(name, rg_problems):
    rnd = random.Random(0)
    alphabet = "0123456789+-*/=()x. \n<>think/boxed{}Answer:$\u2212\u00d7\u00f7,"
    texts = GARBAGE + ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 80))) for _ in range(60)]
    v = VERIFIERS.build(name)
    problems = [rg_problems[0] if i % 2 else prob("12") for i in range(len(texts))]
    samples = [samp(t, i=i) for i, t in enumerate(texts)]
    out = v.verify(problems, samples)  # called directly: any exception fails the test
    assert len(out) == len(texts) and all(x.outcome in ("pass", "fail", "abstain") for x in out)
