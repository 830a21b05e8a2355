"""run.report_to on a synthetic run directory: TensorBoard read back with TensorBoard's own reader, W&B in
offline mode read back from its run file, one tracker run per loop run across resumes, a missing library as
a preflight error (or a warning with --allow-no-tracker), and a tracker failing mid-run never stops it.
The real trainer's steps through TRL are checked by tests/test_integration_loop.py."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from loop.run.trackers import TrackerError, Trackers, problem, round_scalars
from tests.conftest import ROOT

CFG = {"run": {"name": "t"}, "training": {"learning_rate": 0.004}}


def _json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _round(run: Path, r: int, acc: float, steps: int = 4) -> None:
    d = run / f"round-{r:03d}"
    _json(d / "metrics.json", {
        "round": r, "heldout": {"accuracy": acc, "by_category": {"arith/add": acc + 0.1, "arith/sub": acc - 0.1}},
        "samples": 64, "accepted": 20 + r, "tokens_sampled": 6400, "adapter": f"round-{r:03d}/adapter",
        "stage_seconds": {"sample": 8.0, "verify": 1.5, "train": 30.0},
        "train": {"steps": steps, "train_loss": 1.5 - 0.25 * r, "tokens_per_s": 900.0},
        "errors": {"calculation": 10 - r, "format": 2}, "budget": {"arith/add": 16, "arith/sub": 16},
        "verifier_health": {"verifiers": {"exact_match": {"pass": 20, "fail": 44}},
                            "judge": {"compared": 50, "agree": 40}}})
    rows = [{"step": s, "epoch": s / steps, "loss": 2.0 - 0.1 * s - r, "learning_rate": 0.004 * (1 - s / steps),
             "grad_norm": 1.0 + 0.01 * s, "tokens": 100 * s} for s in range(1, steps + 1)]
    (d / "train_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))


@pytest.fixture
def run(tmp_path: Path) -> Path:
    d = tmp_path / "t-20261206"
    _json(d / "baseline" / "metrics.json", {"accuracy": 0.3, "by_category": {"arith/add": 0.4, "arith/sub": 0.2}})
    _round(d, 0, 0.35)
    return d


def _scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def test_round_scalars_have_stable_names():
    m = json.loads(json.dumps({"heldout": {"accuracy": 0.5, "by_category": {"a/b": 0.25}}, "samples": 10,
                               "accepted": 4, "tokens_sampled": 100, "stage_seconds": {"sample": 4.0},
                               "train": {"train_loss": 0.7}, "errors": {"logic": 3}, "budget": {"a/b": 8}}))
    s = round_scalars(m, base=0.375)
    assert s["heldout/accuracy"] == 0.5 and s["heldout/accuracy/a/b"] == 0.25 and s["heldout/gain"] == 0.125
    assert s["round/train_loss"] == 0.7 and s["round/acceptance"] == 0.4 and s["round/sample_tokens_per_s"] == 25
    assert s["errors/logic"] == 3 and s["budget/a/b"] == 8 and s["seconds/sample"] == 4.0
    assert all(isinstance(v, float) for v in s.values())


def test_tensorboard_read_back_and_resume_without_duplicates(run):
    t = Trackers.open(run, ["tensorboard"], CFG)
    t.sync()
    t.sync()  # nothing new: nothing sent twice
    t.close()
    s = _scalars(run / "tensorboard" / "loop")
    assert s["heldout/accuracy"] == [(0, pytest.approx(0.35))]
    assert s["baseline/heldout/accuracy"] == [(0, pytest.approx(0.3))]
    assert s["heldout/accuracy/arith/sub"] == [(0, pytest.approx(0.25))]
    assert s["round/train_loss"] == [(0, 1.5)] and s["errors/calculation"] == [(0, 10.0)]
    assert s["seconds/train"] == [(0, 30.0)] and s["verifier/judge_agreement"] == [(0, pytest.approx(0.8))]
    assert "train/loss" not in s  # TRL's own callback writes the steps, under tensorboard/round-N/train
    # resume: a new process opens the same trackers, sends only the round finished since
    _round(run, 1, 0.45)
    t = Trackers.open(run, ["tensorboard"], CFG)
    t.sync()
    t.close()
    s = _scalars(run / "tensorboard" / "loop")
    assert [x[0] for x in s["heldout/accuracy"]] == [0, 1] and len(s["baseline/heldout/accuracy"]) == 1
    assert json.loads((run / "trackers.json").read_text())["tensorboard"]["rounds"] == [0, 1]


def test_wandb_offline_one_run_resumed(run, tmp_path, monkeypatch):
    from tests.wandb_records import history, run_id

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wb").mkdir()
    t = Trackers.open(run, ["wandb"], CFG)
    t.sync()
    t.close()
    _round(run, 1, 0.45, steps=3)
    t = Trackers.open(run, ["wandb"], CFG)  # resume
    t.sync()
    t.close()
    wid = json.loads((run / "trackers.json").read_text())["wandb"]["id"]
    files = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and {run_id(f) for f in files} == {wid}  # two sessions of one W&B run
    rows = [r for f in files for r in history(f)]
    steps = [(r["train/global_step"], r["train/round"], r["train/loss"]) for r in rows if "train/loss" in r]
    # round 1's steps continue after round 0's 4 (x = steps over the run)
    assert [s[0] for s in steps] == [1, 2, 3, 4, 5, 6, 7] and [s[1] for s in steps] == [0] * 4 + [1] * 3
    assert steps[0][2] == pytest.approx(1.9)
    acc = [(r["round"], r["heldout/accuracy"]) for r in rows if "heldout/accuracy" in r]
    assert acc == [(0, pytest.approx(0.35)), (1, pytest.approx(0.45))]  # each round once, across the resume
    assert sum("baseline/heldout/accuracy" in r for r in rows) == 1


def test_mlflow_file_store(run, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="mlflow is optional (not in requirements/trackers.txt)")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.x refuses a file store unless told
    assert problem("mlflow") is None
    for _ in range(2):  # the second open is a resume: the same MLflow run
        t = Trackers.open(run, ["mlflow"], CFG)
        t.sync()
        t.close()
    rid = json.loads((run / "trackers.json").read_text())["mlflow"]["run_id"]
    client = mlflow.tracking.MlflowClient()  # a file store: '.' for '/' (loop/run/trackers.py says why)
    hist = client.get_metric_history(rid, "heldout.accuracy")
    assert [(m.step, m.value) for m in hist] == [(0, pytest.approx(0.35))]
    assert len(client.get_metric_history(rid, "heldout.accuracy.arith.add")) == 1
    assert [m.step for m in client.get_metric_history(rid, "train.loss")] == [1, 2, 3, 4]


def test_trackio_local(run, tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))  # read when trackio is imported
    monkeypatch.delitem(sys.modules, "trackio", raising=False)
    pytest.importorskip("trackio", reason="trackio is optional (not in requirements/trackers.txt)")
    from trackio.sqlite_storage import SQLiteStorage

    for _ in range(2):  # the second open is a resume: the same trackio run, nothing sent twice
        t = Trackers.open(run, ["trackio"], CFG)
        t.sync()
        t.close()
    assert SQLiteStorage.get_runs("reasoning-loop") == [run.name]
    logs = SQLiteStorage.get_logs("reasoning-loop", run.name)
    assert [x["train/loss"] for x in logs if "train/loss" in x] == pytest.approx([1.9, 1.8, 1.7, 1.6])
    assert [x["heldout/accuracy"] for x in logs if "heldout/accuracy" in x] == [pytest.approx(0.35)]


def test_mlflow_store_it_cannot_use_is_named(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is optional (not in requirements/trackers.txt)")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://x")
    why = problem("mlflow")
    assert why and "mlflow cannot use its tracking store (nosuchscheme://x" in why


def test_missing_library_is_a_preflight_error(monkeypatch, tmp_path, caplog):
    from loop.config import load_config
    from loop.preflight import PreflightError, preflight

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError, as when not installed
    assert "wandb is not installed" in problem("wandb") and "requirements/trackers.txt" in problem("wandb")
    cfg = load_config(ROOT / "configs" / "default.yaml", [f"run.state_dir={tmp_path}", "run.report_to=[wandb]"])
    with pytest.raises(PreflightError) as e:
        preflight(cfg)
    assert "run.report_to: wandb is not installed" in str(e.value) and "--allow-no-tracker" in str(e.value)
    preflight(cfg, allow_no_tracker=True)  # allowed: no problem here...
    run = tmp_path / "r"
    run.mkdir()
    with caplog.at_level(logging.WARNING, logger="loop"):  # ...and the run opens without it, warning
        t = Trackers.open(run, ["wandb"], CFG, allow_missing=True)
    assert t.active == [] and "wandb is not installed" in caplog.text and "--allow-no-tracker" in caplog.text
    with pytest.raises(TrackerError, match="--allow-no-tracker"):
        Trackers.open(run, ["wandb"], CFG)


def test_wandb_online_without_a_key_is_named(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no wandb settings
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    why = problem("wandb")
    assert why and "no API key" in why and "WANDB_MODE=offline" in why


def test_a_tracker_failing_mid_run_is_dropped_not_fatal(run, caplog):
    t = Trackers.open(run, ["tensorboard"], CFG)

    def broken(*a, **k):
        raise ConnectionError("server went away")
    t.active[0].log = broken
    with caplog.at_level(logging.WARNING, logger="loop"):
        t.sync()
    assert t.active == [] and "server went away" in caplog.text and "resume" in caplog.text
    assert "rounds" not in json.loads((run / "trackers.json").read_text()).get("tensorboard", {})


def test_damaged_state_file_is_named(run):
    (run / "trackers.json").write_text("{not json")
    with pytest.raises(TrackerError, match="trackers.json cannot be read"):
        Trackers.open(run, ["tensorboard"], CFG)
