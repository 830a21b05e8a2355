"""Which base model a run was made with, so a resume or an export never pairs the run's adapters
with different base weights.

A run's adapters are deltas on the exact weights they were trained on. `model.path` names a
directory, and what is in it can change between a run's start and its resume or export (a
rebuilt random-shape model, a re-downloaded checkpoint, a new embedded tiny model in an updated
checkout): the adapters then load without complaint and mean nothing. `record` writes the base's
digest to `<run>/base.json` when the run starts; `check` recomputes it and refuses with an error
that says what changed and what to do. Runs made before base.json existed are let through with a
warning (nothing to compare with).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from loop.run.state import RunDir, RunStateError, write_json

RECORD = "base.json"
log = logging.getLogger(__name__)


def weight_files(d: Path) -> list[Path]:
    """The directory's *.safetensors files (else its *.bin ones), in name order."""
    return sorted(d.glob("*.safetensors")) or sorted(d.glob("*.bin"))


def weights_digest(d: Path) -> str:
    """sha256 over the weight files' bytes, in name order."""
    h = hashlib.sha256()
    for f in weight_files(d):
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def fingerprint(cfg) -> dict[str, Any]:
    given = cfg.model.path
    src = Path(cfg.model.resolved_path()).expanduser()
    if not src.is_dir():
        return {"configured": given, "weights_sha256": None}
    # A hub model is recorded as its id and commit, never as its path in one machine's cache.
    hub = cfg.model.hub()
    where = {"hub": hub} if hub else {"resolved": str(src.resolve())}
    return {"configured": given, **where, "files": [f.name for f in weight_files(src)],
            "weights_sha256": weights_digest(src)}


def record(run: RunDir, cfg) -> dict[str, Any]:
    fp = fingerprint(cfg)
    write_json(run.path / RECORD, fp)
    return fp


def check(run: RunDir, cfg, doing: str) -> dict[str, Any] | None:
    """Refuse (RunStateError) when the base at cfg.model.path is not the one the run recorded.
    `doing` names what would go wrong, e.g. "resuming it" or "exporting it"."""
    path = run.path / RECORD
    if not path.exists():
        log.warning("run %s did not record its base model's digest (made before base.json existed): %s cannot "
                    "check that %s holds the weights it was trained on", run.path.name, doing, cfg.model.path)
        return None
    try:
        old = json.loads(path.read_text())
        then = old["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunStateError(f"{path} is damaged ({type(e).__name__}: {e}); it records the run's base model digest. "
                            "Restore it from a backup, or delete it to skip this check") from None
    now = fingerprint(cfg)
    if then != now["weights_sha256"]:
        raise RunStateError(
            f"the base model at {cfg.model.path} is not the one run {run.path.name} was made with (weights sha256 "
            f"{str(then)[:12]}... when it started, {str(now['weights_sha256'])[:12]}... now): its adapters were "
            f"trained on the old weights, so {doing} would pair them with different ones. Put the old weights back "
            f"at that path (files then: {', '.join(old.get('files') or []) or 'none'}), or start a new run")
    return now
