"""Reading rows from local JSONL, Parquet, or a saved `datasets` directory.

Rows come back as (where, row) pairs where `where` names the file and the line (JSONL)
or row (others, counted from 1), so every later complaint can point at the input.
A JSONL line that is not a JSON object comes back as a RowError instead of a row.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

Format = Literal["auto", "jsonl", "parquet", "hf_disk"]
MAX_REPORTED = 10


@dataclass
class RowError:
    message: str


def detect_format(path: Path, fmt: Format) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "hf_disk"
    suffix = path.name.lower()
    if suffix.endswith((".jsonl", ".json", ".ndjson", ".jsonl.gz")):
        return "jsonl"
    if suffix.endswith((".parquet", ".pq")):
        return "parquet"
    raise ValueError(
        f"{path}: cannot tell the format from the name; set format to one of jsonl, parquet, "
        f"hf_disk (a directory written by datasets' save_to_disk)")


def iter_rows(path: str | Path, fmt: Format = "auto") -> Iterator[tuple[str, dict[str, Any] | RowError]]:
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"data file {p} does not exist (resolved to {p.resolve()}); check the path option")
    kind = detect_format(p, fmt)
    if kind == "jsonl":
        yield from _jsonl(p)
    elif kind == "parquet":
        yield from _parquet(p)
    else:
        yield from _hf_disk(p)


def _jsonl(p: Path) -> Iterator[tuple[str, dict[str, Any] | RowError]]:
    if p.is_dir():
        raise ValueError(f"{p} is a directory, not a JSONL file; for a saved dataset use format hf_disk")
    opener = open
    if p.name.endswith(".gz"):
        import gzip

        opener = gzip.open  # type: ignore[assignment]
    with opener(p, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{p}:line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield where, RowError(f"not valid JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(row, dict):
                yield where, RowError(f"expected a JSON object, got {type(row).__name__}")
                continue
            yield where, row


def _parquet(p: Path) -> Iterator[tuple[str, dict[str, Any] | RowError]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise ValueError(f"{p}: cannot read as Parquet: {e}") from None
    for i, row in enumerate(table.to_pylist(), 1):
        yield f"{p}:row {i}", row


def _hf_disk(p: Path) -> Iterator[tuple[str, dict[str, Any] | RowError]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{p}: cannot load with datasets.load_from_disk: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        for split in ds:
            for i, row in enumerate(ds[split], 1):
                yield f"{p}[{split}]:row {i}", row
    else:
        for i, row in enumerate(ds, 1):
            yield f"{p}:row {i}", row


def raise_collected(path: str, problems: list[str], total: int) -> None:
    """One ValueError listing the first MAX_REPORTED bad rows of a file."""
    if not problems:
        return
    more = f"\n  ... and {total - len(problems)} more" if total > len(problems) else ""
    raise ValueError(
        f"{total} malformed row(s) in {path} (fix or remove them; nothing was loaded):\n  "
        + "\n  ".join(problems) + more)
