"""Rule-induction puzzles with a hidden number: unit factor, numeral base, gravity.

Each maker takes (rng, difficulty) and returns a `Puzzle`. All arithmetic is done in
Decimal so every equation written into a chain is exactly true. Equations keep at most
three operands with `*` or `/` before `+` or `-`, so they read the same left to right.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

UNIT_WORDS = ["blarg", "zop", "quib", "flen", "morp", "traz", "wunk", "dral", "skiv", "plon", "grix", "vemb"]


@dataclass
class Puzzle:
    intro: str                      # what kind of rule is hidden
    examples: list[tuple[str, str]]
    query: str
    answer: str
    steps: list[str]
    rule: dict[str, Any] = field(default_factory=dict)   # the hidden rule, for metadata
    ask: str = "Now, determine the output for"


def fmt(x: Decimal) -> str:
    """Plain decimal text without exponent or trailing zeros: 12, 17.5, 0.25."""
    return format(x.normalize(), "f")


def n_examples(difficulty: int) -> int:
    return 4 if difficulty <= 2 else 3


def unit_conversion(rng: random.Random, difficulty: int) -> Puzzle:
    src, dst = rng.sample(UNIT_WORDS, 2)
    if difficulty == 1:
        factor = Decimal(rng.randint(2, 9))
    elif difficulty == 2:
        factor = Decimal(rng.randint(11, 40))
    elif difficulty == 3:
        factor = Decimal(rng.randint(11, 99)) / 10
    else:
        factor = Decimal(rng.randint(101, 999)) / 100
    top = 10 * difficulty + 10
    qty = rng.sample(range(1, top), n_examples(difficulty) + 1)
    if difficulty == 5:
        vals = [Decimal(q) / 10 + 1 for q in qty]  # one-decimal quantities
    else:
        vals = [Decimal(q) for q in qty]
    ex = [(f"{fmt(v)} {src}", f"{fmt(v * factor)} {dst}") for v in vals[:-1]]
    q = vals[-1]
    x0 = vals[0]
    steps = [
        f"{fmt(x0 * factor)}/{fmt(x0)}={fmt(factor)}",
        f"1 {src} = {fmt(factor)} {dst}",
        f"{fmt(q)}*{fmt(factor)}={fmt(q * factor)}",
    ]
    return Puzzle(
        intro=f"a secret unit conversion turns {src} into {dst}",
        examples=ex, query=f"{fmt(q)} {src}", answer=fmt(q * factor), steps=steps,
        rule={"factor": fmt(factor), "from": src, "to": dst},
        ask=f"Now, convert to {dst} (give the number only)",
    )


def to_base(n: int, base: int) -> str:
    digits = ""
    while True:
        n, r = divmod(n, base)
        digits = str(r) + digits
        if n == 0:
            return digits


def numeral_system(rng: random.Random, difficulty: int) -> Puzzle:
    base = rng.randint(2, 9)
    top = [30, 100, 500, 2000, 10000][difficulty - 1]
    nums = rng.sample(range(1, top), n_examples(difficulty) + 1)
    if all(n < base for n in nums[:-1]):   # a multi-digit example is needed to pin the base
        nums[0] = base + rng.randint(0, base * base)
    ex = [(str(n), to_base(n, base)) for n in nums[:-1]]
    q = nums[-1]
    # Show the base on the example with the most digits, by Horner's rule.
    show_n, show_s = max(zip(nums[:-1], (s for _, s in ex)), key=lambda t: len(t[1]))
    steps = [f"check base {base} on {show_s}:"]
    acc = int(show_s[0])
    for ch in show_s[1:]:
        steps.append(f"{acc}*{base}+{ch}={acc * base + int(ch)}")
        acc = acc * base + int(ch)
    assert acc == show_n
    steps.append(f"convert {q} to base {base}:")
    n = q
    while True:
        quo, r = divmod(n, base)
        steps.append(f"{base}*{quo}+{r}={n}")
        n = quo
        if n == 0:
            break
    answer = to_base(q, base)
    # "d d d -> answer" reads as a derivation (generators/rationalize.py), not a copied answer.
    steps.append(f"remainders from last to first: {' '.join(answer)} -> {answer}")
    return Puzzle(
        intro="numbers are secretly written in a different numeral system",
        examples=ex, query=str(q), answer=answer, steps=steps, rule={"base": base},
    )


def gravity(rng: random.Random, difficulty: int) -> Puzzle:
    # d = 0.5*g*t^2 with a hidden g; tenths (or hundredths at 4+) keep every value exact.
    g = Decimal(rng.randint(20, 300)) / 10 if difficulty < 4 else Decimal(rng.randint(200, 3000)) / 100
    if difficulty <= 1:
        ts = [Decimal(t) for t in rng.sample(range(1, 6), 4)]
    elif difficulty == 2:
        ts = [Decimal(t) for t in rng.sample(range(1, 11), 4)]
    elif difficulty in (3, 4):
        ts = [Decimal(t) / 2 for t in rng.sample(range(1, 13), 4)]
    else:
        ts = [Decimal(t) / 10 for t in rng.sample(range(5, 60), 3)]
    half = Decimal("0.5")
    dist = [half * g * t * t for t in ts]
    ex = [(f"t={fmt(t)}s", f"d={fmt(d)}m") for t, d in zip(ts[:-1], dist[:-1])]
    t0, d0, tq = ts[0], dist[0], ts[-1]
    steps = [
        "d=0.5*g*t^2, so g=2*d/t^2",
        f"{fmt(t0)}*{fmt(t0)}={fmt(t0 * t0)}",
        f"2*{fmt(d0)}={fmt(2 * d0)}",
        f"{fmt(2 * d0)}/{fmt(t0 * t0)}={fmt(g)}",
        f"{fmt(tq)}*{fmt(tq)}={fmt(tq * tq)}",
        f"0.5*{fmt(g)}*{fmt(tq * tq)}={fmt(dist[-1])}",
    ]
    return Puzzle(
        intro="the gravitational constant is secretly different; falling distance d follows d=0.5*g*t^2",
        examples=ex, query=f"t={fmt(tq)}s", answer=fmt(dist[-1]), steps=steps, rule={"g": fmt(g)},
        ask="Now, determine d in meters (give the number only) for",
    )
