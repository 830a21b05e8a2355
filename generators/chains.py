"""The shape every reference chain takes (answer chains and code chains), and the request checks
every family shares."""
from __future__ import annotations

import random

from generators.base import Generator
from loop.records import Message, Problem


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


def code_prompt(instruction: str, code: str) -> list[Message]:
    return [Message(role="user", content=f"{instruction}\n\n```python\n{code.rstrip()}\n```")]


def code_chain(thought: str, program: str) -> str:
    """A reference chain in the house format: think block, then the program in a fenced block."""
    return f"<think>\n{thought.strip()}\n</think>\n```python\n{program.rstrip()}\n```\n"


def difficulty_of(solution: str) -> int:
    """1..3 by the canonical solution's non-blank lines (buckets near HumanEval's tertiles)."""
    n = sum(1 for line in solution.splitlines() if line.strip())
    return 1 if n <= 3 else 2 if n <= 8 else 3


def code_hint_prompt(problem: Problem) -> list[Message]:
    """STaR rationalization for code: the prompt plus a correct program (none known: unchanged)."""
    from verifiers.code import extract_code

    solution = extract_code(problem.reference.chain or "")
    if not solution:
        return list(problem.prompt)
    last = problem.prompt[-1]
    hint = f"\n(Hint: a correct solution is\n```python\n{solution.rstrip()}\n```\nShow the reasoning that leads to it.)"
    return [*problem.prompt[:-1], Message(role=last.role, content=last.content + hint)]
