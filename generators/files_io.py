"""Reading rows from local JSONL, Parquet, or a saved `datasets` directory.

Rows come back as (where, row) pairs where `where` names the file and the line (JSONL)
or row (others, counted from 1), so every later complaint can point at the input.
A JSONL line that is not a JSON object comes back as a RowError instead of a row.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Format = Literal["auto", "jsonl", "parquet", "hf_disk"]
MAX_REPORTED = 10
# A row is a problem: a prompt for a context window of thousands of tokens. A longer line is
# refused unread (a 50 MB row used to be tokenised for minutes at gigabytes of memory).
MAX_ROW_BYTES = 8 << 20
GZIP_MAGIC = b"\x1f\x8b"


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
    for lineno, row in jsonl_records(p):
        yield f"{p}:line {lineno}", row


def jsonl_records(p: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """(line number, JSON object or RowError) of every non-blank line; plain or gzip (by name or
    by content), decoded line by line so a bad byte is reported with its line and the other rows
    are still checked; a line over MAX_ROW_BYTES is skipped unread. ValueError (naming the file)
    when the file as a whole cannot be read."""
    if p.is_dir():
        raise ValueError(f"{p} is a directory, not a JSONL file; for a saved dataset use format hf_disk")
    import gzip
    import zlib

    try:
        with open(p, "rb") as f:
            magic = f.read(2)
    except OSError as e:
        raise ValueError(f"{p}: cannot open ({e.strerror or e}); check the path and its permissions") from None
    gz = p.name.endswith(".gz")
    if magic == GZIP_MAGIC and not gz:
        raise ValueError(f"{p}: the file is gzip-compressed but its name does not end in .gz; rename it to "
                         f"{p.name}.gz or decompress it (gunzip)")
    f = gzip.open(p, "rb") if gz else open(p, "rb")
    lineno = 0
    try:
        with f:
            while True:
                raw = f.readline(MAX_ROW_BYTES + 1)
                if not raw:
                    break
                lineno += 1
                if len(raw) > MAX_ROW_BYTES and not raw.endswith(b"\n"):
                    size = len(raw)
                    while raw and not raw.endswith(b"\n"):  # the rest of the line, in bounded pieces
                        raw = f.readline(MAX_ROW_BYTES)
                        size += len(raw)
                    yield lineno, RowError(f"the line is {size / 2**20:.1f} MiB; a row may be at most "
                                           f"{MAX_ROW_BYTES // 2**20} MiB (no prompt that long fits a context "
                                           "window): shorten or remove it")
                    continue
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]  # a UTF-8 byte-order mark
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield lineno, RowError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                                           "save the file as UTF-8")
                    continue
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    yield lineno, RowError(f"not valid JSON ({e.msg} at column {e.colno})")
                    continue
                if not isinstance(row, dict):
                    yield lineno, RowError(f"expected a JSON object, got {type(row).__name__}")
                    continue
                yield lineno, row
    except gzip.BadGzipFile:
        raise ValueError(f"{p}: the name ends in .gz but the file is not gzip-compressed; rename it to "
                         f"{p.name[:-3]} (plain JSONL) or compress it with gzip") from None
    except (EOFError, zlib.error) as e:
        raise ValueError(f"{p}: the gzip data is truncated or corrupt after line {lineno} ({e}); "
                         "re-create or re-download the file") from None
    except OSError as e:
        raise ValueError(f"{p}: read error after line {lineno} ({e.strerror or e})") from None


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
