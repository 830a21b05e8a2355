"""Preflight: what the config cannot say about itself is checked before Ray or vLLM start, and
every problem is reported at once, one line each, naming the field or file and the fix."""
from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from loop.config import ROOT, TINY_MODEL, load_config
from loop.preflight import (
    PreflightError,
    check_adapter,
    check_address,
    check_model,
    check_run_files,
    check_state_dir,
    check_stop_after,
    preflight,
    stage_names,
)
from loop.run.state import RunDir

DEFAULT = ROOT / "configs" / "default.yaml"


def cfg(*overrides: str):
    return load_config(DEFAULT, list(overrides))


def problems_of(fn, *args) -> list[str]:
    out: list[str] = []
    fn(*args, out)
    return out


def test_default_config_passes(tmp_path):
    preflight(cfg(f"run.state_dir={tmp_path}"), stop_after="round-1/train")


def test_every_problem_is_reported_together(tmp_path):
    c = cfg(f"model.path={tmp_path / 'nope'}", "lora.r=32", f"run.state_dir={tmp_path / 'f'}")
    (tmp_path / "f").write_text("a file")
    with pytest.raises(PreflightError) as e:
        preflight(c, stop_after="round-0/smaple")
    p = e.value.problems
    assert len(p) == 4, p
    assert [x.split(":")[0] for x in p] == ["model.path", "lora.r", "--stop-after", "run.state_dir"]
    assert all("\n" not in x for x in p)
    assert "did you mean round-0/sample" in p[2]
    assert str(e.value).startswith("preflight found 4 problems (nothing was started):")


@pytest.mark.parametrize("setup, expect", [
    (lambda d: None, "does not exist"),
    (lambda d: d.mkdir(), "has no config.json"),
    (lambda d: d.write_text("x"), "is a file"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text("{")), "cannot be read as JSON"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text('{"model_type": "qwen3"}'),
                (d / "model.safetensors").write_text("x")), "has no tokenizer"),
    (lambda d: (shutil.copytree(TINY_MODEL, d), (d / "model.safetensors").unlink()), "has no weights"),
])
def test_model_path_problems(tmp_path, setup, expect):
    d = tmp_path / "model"
    setup(d)
    out = problems_of(check_model, cfg(f"model.path={d}"))
    assert out and out[0].startswith("model.path:") and expect in out[0], out


def test_hub_id_is_explained(tmp_path, monkeypatch):
    """A hub id not in the cache, offline: what to do (tests/test_hub_model.py has the rest)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = problems_of(check_model, cfg("model.path=Qwen/Qwen3-4B"))
    assert "not in the local Hugging Face cache" in out[0] and "hf download Qwen/Qwen3-4B" in out[0], out


def test_max_model_len_above_the_models_limit():
    limit = json.loads((TINY_MODEL / "config.json").read_text())["max_position_embeddings"]
    out = problems_of(check_model, cfg(f"model.max_model_len={limit + 1}"))
    assert out and out[0].startswith("model.max_model_len:") and str(limit) in out[0]


def test_broken_tokenizer_is_caught_before_vllm(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(TINY_MODEL, d)
    (d / "tokenizer.json").write_text("{broken")
    with pytest.raises(PreflightError, match="model.path: the tokenizer in .* does not load"):
        preflight(cfg(f"model.path={d}", f"run.state_dir={tmp_path}"))


def test_prompts_longer_than_the_context_name_the_category(tmp_path):
    with pytest.raises(PreflightError) as e:
        preflight(cfg("model.max_model_len=24", "sampling.max_tokens=8", f"run.state_dir={tmp_path}"))
    (line,) = e.value.problems
    assert line.startswith("model.max_model_len:") and "arithmetic/add difficulty" in line
    assert "raise model.max_model_len to at least" in line


def test_long_file_rows_are_named_by_line(tmp_path):
    data = tmp_path / "d.jsonl"
    rows = [{"question": "1+1?", "answer": "2"}, {"question": "x" * 400, "answer": "3"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = load_config(None, [f"run.state_dir={tmp_path}", "model.max_model_len=256"], raw={
        "generators": [{"family": "files", "options": {"path": str(data)}, "categories": {"default": {"budget": 2}}}],
        "verifiers": [{"name": "exact_match"}]})
    with pytest.raises(PreflightError) as e:
        preflight(c)
    assert any(f"{data}:line 2" in p and p.startswith("model.max_model_len") for p in e.value.problems)


@pytest.mark.parametrize("make, expect", [
    (lambda d: None, "does not exist"),
    (lambda d: d.write_text("x"), "is a file"),
    (lambda d: d.mkdir(), "not a PEFT adapter"),
    (lambda d: (d.mkdir(), (d / "adapter_config.json").write_text("{")), "cannot be read as JSON"),
    (lambda d: (d.mkdir(), (d / "adapter_config.json").write_text('{"peft_type": "PREFIX_TUNING"}')),
     "not a LoRA adapter"),
    (lambda d: (d.mkdir(), (d / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}')),
     "no adapter weights"),
    (lambda d: (d.mkdir(), (d / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 64}'),
                (d / "adapter_model.safetensors").write_text("x")), "max_lora_rank"),
])
def test_adapter_problems(tmp_path, make, expect):
    d = tmp_path / "adapter"
    make(d)
    out = problems_of(check_adapter, d, "--adapter", cfg())
    assert len(out) == 1 and out[0].startswith("--adapter:") and expect in out[0], out


def test_stop_after_names():
    names = stage_names(2)
    assert names[:3] == ["setup/heldout", "baseline", "round-0/problems"] and names[-1] == "round-1/plan"
    assert problems_of(check_stop_after, "round-1/plan", 2) == []
    assert "is not a stage" in problems_of(check_stop_after, "round-2/plan", 2)[0]
    assert "did you mean baseline" in problems_of(check_stop_after, "basline", 2)[0]


def test_state_dir_file_and_read_only(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    assert "is a file" in problems_of(check_state_dir, f / "sub")[0]
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        out = problems_of(check_state_dir, ro / "state")
        import os
        if os.geteuid() != 0:  # root writes anywhere
            assert "not writable" in out[0]
    finally:
        ro.chmod(0o700)
    assert problems_of(check_state_dir, tmp_path / "new" / "state") == []


def test_cluster_address_refused_unknown_and_malformed():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        out = problems_of(check_address, f"127.0.0.1:{port}")
    assert out[0].startswith("cluster.address: cannot connect") and "ray start --head" in out[0]
    assert "unknown" in problems_of(check_address, "no-such-host.invalid:6379")[0]
    assert "scheme" in problems_of(check_address, "http://x:1")[0]
    assert "not host:port" in problems_of(check_address, "x:abc")[0]


def test_cluster_address_auto_without_a_cluster(monkeypatch, tmp_path):
    import tempfile

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    assert "'auto' finds no Ray cluster" in problems_of(check_address, "auto")[0]
    monkeypatch.setenv("RAY_ADDRESS", "no-such-host.invalid:6379")
    assert "unknown" in problems_of(check_address, "auto")[0]


def test_cluster_address_timeout_is_short():
    import time

    import grpc  # noqa: F401  (imported outside the timing)

    t = time.time()
    out: list[str] = []
    check_address("10.255.255.1:6379", out, timeout=1.0)  # unroutable (or a proxy that accepts everything)
    assert time.time() - t < 20  # bounded by the timeouts (one per step), not Ray's minutes of retries
    assert out and out[0].startswith("cluster.address:")


def test_cluster_address_that_accepts_but_is_not_ray():
    # A port that accepts connections and never answers (or a proxy that accepts everything)
    # passes a TCP check; the GCS call tells it apart within the timeout.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert "not a Ray head" in problems_of(check_address, f"127.0.0.1:{s.getsockname()[1]}")[0]


def test_resume_checks_the_files_of_finished_stages(tmp_path):
    run = RunDir.create(tmp_path, "t")
    run.manifest["done"] = ["setup/heldout", "baseline", "round-0/problems", "round-0/train"]
    (run.path / "eval").mkdir()
    (run.path / "eval" / "problems.jsonl").write_text("")
    (run.round_dir(0)).mkdir()
    (run.round_dir(0) / "train.json").write_text(json.dumps({"adapter": "round-000/adapter"}))
    out = problems_of(check_run_files, run)
    assert len(out) == 3, out
    assert "baseline/metrics.json: missing, although the manifest says stage baseline is done" in out[0]
    assert "round-000/problems.jsonl: missing" in out[1]
    assert "adapter of stage round-0/train is missing" in out[2]


def test_fast_token_count_matches_transformers():
    """The preflight counts prompt tokens without importing transformers' model stack; the
    counts must be the ones the engine will see."""
    from transformers import AutoTokenizer

    from loop.cluster.prompt_tokens import _FastCounter

    tok = AutoTokenizer.from_pretrained(str(TINY_MODEL))
    fast = _FastCounter(TINY_MODEL)
    for msgs in ([{"role": "user", "content": "Compute 12+34."}],
                 [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2? " * 30}],
                 [{"role": "user", "content": "émoji ✓ and\nnew lines\t"}]):
        want = len(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False))
        assert fast(msgs) == want, msgs


def test_gpu_asked_for_on_a_machine_without_one():
    from loop.preflight import check_devices

    has_gpu = Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))
    out = problems_of(check_devices, cfg("training.device=cuda", "cluster.trainer_num_gpus=1"))
    if has_gpu:
        assert out == []
    else:
        assert out and out[0].startswith("cluster.trainer_num_gpus, training.device: a GPU is asked for")
    assert problems_of(check_devices, cfg()) == []


def test_verifier_rank_above_what_vllm_can_serve():
    from loop.preflight import check_lora

    assert cfg().learned_verifier.rank(cfg().lora)["r"] <= cfg().cluster.sampler.max_lora_rank
    out = problems_of(check_lora, cfg("learned_verifier.lora_r=128", "cluster.sampler.max_lora_rank=64"))
    assert len(out) == 1 and "learned_verifier.lora_r: 128" in out[0] and "max_lora_rank" in out[0]
    assert problems_of(check_lora, cfg("learned_verifier.lora_r=128", "learned_verifier.enabled=false",
                                       "cluster.sampler.max_lora_rank=64")) == []
    # alpha keeps the policy's alpha/r ratio; null = the policy's rank
    assert cfg("learned_verifier.lora_r=64", "lora.r=16", "lora.alpha=32").learned_verifier.rank(
        cfg("lora.r=16", "lora.alpha=32").lora) == {"r": 64, "alpha": 128}
    assert cfg("learned_verifier.lora_r=null").learned_verifier.rank(cfg().lora) == {"r": cfg().lora.r,
                                                                                      "alpha": cfg().lora.alpha}
