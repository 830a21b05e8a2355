"""Column arithmetic (add, sub, mul) with digit-by-digit reference chains."""
from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field

from generators.base import GENERATORS, Generator
from generators.chains import check_request, format_reply, rng_for
from loop.records import Message, Problem, Reference

OPS = {"add": "+", "sub": "-", "mul": "*"}


def _operand(rng: random.Random, digits: int) -> int:
    lo = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(lo, 10 ** digits - 1)


def add_steps(a: int, b: int) -> list[str]:
    """One line per column, right to left; a carry in shows as a third term `+1`."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}+{carry}={s}" if carry else f"{x}+{y}={s}")
        carry = s // 10
    return steps


def sub_steps(a: int, b: int) -> list[str]:
    """a >= b. A column that borrows adds 10 to its top digit (`12-7=5`); the borrow
    paid back by the next column shows as a third term (`5-1-1=3`)."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, borrow = [], 0
    for i in range(len(da)):
        x = int(da[i])
        y = int(db[i]) if i < len(db) else 0
        top = x + 10 if x - borrow < y else x
        d = top - y - borrow
        steps.append(f"{top}-{y}-{borrow}={d}" if borrow else f"{top}-{y}={d}")
        borrow = 1 if top != x else 0
    return steps


def mul_steps(a: int, b: int) -> list[str]:
    """One partial product per digit of b (with its place value), then their running sum."""
    steps, partials = [], []
    for i, ch in enumerate(str(b)[::-1]):
        m = int(ch) * 10 ** i
        steps.append(f"{a}*{m}={a * m}")
        partials.append(a * m)
    total = partials[0]
    for p in partials[1:]:
        steps.append(f"{total}+{p}={total + p}")
        total += p
    return steps


@GENERATORS.register("arithmetic")
class Arithmetic(Generator):
    """Integer add / sub / mul; difficulty = digits per operand; column-wise reference chains."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        template: str = Field(
            "Compute {expr}.", description="user message; {expr} is replaced by e.g. '47+85'")
        max_digits: int = Field(5, ge=1, le=12, description="hardest difficulty (digits per operand)")

    def categories(self) -> list[str]:
        return list(OPS)

    def difficulties(self, category: str) -> tuple[int, int]:
        return (1, self.options.max_digits)

    def make(self, category: str, a: int, b: int, digits: int) -> Problem:
        op = OPS[category]
        if category == "add":
            steps, result = add_steps(a, b), a + b
        elif category == "sub":
            steps, result = sub_steps(a, b), a - b
        else:
            steps, result = mul_steps(a, b), a * b
        expr = f"{a}{op}{b}"
        return Problem(
            family=self.name, category=category, difficulty=digits,
            prompt=[Message(role="user", content=self.options.template.format(expr=expr))],
            reference=Reference(answer=str(result), chain=format_reply(steps, str(result))),
            metadata={"operands": [a, b], "op": op, "digits": digits},
        )

    def generate(self, category: str, difficulty: int, count: int, seed: int) -> list[Problem]:
        check_request(self, category, difficulty)
        rng = rng_for(self.name, category, difficulty, seed)
        out = []
        for _ in range(count):
            a = _operand(rng, difficulty)
            if category == "mul":
                b = rng.randint(2, 9) if difficulty <= 3 else rng.randint(10, 99)
            else:
                b = _operand(rng, difficulty)
                if category == "sub" and b > a:
                    a, b = b, a
            out.append(self.make(category, a, b, difficulty))
        return out
