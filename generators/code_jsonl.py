"""Code problems from a JSONL file: one object per line with prompt, entry_point and tests.

`tests` is HumanEval style (`def check(candidate): ...` with an `entry_point`) or MBPP
style: top-level asserts, as one string or a list of assert strings, with or without an
`entry_point`. MBPP's own rows (`text`, `code`, `test_list`, `test_setup_code`, `task_id`)
are read as they are. At load time every row's tests must parse and every reference
`solution` must pass its own tests in the sandbox; the bad rows are reported together,
each as `file:line: reason`.
"""
from __future__ import annotations

import ast
import logging
import random
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from generators.base import GENERATORS, Generator
from generators.chains import check_request, code_chain, code_hint_prompt, difficulty_of
from generators.files_io import MAX_REPORTED, RowError, jsonl_records
from loop.records import Message, Problem, Reference, Sample

log = logging.getLogger(__name__)


class CodeRow(BaseModel):
    """One line of the file."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1)
    entry_point: str | None = Field(None, description="function under test; null for plain top-level asserts")
    tests: str = Field(min_length=1, description="test source, or a list of assert strings (joined by newlines)")
    solution: str | None = None
    category: str | None = Field(None, min_length=1)
    difficulty: int | None = Field(None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _mbpp_columns(cls, row: Any) -> Any:
        """MBPP's own layout: text, code, test_list, test_setup_code, task_id (challenge_test_list ignored)."""
        if not isinstance(row, dict) or "test_list" not in row or "tests" in row:
            return row
        row = dict(row)
        setup = row.pop("test_setup_code", "") or ""
        tests = row.pop("test_list")
        if isinstance(tests, list) and setup.strip():
            tests = [setup, *tests]
        row["tests"] = tests
        if "text" in row and "prompt" not in row:
            row["prompt"] = row.pop("text")
        if "code" in row and "solution" not in row:
            row["solution"] = row.pop("code")
        for ignored in ("task_id", "challenge_test_list"):
            row.pop(ignored, None)
        return row

    @field_validator("tests", mode="before")
    @classmethod
    def _join_assert_list(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v or not all(isinstance(x, str) and x.strip() for x in v):
                raise ValueError("a list of tests must hold non-empty strings (one assert each)")
            return "\n".join(x.rstrip("\n") for x in v) + "\n"
        return v


@lru_cache(maxsize=8)
def load_rows(path: str, mtime: float) -> tuple[tuple[int, CodeRow], ...]:
    """(line number, row) of every non-blank line; ValueError names the file and line."""
    del mtime  # part of the cache key only: an edited file is read again
    rows, bad = [], []
    for lineno, raw in jsonl_records(Path(path)):  # plain or .gz; bad bytes and huge lines named by line
        if isinstance(raw, RowError):
            bad.append(f"{path}:{lineno}: (row) {raw.message}; each line must be one JSON object")
            continue
        try:
            rows.append((lineno, CodeRow.model_validate(raw)))
        except ValidationError as e:
            errs = "; ".join(f"{'.'.join(map(str, x['loc'])) or '(row)'}: {x['msg']}" for x in e.errors())
            bad.append(f"{path}:{lineno}: {errs} (fields: prompt, tests (a string or a list of asserts); "
                       "optional entry_point, solution, category, difficulty)")
    if bad:
        more = f"\n... and {len(bad) - MAX_REPORTED} more" if len(bad) > MAX_REPORTED else ""
        raise ValueError(f"{len(bad)} bad line(s) in {path} (fix or remove them; nothing was loaded):\n"
                         + "\n".join(bad[:MAX_REPORTED]) + more)
    if not rows:
        raise ValueError(f"{path}: no problems in the file")
    _refuse_conflicting_duplicates(path, rows)
    return tuple(rows)


def _refuse_conflicting_duplicates(path: str, rows: list[tuple[int, CodeRow]]) -> None:
    """The same prompt twice with different tests, entry point or solution is ambiguous (which one
    is right?), and its two problems could land on both sides of the held-out split."""
    groups: dict[str, list[tuple[int, CodeRow]]] = {}
    for lineno, row in rows:
        groups.setdefault(" ".join(unicodedata.normalize("NFKC", row.prompt).split()), []).append((lineno, row))
    conflicts = []
    for same in groups.values():
        first = same[0][1]
        for lineno, row in same[1:]:
            differ = [f for f in ("tests", "entry_point", "solution") if getattr(row, f) != getattr(first, f)]
            if differ:
                conflicts.append(f"{path}:{lineno}: the prompt of line {same[0][0]} again, with a different "
                                 f"{' and '.join(differ)}")
    if conflicts:
        more = f"\n... and {len(conflicts) - MAX_REPORTED} more" if len(conflicts) > MAX_REPORTED else ""
        raise ValueError(f"{len(conflicts)} conflicting duplicate prompt(s) in {path} (keep one row per prompt, "
                         "with its tests and solution):\n" + "\n".join(conflicts[:MAX_REPORTED]) + more)


def _static_problem(row: CodeRow) -> str | None:
    """Why the row cannot work, found without running anything; None if it looks fine."""
    from verifiers.code_cases import TestsError, body_of, parse_tests

    try:
        body_of(parse_tests(row.tests), row.entry_point)
    except TestsError as e:
        return str(e)
    except Exception:  # noqa: BLE001 - NotTranslatable: judged by a test process, still fine
        pass
    if row.solution is not None:
        try:
            ast.parse(row.solution)
        except SyntaxError as e:
            return f"the solution does not parse: {e.msg} (line {e.lineno})"
    return None


def check_rows(path: str, rows: list[tuple[int | str, CodeRow]], run_solutions: bool = True) -> None:
    """Every row's tests parse and (with run_solutions) every reference solution passes its
    own tests in the sandbox; ValueError listing each bad row as `file:line: reason` otherwise."""
    from verifiers.base import VERIFIERS

    bad = {lineno: why for lineno, row in rows if (why := _static_problem(row))}
    todo = [(lineno, row) for lineno, row in rows if lineno not in bad and row.solution and run_solutions]
    if todo:
        problems = [Problem(family="code_jsonl", category="check", difficulty=1,
                            prompt=[Message(role="user", content=row.prompt)],
                            reference=Reference(tests=row.tests, entry_point=row.entry_point)) for _, row in todo]
        samples = [Sample(id=f"{p.id}:load:{i}", problem_id=p.id, round=-1, index=i, num_tokens=0,
                          finish_reason="stop", text=f"```python\n{row.solution.rstrip()}\n```")
                   for i, (p, (_, row)) in enumerate(zip(problems, todo))]
        # A loaded machine is no reason to reject a row: a generous timeout.
        verifier = VERIFIERS.build("code_tests", {"timeout_s": 30, "workers": 2})
        for (lineno, _), v in zip(todo, verifier.verify(problems, samples)):
            if v.outcome == "error":
                bad[lineno] = f"the reference solution could not be checked: {v.reason}"
            elif v.outcome != "pass":
                bad[lineno] = f"the reference solution fails its own tests: {v.reason}"
    if bad:
        order = {label: i for i, (label, _) in enumerate(rows)}
        lines = [f"{path}:{n}: {why}" for n, why in sorted(bad.items(), key=lambda kv: order[kv[0]])]
        raise ValueError(f"{len(bad)} bad code row(s) (fix the tests or the solution, or drop the row):\n"
                         + "\n".join(lines))


@lru_cache(maxsize=8)
def build_problems(path: str, mtime: float, category: str, instruction: str,
                   check: bool = True) -> tuple[Problem, ...]:
    rows = load_rows(path, mtime)
    check_rows(path, list(rows), run_solutions=check)
    out = []
    for lineno, row in rows:
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
        check_solutions: bool = Field(
            True, description="at load, run every row's solution against its own tests in the sandbox and "
            "reject the file if one fails (tests that do not parse are rejected either way)")

    def _problems(self) -> tuple[Problem, ...]:
        p = Path(self.options.path)
        if not p.is_file():
            raise ValueError(f"code_jsonl: file {p} does not exist; set options.path to a JSONL file")
        return build_problems(str(p.resolve()), p.stat().st_mtime, self.options.category, self.options.instruction,
                              self.options.check_solutions)

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
