"""The "verified" acceptance policy: pass only, optional clean checks, dedup, per-problem cap."""
from __future__ import annotations

import policies  # noqa: F401  (registers the built-ins)
from policies.acceptance import is_near_duplicate, normalize_chain
from policies.base import POLICIES
from tests.test_analysis import problem, row

P = problem("What is (7+5)*11?", "132")
Q = problem("What is 9*9-1?", "80")
OK = {"format": ("pass", {}), "exact_match": ("pass", {}), "process": ("pass", {})}


def ids(rows):
    return [r.sample.id for r in rows]


def test_accepts_only_pass_and_honours_clean_options():
    good = row(P, "<think>\n7+5=12\n12*11=132\n</think>\nAnswer: 132", OK, 0)
    wrong = row(P, "<think>\n7+5=12\n12*11=122\n</think>\nAnswer: 122",
                {**OK, "exact_match": ("fail", {}), "process": ("fail", {"wrong": [{"step": "12*11=122"}]})}, 1)
    # right answer reached through a wrong step (the process verifier is not required)
    lucky = row(P, "<think>\n7+5=13\n12*11=132\n</think>\nAnswer: 132",
                {**OK, "process": ("fail", {"wrong": [{"step": "7+5=13"}]})}, 2)
    # right answer but the format verifier (not required here) flags two answer lines
    messy = row(P, "<think>\n7+5=12\n12*11=132\n</think>\nAnswer: 132\nAnswer: 132",
                {**OK, "format": ("fail", {"reason": "several answers"})}, 3, required={"exact_match"})
    rows = [good, wrong, lucky, messy]
    assert ids(POLICIES.build("verified").accept(rows)) == ids([good, lucky, messy])
    strict = POLICIES.build("verified", {"require_format": True, "require_process_clean": True})
    assert ids(strict.accept(rows)) == ids([good])


def test_exact_dedup_after_whitespace_and_cap():
    texts = ["<think>\n7+5=12\n12*11=132\n</think>\nAnswer: 132",
             "<think>\n7+5=12\n\n12*11=132  \n</think>\nAnswer: 132",      # same after whitespace
             "<think>\n5+7=12\n12*11=132\n</think>\nAnswer: 132",
             "<think>\n7+5=12\n11*12=132\n</think>\nAnswer: 132",
             "<think>\n12*11=132\n</think>\nAnswer: 132"]
    rows = [row(P, t, OK, i) for i, t in enumerate(texts)] + [row(Q, "<think>\n9*9=81\n81-1=80\n</think>\nAnswer: 80",
                                                                  OK, 0)]
    acc = POLICIES.build("verified", {"max_per_problem": 10}).accept(rows)
    assert ids(acc) == ids(rows[:1] + rows[2:])
    capped = POLICIES.build("verified", {"max_per_problem": 2}).accept(rows)
    assert ids(capped) == ids([rows[0], rows[2], rows[5]])           # the cap is per problem
    # digits are kept: 5+7 vs 7+5 differ, so only a similarity threshold merges them
    near = POLICIES.build("verified", {"max_per_problem": 10, "similarity": 0.93}).accept(rows)
    assert ids(near) == ids([rows[0], rows[4], rows[5]])


def test_hinted_chains_last_and_optional():
    hinted = row(P, "<think>\n(7+5)=12\n12*11=132\n</think>\nAnswer: 132", OK, 0, hinted=True)
    plain = row(P, "<think>\n7+5=12\n12*11=132\n</think>\nAnswer: 132", OK, 1)
    assert ids(POLICIES.build("verified", {"max_per_problem": 1}).accept([hinted, plain])) == ids([plain])
    assert ids(POLICIES.build("verified").accept([hinted, plain])) == ids([plain, hinted])
    assert POLICIES.build("verified", {"include_hinted": False}).accept([hinted]) == []


def test_similarity_helpers():
    assert normalize_chain("  a\n\n b\t c ") == "a b c"
    assert is_near_duplicate("7+5=12 12*11=132", "7+5=12 12*11=132.", 0.95)
    assert not is_near_duplicate("7+5=12 12*11=132", "9*9=81 81-1=80", 0.5)


def test_gold_replay_adds_reference_chains_next_to_the_models_own():
    from loop.records import Reference

    chain = "<think>\n7+5=12\n12*11=132\n</think>\nAnswer: 132"
    solved = problem("What is (7+5)*11?", "132").model_copy(update={"reference": Reference(answer="132", chain=chain)})
    unsolved = problem("What is 9*9-1?", "80").model_copy(
        update={"reference": Reference(answer="80", chain="<think>\n9*9=81\n81-1=80\n</think>\nAnswer: 80")})
    no_chain = problem("What is 2*2?", "4")
    fail = {**OK, "exact_match": ("fail", {})}
    rows = [row(solved, chain.replace("7+5", "5+7"), OK, 0), row(solved, "Answer: 1", fail, 1),
            row(unsolved, "Answer: 79", fail, 0), row(unsolved, "Answer: 81", fail, 1), row(no_chain, "Answer: 5", fail, 0)]
    assert [r.sample.gold for r in POLICIES.build("verified").accept(rows)] == [False]  # default: off

    every = POLICIES.build("verified", {"gold_replay": "all"}).accept(rows)
    gold = [r for r in every if r.sample.gold]
    assert [r.problem.id for r in gold] == [solved.id, unsolved.id]  # once per problem; none without a chain
    assert [r.sample.text for r in gold] == [solved.reference.chain, unsolved.reference.chain]
    assert all(r.outcome == "pass" and r.sample.id.endswith(":gold") and r.sample.round == 0 for r in gold)
    assert len({r.sample.id for r in every}) == len(every)

    only = POLICIES.build("verified", {"gold_replay": "unsolved"}).accept(rows)
    assert [r.problem.id for r in only if r.sample.gold] == [unsolved.id]
