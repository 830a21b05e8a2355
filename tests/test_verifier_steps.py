"""benchmarks/verifier_steps.py's labels (issue 21's step-level verifier experiment) and the warm-start probe's
peel examples: each prefix is Yes while it matches the reference chain line for line, No at the first line that
does not, and nothing after it."""
from __future__ import annotations

from loop.config import ROOT
from tests.conftest import load_benchmark as _load

REF = "<think>\n64+77\n6+7;4+7=11;1\n+;6+7+1=14;141\n</think>\nAnswer: 141"


def test_a_right_chain_is_yes_at_every_line():
    steps = _load("verifier_steps").step_examples(REF, REF)
    assert [ok for _, ok in steps] == [True] * 5
    assert steps[0][0] == "<think>\n64+77" and steps[-1][0] == REF


def test_the_first_wrong_line_is_no_and_ends_the_chain():
    wrong = REF.replace("4+7=11;1", "4+7=12;2").replace("14;141", "14;142").replace("Answer: 141", "Answer: 142")
    steps = _load("verifier_steps").step_examples(wrong, REF)
    assert [ok for _, ok in steps] == [True, False]
    assert steps[-1][0].endswith("4+7=12;2")


def test_a_chain_that_stops_early_is_no_where_it_stops():
    short = "<think>\n64+77\n</think>\nAnswer: 141"
    assert [ok for _, ok in _load("verifier_steps").step_examples(short, REF)] == [True, False]


def test_the_verification_chain_is_read_back_from_its_prompt():
    vs = _load("verifier_steps")
    prompt = [{"role": "user", "content": f"Compute 64+77.\n\nSolution:\n{REF}\n\nIs this solution correct? Answer Yes or No."}]
    assert vs.chain_of(prompt) == REF
    assert vs.messages("Compute 64+77.", "<think>\n64+77")[0]["content"].endswith(vs.STEP_QUESTION)


def test_peel_examples_restate_and_drop_digits_without_sums():
    (prompt, reply), = _load("warm_start_probe").peel_examples(0, 1)
    expr = prompt[0]["content"].removeprefix("Peel ").removesuffix(".")
    lines = reply.split("\n")[1:-2]
    assert lines[0] == expr and lines[-1] in "+-" and "=" not in reply
    assert all(len(b.replace("+", "").replace("-", "")) <= len(a.replace("+", "").replace("-", "")) - 1
               or b in "+-" for a, b in zip(lines, lines[1:]))


def test_extra_warm_start_problems_are_at_the_asked_level_and_a_bad_spec_is_named():
    import pytest

    wp = _load("warm_start_probe")
    got = wp.extra_examples(["add:4=8"], 0)
    assert 0 < len(got) <= 8  # held-out problems are skipped
    for prompt, chain in got:
        a, b = prompt[0]["content"].removeprefix("Compute ").removesuffix(".").split("+")
        assert len(a) == len(b) == 4 and chain.split("\n")[1] == f"{a}+{b}"
    with pytest.raises(SystemExit, match="CAT:DIGITS=COUNT"):
        wp.extra_examples(["add4=8"], 0)


def test_ranking_pools_scores_and_ranks_within_each_problem():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    r = _load("verifier_offline").ranking([("p", 0.9, True), ("p", 0.1, False), ("q", 0.95, False), ("q", 0.2, False)])
    assert r["within_problem_auc"] == 1.0 and r["mixed_problems"] == 1  # q has no passing chain
    assert r["verifier_best_of_n"] == 0.5  # p's top chain passes, q's does not
    assert abs(r["pooled_auc"] - 2 / 3) < 1e-9  # the one passing chain outscores 2 of the 3 failing ones
