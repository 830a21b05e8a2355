"""Code problems from a JSONL file: one object per line with prompt, entry_point and tests."""
from __future__ import annotations

import json
import logging
import random
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from generators.base import GENERATORS, Generator
from generators.chains import check_request
from generators.humaneval import code_chain, code_hint_prompt, difficulty_of
from loop.records import Message, Problem, Reference

log = logging.getLogger(__name__)


class CodeRow(BaseModel):
    """One line of the file."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1)
    entry_point: str | None = Field(..., description="function under test; null for plain top-level asserts")
    tests: str = Field(min_length=1)
    solution: str | None = None
    category: str | None = Field(None, min_length=1)
    difficulty: int | None = Field(None, ge=0)


@lru_cache(maxsize=8)
def load_rows(path: str, mtime: float) -> tuple[tuple[int, CodeRow], ...]:
    """(line number, row) of every non-blank line; ValueError names the file and line."""
    del mtime  # part of the cache key only: an edited file is read again
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append((lineno, CodeRow.model_validate(json.loads(line))))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg}); each line must be one JSON object") from None
            except ValidationError as e:
                errs = "; ".join(f"{'.'.join(map(str, x['loc'])) or '(row)'}: {x['msg']}" for x in e.errors())
                raise ValueError(f"{path}:{lineno}: {errs} (fields: prompt, entry_point, tests; "
                                 "optional solution, category, difficulty)") from None
    if not rows:
        raise ValueError(f"{path}: no problems in the file")
    return tuple(rows)


@lru_cache(maxsize=8)
def build_problems(path: str, mtime: float, category: str, instruction: str) -> tuple[Problem, ...]:
    out = []
    for lineno, row in load_rows(path, mtime):
        content = row.prompt + (f"\n\n{instruction}" if instruction else "")
        difficulty = row.difficulty if row.difficulty is not None else (
            difficulty_of(row.solution) if row.solution else 1)
        chain = code_chain(f"I need to solve: {row.prompt.splitlines()[0][:200]}", row.solution) \
            if row.solution else None
        out.append(Problem(
            family="code_jsonl", category=row.category or category, difficulty=difficulty,
            prompt=[Message(role="user", content=content)],
            reference=Reference(tests=row.tests, entry_point=row.entry_point, chain=chain),
            metadata={"source": f"{Path(path).name}:{lineno}"}))
    return tuple(out)


@GENERATORS.register("code_jsonl")
class CodeJsonl(Generator):
    """Code problems read from a JSONL file (prompt, entry_point, tests), judged by code_tests."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        path: str = Field(..., description="JSONL file, one problem per line")
        category: str = Field("code", min_length=1, description="category of rows that do not name one")
        instruction: str = Field(
            "Reply with the complete Python program in one ```python code block.",
            description="appended to every prompt; '' to use prompts verbatim")

    def _problems(self) -> tuple[Problem, ...]:
        p = Path(self.options.path)
        if not p.is_file():
            raise ValueError(f"code_jsonl: file {p} does not exist; set options.path to a JSONL file")
        return build_problems(str(p.resolve()), p.stat().st_mtime, self.options.category, self.options.instruction)

    def categories(self) -> list[str]:
        return sorted({p.category for p in self._problems()})

    def difficulties(self, category: str) -> tuple[int, int]:
        levels = [p.difficulty for p in self._problems() if p.category == category] or [1]
        return (min(levels), max(levels))

    def generate(self, category: str, difficulty: int, count: int, seed: int) -> list[Problem]:
        check_request(self, category, difficulty)
        problems = self._problems()
        pool = [p for p in problems if p.category == category and p.difficulty == difficulty]
        if not pool:
            log.warning("code_jsonl: %s has no %r problems of difficulty %d", self.options.path, category, difficulty)
        random.Random(f"code_jsonl:{category}:{difficulty}:{seed}").shuffle(pool)
        return pool[:count]

    def hint_prompt(self, problem: Problem) -> list[Message]:
        return code_hint_prompt(problem)
