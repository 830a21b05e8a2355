"""Damaged runs are said to be damaged: `report` and `export` name the file and the way out (never
exit 0 in silence, never "unexpected JSONDecodeError"), `resume --redo STAGE` is that way out, a
hand-edited config.yaml is refused on resume with what changed, and `report` appears whole or not
at all. Run directories are built as the loop writes them (tests/test_export.py's make_run)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from loop.config import ConfigError
from loop.records import Problem
from loop.run import integrity
from loop.run.state import DamagedFile, RunDir, RunStateError, read_json, read_jsonl
from tests.test_export import make_run

PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "launch.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def finished_run(tmp_path: Path) -> RunDir:
    run = make_run(tmp_path, accuracies=[0.4, 0.6], trained=[0, 1], in_progress=False)
    run.manifest["done"] = ["setup/heldout", "baseline", "round-0/problems", "round-0/plan", "round-1/problems",
                            "round-1/sample", "round-1/verify", "round-1/plan"]
    for r in (0, 1):
        (run.round_dir(r) / "plan.json").write_text(json.dumps({"round": r + 1, "policy": "uniform", "categories": {}}))
    run.save()
    return run


def tear(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 40])  # the last record cut off mid-line


def test_an_intact_run_has_no_damage(tmp_path):
    assert integrity.damage(finished_run(tmp_path)) == []


def test_report_of_a_torn_samples_file_names_it_and_the_way_out(tmp_path):
    run = finished_run(tmp_path)
    tear(run.round_dir(1) / "samples.jsonl")
    p = cli("report", str(run.path))
    assert p.returncode == 1, p.stderr
    assert f"{run.round_dir(1) / 'samples.jsonl'} (round-1/sample): line " in p.stderr and "torn" in p.stderr
    assert f"launch.py resume {run.path} --redo round-1/sample" in p.stderr and "Traceback" not in p.stderr
    assert (run.path / "report" / "summary.md").exists()  # what could be read is still reported


def test_report_and_export_of_a_run_whose_heldout_set_was_deleted(tmp_path):
    run = finished_run(tmp_path)
    (run.path / "eval" / "problems.jsonl").unlink()
    p = cli("report", str(run.path))
    assert p.returncode == 1 and f"{run.path / 'eval' / 'problems.jsonl'} (setup/heldout): missing" in p.stderr
    p = cli("export", str(run.path), "--allow-no-gain")
    assert p.returncode == 2 and "damaged, so nothing is exported" in p.stderr and "problems.jsonl" in p.stderr
    assert not (run.path / "export").exists()


def test_export_of_a_torn_metrics_file_names_it(tmp_path):
    run = finished_run(tmp_path)
    tear(run.round_dir(0) / "metrics.json")
    p = cli("export", str(run.path))
    assert p.returncode == 2 and "unexpected" not in p.stderr, p.stderr
    assert f"{run.round_dir(0) / 'metrics.json'}: not valid JSON" in p.stderr and "--redo round-0/plan" in p.stderr


def test_read_helpers_raise_damaged_file_with_the_way_out(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text('{"accuracy": 0.')
    with pytest.raises(DamagedFile) as e:
        read_json(bad)
    assert str(bad) in str(e.value) and "not valid JSON" in str(e.value) and "--redo" in str(e.value)
    rows = tmp_path / "problems.jsonl"
    rows.write_text('{"family": "x"}\n{"fam')
    with pytest.raises(DamagedFile, match=r"line 1 is corrupt|line 2 is torn"):
        read_jsonl(rows, Problem)
    assert isinstance(e.value, ValueError)  # callers that caught ValueError still do


def test_redo_forgets_the_stage_and_everything_after_it(tmp_path):
    from loop.runner import redo_from

    run = finished_run(tmp_path)
    redo_from(run, "round-1/sample")
    m = RunDir(run.path).manifest
    assert m["done"] == ["setup/heldout", "baseline", "round-0/problems", "round-0/plan", "round-1/problems"]
    assert m["rounds_completed"] == 1 and m["cursor"] == "round-1/problems"
    with pytest.raises(RunStateError, match="not a finished stage"):
        redo_from(run, "round-1/verify")


def _with_config(tmp_path: Path) -> RunDir:
    from loop.config import dump_config, load_config

    run = finished_run(tmp_path)
    cfg = load_config(ROOT / "configs" / "default.yaml")
    (run.path / "config.yaml").write_text(dump_config(cfg))
    integrity.record_config(run, cfg.model_dump(mode="json"))
    return run


def test_resume_refuses_a_hand_edited_config_naming_the_change(tmp_path):
    from loop.runner import resume

    run = _with_config(tmp_path)
    raw = yaml.safe_load((run.path / "config.yaml").read_text())
    raw["sampling"]["n"] = 8
    (run.path / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises((RunStateError, ConfigError)) as e:
        resume(str(run.path), str(tmp_path), [])
    assert "was edited after the run was made" in str(e.value) and "sampling.n: 2 -> 8" in str(e.value)
    assert not (run.path / ".lock").exists()  # released
    assert any("config.yaml: changed since the run was made" in d for d in integrity.damage(RunDir(run.path)))


def test_a_config_only_laid_out_differently_is_no_edit(tmp_path):
    run = _with_config(tmp_path)
    raw = yaml.safe_load((run.path / "config.yaml").read_text())
    (run.path / "config.yaml").write_text("# my notes\n" + json.dumps(raw, indent=1))
    assert integrity.hand_edits(RunDir(run.path), raw) == []


def test_report_is_whole_or_not_at_all(tmp_path, monkeypatch):
    from loop.report import plots, summary

    run = finished_run(tmp_path)
    first = summary.write_report(run.path)
    before = {p.name: p.read_bytes() for p in first.parent.iterdir()}
    assert "summary.md" in before and len(before) >= 2

    def killed(*_a, **_k):
        raise KeyboardInterrupt  # stands in for a signal between two of the report's files

    monkeypatch.setattr(plots, "budget", killed)
    with pytest.raises(KeyboardInterrupt):
        summary.write_report(run.path)
    assert {p.name: p.read_bytes() for p in first.parent.iterdir()} == before  # the old report, untouched
    assert not list(run.path.glob(".report.*"))  # no half-made report left beside it
