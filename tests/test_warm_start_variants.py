"""benchmarks/warm_start_variants.py (issue 22's length-generalization experiment): the variants keep the shipped
warm start's problems and change only how they are asked, or add exercises that never add or subtract."""
from __future__ import annotations

import re

from tests.conftest import load_benchmark


def _load():
    return load_benchmark("warm_start_variants")


def test_templates_ask_the_shipped_problems_in_many_wordings_with_the_same_chains():
    from loop.models import tiny_model as tm

    wv = _load()
    shipped, templated = wv.examples("fixed_template", 0), wv.examples("templates", 0)
    assert sorted(r for _, r in shipped) == sorted(r for _, r in templated)
    asked = [p[0]["content"] for p, _ in templated]
    assert 0.25 < sum(a.startswith("Compute ") for a in asked) / len(asked) < 0.42
    assert len({re.sub(r"\d+[+*-]\d+", "{expr}", a) for a in asked}) == len(tm.TEMPLATES)
    for p, reply in templated[:200]:
        assert reply.split("\n")[1] in p[0]["content"] or "*" in p[0]["content"]


def test_peel_exercises_have_long_numbers_but_no_arithmetic_on_them():
    wv = _load()
    peel = [(p, r) for p, r in wv.examples("templates_peel", 0) if r.endswith("Answer: done")]
    assert len(peel) == 3000
    assert max(len(max(re.findall(r"\d+", p[0]["content"]), key=len)) for p, _ in peel) > 3
    assert all("=" not in r for _, r in peel)
    arithmetic = [r for _, r in wv.examples("templates_peel", 0) if not r.endswith("Answer: done") and "*" not in r]
    assert max(len(r.split("\n")[1].split("+")[0].split("-")[0]) for r in arithmetic) == 3


def test_the_shipped_recipe_has_long_numbers_but_never_two_long_operands():
    from loop.models import tiny_model as tm

    ex = tm.warm_start_examples(0)
    heads = [r.split("\n")[1] for _, r in ex if "*" not in r.split("\n")[1]]
    lengths = [tuple(len(x) for x in re.split(r"[+-]", h)) for h in heads]
    assert sum(max(ln) >= 4 for ln in lengths) == tm.LONG_SHORT
    assert all(min(ln) <= 3 for ln in lengths)
    assert max(max(ln) for ln in lengths) == 8
