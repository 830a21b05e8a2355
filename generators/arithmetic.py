"""Column arithmetic (add, sub, mul) with digit-by-digit reference chains."""
from __future__ import annotations

import random
from typing import Literal

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


def aligned_steps(a: int, b: int, op: str) -> list[str]:
    """Digit-aligned scratchpad for add / sub (a >= b), least significant digit first.

    The first line restates the problem; each next line restates what is left of both
    operands, the column just peeled off (its last digits, with the carry or borrow of the
    column before as a third term) and the answer so far, e.g. for 347+285:
    `34+28;7+5=12;2`, `3+2;4+8+1=13;32`, `+;3+2+1=6;632`. Every line is computed from the
    line above it alone (the last digit before `+` and before `;`), so the same local rule
    works at every length: the property that lets a small model extend itself to longer
    numbers (Lee et al. 2025, "Self-Improving Transformers Overcome Easy-to-Hard and
    Length Generalization Challenges"). The last column writes its whole sum (a final carry
    needs no extra line) and the last line drops a subtraction's leading zeros.
    """
    sa, sb = str(a), str(b)
    lines, carry, partial = [f"{sa}{op}{sb}"], 0, ""
    while sa:
        x, y = int(sa[-1]), int(sb[-1]) if sb else 0
        sa, sb = sa[:-1], sb[:-1]
        last = not sa and not sb
        if op == "+":
            s = x + y + carry
            eq = f"{x}+{y}+{carry}={s}" if carry else f"{x}+{y}={s}"
            partial = (str(s) if last else str(s % 10)) + partial
            carry = s // 10
        else:
            top = x + 10 if x - carry < y else x
            d = top - y - carry
            eq = f"{top}-{y}-{carry}={d}" if carry else f"{top}-{y}={d}"
            partial = str(d) + partial
            carry = 1 if top != x else 0
            if last:
                partial = partial.lstrip("0") or "0"
        if not sa and sb:  # add with a shorter first operand: keep peeling the second
            sa = "0" * len(sb)
        lines.append(f"{sa}{op}{sb};{eq};{partial}")
    return lines


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


def _carries(category: str, a: int, b: int) -> tuple:
    """Which columns carry (add) or borrow (sub); mul: the digit count of b."""
    if category == "mul":
        return (len(str(b)),)
    steps = add_steps(a, b) if category == "add" else sub_steps(a, b)
    return tuple(s.count("+") == 2 or s.count("-") == 2 for s in steps) + (len(str(a)), len(str(b)))


@GENERATORS.register("arithmetic")
class Arithmetic(Generator):
    """Integer add / sub / mul; difficulty = digits per operand; column-wise reference chains."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        template: str = Field(
            "Compute {expr}.", description="user message; {expr} is replaced by e.g. '47+85'")
        max_digits: int = Field(5, ge=1, le=12, description="hardest difficulty (digits per operand)")
        chain: Literal["columns", "aligned"] = Field(
            "columns", description="reference chain for add/sub: 'columns' = one equation per column; 'aligned' = "
                                   "each line restates the digits left, the column and the answer so far "
                                   "(length-generalizes for small models); mul always uses partial products")

    def categories(self) -> list[str]:
        return list(OPS)

    def difficulties(self, category: str) -> tuple[int, int]:
        return (1, self.options.max_digits)

    def make(self, category: str, a: int, b: int, digits: int) -> Problem:
        op = OPS[category]
        aligned = self.options.chain == "aligned"
        if category == "add":
            steps, result = aligned_steps(a, b, "+") if aligned else add_steps(a, b), a + b
        elif category == "sub":
            steps, result = aligned_steps(a, b, "-") if aligned else sub_steps(a, b), a - b
        else:
            steps, result = mul_steps(a, b), a * b
        expr = f"{a}{op}{b}"
        return Problem(
            family=self.name, category=category, difficulty=digits,
            prompt=[Message(role="user", content=self.options.template.format(expr=expr))],
            reference=Reference(answer=str(result), chain=format_reply(steps, str(result))),
            metadata={"operands": [a, b], "op": op, "digits": digits},
        )

    def augment(self, problem: Problem, seed: int) -> Problem | None:
        """New operands with the digits of `problem` and the same carry (borrow) pattern: the same
        column skill on new numbers. Falls back to new operands of the same length after 200 tries."""
        a, b = problem.metadata.get("operands", [None, None])
        if problem.category not in OPS or a is None:
            return None
        digits = problem.difficulty
        rng = random.Random(f"{self.name}:augment:{problem.id}:{seed}")
        want = _carries(problem.category, a, b)
        for _ in range(200):
            x = _operand(rng, digits)
            y = rng.randint(2, 9) if problem.category == "mul" and digits <= 3 else (
                rng.randint(10, 99) if problem.category == "mul" else _operand(rng, digits))
            if problem.category == "sub" and y > x:
                x, y = y, x
            if (x, y) != (a, b) and _carries(problem.category, x, y) == want:
                break
        return self.make(problem.category, x, y, digits)

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
