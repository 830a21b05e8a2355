"""The run report on a synthetic run directory: summary, plots, unfinished rounds."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from loop.analysis import analyze
from loop.records import CategoryPlan, Plan
from loop.report.summary import write_report
from tests.test_analysis import problem, row

CATS = ["arith/add", "arith/mul"]
PNGS = ["heldout.png", "errors.png", "acceptance.png", "cost.png", "budget.png"]


def _json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _round(run: Path, i: int, acc: dict[str, float]) -> None:
    d = run / f"round-{i:03d}"
    _json(d / "metrics.json", {
        "heldout": {"accuracy": sum(acc.values()) / len(acc), "by_category": acc},
        "samples": 64, "accepted": 20 + 10 * i, "tokens_sampled": 5000 + 100 * i,
        "stage_seconds": {"sample": 10.0 + i, "verify": 2.0, "train": 30.0, "eval": 5.0},
        "adapter": f"round-{i:03d}/adapter", "errors": {"calculation": 12 - 3 * i, "logic": 5, "format": 2 - i},
        "budget": {"arith/add": 16 - 4 * i, "arith/mul": 16 + 4 * i},
        "train": {"examples": 20 + 10 * i, "tokens": 4000 + 1000 * i, "tokens_per_s": 15402.8, "first_loss": 1.25,
                  "last_loss": 0.5, "peak_gib": 9.4, "device": "cuda", "packed_attention": "varlen",
                  "lora_calls": {"fused": 1512, "peft": 0}, "fused_kernels": "liger"} if i else
                 {"examples": 0, "skipped": "no accepted chains"},
        "verifier_health": {"verifiers": {"exact_match": {"pass": 20, "fail": 44, "abstain": 0, "error": 0}},
                            "judge": {"name": "llm_judge", "compared": 60, "agree": 54, "agreement": 0.9}},
    })
    p = problem("What is (7+5)*11?", "132", category="mul")
    rows = [row(p, "<think>\n7+5=12\n12*11=132\n</think>\nAnswer: 132",
                {"exact_match": ("pass", {}), "format": ("pass", {})}, 0),
            row(p, "<think>\n7+5=12\n12*11=122\n</think>\nAnswer: 122",
                {"exact_match": ("fail", {}), "format": ("pass", {}),
                 "process": ("fail", {"wrong": [{"step": "12*11=122"}]})}, 1)]
    _json(d / "analysis.json", analyze(i, rows, acc).model_dump(mode="json"))
    _json(d / "plan.json", Plan(round=i + 1, policy="error_weighted", categories={
        "arith/add": CategoryPlan(budget=12, difficulty=2, reason="2 of 40 samples (5%) failed: 12 of 32"),
        "arith/mul": CategoryPlan(budget=20, difficulty=2, reason="30 of 40 samples (75%) failed: 20 of 32"),
    }).model_dump(mode="json"))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "demo-20261128"
    _json(run / "manifest.json", {"status": "running", "rounds_completed": 2, "cursor": "round-002/sample"})
    _json(run / "baseline.json", {"heldout": {"accuracy": 0.3, "by_category": {"arith/add": 0.4, "arith/mul": 0.2}}})
    _round(run, 0, {"arith/add": 0.5, "arith/mul": 0.3})
    _round(run, 1, {"arith/add": 0.6, "arith/mul": 0.45})
    (run / "round-002").mkdir()                       # unfinished: samples only, no metrics
    (run / "round-002" / "samples.jsonl").write_text("{}\n")
    return run


def test_report_writes_summary_and_plots(run_dir: Path):
    path = write_report(run_dir)
    assert path == run_dir / "report" / "summary.md"
    text = path.read_text()
    assert "# Run report: demo-20261128" in text and "status: running" in text
    assert "| category | base | round 0 | round 1 |" in text
    assert "| arith/mul | 0.200 | 0.300 | 0.450 |" in text
    assert "| **overall** | 0.300 | 0.400 | 0.525 |" in text
    assert "| 1 | 64 | 30 | 0.469 | 5100 | 48.0 | round-001/adapter |" in text
    assert "## Errors by category (round 1)" in text
    assert "| 0 | 0 |  |  | skipped: no accepted chains |" in text
    assert "| 1 | 30 | 5000 | 15,403 | 1.250 -> 0.500 | 9.40 | cuda | packed (varlen), fused LoRA, Liger |" in text
    assert "| exact_match | 20 | 44 | 0 | 0 |" in text and "54 of 60 decided samples (90%)" in text
    assert "## Plan for round 2 (policy error_weighted)" in text and "75%" in text
    assert "round-002 has no metrics.json (unfinished round)" in text
    assert "round 2" not in text.split("## Held-out accuracy")[1].split("##")[1]   # not a column
    for name in PNGS:
        png = run_dir / "report" / name
        assert png.stat().st_size > 1000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text


def test_report_tolerates_a_fresh_run(tmp_path: Path):
    run = tmp_path / "fresh"
    _json(run / "manifest.json", {"status": "running", "rounds_completed": 0, "cursor": "baseline"})
    (run / "round-000").mkdir()
    (run / "round-000" / "metrics.json").write_text("{not json")
    text = write_report(run).read_text()
    assert "No held-out evaluation yet." in text and "No finished round yet." in text
    assert "manifest.json is missing" not in text
    assert "metrics.json in round-000 could not be read" in text
    assert not (run / "report" / "errors.png").exists()


def test_report_names_a_missing_run_dir(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(tmp_path / "nope")


def test_report_reads_the_eval_stage_baseline(run_dir: Path):
    (run_dir / "baseline.json").unlink()
    _json(run_dir / "baseline" / "metrics.json",
          {"accuracy": 0.25, "by_category": {"arith/add": 0.3, "arith/mul": 0.2}, "adapter": None, "n": 64})
    text = write_report(run_dir).read_text()
    assert "| arith/add | 0.300 | 0.500 | 0.600 |" in text and "| **overall** | 0.250 |" in text


def test_training_plot_from_the_step_logs(run_dir: Path):
    """report/training.png from round-NNN/train_log.jsonl: drawn for the rounds that trained, a torn line
    named in the notes; without any log there is no plot (runs made before the logs existed)."""
    rows = [{"step": s, "epoch": s / 8, "loss": 2.0 / s, "learning_rate": 0.004 * (1 - s / 8), "grad_norm": 1.5,
             "tokens": 300 * s, "cuda_allocated_gib": 1.2, "cuda_reserved_gib": 1.6, "gpu_util": 80.0,
             "gpu_mem_used_gib": 20.5} for s in range(1, 9)]
    log = run_dir / "round-001" / "train_log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 9, "lo')
    text = write_report(run_dir).read_text()
    png = run_dir / "report" / "training.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20000
    assert "](training.png)" in text and "round-001/train_log.jsonl: 1 line(s) could not be read" in text
    log.unlink()
    assert "training.png" not in write_report(run_dir).read_text()
