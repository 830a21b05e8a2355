"""Package a run's best adapter as the starting point of an RL stage, in <run>/export/.

    adapter_model.safetensors, adapter_config.json   the adapter (PEFT layout; vLLM LoRARequest)
    tokenizer files, chat_template.jinja             the tokenizer it was trained with
    base/                                            the base model, when it is the embedded tiny one
    train.jsonl, val.jsonl                           RL prompt pool (train split, 0 < pass rate < 1) and
                                                     validation (held-out), with a problem_id column (TRL)
    train.parquet, val.parquet, reward_verl.py       the same in verl's layout, and its compute_score
    reward_openrlhf.py                               OpenRLHF's reward_func(queries, prompts, labels)
    pass_rates.jsonl                                 every train problem's measured pass rate
    train_grpo.py, README.md                         a GRPO recipe (TRL) that runs as written
    bundle.json                                      what was chosen and why, base model, sampling,
                                                     quantization, chat template, reward specs (last)

Every path in bundle.json is relative to the bundle (a hub id stays a hub id, with its commit);
scripts find their files from `__file__`, and the README's commands name the bundle as `$BUNDLE`,
so a copied bundle works wherever it lands. The bundle is built in a temporary directory and
swapped in whole, so `export/` is never half-written.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from loop.export.choice import ADAPTER_FILES, AdapterChoice, ExportError, choose_adapter
from loop.export.openrlhf import OPENRLHF_FILE, OPENRLHF_SOURCE
from loop.export.pool import heldout_problems, pool_rows, problem_row, train_problems
from loop.export.pool import pass_rates as measure_pass_rates
from loop.export.readme import GRPO_SCRIPT, render_readme
from loop.export.verifier import README as VERIFIER_README
from loop.export.verifier import write_verifier
from loop.export.verl import REWARD_FILE, REWARD_SOURCE, write_parquet
from loop.run import base_record
from loop.run.base_record import weights_digest
from loop.run.state import RunDir, atomic_write_text, read_json, write_json, write_jsonl

log = logging.getLogger("loop")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model")
BUILTIN_PREFIX = "builtin:"


def _copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o644)  # a bundle is meant to be shared


def _heldout(path: Path, nested: bool) -> dict[str, Any] | None:
    if not path.exists():
        return None
    m = read_json(path)
    m = m.get("heldout", {}) if nested else m
    return {"accuracy": m.get("accuracy"), "by_category": m.get("by_category", {})}


def _chat_template(d: Path) -> str | None:
    if (d / "chat_template.jinja").is_file():
        return (d / "chat_template.jinja").read_text(encoding="utf-8")
    if (d / "tokenizer_config.json").is_file():
        return read_json(d / "tokenizer_config.json").get("chat_template")
    return None


def _saved_dtype(d: Path | None) -> str | None:
    if d is None or not (d / "config.json").is_file():
        return None
    c = read_json(d / "config.json")
    return c.get("dtype") or c.get("torch_dtype") or "float32"


def _verifiers(cfg) -> list[dict[str, Any]]:
    """The run's verifiers as reward specs: a verifier is a reward when it is required and
    needs no model (the LLM judge needs the sampler, which an RL trainer does not have)."""
    from verifiers.base import VERIFIERS

    out = []
    for v in cfg.verifiers:
        cls = VERIFIERS.get(v.name)
        out.append({"name": v.name, "options": VERIFIERS.options(v.name, v.options).model_dump(mode="json"),
                    "required": v.required, "needs_engine": bool(cls.needs_engine),
                    "reward": v.required and not cls.needs_engine, "source": VERIFIERS.source(v.name)})
    return out


def _base_model(cfg, out: Path, final: Path, digest: str | None) -> tuple[dict[str, Any], Path | None]:
    """How the bundle names its base (loop.export.bundle.resolve_base reads it back): copied in (the
    embedded model), a hub id and the commit the run used (a hub model, never its cache path), or a
    local directory (relative to the bundle).
    Returns (record, directory to read files from). digest: the base's weights digest when already
    computed (the check against the run's record)."""
    from loop.models.hub import is_hub_id, resolve_model

    given = cfg.model.path
    if given.startswith(BUILTIN_PREFIX):
        src = Path(cfg.model.resolved_path())
        # The embedded model is whatever this checkout ships now; its digest says which one was packaged.
        shutil.copytree(src, out / "base", copy_function=_copy)
        return {"path": "base", "configured": given, "copied": True,
                "weights_sha256": digest or weights_digest(src)}, src
    if is_hub_id(given):
        hub = resolve_model(given)
        return {"path": hub.id, "configured": given, "copied": False, "hub": {"id": hub.id, "revision": hub.revision},
                "weights_sha256": digest or weights_digest(Path(hub.path))}, Path(hub.path)
    src = Path(cfg.model.resolved_path()).expanduser()
    if not src.is_dir():
        raise ExportError(f"model.path {given!r} of the run is not a directory here; put the base model back there "
                          f"(or pass the run's config a hub id) and export again")
    # Relative to the bundle; a moved bundle falls back on the run's config (loop.export.bundle.resolve_base).
    return {"path": os.path.relpath(src.resolve(), final.resolve()), "copied": False,
            "weights_sha256": digest or weights_digest(src)}, src


def _write_adapter(choice: AdapterChoice, base_dir: Path | None, base_ref: str, out: Path) -> list[str]:
    files = []
    for name in ADAPTER_FILES + TOKENIZER_FILES:
        src = choice.path / name
        if not src.is_file() and name in TOKENIZER_FILES and base_dir is not None:
            src = base_dir / name  # an adapter saved without its tokenizer: the base model's is the same
        if src.is_file():
            _copy(src, out / name)
            files.append(name)
    cfg_path = out / "adapter_config.json"
    adapter_cfg = read_json(cfg_path)
    # The run's absolute base path means nothing elsewhere; name the base as bundle.json does.
    adapter_cfg["base_model_name_or_path"] = base_ref
    write_json(cfg_path, adapter_cfg)
    if base_dir is not None and (base_dir / "config.json").is_file():
        # Tokenizer loaders (vLLM's among them) read config.json next to the tokenizer for its
        # model_type and log an ERROR without it; the base's config is the right one.
        _copy(base_dir / "config.json", out / "config.json")
        files.append("config.json")
    return files


def export_run(run: RunDir, round_: int | None = None, allow_no_gain: bool = False, pass_rates: str = "auto",
               samples: int | None = None) -> Path:
    """Write <run>/export/ (see the module docstring) and return its path.

    round_: export this round's adapter instead of the best; allow_no_gain: export even if no
    adapter beats the base; pass_rates: auto | measure | samples (loop.export.pool); samples:
    completions per problem when measuring (default sampling.n)."""
    from loop.config import load_config
    raw = run.config_raw()  # RunStateError naming the file when it is missing or damaged
    cfg = load_config(None, raw=json.loads(json.dumps(raw)))  # a copy: validation must not touch `raw`
    choice = choose_adapter(run, round_, allow_no_gain)
    base_now = base_record.check(run, cfg, "exporting it")  # before anything samples with the base + adapter
    problems = train_problems(run, cfg)
    heldout = heldout_problems(run)
    rates = measure_pass_rates(run, cfg, choice.path, problems, pass_rates, samples)
    pool, left_out = pool_rows(problems, rates)
    val = [problem_row(p, "val") for p in heldout]
    counts = ("pass", "fail", "error", "abstain")
    measured = [{"problem_id": pid, "pass_rate": rates.rate(pid), **{k: c[k] for k in counts}}
                for pid, c in rates.counts.items()]

    final = (run.path / "export").resolve()  # printed to the user: absolute, whatever run.state_dir is
    out = Path(tempfile.mkdtemp(dir=run.path, prefix=".export-"))
    try:
        write_jsonl(out / "pass_rates.jsonl", measured)
        if not pool:
            keep = run.path / "export-pass-rates.jsonl"
            shutil.copyfile(out / "pass_rates.jsonl", keep)
            raise ExportError(
                f"no train problem of run {run.path.name} has a pass rate strictly between 0 and 1 under round "
                f"{choice.round}'s adapter ({', '.join(f'{v} {k}' for k, v in left_out.items())}); an RL group "
                f"learns nothing from those. Pass rates from {rates.detail}; saved to {keep}. Try --samples N "
                f"(more completions per problem) or --pass-rates measure")
        base, base_dir = _base_model(cfg, out, final, base_now and base_now["weights_sha256"])
        files = _write_adapter(choice, base_dir, base["path"], out)
        try:  # the learned verifier's adapter and its reward function (loop/export/verifier.py)
            learned = write_verifier(run, cfg, out, base_dir)
        except ValueError as e:
            raise ExportError(str(e)) from None
        write_jsonl(out / "train.jsonl", pool)
        write_jsonl(out / "val.jsonl", val)
        write_parquet(out / "train.parquet", pool)
        write_parquet(out / "val.parquet", val)
        atomic_write_text(out / REWARD_FILE, REWARD_SOURCE)
        atomic_write_text(out / OPENRLHF_FILE, OPENRLHF_SOURCE)
        atomic_write_text(out / "train_grpo.py", GRPO_SCRIPT)
        bundle = {
            "format": 3,
            "run_id": run.manifest.get("run_id", run.path.name),
            "partial": choice.partial,
            "status": run.manifest.get("status"),
            "base_model": base,
            "model": cfg.model.model_dump(mode="json", exclude={"path"}),  # the path is base_model's
            "adapter": {"path": ".", "round": choice.round, "why": choice.why, "beats_base": choice.beats_base,
                        "candidates": choice.candidates},
            "heldout": {"baseline": _heldout(run.path / "baseline" / "metrics.json", nested=False),
                        "final": _heldout(run.round_dir(choice.eval_round) / "metrics.json", nested=True),
                        "final_round": choice.eval_round},
            "verifiers": _verifiers(cfg),
            "plugins": cfg.plugins,
            "sampling": cfg.sampling.model_dump(mode="json"),
            "chat_template": _chat_template(out),
            "quantization": cfg.quantization.model_dump(mode="json"),
            "lora": cfg.lora.model_dump(mode="json"),
            "pool": {"train": "train.jsonl", "val": "val.jsonl", "train_count": len(pool), "val_count": len(val),
                     "pass_rates": {"file": "pass_rates.jsonl", "source": rates.source, "detail": rates.detail,
                                    "left_out": left_out}},
            "verl": {"train": "train.parquet", "val": "val.parquet", "reward": {"path": REWARD_FILE,
                                                                                 "name": "compute_score"}},
            "trl": {"script": "train_grpo.py"},
            "learned_verifier": learned,
            "openrlhf": {"prompts": "train.jsonl", "input_key": "prompt", "label_key": "problem_id",
                         "reward": OPENRLHF_FILE},
            "files": files,
            "config": raw,
        }
        example = (pool or val)[0]["prompt"]
        atomic_write_text(out / "README.md", render_readme({**bundle, "example_prompt": example,
                                                            "base_dtype": _saved_dtype(base_dir)})
                          + (VERIFIER_README.format(**learned) if learned else ""))
        write_json(out / "bundle.json", bundle)  # last: its presence means the bundle is whole
        for p in out.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(out, 0o755)
        old = run.path / ".export-old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        out.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    log.info("exported round %s's adapter to %s: %d RL prompts (pass rates %s), %d validation problems",
             choice.round, final, len(pool), rates.source, len(val))
    return final
