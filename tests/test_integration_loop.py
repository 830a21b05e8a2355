"""Real rounds end to end (vLLM sampler actor, Ray verification tasks, bitsandbytes QLoRA via
TRL, LLM judge through vLLM), and resume after a clean stop and after kill -9. The run is watched as a
user would: TensorBoard and W&B (offline) through run.report_to, per-step train logs, a quiet console."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_config

pytestmark = pytest.mark.integration
PY = sys.executable


def launch(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([PY, "launch.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=900, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"launch.py {' '.join(args)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


def run_dir(state: Path) -> Path:
    (d,) = list((state / "runs").iterdir())
    return d


def manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def files_of(d: Path) -> set[str]:
    skip = ("_trainer", "report", "export", "tensorboard", "logs")  # the last two: names with a time or a pid
    return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and not any(s in p.parts for s in skip)
            and not p.name.startswith(".")}


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, request):
    import copy

    from tests.conftest import TINY_RUN

    tmp = tmp_path_factory.mktemp("full")
    cfg = copy.deepcopy(TINY_RUN)
    cfg["run"]["state_dir"] = str(tmp / "state")
    cfg["verifiers"].append({"name": "llm_judge", "required": False, "options": {"max_tokens": 16, "batch_size": 64}})
    cfg["sampling"]["rationalize"] = True  # STaR: failed problems are resampled with the answer as a hint
    cfg["run"]["report_to"] = ["tensorboard", "wandb"]
    base = ROOT / "loop" / "assets" / "tiny-qwen3" / "model.safetensors"
    before = sha(base)
    (tmp / "wandb").mkdir()
    p = launch("run", "-c", str(write_config(tmp / "cfg.yaml", cfg)),
               env={**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp / "wandb"), "WANDB_SILENT": "true"})
    (tmp / "console.txt").write_text(p.stdout + p.stderr)  # what the user saw (test_watched reads it)
    return run_dir(tmp / "state"), before


def test_two_real_rounds(full_run):
    d, base_sha_before = full_run
    m = manifest(d)
    assert m["status"] == "completed" and m["rounds_completed"] == 2
    assert (d / "config.yaml").exists() and (d / "eval" / "problems.jsonl").exists()
    for r in range(2):
        rd = d / f"round-{r:03d}"
        metrics = json.loads((rd / "metrics.json").read_text())
        for key in ("heldout", "samples", "accepted", "tokens_sampled", "stage_seconds", "adapter"):
            assert key in metrics, key
        assert set(metrics["stage_seconds"]) >= {"problems", "sample", "verify", "analyze", "accept", "train",
                                                 "evaluate", "plan"}
        assert 0.0 <= metrics["heldout"]["accuracy"] <= 1.0
        assert set(metrics["heldout"]["by_category"]) == {"arithmetic/add", "arithmetic/sub"}
        samples = [json.loads(x) for x in (rd / "samples.jsonl").read_text().splitlines()]
        plain = [s for s in samples if not s["hinted"]]
        assert len(plain) == 20 * 4 and metrics["samples"] == len(samples) and metrics["tokens_sampled"] > 0
        # Rationalized samples exist only for problems none of whose plain samples passed.
        verdicts = [json.loads(x) for x in (rd / "verdicts.jsonl").read_text().splitlines()]
        passed = {v["sample_id"] for v in verdicts if v["verifier"] == "exact_match" and v["outcome"] == "pass"}
        solved = {s["problem_id"] for s in plain if s["id"] in passed}
        assert not solved & {s["problem_id"] for s in samples if s["hinted"]}
        assert metrics["accepted"] > 0, "the tiny model solves 2-digit addition; some chains must be accepted"
        assert (rd / "adapter" / "adapter_model.safetensors").exists()
        assert (rd / "adapter" / "adapter_config.json").exists()
        assert (rd / "plan.json").exists() and (rd / "analysis.json").exists()
    # The adapter changed: LoRA B starts at zero, training moves it.
    from safetensors.torch import load_file

    weights = load_file(str(d / "round-001" / "adapter" / "adapter_model.safetensors"))
    b = [v for k, v in weights.items() if "lora_B" in k]
    assert b and max(float(t.abs().max()) for t in b) > 0
    # ...and the base model did not.
    assert sha(ROOT / "loop" / "assets" / "tiny-qwen3" / "model.safetensors") == base_sha_before


def _scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def test_watched(full_run):
    """Per-step train logs, TensorBoard (TRL's steps, the loop's rounds) and W&B offline, all read back;
    the console shows the loop and the workers' output is in the run's files."""
    from tests.wandb_records import history, run_id

    d, _ = full_run
    tmp = d.parents[2]
    steps = 0
    for r in range(2):
        rd = d / f"round-{r:03d}"
        rows = [json.loads(x) for x in (rd / "train_log.jsonl").read_text().splitlines()]
        train = json.loads((rd / "train.json").read_text())
        assert "log" not in train and train["steps"] > 0
        assert train["control_token_chains"] == []  # the chains it trained on spell no control token
        assert [x["step"] for x in rows] == list(range(1, train["steps"] + 1))  # every optimizer step
        assert all(x["loss"] > 0 and x["learning_rate"] > 0 and x["grad_norm"] >= 0 for x in rows)
        assert [x["tokens"] for x in rows] == sorted(x["tokens"] for x in rows) and rows[0]["tokens"] > 0
        assert train["first_loss"] == rows[0]["loss"] and train["last_loss"] == rows[-1]["loss"]
        tb = _scalars(d / "tensorboard" / f"round-{r}" / "train")  # TRL's TensorBoardCallback, in the trainer
        assert [s for s, _ in tb["train/loss"]] == [x["step"] for x in rows]
        assert [v for _, v in tb["train/loss"]] == pytest.approx([x["loss"] for x in rows], rel=1e-5)
        steps += len(rows)
    metrics = [json.loads((d / f"round-{r:03d}" / "metrics.json").read_text()) for r in range(2)]
    loop = _scalars(d / "tensorboard" / "loop")
    assert loop["heldout/accuracy"] == [(r, pytest.approx(m["heldout"]["accuracy"])) for r, m in enumerate(metrics)]
    assert [s for s, _ in loop["heldout/accuracy/arithmetic/sub"]] == [0, 1] and "seconds/train" in loop
    (wb,) = (tmp / "wandb" / "wandb").glob("offline-run-*/run-*.wandb")
    assert run_id(wb) == json.loads((d / "trackers.json").read_text())["wandb"]["id"]
    rows = history(wb)
    assert len([x for x in rows if "train/loss" in x]) == steps
    assert [x["round"] for x in rows if "heldout/accuracy" in x] == [0, 1]
    # the console: the loop, not the workers (their lines are in run.log and logs/<worker>-<pid>.log)
    console = (tmp / "console.txt").read_text()
    assert "== round 0 ==" in console and "== round 1 ==" in console and "pid=" not in console
    assert len(console.splitlines()) < 80, console
    logs = {p.name.split("-")[0]: p for p in (d / "logs").glob("*.log")}
    assert {"SamplerWorker", "TrainerActor"} <= set(logs)
    run_log = (d / "run.log").read_text()
    for line in logs["SamplerWorker"].read_text().splitlines()[:20]:
        assert line in run_log


def test_judge_ran_through_vllm(full_run):
    d, _ = full_run
    verdicts = [json.loads(line) for line in (d / "round-000" / "verdicts.jsonl").read_text().splitlines()]
    judged = [v for v in verdicts if v["verifier"] == "llm_judge"]
    samples = (d / "round-000" / "samples.jsonl").read_text().splitlines()
    assert len(judged) == len(samples) >= 20 * 4
    assert {v["outcome"] for v in judged} <= {"pass", "fail", "abstain", "error"}
    health = json.loads((d / "round-000" / "metrics.json").read_text())["verifier_health"]
    assert "llm_judge" in json.dumps(health)


def test_report_and_export(full_run):
    d, _ = full_run
    launch("report", str(d))
    assert (d / "report" / "summary.md").exists() and (d / "report" / "heldout.png").stat().st_size > 0
    assert (d / "report" / "training.png").stat().st_size > 0 and "training.png" in (d / "report" / "summary.md").read_text()
    launch("export", str(d), "--allow-no-gain")  # two tiny rounds need not beat the base
    assert (d / "export" / "adapter_model.safetensors").exists() and (d / "export" / "bundle.json").exists()


def test_resume_after_stop_and_kill9(tmp_path, tiny_run_config, full_run):
    ref, _ = full_run
    cfg_path = write_config(tmp_path / "cfg.yaml", tiny_run_config(tmp_path / "state", run={
        "name": "t", "seed": 0, "state_dir": str(tmp_path / "state"), "report_to": ["tensorboard"]}))
    # 1) a clean stop at a stage boundary
    launch("run", "-c", str(cfg_path), "--stop-after", "round-0/verify")
    d = run_dir(tmp_path / "state")
    assert manifest(d)["status"] == "stopped" and manifest(d)["cursor"] == "round-0/verify"
    # 2) resuming with a changed config is refused, naming what changed
    p = launch("resume", str(d), "--set", "sampling.n=3", check=False)
    assert p.returncode == 2 and "sampling.n" in p.stderr
    # ... and a state directory moved with --set is pointed to --state-dir
    p = launch("resume", str(d), "--set", f"run.state_dir={tmp_path / 'elsewhere'}", check=False)
    assert p.returncode == 2 and "name it with --state-dir DIR instead of --set run.state_dir" in p.stderr
    # 3) kill -9 (the whole process group: driver, Ray, vLLM) in the middle of training
    proc = subprocess.Popen([PY, "launch.py", "resume", str(d)], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            if manifest(d).get("cursor") == "round-0/train (in progress)":
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the resumed run ended before reaching round-0/train"
        assert manifest(d).get("cursor") == "round-0/train (in progress)"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = manifest(d)
    assert "round-0/train" not in killed["done"] and "round-0/accept" in killed["done"]
    # 4) resume to the end
    launch("resume", str(d))
    m = manifest(d)
    assert m["status"] == "completed" and m["rounds_completed"] == 2
    stages = [h["stage"] for h in m["history"]]
    assert len(stages) == len(set(stages)), f"a stage ran twice: {stages}"
    first = {h["stage"] for h in m["history"] if h["attempt"] == 1}
    assert {"setup/heldout", "baseline", "round-0/sample", "round-0/verify"} <= first
    assert {"round-0/analyze", "round-0/accept"} <= {h["stage"] for h in m["history"] if h["attempt"] == 2}
    # Same structure as the uninterrupted run (which also ran a judge: compare stage keys and files).
    assert set(m["done"]) == set(manifest(ref)["done"])
    assert files_of(d) == files_of(ref)
    # the trackers were resumed, not duplicated: each round once in TensorBoard, round 0's train stage (killed,
    # then run again) holds the second run's steps alone
    loop = _scalars(d / "tensorboard" / "loop")
    assert [s for s, _ in loop["heldout/accuracy"]] == [0, 1] and len(loop["baseline/heldout/accuracy"]) == 1
    rows = (d / "round-000" / "train_log.jsonl").read_text().splitlines()
    assert [s for s, _ in _scalars(d / "tensorboard" / "round-0" / "train")["train/loss"]] == list(
        range(1, len(rows) + 1))
    # 5) a tracker added to the finished run: `resume` sends it every round, once
    from tests.wandb_records import history

    (tmp_path / "wandb").mkdir()
    launch("resume", str(d), "--set", "run.report_to=[wandb]",
           env={**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb"), "WANDB_SILENT": "true"})
    (wb,) = (tmp_path / "wandb" / "wandb").glob("offline-run-*/run-*.wandb")
    assert [x["round"] for x in history(wb) if "heldout/accuracy" in x] == [0, 1]
