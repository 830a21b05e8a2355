"""The control acceptance policies used by benchmarks/efficacy.py: accept_all and reference."""
from __future__ import annotations

import policies  # noqa: F401  (registers the built-ins)
from generators.base import GENERATORS
from policies.base import POLICIES
from tests.test_analysis import problem, row

P = problem("What is (7+5)*11?", "132")
Q = problem("What is 9*9-1?", "80")
OK = {"exact_match": ("pass", {})}
BAD = {"exact_match": ("fail", {})}


def ids(rows):
    return [r.sample.id for r in rows]


def test_accept_all_ignores_verdicts_but_dedups_and_caps():
    rows = [row(P, "<think>\n7+5=12\n12*11=132\n</think>\nAnswer: 132", OK, 0),
            row(P, "<think>\n7+5=13\n13*11=143\n</think>\nAnswer: 143", BAD, 1),
            row(P, "<think>\n7+5=13\n13*11=143\n</think>\nAnswer:  143", BAD, 2),   # duplicate after whitespace
            row(P, "no idea", {"exact_match": ("error", {})}, 3),
            row(P, "<think>\n12*11=132\n</think>\nAnswer: 132", OK, 4),
            row(Q, "<think>\n9*9=81\n</think>\nAnswer: 81", BAD, 0),
            row(Q, "<think>\n9*9=81\n81-1=80\n</think>\nAnswer: 80", OK, 1, hinted=True)]
    acc = POLICIES.build("accept_all").accept(rows)
    assert ids(acc) == ids([rows[0], rows[5], rows[1], rows[3], rows[4]])   # ordered by sample index
    assert POLICIES.build("verified").accept(rows) != acc                  # the control differs from the method
    capped = POLICIES.build("accept_all", {"max_per_problem": 2}).accept(rows)
    assert sorted(ids(capped)) == sorted(ids([rows[0], rows[1], rows[5]]))
    with_hints = POLICIES.build("accept_all", {"include_hinted": True}).accept(rows)
    assert rows[6].sample.id in ids(with_hints)


def test_reference_trains_on_the_gold_chain_once_per_problem():
    gen = GENERATORS.build("arithmetic", {"chain": "aligned"})
    p = gen.make("add", 47, 85, 2)
    wrong = row(p, "<think>\n7+5=12\n</think>\nAnswer: 122", BAD, 0)
    right = row(p, "<think>\n7+5=12\n4+8+1=13\n</think>\nAnswer: 132", OK, 1)
    no_chain = row(Q, "<think>\n9*9=81\n</think>\nAnswer: 81", BAD, 0)
    acc = POLICIES.build("reference").accept([wrong, right, no_chain])
    assert len(acc) == 1
    assert acc[0].sample.text == p.reference.chain and acc[0].sample.problem_id == p.id
    assert acc[0].outcome == "pass" and acc[0].error is None
    assert wrong.sample.text.endswith("122")   # the input rows are not modified


def test_max_chains_caps_deterministically():
    probs = [problem(f"What is {i}+1?", str(i + 1)) for i in range(20)]
    rows = [row(p, f"<think>\n{i}+1={i + 1}\n</think>\nAnswer: {i + 1}", OK, 0) for i, p in enumerate(probs)]
    a = POLICIES.build("accept_all", {"max_chains": 7}).accept(rows)
    assert len(a) == 7 and ids(a) == ids(POLICIES.build("accept_all", {"max_chains": 7}).accept(list(rows)))
    assert ids(a) == [i for i in ids(rows) if i in set(ids(a))]        # original order kept
    assert len(POLICIES.build("accept_all", {"max_chains": 50}).accept(rows)) == 20
