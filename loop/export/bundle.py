"""An RL bundle read back, for the RL stage: `load_bundle(dir)` gives the base model, the datasets,
the problems and TRL reward functions built from the bundle's verifiers. Written bundles import it
as `from loop.export import load_bundle`; verl's reward file reaches `reward_verifiers` through
`loop.export.verl`."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loop.records import Problem
from loop.run.state import read_json


@dataclass
class Bundle:
    """An export read back: what an RL trainer needs, with paths resolved against the bundle."""
    dir: Path
    meta: dict[str, Any]

    @property
    def base_model(self) -> str:
        """A local directory (absolute) or a hub id."""
        b = self.meta["base_model"]
        return b["path"] if b.get("hub_id") else str((self.dir / b["path"]).resolve())

    def problems(self) -> dict[str, Problem]:
        return load_problems(self.dir)

    def reward_funcs(self, names: list[str] | None = None,
                     log_to: str | Path | None = None) -> list[Callable[..., list[float | None]]]:
        """TRL reward functions; with `log_to`, each call appends its completions and scores there."""
        funcs = reward_funcs(self.dir, names)
        return [_logged(f, Path(log_to)) for f in funcs] if log_to else funcs

    def dataset(self, split: str = "train"):
        from datasets import load_dataset

        return load_dataset("json", data_files=str(self.dir / self.meta["pool"][split]), split="train")


def _logged(fn: Callable[..., list[float | None]], path: Path) -> Callable[..., list[float | None]]:
    def reward(prompts: list[Any], completions: list[Any], problem_id: list[str], **kw: Any) -> list[float | None]:
        scores = fn(prompts=prompts, completions=completions, problem_id=problem_id, **kw)
        with path.open("a", encoding="utf-8") as f:
            for c, pid, sc in zip(completions, problem_id, scores):
                text = c if isinstance(c, str) else c[-1]["content"]
                f.write(json.dumps({"reward": fn.__name__, "problem_id": pid, "completion": text, "score": sc}) + "\n")
        return scores

    reward.__name__ = fn.__name__
    return reward


def load_bundle(export_dir: str | Path) -> Bundle:
    d = Path(export_dir).resolve()
    if not (d / "bundle.json").is_file():
        raise FileNotFoundError(f"{d} is not a whole export (no bundle.json); run `python launch.py export <run>`")
    return Bundle(d, read_json(d / "bundle.json"))


def load_problems(export_dir: str | Path) -> dict[str, Problem]:
    """problem_id -> Problem, from the bundle's train and val sets."""
    out = {}
    for name in ("train.jsonl", "val.jsonl"):
        with (Path(export_dir) / name).open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    p = Problem.model_validate_json(json.loads(line)["problem"])
                    out[p.id] = p
    return out


def reward_verifiers(export_dir: str | Path, names: list[str] | None = None) -> list:
    """The bundle's verifiers, built (default: its reward verifiers); plug-ins load first."""
    from loop.plugins import load_plugins
    from verifiers.base import VERIFIERS

    bundle = read_json(Path(export_dir) / "bundle.json")
    load_plugins(bundle.get("plugins", []))
    chosen = [v for v in bundle["verifiers"] if (v["name"] in names if names is not None else v["reward"])]
    if names is not None:
        unknown = set(names) - {v["name"] for v in chosen}
        if unknown:
            raise ValueError(f"verifiers {sorted(unknown)} are not in this bundle; "
                             f"it has: {', '.join(v['name'] for v in bundle['verifiers'])}")
    return [VERIFIERS.build(v["name"], v["options"]) for v in chosen]


def reward_funcs(export_dir: str | Path, names: list[str] | None = None) -> list[Callable[..., list[float | None]]]:
    """TRL reward functions of the bundle's verifiers (default: the required ones that need no engine)."""
    from verifiers.base import as_reward_func

    problems = load_problems(export_dir)
    return [as_reward_func(v, problems) for v in reward_verifiers(export_dir, names)]
