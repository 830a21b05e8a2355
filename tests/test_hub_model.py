"""`model.path: org/name[@revision]`: a hub id resolved through huggingface_hub from a temporary
Hugging Face cache holding the tiny model, offline (HF_HUB_OFFLINE=1). Runs and bundles record the
id and commit, never the cache path; a moved bundle finds the base again by id in another cache.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loop.config import ROOT, load_config
from loop.export import export_run, load_bundle
from loop.export.bundle import BundleError
from loop.models.hub import HubModelError, is_hub_id, resolve_model
from loop.run.state import RunDir, read_json
from tests.test_export import make_run

TINY = ROOT / "loop" / "assets" / "tiny-qwen3"
REPO = "tiny-org/tiny-qwen3"


def put_in_cache(cache: Path, repo: str = REPO, src: Path = TINY, tag: str = "main") -> str:
    """The tiny model in huggingface_hub's cache layout (models--org--name/snapshots/<commit>, refs/<tag>)."""
    commit = hashlib.sha1(f"{repo}:{src}:{tag}".encode()).hexdigest()
    d = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(src, d / "snapshots" / commit)
    (d / "refs").mkdir(parents=True, exist_ok=True)
    (d / "refs" / tag).write_text(commit)
    return commit


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_ids_and_local_paths_are_told_apart(tmp_path):
    assert is_hub_id("Qwen/Qwen3-4B") and is_hub_id("Qwen/Qwen3-4B@main") and is_hub_id("org/name@0123abc")
    for not_hub in ("builtin:tiny-qwen3", "/abs/model", "./rel/model", "~/model", "a/b/c", "name"):
        assert not is_hub_id(not_hub), not_hub
    (tmp_path / "org" / "name").mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert not is_hub_id("org/name")  # an existing local directory wins
    finally:
        os.chdir(cwd)


def test_resolves_from_the_cache_offline_and_names_what_is_missing(hf_cache):
    commit = put_in_cache(hf_cache)
    hub = resolve_model(REPO)
    assert (hub.id, hub.revision, hub.how) == (REPO, commit, "cache")
    assert Path(hub.path) == hf_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / commit
    assert resolve_model(f"{REPO}@{commit}").path == hub.path
    with pytest.raises(HubModelError) as e:
        resolve_model("tiny-org/tiny-qwen4")  # mistyped
    msg = str(e.value)
    assert "not in the local Hugging Face cache" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "hf download tiny-org/tiny-qwen4" in msg and f"The cache holds: {REPO}" in msg
    with pytest.raises(HubModelError, match="--revision v2"):
        resolve_model(f"{REPO}@v2")


def test_preflight_takes_a_cached_hub_id_and_says_what_to_do_without_it(hf_cache, caplog):
    import logging

    from loop.preflight import check_model

    commit = put_in_cache(hf_cache)
    problems: list[str] = []
    with caplog.at_level(logging.INFO, logger="loop"):
        assert check_model(load_config(ROOT / "configs" / "default.yaml", [f"model.path={REPO}"]), problems)
    assert problems == []
    assert any(f"is commit {commit[:12]}, found in the local Hugging Face cache" in r.getMessage()
               for r in caplog.records)
    problems = []
    assert not check_model(load_config(ROOT / "configs" / "default.yaml", ["model.path=tiny-org/missing"]), problems)
    assert len(problems) == 1 and problems[0].startswith("model.path: tiny-org/missing is not in the local Hugging")


def test_run_records_and_bundle_name_the_id_and_commit_never_the_cache(hf_cache, tmp_path, monkeypatch):
    from loop.run import base_record

    commit = put_in_cache(hf_cache)
    run = make_run(tmp_path / "a", accuracies=[0.4, 0.6], trained=[0, 1], overrides=(f"model.path={REPO}",))
    cfg = load_config(None, raw=run.config_raw())
    recorded = base_record.record(run, cfg)
    assert recorded["hub"] == {"id": REPO, "revision": commit} and "resolved" not in recorded
    assert str(hf_cache) not in (run.path / "base.json").read_text()

    out = export_run(RunDir(run.path))
    b = read_json(out / "bundle.json")
    assert b["base_model"]["hub"] == {"id": REPO, "revision": commit} and b["base_model"]["path"] == REPO
    assert b["base_model"]["weights_sha256"] == recorded["weights_sha256"]
    assert not (out / "base").exists()
    for name in ("bundle.json", "README.md", "adapter_config.json"):
        assert str(hf_cache) not in (out / name).read_text(), name
    assert read_json(out / "adapter_config.json")["base_model_name_or_path"] == REPO
    assert f"the hub model `{REPO}` at commit `{commit}`" in (out / "README.md").read_text()
    assert load_bundle(out).base_model == resolve_model(REPO).path

    # Another machine: the bundle copied, the model in a different cache; found there by id and commit.
    other = tmp_path / "other-cache"
    put_in_cache(other)
    moved = tmp_path / "b" / "bundle"
    shutil.copytree(out, moved)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(other))
    assert load_bundle(moved).base_model.startswith(str(other))
    # ... and one without it, offline: what to do
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(BundleError, match=rf"{REPO}@{commit} is not in the local Hugging Face cache.*hf download"):
        _ = load_bundle(moved).base_model


# ---- integration: a real run on a hub id, offline --------------------------------------------

@pytest.mark.integration
def test_a_run_on_a_hub_id_runs_resumes_and_exports_offline(tmp_path):
    from tests.conftest import TINY_RUN, write_config

    cache = tmp_path / "hf-cache"
    commit = put_in_cache(cache)
    cfg = copy.deepcopy(TINY_RUN)
    cfg["run"]["state_dir"] = str(tmp_path / "state")
    cfg["model"]["path"] = REPO
    env = os.environ | {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}

    def launch(*args: str) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=1800)
        assert p.returncode == 0, f"launch.py {args} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
        return p

    sets = ["--set", "loop.rounds=1", "--set", "generators.0.categories.add.budget=10",
            "--set", "generators.0.categories.sub.budget=6"]
    launch("run", "-c", str(write_config(tmp_path / "cfg.yaml", cfg)), *sets, "--stop-after", "baseline")
    (run,) = list((tmp_path / "state" / "runs").iterdir())
    assert read_json(run / "base.json")["hub"] == {"id": REPO, "revision": commit}
    launch("resume", str(run))
    launch("export", str(run), "--allow-no-gain", "--samples", "8")
    b = read_json(run / "export" / "bundle.json")
    assert b["base_model"]["hub"] == {"id": REPO, "revision": commit}
    for p in (run / "export").iterdir():
        if p.suffix in (".json", ".md", ".yaml"):
            assert str(cache) not in p.read_text(), p
    assert str(cache) not in json.dumps(read_json(run / "manifest.json"))


@pytest.mark.parametrize("error, says", [
    ("RepositoryNotFoundError", r"not on the hub, or is private: check the spelling.*hf auth login"),
    ("GatedRepoError", r"is gated on the hub; accept its terms"),
    ("RevisionNotFoundError", r"has no revision 'v9'"),
    ("ConnectError", r"could not download .*check the network"),
])
def test_online_failures_say_what_to_do(hf_cache, monkeypatch, error, says):
    """The messages for what the hub answers (no network here: huggingface_hub's download raises
    the hub's own exception types, made as it makes them, in place of the HTTP call)."""
    import httpx
    from huggingface_hub import constants, errors

    import loop.models.hub as hub_mod

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    request = httpx.Request("GET", "https://huggingface.co/api/models/tiny-org/typo")
    response = httpx.Response(404, request=request)

    def download(repo, revision=None, cache_dir=None, local_files_only=False):
        if local_files_only:
            raise errors.LocalEntryNotFoundError("not cached")
        if error == "ConnectError":
            raise httpx.ConnectError("no route", request=request)
        raise getattr(errors, error)("the hub said no", response=response)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    with pytest.raises(HubModelError, match=says):
        hub_mod.resolve_model("tiny-org/typo@v9")
