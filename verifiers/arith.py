"""Find the arithmetic steps a chain states (`12 × 3 = 36`, `5 - 3 - 6 = -4`) and recompute them.

Exact rational arithmetic (Fraction) with + - * / × ÷ · and parentheses, standard
precedence. A step is only checked when it is self-contained: an expression glued to a
variable or a power on its left (`2x + 3 = 7`, `3^2 + 1 = 10`) or to a unit/factorial on
its right (`3 * 4 = 12cm`, `= 3!`) is skipped, because a false "wrong step" is worse
than a missed one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# Minus-like characters become "-"; em/horizontal dashes stay punctuation.
_MINUS = str.maketrans({c: "-" for c in "\u2212\u2010\u2011\u2012\u2013\ufe63\uff0d"})
_LATEX_OPS = (("\\times", " × "), ("\\cdot", " · "), ("\\div", " ÷ "), ("**", "  "))
_TOKEN = re.compile(
    r"(?P<num>\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"|(?P<cmp><=|>=|!=|=>|=<|≤|≥|≠|≈)"
    r"|(?P<eq>==?)"
    r"|(?P<op>[-+*/×÷·⋅∗])"
    r"|(?P<lp>\()|(?P<rp>\))"
    r"|(?P<ws>\s+)"
    r"|(?P<word>[A-Za-z_]+)"
    r"|(?P<other>.)"
)
_MUL, _DIV = set("*×·⋅∗"), set("/÷")
_ARITH = {"num", "op", "lp", "rp", "eq"}
_LEFT_OK = set(":;,\"'`$[{")         # chars that may touch a step's left end
_RIGHT_OK = set(".,;:?\"'`$]}")      # ... and its right end
_MAX_DIGITS = 60
_MAX_NESTING = 40  # parentheses / stacked signs; deeper is not arithmetic a chain states


@dataclass(frozen=True)
class Tok:
    kind: str
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Step:
    line: int                 # 1-based line number in the text searched
    expr: str                 # the computation as written
    claimed: str              # the stated result as written
    actual: Fraction | None   # None: undefined (division by zero)
    ok: bool


class _Undefined(Exception):
    pass


def _tokens(line: str) -> list[Tok]:
    """Tokens without whitespace; two tokens are adjacent when one's end is the other's start."""
    toks = [Tok(m.lastgroup or "other", m.group(0), m.start(), m.end())
            for m in _TOKEN.finditer(line) if m.lastgroup != "ws"]
    for i in range(1, len(toks) - 1):
        t, prev, nxt = toks[i], toks[i - 1], toks[i + 1]
        # " x " with spaces, between numbers, is multiplication; "2x" or "x =" is a variable.
        if t.kind == "word" and t.text in ("x", "X") and prev.end < t.start and t.end < nxt.start \
                and prev.kind in ("num", "rp") and nxt.kind in ("num", "lp"):
            toks[i] = Tok("op", "×", t.start, t.end)
    return toks


def _runs(toks: list[Tok]) -> list[tuple[list[Tok], Tok | None]]:
    """Maximal stretches of arithmetic tokens, each with the token just before it."""
    runs: list[tuple[list[Tok], Tok | None]] = []
    cur: list[Tok] = []
    for i, t in enumerate(toks):
        if t.kind in _ARITH:
            if not cur:
                runs.append((cur, toks[i - 1] if i else None))
            cur.append(t)
        else:
            cur = []
    return runs


def _parse(toks: list[Tok]) -> tuple[Fraction, int]:
    """Value of an expression and its number of binary operators; ValueError if malformed."""
    pos, binops, nesting = 0, 0, 0

    def peek() -> Tok | None:
        return toks[pos] if pos < len(toks) else None

    def expr() -> Fraction:
        nonlocal pos, binops
        v = term()
        while (t := peek()) and t.kind == "op" and t.text in "+-":
            pos += 1
            binops += 1
            v = v + term() if t.text == "+" else v - term()
        return v

    def term() -> Fraction:
        nonlocal pos, binops
        v = factor()
        while (t := peek()) and t.kind == "op" and (t.text in _MUL or t.text in _DIV):
            pos += 1
            binops += 1
            rhs = factor()
            if t.text in _DIV:
                if rhs == 0:
                    raise _Undefined
                v = v / rhs
            else:
                v = v * rhs
        return v

    def factor(depth: int = 0) -> Fraction:
        nonlocal pos, nesting
        t = peek()
        if t is None:
            raise ValueError("expression ends early")
        pos += 1
        if t.kind == "op" and t.text in "+-":
            if depth > _MAX_NESTING:
                raise ValueError("too many signs")
            v = factor(depth + 1)
            return -v if t.text == "-" else v
        if t.kind == "num":
            if len(t.text) > _MAX_DIGITS:
                raise ValueError("number too long")
            return Fraction(t.text.replace(",", ""))
        if t.kind == "lp":
            nesting += 1
            if nesting > _MAX_NESTING:
                raise ValueError("parentheses nested too deep")
            v = expr()
            nesting -= 1
            if (c := peek()) is None or c.kind != "rp":
                raise ValueError("unbalanced parenthesis")
            pos += 1
            return v
        raise ValueError(f"unexpected {t.text!r}")

    value = expr()
    if pos != len(toks):
        raise ValueError("trailing tokens")
    return value, binops


def _strip_parens(part: list[Tok]) -> list[Tok]:
    """Drop parentheses left unmatched by cutting at '=' ("(3 + 4 = 7)")."""
    lp = sum(t.kind == "lp" for t in part)
    rp = len([t for t in part if t.kind == "rp"])
    lo, hi = 0, len(part)
    while lo < hi and part[lo].kind == "lp" and lp > rp:
        lo, lp = lo + 1, lp - 1
    while hi > lo and part[hi - 1].kind == "rp" and rp > lp:
        hi, rp = hi - 1, rp - 1
    return part[lo:hi]


def _decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


def _claim_ok(actual: Fraction, claimed_text: str, claimed: Fraction) -> bool:
    """Exact, or a decimal claim that is the actual value rounded or truncated to its places."""
    if actual == claimed:
        return True
    d = _decimals(claimed_text)
    if d == 0:
        return False
    scale = 10 ** d
    mag = abs(actual) * scale
    sign = -1 if actual < 0 else 1
    rounded, truncated = int(mag + Fraction(1, 2)), int(mag)
    return claimed * scale in (sign * rounded, sign * truncated)


def _text(line: str, part: list[Tok]) -> str:
    return " ".join(line[part[0].start:part[-1].end].split()) if part else ""


def find_steps(text: str, first_line: int = 1) -> list[Step]:
    """Every checkable `lhs = rhs` step in the text, in order, with its verdict."""
    steps: list[Step] = []
    for ln, raw in enumerate(text.split("\n"), start=first_line):
        line = raw.translate(_MINUS)
        for a, b in _LATEX_OPS:
            line = line.replace(a, b)
        toks = _tokens(line)
        for run, prev in _runs(toks):
            if any(t.kind == "eq" for t in run):
                steps.extend(_check_run(line, ln, run, prev))
    return steps


def _check_run(line: str, ln: int, run: list[Tok], prev: Tok | None) -> list[Step]:
    parts: list[list[Tok]] = [[]]
    for t in run:
        if t.kind == "eq":
            parts.append([])
        else:
            parts[-1].append(t)
    start, end = run[0].start, run[-1].end
    open_left = start > 0 and not line[start - 1].isspace() and line[start - 1] not in _LEFT_OK
    if run[0].kind == "op":  # a leading operator is a sign only after nothing or ":", ",", ";"
        open_left |= not (run[0].text == "-" and (prev is None or prev.text in (":", ",", ";")))
    open_right = end < len(line) and not line[end].isspace() and line[end] not in _RIGHT_OK
    if open_left:
        parts[0] = []
    if open_right:
        parts[-1] = []
    values: list[tuple[Fraction | None, int] | None] = []
    for part in parts:
        part = _strip_parens(part)
        try:
            values.append(_parse(part) if part else None)
        except _Undefined:
            values.append((None, 1))
        except (ValueError, ZeroDivisionError):
            values.append(None)
    parts = [_strip_parens(p) for p in parts]
    out = []
    for i in range(len(parts) - 1):
        lv, rv = values[i], values[i + 1]
        if lv is None or rv is None:
            continue
        (lval, lops), (rval, rops) = lv, rv
        if lops == 0 and rops == 0:
            continue
        if lops == 0:  # "36 = 12 * 3": the single number is the claim
            lval, rval, lpart, rpart = rval, lval, parts[i + 1], parts[i]
        else:
            lpart, rpart = parts[i], parts[i + 1]
        if lval is None:
            out.append(Step(ln, _text(line, lpart), _text(line, rpart), None, False))
            continue
        if rval is None:
            continue  # the right side is itself undefined; its own step reports it
        ok = _claim_ok(lval, _text(line, rpart), rval) if (lops == 0 or rops == 0) else lval == rval
        if not ok and rops and rpart[0].kind == "num" and Fraction(rpart[0].text.replace(",", "")) == lval:
            ok = True  # running total written as a chain: "2 + 3 = 5 + 4 = 9"
        out.append(Step(ln, _text(line, lpart), _text(line, rpart), lval, ok))
    return out
