"""The generator-family contract and its registry."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from pydantic import BaseModel

from loop.records import Message, Problem, split_of
from loop.registry import NoOptions, Registry


class Generator(ABC):
    """A task family: where problems of some categories come from, at a difficulty."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, options: BaseModel):
        self.options = options

    @abstractmethod
    def categories(self) -> list[str]:
        """Every category this family can produce (with its current options)."""

    @abstractmethod
    def generate(self, category: str, difficulty: int, count: int, seed: int) -> list[Problem]:
        """`count` problems, deterministic for (category, difficulty, count, seed).

        May return duplicates or fewer when the space is small; `draw` handles that.
        Raise ValueError naming the category/difficulty and what is allowed when wrong.
        """

    def difficulties(self, category: str) -> tuple[int, int]:
        """Smallest and largest difficulty level this category supports."""
        return (1, 5)

    def augment(self, problem: Problem, seed: int) -> Problem | None:
        """A problem near `problem` (same skill, new numbers or wording), deterministic for the seed;
        None = this family offers no variants (the loop then skips the `augment` action)."""
        return None

    def hint_prompt(self, problem: Problem) -> list[Message]:
        """STaR rationalization: the prompt with the gold answer given as a hint."""
        msgs = list(problem.prompt)
        last = msgs[-1]
        hint = f"\n(Hint: the final answer is {problem.reference.answer}. Show the reasoning that leads to it.)"
        msgs[-1] = Message(role=last.role, content=last.content + hint)
        return msgs


GENERATORS: Registry[Generator] = Registry("generator family")


def draw(
    gen: Generator, category: str, difficulty: int, count: int, seed: int,
    split: str, heldout_fraction: float, exclude: set[str] | frozenset[str] = frozenset(),
    max_tries: int = 20,
) -> list[Problem]:
    """`count` distinct problems of one split, none of whose ids is in `exclude`.

    Generates in growing batches with derived seeds until enough survive the split
    filter and dedup; returns fewer (never raises) if the family's space is exhausted.
    """
    out: dict[str, Problem] = {}
    ask = max(count, 1)
    stale = 0  # consecutive batches that added nothing: the space is exhausted
    for attempt in range(max_tries):
        if len(out) >= count or stale >= 3:
            break
        before = len(out)
        batch = gen.generate(category, difficulty, ask * 2 + 8, seed * 1000 + attempt)
        for p in batch:
            if p.id in exclude or p.id in out or split_of(p.id, heldout_fraction) != split:
                continue
            out[p.id] = p
            if len(out) >= count:
                break
        stale = stale + 1 if len(out) == before else 0
        ask = min(ask * 2, 16 * max(count, 1))
    return list(out.values())[:count]
