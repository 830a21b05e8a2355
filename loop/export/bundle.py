"""An RL bundle read back, for the RL stage: `load_bundle(dir)` gives the base model, the datasets,
the problems and TRL reward functions built from the bundle's verifiers. Written bundles import it
as `from loop.export import load_bundle`; verl's and OpenRLHF's reward files reach
`reward_verifiers` through `loop.export.verl`.

A bundle names its base model so that a copied bundle still finds it: `base/` inside the bundle
(the embedded model), a hub id and revision (resolved through the local Hugging Face cache), or a
local directory (relative to the bundle, else the run's model.path when that is absolute). `BUNDLE_BASE_MODEL=<dir or
hub id>` overrides all three, for a bundle moved away from its base."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loop.records import Problem
from loop.run.state import read_json

BASE_ENV = "BUNDLE_BASE_MODEL"


class BundleError(FileNotFoundError):
    """A directory that is not a whole bundle, or a bundle whose base model cannot be found; the
    message says what to do. A FileNotFoundError, so launch.py prints it as one line."""


@dataclass
class Bundle:
    """An export read back: what an RL trainer needs, with paths resolved against the bundle."""
    dir: Path
    meta: dict[str, Any]

    @property
    def base_model(self) -> str:
        """The base model as a local directory (absolute), found as the module docstring says;
        a BundleError saying what to do when it cannot be found."""
        configured = (self.meta.get("config") or {}).get("model", {}).get("path")
        return resolve_base(self.dir, self.meta["base_model"], configured)

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


def resolve_base(bundle_dir: Path, b: dict[str, Any], configured: str | None = None) -> str:
    """configured: the run's model.path, where a bundle moved without its base may still find it."""
    from loop.models.hub import HubModelError, resolve_model

    override = os.environ.get(BASE_ENV)
    if override:
        if Path(override).is_dir():
            return str(Path(override).resolve())
        try:
            return resolve_model(override, why=f"{BASE_ENV}={override}").path
        except HubModelError as e:
            raise BundleError(str(e)) from None
    hub = b.get("hub")
    if hub:  # format 3: {"id", "revision"}
        ref = hub["id"] + (f"@{hub['revision']}" if hub.get("revision") else "")
        try:
            return resolve_model(ref, why=f"the base model of the bundle {bundle_dir}").path
        except HubModelError as e:
            raise BundleError(f"{e}; or set {BASE_ENV}=<a directory with the same weights>") from None
    if b.get("hub_id"):  # format 2 named a hub model by its id in `path`
        return b["path"]
    here = (bundle_dir / b["path"]).resolve()
    if here.is_dir():
        return str(here)
    source = configured if configured and Path(configured).is_absolute() else None
    if source and Path(source).is_dir():  # the bundle moved; its base is still where the run had it
        return str(Path(source).resolve())
    if b.get("copied"):
        raise BundleError(f"the bundle {bundle_dir} ships its base model in base/, but {here} is missing: the "
                          f"bundle was copied incompletely; copy it again whole (cp -r), or export the run again")
    raise BundleError(
        f"the base model of the bundle {bundle_dir} is not there: {b['path']!r} (relative to the bundle) is "
        f"{here}" + (f", and {source} (the run's model.path) is gone" if source else "") +
        f". The bundle was moved without its base. Either copy the base model to {here}, or set "
        f"{BASE_ENV}=<the base model's directory or hub id> (its weights must be the ones trained on: "
        f"sha256 {b.get('weights_sha256', '?')[:12]}... of the weight files)")


def load_bundle(export_dir: str | Path) -> Bundle:
    d = Path(export_dir).expanduser().resolve()
    if not d.is_dir():
        raise BundleError(f"{d} does not exist; give the directory `python launch.py export <run>` printed "
                          f"(<run>/export/)")
    if not (d / "bundle.json").is_file():
        if (d / "export" / "bundle.json").is_file():
            raise BundleError(f"{d} is a run directory, not its RL bundle; give {d / 'export'}")
        if (d / "manifest.json").is_file():
            raise BundleError(f"{d} is a run directory that has no RL bundle yet; run "
                              f"`python launch.py export {d}` first")
        if (d / "adapter_config.json").is_file():
            raise BundleError(f"{d} has an adapter but no bundle.json: a round's adapter or a half-copied bundle, "
                              f"not an RL bundle; run `python launch.py export <run>` and give its export/ directory")
        raise BundleError(f"{d} is not an RL bundle (no bundle.json); run `python launch.py export <run>` and "
                          f"give the directory it prints")
    try:
        meta = read_json(d / "bundle.json")
    except (OSError, ValueError) as e:
        raise BundleError(f"{d / 'bundle.json'} is damaged ({e}); export the run again") from e
    return Bundle(d, meta)


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

    bundle = load_bundle(export_dir).meta
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


def main(argv: list[str] | None = None) -> int:
    """`python -m loop.export base-model <bundle>`: print the base model's local directory (for
    shell commands: vllm serve, verl, OpenRLHF); a message and exit status 2 when it is missing."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m loop.export", description=main.__doc__)
    ap.add_argument("what", choices=["base-model"])
    ap.add_argument("bundle", help="the bundle directory (what `launch.py export` printed)")
    args = ap.parse_args(argv)
    try:
        print(load_bundle(args.bundle).base_model)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
