"""Rules family: each answer follows from the hidden rule and from the chain's last step."""
from __future__ import annotations

import re
from decimal import Decimal

import pytest

from generators import GENERATORS
from generators.rules_strings import SYMBOL_OPS, _bit_answers, _shift_word, _symbol_answers
from loop.registry import RegistryError

GEN = GENERATORS.build("rules")


def _problems(category: str):
    for d in range(1, 6):
        yield from GEN.generate(category, d, 15, seed=d + 100)


def _steps(p):
    return p.reference.chain.split("</think>")[0].removeprefix("<think>\n").strip().split("\n")


def _bits(x: str, rule: dict) -> str:
    s = x[::-1] if rule["reverse"] else x
    s = s[rule["rotate_left"]:] + s[:rule["rotate_left"]]
    return "".join("1" if a != b else "0" for a, b in zip(s, rule["xor"]))


def test_bit_manipulation():
    for p in _problems("bit_manipulation"):
        rule, ex = p.metadata["rule"], p.metadata["examples"]
        assert all(_bits(x, rule) == y for x, y in ex)
        assert _bits(p.metadata["query"], rule) == p.reference.answer
        assert _bit_answers([tuple(e) for e in ex], p.metadata["query"]) == {p.reference.answer}
        assert _steps(p)[-1].endswith("-> " + p.reference.answer)


def test_cipher():
    for p in _problems("cipher"):
        k, q = p.metadata["rule"]["shift"], p.metadata["query"]
        assert all(" ".join(_shift_word(w, k) for w in x.split()) == y for x, y in p.metadata["examples"])
        decrypt = p.metadata["rule"]["direction"] == "decrypt"
        assert " ".join(_shift_word(w, -k if decrypt else k) for w in q.split()) == p.reference.answer
        mapping = dict(re.findall(r"^([a-z]): .*=\d+ ([a-z])$", "\n".join(_steps(p)), re.M))
        assert "".join(mapping.get(c, c) for c in q) == p.reference.answer


def test_unit_conversion_and_gravity():
    for p in _problems("unit_conversion"):
        f = Decimal(p.metadata["rule"]["factor"])
        for x, y in p.metadata["examples"]:
            assert Decimal(x.split()[0]) * f == Decimal(y.split()[0])
        assert Decimal(p.metadata["query"].split()[0]) * f == Decimal(p.reference.answer)
        assert _steps(p)[-1].endswith("=" + p.reference.answer)
    for p in _problems("gravity"):
        g = Decimal(p.metadata["rule"]["g"])
        t = Decimal(p.metadata["query"][2:-1])
        assert Decimal("0.5") * g * t * t == Decimal(p.reference.answer)
        assert _steps(p)[-1].endswith("=" + p.reference.answer)


def test_numeral_system():
    for p in _problems("numeral_system"):
        base = p.metadata["rule"]["base"]
        assert all(int(y, base) == int(x) for x, y in p.metadata["examples"])
        assert any(len(y) > 1 for _, y in p.metadata["examples"]), "base must be identifiable"
        assert int(p.reference.answer, base) == int(p.metadata["query"])
        assert _steps(p)[-1].endswith(" -> " + p.reference.answer)


def test_symbolic():
    for p in _problems("symbolic"):
        ops = p.metadata["rule"]["ops"]
        s = p.metadata["query"]
        for op in ops:
            s = SYMBOL_OPS[op](s)
        assert s == p.reference.answer
        ex = [tuple(e) for e in p.metadata["examples"]]
        assert _symbol_answers(ex, p.metadata["query"], max(len(ops), 2)) == {p.reference.answer}
        assert _steps(p)[-1].endswith("-> " + p.reference.answer)


def test_prompt_shape_and_options():
    p = GEN.generate("cipher", 4, 1, seed=0)[0]
    text = p.prompt[0].content
    assert text.startswith("In Alice's Wonderland, ") and "Now, decrypt: " in text
    assert text.endswith("End your reply with 'Answer: <answer>'.")
    only = GENERATORS.build("rules", {"categories": ["gravity"], "instruction": ""})
    assert only.categories() == ["gravity"]
    assert "Answer:" not in only.generate("gravity", 1, 1, 0)[0].prompt[0].content
    with pytest.raises(RegistryError, match="choose from"):
        GENERATORS.build("rules", {"categories": ["nope"]})
    with pytest.raises(ValueError, match="allowed categories: gravity"):
        only.generate("cipher", 1, 1, 0)
