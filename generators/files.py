"""Problems from a local data file (JSONL, Parquet, or a saved `datasets` directory)."""
from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from generators.base import GENERATORS, Generator
from generators.chains import check_request, rng_for
from generators.files_io import MAX_REPORTED, Format, RowError, iter_rows, raise_collected
from loop.records import Message, Problem, Reference

log = logging.getLogger(__name__)


class Columns(BaseModel):
    """Which column holds what. Only `prompt` is always required."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field("question", description="the question text, or a list of {role, content} messages")
    answer: str | None = Field("answer", description="gold answer column (str or number); null for none")
    category: str | None = Field(None, description="category column; null: every row gets options.category")
    difficulty: str | None = Field(None, description="integer difficulty column; null: options.difficulty")
    chain: str | None = Field(None, description="reference chain-of-thought column")
    tests: str | None = Field(None, description="code tests column")
    entry_point: str | None = Field(None, description="code entry-point column")


class RowProblem(ValueError):
    pass


def _need(row: dict[str, Any], col: str) -> Any:
    if col not in row:
        raise RowProblem(f"missing column {col!r} (columns present: {', '.join(sorted(row)) or 'none'})")
    return row[col]


def _text(row: dict[str, Any], col: str | None, required: bool = False, numbers: bool = False) -> str | None:
    if col is None:
        return None
    value = _need(row, col) if required else row.get(col)
    if value is None:
        if required:
            raise RowProblem(f"column {col!r} is null")
        return None
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # a numeric gold answer, e.g. 42 -> "42"
    if not isinstance(value, str):
        raise RowProblem(f"column {col!r} should be a string, got {type(value).__name__} {value!r:.60}")
    return value


def _prompt(row: dict[str, Any], col: str, instruction: str) -> list[Message]:
    value = _need(row, col)
    if isinstance(value, str):
        if not value.strip():
            raise RowProblem(f"column {col!r} is empty")
        return [Message(role="user", content=f"{value}\n\n{instruction}" if instruction else value)]
    if isinstance(value, list) and value:
        try:
            return [Message.model_validate(m) for m in value]
        except ValidationError as e:
            raise RowProblem(f"column {col!r} is not a list of {{role, content}} messages: "
                             f"{e.errors()[0]['msg']}") from None
    raise RowProblem(f"column {col!r} should be a non-empty string or message list, got {type(value).__name__}")


def _difficulty(row: dict[str, Any], col: str | None, default: int) -> int:
    if col is None:
        return default
    value = _need(row, col)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RowProblem(f"column {col!r} should be an integer >= 0, got {value!r:.60}")
    return value


@GENERATORS.register("files")
class Files(Generator):
    """Problems read from a local JSONL / Parquet file or a saved datasets directory."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        path: str = Field(..., description="JSONL or Parquet file, or a directory from datasets' save_to_disk")
        format: Format = Field("auto", description="auto (by extension / directory), jsonl, parquet, hf_disk")
        columns: Columns = Field(Columns(), description="column mapping (prompt, answer, category, ...)")
        category: str = Field("default", description="category of every row when there is no category column")
        difficulty: int = Field(1, ge=0, description="difficulty of every row when there is no difficulty column")
        instruction: str = Field("", description="appended to string prompts, e.g. \"End with 'Answer: <x>'.\"")
        metadata_columns: list[str] = Field([], description="columns copied into Problem.metadata")

    def __init__(self, options: BaseModel):
        super().__init__(options)
        self._pool: dict[str, dict[int, list[Problem]]] = {}
        self._load()

    def _row(self, where: str, row: dict[str, Any]) -> Problem:
        o, c = self.options, self.options.columns
        meta: dict[str, Any] = {"source": where}
        for col in o.metadata_columns:
            meta[col] = _need(row, col)
        return Problem(
            family=self.name,
            category=_text(row, c.category, required=True) if c.category else o.category,
            difficulty=_difficulty(row, c.difficulty, o.difficulty),
            prompt=_prompt(row, c.prompt, o.instruction),
            reference=Reference(
                answer=_text(row, c.answer, required=True, numbers=True), chain=_text(row, c.chain),
                tests=_text(row, c.tests), entry_point=_text(row, c.entry_point)),
            metadata=meta,
        )

    def _load(self) -> None:
        bad: list[str] = []
        n_bad = n_rows = 0
        for where, row in iter_rows(self.options.path, self.options.format):
            n_rows += 1
            try:
                if isinstance(row, RowError):
                    raise RowProblem(row.message)
                p = self._row(where, row)
            except (RowProblem, ValidationError) as e:
                n_bad += 1
                if len(bad) < MAX_REPORTED:
                    bad.append(f"{where}: {e}")
                continue
            self._pool.setdefault(p.category, {}).setdefault(p.difficulty, []).append(p)
        raise_collected(self.options.path, bad, n_bad)
        if not self._pool:
            raise ValueError(f"{self.options.path}: no rows found; the file is empty")
        log.info("files: %d rows from %s in %d categories", n_rows, self.options.path, len(self._pool))

    def categories(self) -> list[str]:
        return sorted(self._pool)

    def difficulties(self, category: str) -> tuple[int, int]:
        levels = self._pool.get(category) or {self.options.difficulty: []}
        return (min(levels), max(levels))

    def generate(self, category: str, difficulty: int, count: int, seed: int) -> list[Problem]:
        check_request(self, category, difficulty)
        pool = self._pool[category].get(difficulty, [])
        # Deterministic for the seed: a seeded permutation of the rows, in file order before.
        order = list(range(len(pool)))
        rng_for(self.name, category, difficulty, seed).shuffle(order)
        return [pool[i].model_copy(deep=True) for i in order[:count]]
