"""Is a run directory whole? Every stage the manifest calls done has its output file, and that file
reads (JSON objects, JSONL lines); the config is the one the run was made with (its digest).

`damage(run)` lists what is not, one line each with the file and the way out; `report`, `export`
and `resume` say so instead of going on as if nothing happened.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from loop.run.state import RunDir, flatten

CONFIG_DIGEST = "config_sha256"
CONFIG_AS_RUN = "config"  # the config as run (a dict), to name what a hand edit changed


def stage_file(key: str) -> str | None:
    """The file (relative to the run) that holds a finished stage's outputs."""
    if key == "setup/heldout":
        return "eval/problems.jsonl"
    if key == "baseline":
        return "baseline/metrics.json"
    head, _, stage = key.partition("/")
    if not head.startswith("round-") or not head[6:].isdigit():
        return None
    rd = f"round-{int(head[6:]):03d}"
    name = {"problems": "problems.jsonl", "sample": "samples.jsonl", "verify": "verdicts.jsonl",
            "analyze": "errors.jsonl", "accept": "accepted.jsonl", "train": "train.json", "verifier": "verifier.json",
            "evaluate": "heldout/metrics.json", "plan": "plan.json"}.get(stage)
    return f"{rd}/{name}" if name else None


def redo_hint(run: RunDir, key: str) -> str:
    return (f"restore it from a copy, or compute that stage and the ones after it again: "
            f"python launch.py resume {run.path} --redo {key}")


def file_problem(path: Path) -> str | None:
    """What is wrong with a run file (missing, unreadable, a torn or corrupt line); None if it reads."""
    if not path.exists():
        return "missing"
    try:
        data = path.read_bytes()
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if path.suffix == ".jsonl":
        lines = data.split(b"\n")
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except ValueError:
                torn = i == len(lines) and not data.endswith(b"\n")
                return (f"line {i} is {'torn (cut off mid-record)' if torn else 'not a valid JSON record'}"
                        " (a crash, a full disk or a hand edit)")
        return None
    try:
        obj = json.loads(data)
    except ValueError as e:
        return f"not valid JSON ({'empty' if not data.strip() else e})"
    return None if isinstance(obj, dict) else f"holds a JSON {type(obj).__name__}, not an object"


def config_digest(run: RunDir) -> str | None:
    try:
        return hashlib.sha256((run.path / "config.yaml").read_bytes()).hexdigest()
    except OSError:
        return None


def record_config(run: RunDir, raw: dict) -> None:
    """Note config.yaml's digest (as written) and its values in the manifest: a hand edit shows later."""
    run.manifest[CONFIG_DIGEST] = config_digest(run)
    run.manifest[CONFIG_AS_RUN] = raw
    run.save()


def hand_edits(run: RunDir, raw: dict) -> list[str] | None:
    """What was changed in config.yaml since the run recorded it ([] if nothing; None if the run
    recorded no digest: runs made before this check)."""
    recorded = run.manifest.get(CONFIG_DIGEST)
    if not recorded:
        return None
    if config_digest(run) == recorded:
        return []
    a, b = flatten(run.manifest.get(CONFIG_AS_RUN) or {}), flatten(raw)
    changed = [f"{k}: {a.get(k)!r:.60} -> {b.get(k)!r:.60}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return changed  # [] for a change of layout or comments only: the same values


def done_stage_files(run: RunDir):
    """(stage key, its output file relative to the run, what is wrong with it or None) for every
    stage the manifest calls done that writes a file."""
    for key in run.manifest.get("done", []):
        rel = stage_file(key)
        if rel is not None:
            yield key, rel, file_problem(run.path / rel)


def damage(run: RunDir) -> list[str]:
    """Every damaged or missing file of the run's finished stages, with the way out."""
    out = [f"{run.path / rel} ({key}): {why}; {redo_hint(run, key)}"
           for key, rel, why in done_stage_files(run) if why]
    for d in sorted(run.path.glob("round-[0-9][0-9][0-9]")):
        metrics = d / "metrics.json"
        if metrics.exists() and (why := file_problem(metrics)):
            r = int(d.name[6:])
            out.append(f"{metrics}: {why}; it is rewritten when round {r} finishes: "
                       f"python launch.py resume {run.path} --redo round-{r}/plan")
    recorded = run.manifest.get(CONFIG_DIGEST)
    now = config_digest(run)
    if recorded and now and recorded != now:
        out.append(f"{run.path / 'config.yaml'}: changed since the run was made (its sha256 is not the one in "
                   "manifest.json); put back the config the run ran with, or start a new run with the new one")
    return out
