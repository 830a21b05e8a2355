"""A run is a directory. Every write is atomic (temp file + fsync + rename) and the
manifest is written after the files it points to, so a `kill -9` at any instant leaves
either the old or the new version of each file, and `resume` trusts only the manifest.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

STAGES = ("problems", "sample", "verify", "analyze", "accept", "train", "evaluate", "plan")


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_jsonl(path: Path, records: Iterable[BaseModel | dict]) -> None:
    lines = [r.model_dump_json() if isinstance(r, BaseModel) else json.dumps(r, ensure_ascii=False) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_jsonl(path: Path, model: type[M]) -> list[M]:
    out = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(model.model_validate_json(line))
                except ValueError as e:
                    raise ValueError(f"{path}:{i}: corrupt record ({e}); the run directory was edited or damaged") from None
    return out


class StopAfter(Exception):
    """Raised after the stage named by `--stop-after` completed; the run can be resumed."""


class RunDir:
    """The run directory and its manifest (status, rounds completed, stage cursor)."""

    def __init__(self, path: Path, stop_after: str | None = None):
        self.path = Path(path)
        self.stop_after = stop_after
        self.manifest_path = self.path / "manifest.json"
        self.manifest: dict[str, Any] = read_json(self.manifest_path) if self.manifest_path.exists() else {}

    @classmethod
    def create(cls, root: Path, name: str) -> "RunDir":
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(root) / "runs" / f"{name}-{stamp}"
        n = 1
        while path.exists():
            n += 1
            path = Path(root) / "runs" / f"{name}-{stamp}-{n}"
        path.mkdir(parents=True)
        run = cls(path)
        run.manifest = {"run_id": path.name, "status": "running", "rounds_completed": 0,
                        "cursor": None, "done": [], "created": time.time(), "attempts": 1}
        run.save()
        return run

    def save(self) -> None:
        self.manifest["updated"] = time.time()
        write_json(self.manifest_path, self.manifest)

    def round_dir(self, r: int) -> Path:
        return self.path / f"round-{r:03d}"

    def is_done(self, key: str) -> bool:
        return key in self.manifest["done"]

    def mark_done(self, key: str) -> None:
        if key not in self.manifest["done"]:
            self.manifest["done"].append(key)
        self.manifest["cursor"] = key
        self.save()

    def stage(self, key: str, compute: Callable[[], T], save: Callable[[T], None], load: Callable[[], T],
              on_skip: Callable[[str], None] | None = None) -> T:
        """Run a stage once: if the manifest says it is done, load its outputs instead."""
        if self.is_done(key):
            if on_skip:
                on_skip(key)
            return load()
        self.manifest["cursor"] = f"{key} (in progress)"
        self.save()
        t0 = time.time()
        result = compute()
        save(result)
        self.manifest.setdefault("seconds", {})[key] = round(time.time() - t0, 3)
        # One entry per completed execution: a stage that ran twice would show up twice.
        self.manifest.setdefault("history", []).append({"stage": key, "attempt": self.manifest.get("attempts", 1)})
        self.mark_done(key)
        if key == self.stop_after:
            raise StopAfter(key)
        return result

    def set_status(self, status: str, **extra: Any) -> None:
        self.manifest["status"] = status
        self.manifest.update(extra)
        self.save()


def find_run(root: Path, run: str) -> RunDir:
    """A run by path, by id under state/runs, or 'latest'."""
    p = Path(run)
    if not p.exists():
        runs = Path(root) / "runs"
        if run == "latest":
            cands = sorted((d for d in runs.glob("*") if (d / "manifest.json").exists()),
                           key=lambda d: d.stat().st_mtime) if runs.exists() else []
            if not cands:
                raise FileNotFoundError(f"no runs under {runs}; start one with `launch.py run`")
            p = cands[-1]
        else:
            p = runs / run
    if not (p / "manifest.json").exists():
        raise FileNotFoundError(f"{p} is not a run directory (no manifest.json); "
                                f"runs live under {Path(root) / 'runs'}")
    return RunDir(p)
