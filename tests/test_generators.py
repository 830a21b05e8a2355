"""Procedural families: determinism, stable ids, split disjointness, dedup, true chains."""
from __future__ import annotations

import ast
import operator
import re
from fractions import Fraction

import pytest

import generators
from generators import GENERATORS, draw
from generators.chains import format_reply
from loop.records import Problem, dedup, split_of

PROCEDURAL = ["arithmetic", "rules"]
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
# An arithmetic equation anywhere in a line: `7+5=12`, `w: 22+8-26=4 e`, `0.5*9.8*16=78.4`.
EQUATION = re.compile(r"(?<![\w.])(\d[\d.]*(?:[+\-*/]\d[\d.]*)+)=(-?\d[\d.]*)(?![\d.])")


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return Fraction(repr(node.value))  # exact decimal, not the binary float
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    raise ValueError(f"not arithmetic: {ast.dump(node)}")


def _left_to_right(expr: str) -> Fraction:
    toks = re.findall(r"[0-9.]+|[+\-*/]", expr)
    acc = Fraction(toks[0])
    for op, num in zip(toks[1::2], toks[2::2]):
        acc = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op](acc, Fraction(num))
    return acc


def check_chain(p: Problem) -> int:
    """Assert the reference chain has the reply shape, every equation line is true (under
    both precedence and left-to-right reading), and the answer line matches. Returns the
    number of equations checked."""
    chain = p.reference.chain
    m = re.fullmatch(r"<think>\n(.*)\n</think>\nAnswer: (.*)", chain, re.S)
    assert m, f"bad reply shape: {chain!r}"
    assert m.group(2) == p.reference.answer, (m.group(2), p.reference.answer)
    checked = 0
    for line in m.group(1).split("\n"):
        for eq in EQUATION.finditer(line):
            lhs, rhs = eq.group(1), Fraction(eq.group(2))
            assert _eval(ast.parse(lhs, mode="eval")) == rhs, f"false equation {line!r} in {p.id}"
            assert _left_to_right(lhs) == rhs, f"precedence-dependent equation {line!r} in {p.id}"
            assert len(re.findall(r"[+\-*/]", lhs)) <= 2, f"more than three operands: {line!r}"
            checked += 1
    return checked


def test_format_reply_shape():
    assert format_reply(["7+5=12", "4+8+1=13"], "132") == "<think>\n7+5=12\n4+8+1=13\n</think>\nAnswer: 132"


def test_package_import_registers_families():
    assert generators.Generator is not None
    for fam in PROCEDURAL:
        assert fam in GENERATORS.names()


def _requests(fam: str):
    gen = GENERATORS.build(fam)
    for cat in gen.categories():
        lo, hi = gen.difficulties(cat)
        for d in range(lo, hi + 1):
            yield gen, cat, d


@pytest.mark.parametrize("fam", PROCEDURAL)
def test_deterministic_and_ids_stable(fam):
    for gen, cat, d in _requests(fam):
        a = gen.generate(cat, d, 6, seed=11)
        b = GENERATORS.build(fam).generate(cat, d, 6, seed=11)
        assert [p.model_dump() for p in a] == [p.model_dump() for p in b]
        for p in a:
            assert p.family == fam and p.category == cat and p.difficulty == d
            again = Problem.model_validate({**p.model_dump(), "id": ""})
            assert again.id == p.id
            assert Problem.model_validate_json(p.model_dump_json()) == p   # JSONL round trip
        other = gen.generate(cat, d, 6, seed=12)
        assert [p.id for p in other] != [p.id for p in a]


@pytest.mark.parametrize("fam", PROCEDURAL)
def test_split_disjoint_and_dedup(fam):
    for gen, cat, d in _requests(fam):
        train = draw(gen, cat, d, 20, seed=1, split="train", heldout_fraction=0.3)
        held = draw(gen, cat, d, 8, seed=1, split="heldout", heldout_fraction=0.3)
        assert train and held, (cat, d)
        assert not {p.id for p in train} & {p.id for p in held}
        assert all(split_of(p.id, 0.3) == "train" for p in train)
        assert all(p.is_heldout(0.3) for p in held)
        assert len({p.id for p in train}) == len(train)
        more = draw(gen, cat, d, 5, seed=2, split="train", heldout_fraction=0.3, exclude={p.id for p in train})
        assert not {p.id for p in more} & {p.id for p in train}
        batch = gen.generate(cat, d, 10, seed=3)
        assert len(dedup(batch + batch)) == len(dedup(batch))


@pytest.mark.parametrize("fam", PROCEDURAL)
def test_reference_chains_are_true(fam):
    total = 0
    for gen, cat, d in _requests(fam):
        for p in gen.generate(cat, d, 25, seed=5):
            total += check_chain(p)
    assert total > 0


@pytest.mark.parametrize("fam", PROCEDURAL)
def test_unknown_category_and_difficulty_rejected(fam):
    gen = GENERATORS.build(fam)
    with pytest.raises(ValueError, match="allowed categories"):
        gen.generate("nope", 1, 1, 0)
    cat = gen.categories()[0]
    lo, hi = gen.difficulties(cat)
    with pytest.raises(ValueError, match=f"{lo}..{hi}"):
        gen.generate(cat, hi + 1, 1, 0)


def test_arithmetic_examples_and_answers():
    gen = GENERATORS.build("arithmetic")
    p = gen.make("add", 47, 85, 2)
    assert p.prompt[0].content == "Compute 47+85."
    assert p.reference.chain == "<think>\n7+5=12\n4+8+1=13\n</think>\nAnswer: 132"
    assert gen.make("sub", 503, 7, 3).reference.chain == (
        "<think>\n13-7=6\n10-0-1=9\n5-0-1=4\n</think>\nAnswer: 496")
    assert gen.make("mul", 47, 35, 2).reference.chain == (
        "<think>\n47*5=235\n47*30=1410\n235+1410=1645\n</think>\nAnswer: 1645")
    for cat in gen.categories():
        for d in range(1, 6):
            for p in gen.generate(cat, d, 30, seed=d):
                a, b = p.metadata["operands"]
                assert int(p.reference.answer) == eval(f"{a}{p.metadata['op']}{b}")  # noqa: S307
                assert len(str(a)) == d or (d == 1 and a == 0)
                if cat == "sub":
                    assert a >= b
                if cat == "mul":
                    assert len(str(b)) == (1 if d <= 3 else 2)


def test_arithmetic_aligned_chain():
    """The digit-aligned scratchpad: each line restates the digits left, the column and the answer so far."""
    gen = GENERATORS.build("arithmetic", {"chain": "aligned", "max_digits": 8})
    assert gen.make("add", 347, 285, 3).reference.chain == (
        "<think>\n347+285\n34+28;7+5=12;2\n3+2;4+8+1=13;32\n+;3+2+1=6;632\n</think>\nAnswer: 632")
    assert gen.make("add", 999, 1, 3).reference.chain.endswith("+;9+0+1=10;1000\n</think>\nAnswer: 1000")
    assert gen.make("sub", 503, 498, 3).reference.chain == (
        "<think>\n503-498\n50-49;13-8=5;5\n5-4;10-9-1=0;05\n-;5-4-1=0;5\n</think>\nAnswer: 5")
    assert gen.make("mul", 47, 35, 2).reference.chain == GENERATORS.build("arithmetic").make("mul", 47, 35, 2).reference.chain
    for cat in ("add", "sub"):
        for d in range(1, 9):
            for p in gen.generate(cat, d, 20, seed=d):
                assert check_chain(p) == d                       # one true equation per column
                lines = p.reference.chain.split("\n")[1:-2]
                assert lines[0] == p.prompt[0].content[len("Compute "):-1]
                assert lines[-1].rsplit(";", 1)[1] == p.reference.answer   # the last partial is the answer
                for prev, line in zip(lines, lines[1:]):       # each line peels one digit off each operand
                    a, b = prev.split(";")[0].split(p.metadata["op"])
                    ra, rb = line.split(";")[0].split(p.metadata["op"])
                    assert (ra, rb) == (a[:-1], b[:-1]) or (ra, rb) == ("0" * len(b[:-1]), b[:-1])
    with pytest.raises(ValueError, match="aligned"):
        GENERATORS.build("arithmetic", {"chain": "reversed"})
