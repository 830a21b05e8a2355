"""Problems from a local data file (JSONL, Parquet, or a saved `datasets` directory)."""
from __future__ import annotations

import logging
import unicodedata
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


def normalized_prompt(p: Problem) -> str:
    """The prompt as compared for duplicates: Unicode NFKC, whitespace runs collapsed."""
    return "\n".join(f"{m.role}: {' '.join(unicodedata.normalize('NFKC', m.content).split())}" for m in p.prompt)


def _reference_key(p: Problem) -> tuple:
    r = p.reference
    norm = (lambda t: " ".join(unicodedata.normalize("NFKC", t).split()) if t is not None else None)
    return (norm(r.answer), norm(r.tests), r.entry_point)


def _line(where: str) -> str:
    return where.rsplit(":", 1)[-1]


def dedup_rows(rows: list[Problem], path: str) -> list[Problem]:
    """One problem per normalised prompt. Exact repeats (same reference) keep the first
    row; a prompt given with different references is ambiguous, so all its rows are
    dropped (kept out of both splits) and reported with their lines."""
    groups: dict[str, list[Problem]] = {}
    for p in rows:
        groups.setdefault(normalized_prompt(p), []).append(p)
    keep, repeats, conflicts = [], 0, []
    for ps in groups.values():
        if len({_reference_key(p) for p in ps}) > 1:
            conflicts.append(ps)
            continue
        keep.append(ps[0])
        repeats += len(ps) - 1
    if repeats:
        log.info("%s: %d duplicate row(s) (same prompt and reference) dropped", path, repeats)
    if conflicts:
        shown = "; ".join(
            ", ".join(f"{_line(p.metadata['source'])} answer {p.reference.answer!r:.40}" for p in ps)
            for ps in conflicts[:5])
        more = f"; and {len(conflicts) - 5} more prompt(s)" if len(conflicts) > 5 else ""
        log.warning("%s: %d prompt(s) appear with conflicting references and are left out of training and "
                    "held-out: %s%s. Keep one row per prompt to use them.", path, len(conflicts), shown, more)
    return keep


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
        rows: list[Problem] = []
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
            rows.append(p)
        raise_collected(self.options.path, bad, n_bad)
        if not rows:
            raise ValueError(f"{self.options.path}: no rows found; the file is empty")
        for p in dedup_rows(rows, self.options.path):
            self._pool.setdefault(p.category, {}).setdefault(p.difficulty, []).append(p)
        if not self._pool:
            raise ValueError(f"{self.options.path}: every row was dropped as a conflicting duplicate (see the "
                             "warning above); give each prompt one reference answer")
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
