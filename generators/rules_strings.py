"""Rule-induction puzzles over strings: 8-bit transforms, Caesar ciphers, symbol shuffles.

Bit and symbol rules are drawn from small hypothesis spaces; examples are resampled until
every hypothesis consistent with them gives the same answer to the query, so the hidden
rule is always identifiable from the prompt.
"""
from __future__ import annotations

import itertools
import random
from collections.abc import Callable

from generators.rules_numeric import Puzzle

WORDS = ("cat dog sun map red owl fig box jam kite lamp moon nest pear ring star tree wolf "
         "bird cake fish gold hill leaf milk rain road salt ship snow wind apple bread "
         "cloud dream earth flame grape house light music night river stone tiger water").split()


# ---- bit_manipulation: out = xor(P(in), mask) with P a rotation, optionally after a reversal

def _perm(bits: str, rev: bool, rot: int) -> str:
    s = bits[::-1] if rev else bits
    return s[rot:] + s[:rot]


def _xor(a: str, b: str) -> str:
    return "".join("1" if x != y else "0" for x, y in zip(a, b))


def _bit_answers(examples: list[tuple[str, str]], query: str) -> set[str]:
    answers = set()
    for rev, rot in itertools.product((False, True), range(8)):
        mask = _xor(_perm(examples[0][0], rev, rot), examples[0][1])
        if all(_xor(_perm(x, rev, rot), mask) == y for x, y in examples):
            answers.add(_xor(_perm(query, rev, rot), mask))
    return answers


def bit_manipulation(rng: random.Random, difficulty: int) -> Puzzle:
    rev, rot, mask = False, 0, "00000000"
    if difficulty == 1:
        rev, mask = rng.choice([(True, "00000000"), (False, "11111111")])
    elif difficulty == 2:
        rot = rng.randint(1, 7)
    elif difficulty == 3:
        mask = format(rng.randint(1, 254), "08b")
    else:
        rev = difficulty == 5
        rot = rng.randint(1, 7)
        mask = format(rng.randint(1, 254), "08b")
    n_ex = 4 if difficulty >= 4 else 3
    for _ in range(200):
        xs = [format(v, "08b") for v in rng.sample(range(256), n_ex + 1)]
        ex = [(x, _xor(_perm(x, rev, rot), mask)) for x in xs[:-1]]
        if len(_bit_answers(ex, xs[-1])) == 1:
            break
    else:  # pragma: no cover - 200 ambiguous draws in a row does not happen in practice
        raise RuntimeError("could not draw unambiguous bit examples")
    q = xs[-1]
    steps, cur, parts = [], q, []
    if rev:
        steps.append(f"reverse: {cur} -> {cur[::-1]}")
        cur, parts = cur[::-1], parts + ["reverse"]
    if rot:
        nxt = cur[rot:] + cur[:rot]
        steps.append(f"rotate left by {rot}: {cur} -> {nxt}")
        cur, parts = nxt, parts + [f"rotate left by {rot}"]
    if mask != "00000000":
        nxt = _xor(cur, mask)
        name = "invert every bit" if mask == "11111111" else f"xor with {mask}"
        steps.append(f"{name}: {cur} -> {nxt}")
        cur, parts = nxt, parts + [name]
    steps.insert(0, "rule: " + ", then ".join(parts))
    return Puzzle(
        intro="a secret bit manipulation rule transforms 8-bit binary numbers",
        examples=ex, query=q, answer=cur, steps=steps,
        rule={"reverse": rev, "rotate_left": rot, "xor": mask},
    )


# ---- cipher: Caesar shift on lowercase words

def _shift_word(word: str, k: int) -> str:
    return "".join(chr((ord(c) - 97 + k) % 26 + 97) for c in word)


def cipher(rng: random.Random, difficulty: int) -> Puzzle:
    k = rng.randint(1, 3) if difficulty == 1 else rng.randint(1, 25)
    n_words = 1 if difficulty <= 2 else 2
    decrypt = difficulty >= 4
    n_ex = 2 if difficulty == 5 else 3
    words = rng.sample(WORDS, n_words * (n_ex + 1))
    plains = [" ".join(words[i * n_words:(i + 1) * n_words]) for i in range(n_ex + 1)]
    enc = [" ".join(_shift_word(w, k) for w in p.split()) for p in plains]
    ex = list(zip(plains[:-1], enc[:-1]))
    p0, c0 = plains[0][0], enc[0][0]
    a, b = ord(p0) - 97, ord(c0) - 97
    steps = [f"{p0}={a}, {c0}={b}", f"{b}-{a}={b - a}" if b >= a else f"{b}+26-{a}={b + 26 - a}", f"shift={k}"]
    src = enc[-1] if decrypt else plains[-1]
    step = -k if decrypt else k
    if decrypt:
        steps.append(f"decode by shifting back {k}")
    for ch in dict.fromkeys(src.replace(" ", "")):   # each distinct letter once, in order
        x = ord(ch) - 97
        y = (x + step) % 26
        op = f"{x}-{k}" if decrypt else f"{x}+{k}"
        wrap = "+26" if x + step < 0 else "-26" if x + step > 25 else ""
        steps.append(f"{ch}: {op}{wrap}={y} {chr(y + 97)}")
    answer = plains[-1] if decrypt else enc[-1]
    return Puzzle(
        intro="secret encryption rules are used on text",
        examples=ex, query=src, answer=answer, steps=steps,
        rule={"shift": k, "direction": "decrypt" if decrypt else "encrypt"},
        ask="Now, decrypt" if decrypt else "Now, encrypt",
    )


# ---- symbolic: compositions of string shuffles

SYMBOL_OPS: dict[str, Callable[[str], str]] = {
    "reverse": lambda s: s[::-1],
    "swap adjacent pairs": lambda s: "".join(s[i:i + 2][::-1] for i in range(0, len(s), 2)),
    "double each symbol": lambda s: "".join(c + c for c in s),
    "rotate left by 1": lambda s: s[1:] + s[:1],
    "rotate right by 1": lambda s: s[-1:] + s[:-1],
    "swap first and last": lambda s: s[-1] + s[1:-1] + s[0] if len(s) > 1 else s,
    "move middle symbol to front": lambda s: s[len(s) // 2] + s[:len(s) // 2] + s[len(s) // 2 + 1:],
}
SYMBOLS = "!@#$%&*+=?<>^~abcdefxyz"


def _apply(ops: tuple[str, ...], s: str) -> str:
    for op in ops:
        s = SYMBOL_OPS[op](s)
    return s


def _symbol_answers(examples: list[tuple[str, str]], query: str, depth: int) -> set[str]:
    answers = set()
    for n in range(1, depth + 1):
        for ops in itertools.product(SYMBOL_OPS, repeat=n):
            if all(_apply(ops, x) == y for x, y in examples):
                answers.add(_apply(ops, query))
    return answers


def symbolic(rng: random.Random, difficulty: int) -> Puzzle:
    depth = 1 if difficulty <= 2 else 2 if difficulty <= 4 else 3
    length = (4, 5, 6, 7, 8)[difficulty - 1]
    n_ex = 4 if difficulty in (3, 5) else 3
    names = list(SYMBOL_OPS)
    if difficulty == 1:
        names = names[:3]
    for _ in range(200):
        ops = tuple(rng.choice(names) for _ in range(depth))
        xs = ["".join(rng.sample(SYMBOLS, length)) for _ in range(n_ex + 1)]
        ex = [(x, _apply(ops, x)) for x in xs[:-1]]
        if len(_symbol_answers(ex, xs[-1], max(depth, 2))) == 1:
            break
    else:  # pragma: no cover
        raise RuntimeError("could not draw unambiguous symbol examples")
    cur = xs[-1]
    steps = ["rule: " + ", then ".join(ops)]
    for op in ops:
        nxt = SYMBOL_OPS[op](cur)
        steps.append(f"{op}: {cur} -> {nxt}")
        cur = nxt
    return Puzzle(
        intro="a secret rule rearranges strings of symbols",
        examples=ex, query=xs[-1], answer=cur, steps=steps, rule={"ops": list(ops)},
    )
