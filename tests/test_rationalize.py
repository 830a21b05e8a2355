"""STaR rationalization: the hinted prompt and the leak check on chains sampled with it."""
from __future__ import annotations

import pytest

import generators  # noqa: F401  (registers families)
import policies  # noqa: F401
from generators.base import GENERATORS
from generators.rationalize import hinted_prompt, leaks_hint
from loop.records import Message, Problem, Reference
from policies.base import POLICIES
from tests.test_analysis import problem, row

P = problem("What is (7+5)*11?", "132")
OK = {"exact_match": ("pass", {}), "format": ("pass", {}), "process": ("pass", {})}
CLEAN = "<think>\n7+5=12\n12*11=132\n</think>\nAnswer: 132"


def test_hinted_prompt_uses_the_family_hint_and_keeps_the_original():
    gen = GENERATORS.build("arithmetic", {})
    p = gen.generate("add", 2, 1, seed=3)[0]
    msgs = hinted_prompt(gen, p)
    assert msgs[:-1] == p.prompt[:-1]
    assert msgs[-1].content.startswith(p.prompt[-1].content)
    assert p.reference.answer in msgs[-1].content and "Hint" in msgs[-1].content
    assert p.reference.answer not in p.prompt[-1].content   # the problem itself is unchanged

    class Custom(type(gen)):
        def hint_prompt(self, problem):
            return [Message(role="user", content="custom " + problem.reference.answer)]

    assert hinted_prompt(Custom(gen.options), p)[0].content == "custom " + p.reference.answer


@pytest.mark.parametrize("text", [
    CLEAN,
    "<think>\n12*11=132\n</think>\nAnswer: 132",
    "<think>\n7+5=12\n132 = 12*11\n</think>\nAnswer: 132",
    "<think>\n7+5=12\n12*11=132\nso the result is 132\n</think>\nAnswer: 132",   # restated after deriving
    "<think>\n7+5=12\n12*11=122\n</think>\nAnswer: 122",                         # wrong, but no leak
    "<think>\n7+5=12\n12*11=132",                                                # never closed
    "Answer: 7",                                                                 # no think, wrong answer
])
def test_clean_chains(text):
    assert leaks_hint(text, P) is None


@pytest.mark.parametrize("text, why", [
    ("<think>\nThe hint says 132.\n7+5=12\n12*11=132\n</think>\nAnswer: 132", "mentions the hint"),
    ("<think>\n7+5=12\n12*11=132\n</think>\nAs HINTED, Answer: 132", "mentions the hint"),
    ("<think>\nUsing the given answer: 7+5=12, 12*11=132\n</think>\nAnswer: 132", "given answer"),
    ("<think>\nWe are told the answer, so\n7+5=12\n</think>\nAnswer: 132", "we are told the answer"),
    ("<think>\nThe answer is 132.\n7+5=12\n12*11=132\n</think>\nAnswer: 132", "before deriving"),
    ("<think>\n7+5=12\n132\n12*11=132\n</think>\nAnswer: 132", "think line 3"),
    ("<think>\n132-120=12\n12*11=132\n</think>\nAnswer: 132", "before deriving"),   # works back from it
    ("<think>\n7+5=12\n5+6=132\n</think>\nAnswer: 132", "before deriving"),          # a wrong step "derives" it
    ("<think>\n</think>\nAnswer: 132", "no reasoning"),
    ("<think>   </think>Answer: 132", "no reasoning"),
    ("Answer: 132", "no reasoning"),
    ("The final answer is 1,32 ... Answer: 132.0", "no reasoning"),
])
def test_leaks(text, why):
    got = leaks_hint(text, P)
    if why is None:
        assert got is None
    else:
        assert got is not None and why in got.lower(), got


def test_word_boundaries_and_decimals_do_not_count_as_the_gold():
    p = problem("What is 6*5?", "30")
    assert leaks_hint("<think>\n8.30 is not it; 130 and 302 neither\n6*5=30\n</think>\nAnswer: 30", p) is None
    assert leaks_hint("<think>\nthink: 30\n6*5=30\n</think>\nAnswer: 30", p) is not None
    # "think" does not contain "hint"
    assert leaks_hint("<think>\nLet me think.\n6*5=30\n</think>\nAnswer: 30", p) is None


def test_negative_gold_and_signs():
    p = problem("What is 3-7?", "-4")
    assert leaks_hint("<think>\n3-7=-4\n</think>\nAnswer: -4", p) is None
    assert leaks_hint("<think>\nx = -4\n3-7=-4\n</think>\nAnswer: -4", p) is not None
    assert leaks_hint("<think>\n12-4=8\n3-7=-4\n</think>\nAnswer: -4", p) is None  # "12-4" holds 4, not -4


def test_text_answers_and_arrows():
    p = Problem(family="rules", category="bit_manipulation", difficulty=1,
                prompt=[Message(role="user", content="01011111 -> 11111010\nNow: 10111011")],
                reference=Reference(answer="00111011"))
    assert leaks_hint("<think>\nrule: flip bit 7\nflip: 10111011 -> 00111011\n</think>\nAnswer: 00111011", p) is None
    assert leaks_hint("<think>\ntarget 00111011\nflip: 10111011 -> 00111011\n</think>\nAnswer: 00111011",
                      p) is not None
    assert leaks_hint("<think>\n00111011 -> 10111011\n</think>\nAnswer: 00111011", p) is not None
    # leading zeros matter: 111011 is not the gold
    assert leaks_hint("<think>\n111011 first\nflip: 10111011 -> 00111011\n</think>\nAnswer: 00111011", p) is None
    sym = Problem(family="rules", category="symbolic", difficulty=4, prompt=[Message(role="user", content="=>xy~c#")],
                  reference=Reference(answer="==>>xxyy~~cc##"))
    assert leaks_hint("<think>\ndouble: =>xy~c# -> ==>>xxyy~~cc##\n</think>\nAnswer: ==>>xxyy~~cc##", sym) is None


def test_gold_inside_the_problem_proves_nothing_and_no_gold_skips_the_gold_checks():
    p = problem("What is 5+0?", "5")
    assert leaks_hint("<think>\n5 plus nothing stays 5\n</think>\nAnswer: 5", p) is None
    assert leaks_hint("Answer: 5", p) is not None                     # but skipping the reasoning is not ok
    code = problem("Write f.", None)
    assert leaks_hint("```python\ndef f(): pass\n```", code) is None
    assert leaks_hint("per the hint:\n```python\ndef f(): pass\n```", code) is not None


def test_reference_chains_of_arithmetic_are_clean():
    gen = GENERATORS.build("arithmetic", {})
    for cat in gen.categories():
        for d in (1, 3, 5):
            for p in gen.generate(cat, d, 10, seed=7):
                assert leaks_hint(p.reference.chain, p) is None, (p.prompt, p.reference.chain)


def test_verified_policy_drops_leaking_hinted_chains_only():
    leaky = "<think>\nThe answer is 132.\n7+5=12\n12*11=132\n</think>\nAnswer: 132"
    rows = [row(P, CLEAN, OK, 0, hinted=True), row(P, leaky, OK, 1, hinted=True),
            row(P, "<think>\n</think>\nAnswer: 132", OK, 2, hinted=True),
            row(P, leaky, OK, 3)]                          # unhinted: the model wrote it on its own
    got = [r.sample.id for r in POLICIES.build("verified", {"max_per_problem": 10}).accept(rows)]
    assert got == [rows[3].sample.id, rows[0].sample.id]
    assert POLICIES.build("verified", {"include_hinted": False}).accept(rows[:3]) == []
