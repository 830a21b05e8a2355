"""The shape every reference chain takes, and the request checks every family shares."""
from __future__ import annotations

import random

from generators.base import Generator


def format_reply(steps: list[str], answer: str) -> str:
    """The full assistant reply: steps inside think tags, then the final answer line."""
    return "<think>\n" + "\n".join(steps) + "\n</think>\nAnswer: " + answer


def check_request(gen: Generator, category: str, difficulty: int) -> None:
    """Raise ValueError naming what is allowed when category or difficulty is out of range."""
    cats = gen.categories()
    if category not in cats:
        raise ValueError(
            f"generator family {gen.name!r} has no category {category!r}; "
            f"allowed categories: {', '.join(cats)}"
        )
    lo, hi = gen.difficulties(category)
    if not lo <= difficulty <= hi:
        raise ValueError(
            f"generator family {gen.name!r} category {category!r}: difficulty {difficulty} "
            f"is out of range; allowed difficulties: {lo}..{hi}"
        )


def rng_for(family: str, category: str, difficulty: int, seed: int) -> random.Random:
    """A private RNG for one generate() call (string seeds are hashed with sha512, so
    this is stable across processes regardless of PYTHONHASHSEED)."""
    return random.Random(f"{family}:{category}:{difficulty}:{seed}")
