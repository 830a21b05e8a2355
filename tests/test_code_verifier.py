"""code_tests: program extraction, HumanEval reference solutions, wrong programs and their evidence."""
import tempfile

import pytest

from generators.humaneval import load_problems
from loop.records import Message, Problem, Reference, Sample
from loop.registry import RegistryError
from verifiers.base import VERIFIERS, as_reward_func
from verifiers.code import extract_code

HE = {p.metadata["task_id"]: p for p in load_problems(None)}


def sample(problem: Problem, text: str, i: int = 0) -> Sample:
    return Sample(id=f"{problem.id}:r0:{i}", problem_id=problem.id, round=0, index=i, text=text,
                  num_tokens=0, finish_reason="stop")


def verifier(**opts):
    return VERIFIERS.build("code_tests", {"timeout_s": 5, **opts})


def fenced(code: str, tag: str = "python") -> str:
    return f"```{tag}\n{code}\n```"


def test_extract_blocks():
    text = "<think>\n```python\ndraft()\n```\n</think>\nHere:\n" + fenced("a = 1") + "\n" + \
        fenced("console.log(1)", "js") + "\n" + fenced("b = 2\nc = 3", "py") + "\ntext"
    assert extract_code(text) == "b = 2\nc = 3\n"
    assert extract_code(text, "first") == "a = 1\n"
    assert extract_code(text, "longest") == "b = 2\nc = 3\n"
    assert extract_code(text, "first", after_think=False) == "draft()\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"            # untagged only when no python block
    assert extract_code(fenced("x = 1", "js")) is None
    assert extract_code("<think>\n" + fenced("x = 1")) is None     # truncated inside thinking
    assert extract_code("no code here") is None
    assert extract_code("```python\nx = 1\n") is None              # unclosed fence


def test_humaneval_reference_solutions_pass():
    ids = [f"HumanEval/{i}" for i in range(0, 164, 8)]  # 21 problems across the set
    problems = [HE[i] for i in ids]
    verdicts = verifier(workers=2).verify(problems, [sample(p, p.reference.chain) for p in problems])
    bad = [(i, v.reason) for i, v in zip(ids, verdicts) if v.outcome != "pass"]
    assert bad == []
    assert all(v.score == 1.0 and v.verifier == "code_tests" for v in verdicts)


def test_wrong_solution_fails_with_the_failing_assertion():
    p = HE["HumanEval/0"]
    wrong = "def has_close_elements(numbers, threshold):\n    return False"
    [v] = verifier().verify([p], [sample(p, fenced(wrong))])
    assert v.outcome == "fail" and v.score == 0.0
    assert v.evidence["status"] == "failed" and v.evidence["phase"] == "tests"
    assert v.evidence["exception"] == "AssertionError"
    assert v.evidence["test_line"].startswith("assert candidate(")
    assert v.evidence["test_line"] in v.reason


def test_program_errors_are_reported_by_phase():
    p = HE["HumanEval/0"]
    [syn, missing, crash] = verifier().verify([p] * 3, [
        sample(p, fenced("def has_close_elements(:\n    pass"), 0),
        sample(p, fenced("def other():\n    return 1"), 1),
        sample(p, fenced("def has_close_elements(n, t):\n    return 1 / 0"), 2)])
    assert (syn.evidence["phase"], syn.evidence["exception"]) == ("program", "SyntaxError")
    assert missing.evidence["exception"] == "NameError" and "has_close_elements" in missing.reason
    assert crash.evidence["exception"] == "ZeroDivisionError" and crash.evidence["line"] == "return 1 / 0"
    assert all(v.outcome == "fail" for v in (syn, missing, crash))


def test_no_code_block_and_no_tests():
    p = HE["HumanEval/2"]
    [v] = verifier().verify([p], [sample(p, "<think>\nhmm\n</think>\nreturn number % 1.0")])
    assert (v.outcome, v.reason) == ("fail", "no code block")
    q = Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content="x")])
    [v] = verifier().verify([q], [sample(q, fenced("x = 1"))])
    assert v.outcome == "abstain"


def test_plain_assert_tests_without_entry_point():
    q = Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content="x")],
                reference=Reference(tests="assert square(2) == 4\nassert square(3) == 9\n"))
    good, bad = verifier().verify([q, q], [sample(q, fenced("def square(x):\n    return x * x"), 0),
                                           sample(q, fenced("def square(x):\n    return 2 * x"), 1)])
    assert good.outcome == "pass"
    assert bad.outcome == "fail" and bad.evidence["test_line"] == "assert square(3) == 9"


def test_sandbox_failure_is_an_error_not_a_wrong_answer(monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", "/nonexistent-sandbox-root")
    p = HE["HumanEval/0"]
    [v] = verifier().verify([p], [sample(p, p.reference.chain)])
    assert v.outcome == "error" and v.evidence["status"] == "sandbox_error"
    assert "cannot prepare" in v.reason


def test_workers_keep_order():
    problems = [HE[f"HumanEval/{i}"] for i in (3, 4, 5, 6)]
    texts = [p.reference.chain if i % 2 == 0 else fenced("pass") for i, p in enumerate(problems)]
    samples = [sample(p, t, i) for i, (p, t) in enumerate(zip(problems, texts))]
    verdicts = verifier(workers=3).verify(problems, samples)
    assert [v.sample_id for v in verdicts] == [s.id for s in samples]
    assert [v.outcome for v in verdicts] == ["pass", "fail", "pass", "fail"]


def test_reward_function_adapter():
    p = HE["HumanEval/7"]
    reward = as_reward_func(verifier(), {p.id: p})
    assert reward(["q", "q"], [p.reference.chain, fenced("pass")], problem_id=[p.id, p.id]) == [1.0, 0.0]


def test_options_are_validated():
    with pytest.raises(RegistryError, match="timeout_s"):
        VERIFIERS.build("code_tests", {"timeout_s": 0})
    with pytest.raises(RegistryError, match="allowed options"):
        VERIFIERS.build("code_tests", {"blok": "last"})
