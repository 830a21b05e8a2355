"""Which adapter a run exports: the one with the best held-out accuracy, and only if it
beats the base model (or the user says export anyway).

Adapter paths in a run's records may be relative to the run directory (current runs),
absolute (older runs), or relative to the directory the run was started from (older
still). All three are resolved inside this run's directory: an export never packages
another run's files, even when a recorded absolute path still points at one.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loop.run.state import RunDir, read_json

log = logging.getLogger("loop")

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


class ExportError(RuntimeError):
    """The run cannot be exported as asked; str() says why and what to do."""


@dataclass(frozen=True)
class AdapterChoice:
    path: Path                 # the adapter directory, inside the run
    round: int | None          # the round that trained it
    eval_round: int            # the round whose held-out evaluation measured it
    accuracy: float | None     # its held-out accuracy
    baseline: float | None     # the base model's held-out accuracy
    beats_base: bool
    partial: bool              # the run is not completed
    why: str                   # one paragraph for the user and the bundle
    candidates: list[dict[str, Any]] = field(default_factory=list)


def _round_of(path: Path) -> int | None:
    m = re.fullmatch(r"round-(\d+)", path.parent.name)
    return int(m.group(1)) if m else None


def resolve_in_run(run: RunDir, recorded: str) -> Path:
    """The directory a recorded path names, inside this run (whether or not it exists)."""
    root = run.path.resolve()
    p = Path(recorded)
    if not p.is_absolute():
        direct = root / p
        if direct.exists():
            return direct
    elif p.resolve() == root or root in p.resolve().parents:
        return p
    # An absolute path of the run's old location, or a path relative to the old cwd
    # (state/runs/<id>/round-001/adapter): keep what it says inside the run.
    return root / p.parent.name / p.name if _round_of(p) is not None else root / p


def _completed_rounds(run: RunDir) -> list[dict[str, Any]]:
    out = []
    for r in range(int(run.manifest.get("rounds_completed", 0))):
        path = run.round_dir(r) / "metrics.json"
        if path.exists():
            m = read_json(path)
            out.append({"round": r, "adapter": m.get("adapter"), "accuracy": (m.get("heldout") or {}).get("accuracy")})
    return out


def _stderr(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / n) if n else float("nan")


def choose_adapter(run: RunDir, round_: int | None = None, allow_no_gain: bool = False) -> AdapterChoice:
    m, rid = run.manifest, run.path.name
    status, done = m.get("status"), int(m.get("rounds_completed", 0))
    if done == 0:
        raise FileNotFoundError(
            f"run {rid} has no completed round (status {status!r}), so there is no adapter to export; "
            f"continue it with `python launch.py resume {run.path}`")
    rounds = _completed_rounds(run)
    cands: dict[Path, dict[str, Any]] = {}
    for r in rounds:
        if r["adapter"] and r["accuracy"] is not None:
            path = resolve_in_run(run, r["adapter"])
            # A round that trained nothing re-evaluates the previous adapter: keep its first evaluation.
            cands.setdefault(path, {"path": path, "trained_in": _round_of(path), "eval_round": r["round"],
                                    "accuracy": r["accuracy"], "recorded": r["adapter"]})
    if not cands:
        raise FileNotFoundError(
            f"run {rid} has no trained adapter: no round accepted any chain, so every round skipped training "
            f"(see {run.path}/round-*/train.json). Run more rounds (`python launch.py resume {run.path} "
            f"--set loop.rounds=N`) or start a new run with easier difficulties or more samples (sampling.n)")
    base_m = run.path / "baseline" / "metrics.json"
    base = read_json(base_m) if base_m.exists() else {}
    baseline, n = base.get("accuracy"), int(base.get("n") or 0)
    listed = sorted(cands.values(), key=lambda c: c["eval_round"])
    if round_ is not None:
        pick = next((c for c in listed if c["trained_in"] == round_), None)
        if pick is None:
            have = ", ".join(str(c["trained_in"]) for c in listed)
            raise ExportError(f"--round {round_}: run {rid} has no adapter trained in round {round_} among its "
                              f"completed rounds; adapters exist for rounds: {have}")
        how = f"chosen with --round {round_}"
    else:
        pick = max(listed, key=lambda c: (c["accuracy"], c["eval_round"]))  # ties: the later round
        how = "the best held-out accuracy of " + ", ".join(
            f"round {c['trained_in']} {c['accuracy']:.3f}" for c in listed)
    acc = pick["accuracy"]
    beats = baseline is None or acc > baseline
    if baseline is None:
        vs = "no baseline evaluation recorded, so it could not be compared with the base model"
    else:
        se = math.sqrt(_stderr(acc, n) ** 2 + _stderr(baseline, n) ** 2)
        vs = (f"base model {baseline:.3f} on the same {n} held-out problems (difference {acc - baseline:+.3f}, "
              f"standard error about {se:.3f})")
    why = f"round {pick['trained_in']}'s adapter: held-out accuracy {acc:.3f}, {how}; {vs}"
    if not beats:
        who = f"the chosen adapter of run {rid} does not beat" if round_ is not None else \
            f"no adapter of run {rid} beats"
        msg = f"{who} the base model on held-out: {why}. RL from it would start from a policy no better than the base"
        if not allow_no_gain:
            raise ExportError(msg + "; pass --allow-no-gain to export it anyway (--round N picks another adapter)")
        log.warning("!" * 72)
        log.warning("%s. Exporting anyway (--allow-no-gain); bundle.json says beats_base: false", msg)
        log.warning("!" * 72)
    path = pick["path"]
    missing = [f for f in ADAPTER_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the adapter of run {rid} recorded as {pick['recorded']!r} should be at {path}, which lacks "
            f"{', '.join(missing)}; the run directory was moved incompletely or damaged. The export packages only "
            f"files of this run, never another run's")
    partial = status != "completed"
    if partial:
        log.warning("run %s has status %r, not completed: exporting from its %d completed round(s); "
                    "bundle.json says partial: true", rid, status, done)
    log.info("export: %s", why)
    return AdapterChoice(path, pick["trained_in"], pick["eval_round"], acc, baseline, beats, partial, why,
                         [{"round": c["trained_in"], "eval_round": c["eval_round"], "accuracy": c["accuracy"]}
                          for c in listed])
