"""Package a run's adapter as the starting point of an RL stage (GRPO / PPO), in <run>/export/.

    export/adapter_model.safetensors, adapter_config.json, tokenizer files   (PEFT layout)
    export/problems.jsonl   the train problems of every round: a dataset with a problem_id column
    export/README.md        how to load it with transformers + peft and train it with TRL
    export/bundle.json      base model, adapter round, held-out accuracy, config, reward verifiers (written last)

The verifiers of the run become the RL reward functions through `verifiers.base.as_reward_func`;
`reward_funcs(export_dir)` rebuilds them from bundle.json.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from loop.export_readme import render_readme
from loop.records import Problem
from loop.state import RunDir, atomic_write_text, read_json, read_jsonl, write_json, write_jsonl

log = logging.getLogger("loop")

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model")


@dataclass(frozen=True)
class AdapterChoice:
    path: Path            # the adapter directory
    round: int | None     # the round that trained it
    eval_round: int       # the last completed round: its held-out metrics evaluated this adapter
    partial: bool         # the run is not completed


def _round_of(path: Path) -> int | None:
    m = re.fullmatch(r"round-(\d+)", path.parent.name)
    return int(m.group(1)) if m else None


def _resolve(run: RunDir, adapter: str) -> Path:
    """Adapter paths are recorded as given at run time (often relative to the cwd then)."""
    p = Path(adapter)
    if p.is_absolute() or p.exists():
        return p
    return run.path / p.parent.name / p.name


def choose_adapter(run: RunDir) -> AdapterChoice:
    """The completed run's final adapter, or the last completed round's (partial)."""
    m, rid = run.manifest, run.path.name
    status, done = m.get("status"), int(m.get("rounds_completed", 0))
    if done == 0:
        raise FileNotFoundError(
            f"run {rid} has no completed round (status {status!r}), so there is no adapter to export; "
            f"continue it with `python launch.py resume {run.path}`")
    partial = status != "completed"
    if partial:
        metrics = run.round_dir(done - 1) / "metrics.json"
        adapter = read_json(metrics).get("adapter") if metrics.exists() else None
    else:
        adapter = m.get("final_adapter")
    if not adapter:
        raise FileNotFoundError(
            f"run {rid} has no trained adapter: no round accepted any chain, so every round skipped training "
            f"(see {run.path}/round-*/train.json). Run more rounds (`python launch.py resume {run.path} "
            f"--set loop.rounds=N`) or start a new run with easier difficulties or more samples (sampling.n)")
    path = _resolve(run, adapter)
    missing = [f for f in ADAPTER_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"adapter directory {path} of run {rid} lacks {', '.join(missing)}; "
                                "the run directory was moved or damaged")
    if partial:
        log.warning("run %s has status %r, not completed: exporting the adapter of its last completed round (%d); "
                    "bundle.json says partial: true", rid, status, done - 1)
    return AdapterChoice(path, _round_of(path), done - 1, partial)


def _atomic_copy(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as f:
            shutil.copyfileobj(f, out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # a bundle is meant to be shared (mkstemp makes 0600)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _heldout(path: Path, nested: bool) -> dict[str, Any] | None:
    if not path.exists():
        return None
    m = read_json(path)
    m = m.get("heldout", {}) if nested else m
    return {"accuracy": m.get("accuracy"), "by_category": m.get("by_category", {})}


def train_problems(run: RunDir) -> list[dict[str, Any]]:
    """Every round's train problems, once each: the RL dataset rows."""
    rows: dict[str, dict[str, Any]] = {}
    for rd in sorted(run.path.glob("round-[0-9]*")):
        if not (rd / "problems.jsonl").exists():
            continue
        for p in read_jsonl(rd / "problems.jsonl", Problem):
            if p.id not in rows:
                # Flat, same-typed columns so `datasets` loads any family; the whole
                # problem rides along as a JSON string for the reward functions.
                rows[p.id] = {"problem_id": p.id, "prompt": [m.model_dump() for m in p.prompt],
                              "answer": p.reference.answer, "family": p.family, "category": p.category,
                              "difficulty": p.difficulty, "problem": p.model_dump_json()}
    return list(rows.values())


def _chat_template(export: Path, base: Path) -> str | None:
    for d in (export, base):
        if (d / "chat_template.jinja").is_file():
            return (d / "chat_template.jinja").read_text(encoding="utf-8")
        if (d / "tokenizer_config.json").is_file():
            tpl = read_json(d / "tokenizer_config.json").get("chat_template")
            if tpl:
                return tpl
    return None


def _verifiers(cfg) -> list[dict[str, Any]]:
    import verifiers  # noqa: F401  (registers the built-ins)
    from verifiers.base import VERIFIERS

    out = []
    for v in cfg.verifiers:
        cls = VERIFIERS.get(v.name)
        out.append({"name": v.name, "options": VERIFIERS.options(v.name, v.options).model_dump(mode="json"),
                    "required": v.required, "needs_engine": bool(cls.needs_engine),
                    "reward": v.required and not cls.needs_engine})
    return out


def export_run(run: RunDir) -> Path:
    """Write <run>/export/ (see the module docstring) and return its path."""
    from loop.config import load_config

    if not (run.path / "config.yaml").exists():
        raise FileNotFoundError(f"{run.path}/config.yaml is missing; cannot tell the base model and verifiers")
    raw = yaml.safe_load((run.path / "config.yaml").read_text(encoding="utf-8"))
    cfg = load_config(None, raw=json.loads(json.dumps(raw)))  # a copy: validation must not touch `raw`
    choice = choose_adapter(run)
    out = run.path / "export"
    out.mkdir(parents=True, exist_ok=True)
    base = Path(cfg.model.resolved_path())
    files = []
    for name in ADAPTER_FILES + TOKENIZER_FILES:
        src = choice.path / name
        if not src.is_file() and name in TOKENIZER_FILES and base.is_dir():
            src = base / name  # an adapter saved without its tokenizer: the base model's is the same
        if src.is_file():
            _atomic_copy(src, out / name)
            files.append(name)
    problems = train_problems(run)
    write_jsonl(out / "problems.jsonl", problems)
    bundle = {
        "run_id": run.manifest.get("run_id", run.path.name),
        "partial": choice.partial,
        "status": run.manifest.get("status"),
        "base_model": str(base),
        "model": cfg.model.model_dump(mode="json"),
        "adapter_round": choice.round,
        "adapter_source": str(choice.path),
        "heldout": {"baseline": _heldout(run.path / "baseline" / "metrics.json", nested=False),
                    "final": _heldout(run.round_dir(choice.eval_round) / "metrics.json", nested=True),
                    "final_round": choice.eval_round},
        "verifiers": _verifiers(cfg),
        "sampling": cfg.sampling.model_dump(mode="json"),
        "chat_template": _chat_template(out, base),
        "quantization": cfg.quantization.model_dump(mode="json"),
        "lora": cfg.lora.model_dump(mode="json"),
        "problems": {"file": "problems.jsonl", "count": len(problems)},
        "files": files,
        "config": raw,
    }
    atomic_write_text(out / "README.md", render_readme(bundle, out))
    write_json(out / "bundle.json", bundle)  # last: its presence means the export is whole
    for name in ("problems.jsonl", "README.md", "bundle.json"):
        os.chmod(out / name, 0o644)
    log.info("exported %s adapter of round %s to %s", "partial" if choice.partial else "final", choice.round, out)
    return out


# ---- for the RL stage ---------------------------------------------------------------------

def load_problems(export_dir: str | Path) -> dict[str, Problem]:
    """problem_id -> Problem, from export/problems.jsonl."""
    out = {}
    with (Path(export_dir) / "problems.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                p = Problem.model_validate_json(json.loads(line)["problem"])
                out[p.id] = p
    return out


def reward_funcs(export_dir: str | Path, names: list[str] | None = None) -> list[Callable[..., list[float | None]]]:
    """TRL reward functions of the bundle's verifiers (default: the required ones that need no engine)."""
    import verifiers  # noqa: F401
    from verifiers.base import VERIFIERS, as_reward_func

    bundle = read_json(Path(export_dir) / "bundle.json")
    chosen = [v for v in bundle["verifiers"] if (v["name"] in names if names is not None else v["reward"])]
    if names is not None:
        unknown = set(names) - {v["name"] for v in chosen}
        if unknown:
            raise ValueError(f"verifiers {sorted(unknown)} are not in this bundle; "
                             f"it has: {', '.join(v['name'] for v in bundle['verifiers'])}")
    problems = load_problems(export_dir)
    return [as_reward_func(VERIFIERS.build(v["name"], v["options"]), problems) for v in chosen]
