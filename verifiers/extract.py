"""Final-answer extraction from a chain, and the normalization answers are compared under.

A chain looks like `<think>\n...steps...\n</think>\nAnswer: 132`. The answer is searched
only after the last `</think>`; then a `\\boxed{...}`, then the last "Answer:" line, then
the last non-empty line. Every function here accepts any string and never raises.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

# Unicode minus, hyphens, figure/en/em dashes, small and fullwidth hyphen-minus.
_DASHES = "\u2212\u2010\u2011\u2012\u2013\u2014\u2015\ufe63\uff0d"
_DASH_TABLE = str.maketrans({c: "-" for c in _DASHES})

_ANSWER_LINE = re.compile(r"\b(?:final\s+)?answer\s*(?:\*\*)?\s*[:\uff1a]\s*(?:\*\*)?\s*(.*)", re.IGNORECASE)
_THOUSANDS = re.compile(r"(?<![\d,.])\d{1,3}(?:,\d{3})+(?![\d,])")


@dataclass(frozen=True)
class ThinkSplit:
    think: str | None     # the reasoning inside the think tags (None: no tags at all)
    after: str | None     # the text after the last </think> (None: think opened, never closed)
    opened: bool          # a <think> tag appears
    closed: bool          # a </think> tag appears
    think_start: int = 0  # offset of the think section in the text


@dataclass(frozen=True)
class Extraction:
    answer: str | None    # raw extracted answer text (not normalized); None when none was found
    method: str           # "boxed" | "answer_line" | "last_line" | "none"
    reason: str = ""      # why nothing was found, when answer is None

    def evidence(self) -> dict[str, str | None]:
        return {"answer": self.answer, "extraction": self.method}


def split_think(text: str) -> ThinkSplit:
    """Think section and the text after it. A completion may begin inside the think
    section (the chat template opened it), so a lone `</think>` also closes it."""
    text = text if isinstance(text, str) else ""
    opened, closed = THINK_OPEN in text, THINK_CLOSE in text
    if closed:
        end = text.rfind(THINK_CLOSE)
        start = text.rfind(THINK_OPEN, 0, end)
        t0 = start + len(THINK_OPEN) if start >= 0 else 0
        return ThinkSplit(text[t0:end], text[end + len(THINK_CLOSE):], opened, True, t0)
    if opened:
        t0 = text.find(THINK_OPEN) + len(THINK_OPEN)
        return ThinkSplit(text[t0:], None, True, False, t0)
    return ThinkSplit(None, text, False, False)


def find_boxed(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` (balanced braces) or `\\boxed x`, in order."""
    text = text if isinstance(text, str) else ""
    closing: dict[int, int] = {}  # "{" position -> its matching "}", found in one pass
    stack: list[int] = []
    for k, ch in enumerate(text):
        if ch == "{":
            stack.append(k)
        elif ch == "}" and stack:
            closing[stack.pop()] = k
    out = []
    for m in re.finditer(r"\\boxed(\s*)", text):
        j = m.end()
        if j < len(text) and text[j] == "{":
            if j in closing:
                out.append(text[j + 1:closing[j]])
        elif m.group(1):
            word = re.match(r"[^\s$]+", text[j:])
            if word:
                out.append(word.group(0))
    return out


def answer_lines(text: str) -> list[str]:
    """The text after the marker on every line carrying "Answer:" / "Final answer:"."""
    out = []
    for line in text.splitlines():
        found = list(_ANSWER_LINE.finditer(line))
        if found:
            out.append(found[-1].group(1).strip())
    return out


def extract_answer(text: str) -> Extraction:
    """The final answer of a chain and how it was found (see the module docstring)."""
    split = split_think(text if isinstance(text, str) else "")
    if split.after is None:
        return Extraction(None, "none", "think section opened and never closed")
    boxed = find_boxed(split.after)
    if boxed and boxed[-1].strip():
        return Extraction(boxed[-1].strip(), "boxed")
    marked = [a for a in answer_lines(split.after) if a]
    if marked:
        return Extraction(marked[-1], "answer_line")
    lines = [ln.strip() for ln in split.after.splitlines() if ln.strip()]
    if lines:
        return Extraction(lines[-1], "last_line")
    return Extraction(None, "none", "nothing after the think section")


def normalize(s: str | None, casefold: bool = False) -> str:
    """Canonical text of an answer: trimmed, no surrounding $ / ** / trailing period,
    every dash a "-", "1,234" -> "1234", inner whitespace collapsed."""
    if not isinstance(s, str):
        return ""
    s = s.translate(_DASH_TABLE).strip()
    for _ in range(3):  # layers like "**$5$.**" peel off in any order
        before = s
        s = s.strip().rstrip(".").strip()
        if len(s) >= 2 and s.startswith("**") and s.endswith("**"):
            s = s[2:-2]
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left):len(s) - len(right)]
                break
        if s == before:
            break
    s = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), s)
    s = " ".join(s.split())
    return s.casefold() if casefold else s


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?")
_FRAC = re.compile(r"\\d?frac\{\s*([^{}]+?)\s*\}\{\s*([^{}]+?)\s*\}")


def parse_number(s: str | None) -> Fraction | None:
    """The exact value of a numeric answer ("-4", "1,234", "0.5", "3/4", "\\frac{3}{4}",
    "x = 7"), or None when the answer is not a single number."""
    t = normalize(s)
    if "=" in t:
        t = t.rsplit("=", 1)[1].strip()
    t = t.replace("\\!", "").replace("{,}", "").replace(" ", "")
    neg = t.startswith("-") and t[1:2] == "\\"
    m = _FRAC.fullmatch(t[1:] if neg else t)
    if m:
        num, den = _as_fraction(m.group(1)), _as_fraction(m.group(2))
        if num is None or den is None or den == 0:
            return None
        return -(num / den) if neg else num / den
    if t.count("/") == 1:
        num, den = (_as_fraction(p) for p in t.split("/"))
        if num is None or den is None or den == 0:
            return None
        return num / den
    return _as_fraction(t)


def _as_fraction(t: str) -> Fraction | None:
    if not _NUMBER.fullmatch(t) or len(t) > 400:
        return None
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
