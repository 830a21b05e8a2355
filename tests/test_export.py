"""export_run on synthetic run directories (fake adapter bytes; no model is loaded)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import generators  # noqa: F401
from generators.base import GENERATORS
from loop.config import ROOT, dump_config, load_config
from loop.export import export_run, load_problems, reward_funcs
from loop.state import RunDir, read_json, write_json, write_jsonl

BASELINE = {"accuracy": 0.25, "by_category": {"arithmetic/add": 0.5, "arithmetic/mul": 0.0}, "adapter": None, "n": 8}


def heldout(acc, add, mul):
    return {"accuracy": acc, "by_category": {"arithmetic/add": add, "arithmetic/mul": mul}}


def make_run(tmp_path: Path, rounds_done: int, trained: list[int], status: str = "completed",
             relative_adapters: bool = True) -> RunDir:
    """A run whose round r trained an adapter iff r in `trained` (else it kept the previous one)."""
    cfg = load_config(ROOT / "configs" / "default.yaml")
    run = RunDir.create(tmp_path / "state", "t")
    (run.path / "config.yaml").write_text(dump_config(cfg))
    write_json(run.path / "baseline" / "metrics.json", BASELINE)
    gen = GENERATORS.build("arithmetic", {})
    adapter = None
    for r in range(rounds_done + 1):  # one round past the last completed: in progress
        rd = run.round_dir(r)
        # rounds overlap in one problem, which must appear once in the export
        write_jsonl(rd / "problems.jsonl", gen.generate("add", 2, 3, seed=r) + gen.generate("mul", 1, 1, seed=0))
        if r in trained:
            (rd / "adapter").mkdir(parents=True)
            (rd / "adapter" / "adapter_model.safetensors").write_bytes(b"weights of round %d" % r)
            (rd / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 16, "round": r}))
            (rd / "adapter" / "tokenizer.json").write_text('{"tok": %d}' % r)
            (rd / "adapter" / "chat_template.jinja").write_text("{{ messages }} round %d" % r)
            # as recorded at run time: relative to the cwd of the run, which is not this one
            adapter = f"state/runs/{run.path.name}/{rd.name}/adapter" if relative_adapters else str(rd / "adapter")
        if r < rounds_done:
            write_json(rd / "metrics.json", {"round": r, "heldout": heldout(0.3 + 0.1 * r, 0.6 + 0.1 * r, 0.1 * r),
                                             "adapter": adapter})
    run.manifest["rounds_completed"] = rounds_done
    run.set_status(status, **({"final_adapter": adapter} if status == "completed" else {}))
    return run


def test_bundle_of_a_completed_run(tmp_path):
    run = make_run(tmp_path, rounds_done=2, trained=[0, 1])
    out = export_run(RunDir(run.path))
    assert out == run.path / "export"
    src = run.round_dir(1) / "adapter"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "chat_template.jinja"):
        assert (out / name).read_bytes() == (src / name).read_bytes()
    # the adapter lacked tokenizer_config.json: the base model's is copied
    assert (out / "tokenizer_config.json").read_bytes() == (ROOT / "loop/assets/tiny-qwen3/tokenizer_config.json").read_bytes()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    b = read_json(out / "bundle.json")
    assert b["run_id"] == run.path.name and b["partial"] is False and b["status"] == "completed"
    assert b["base_model"] == str(ROOT / "loop/assets/tiny-qwen3")
    assert b["adapter_round"] == 1 and b["heldout"]["final_round"] == 1
    assert b["heldout"]["baseline"] == {"accuracy": 0.25, "by_category": BASELINE["by_category"]}
    assert b["heldout"]["final"] == heldout(0.4, 0.7, 0.1)
    assert b["config"] == load_config(ROOT / "configs" / "default.yaml").model_dump(mode="json")
    assert [(v["name"], v["required"], v["reward"]) for v in b["verifiers"]] == [
        ("exact_match", True, True), ("format", False, False), ("process", False, False)]
    assert isinstance(b["verifiers"][0]["options"], dict) and b["verifiers"][0]["options"]
    assert b["chat_template"] == "{{ messages }} round 1"
    cfg = load_config(ROOT / "configs" / "default.yaml")
    assert b["sampling"]["temperature"] == cfg.sampling.temperature
    assert b["sampling"]["max_tokens"] == cfg.sampling.max_tokens

    rows = [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]
    ids = [r["problem_id"] for r in rows]
    assert len(ids) == len(set(ids)) == b["problems"]["count"] == 3 * 3 + 1   # rounds 0..2, shared mul once
    assert set(rows[0]) >= {"prompt", "problem_id", "answer"} and rows[0]["prompt"][0]["role"] == "user"

    readme = (out / "README.md").read_text()
    for needle in ("PeftModel.from_pretrained(base, export_dir", "GRPOTrainer(model=model, reward_funcs=",
                   "as_reward_func", "problems.jsonl", str(out), "| **overall** | 25.0% | 40.0% |",
                   "| arithmetic/add | 50.0% | 70.0% |"):
        assert needle in readme, needle
    assert "Partial export" not in readme


def test_reward_funcs_score_completions_by_problem_id(tmp_path):
    out = export_run(make_run(tmp_path, rounds_done=1, trained=[0], relative_adapters=False))
    problems = load_problems(out)
    pid, p = next(iter(problems.items()))
    [reward] = reward_funcs(out)
    right = [{"role": "assistant", "content": f"<think>\nok\n</think>\nAnswer: {p.reference.answer}"}]
    wrong = f"<think>\nok\n</think>\nAnswer: {int(p.reference.answer) + 1}"
    assert reward(prompts=[p.prompt, p.prompt], completions=[right, wrong], problem_id=[pid, pid]) == [1.0, 0.0]
    assert [f.__name__ for f in reward_funcs(out, names=["exact_match", "format"])] == ["reward_exact_match",
                                                                                          "reward_format"]
    with pytest.raises(ValueError, match="not in this bundle"):
        reward_funcs(out, names=["numeric"])


def test_partial_run_exports_the_last_completed_round(tmp_path, caplog):
    # round 1 is completed with round 0's adapter (it trained nothing); round 2 trained but did not finish
    run = make_run(tmp_path, rounds_done=2, trained=[0, 2], status="failed")
    with caplog.at_level(logging.WARNING, logger="loop"):
        out = export_run(RunDir(run.path))
    b = read_json(out / "bundle.json")
    assert b["partial"] is True and b["status"] == "failed"
    assert b["adapter_round"] == 0 and b["heldout"]["final_round"] == 1
    assert b["heldout"]["final"]["accuracy"] == pytest.approx(0.4)
    assert (out / "adapter_model.safetensors").read_bytes() == b"weights of round 0"
    assert "Partial export" in (out / "README.md").read_text()
    assert any("not completed" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_missing_adapter_messages(tmp_path):
    never_trained = make_run(tmp_path / "a", rounds_done=2, trained=[])
    with pytest.raises(FileNotFoundError, match="no trained adapter.*launch.py resume"):
        export_run(RunDir(never_trained.path))
    assert not (never_trained.path / "export" / "bundle.json").exists()

    nothing_done = make_run(tmp_path / "b", rounds_done=0, trained=[0], status="interrupted")
    with pytest.raises(FileNotFoundError, match="no completed round"):
        export_run(RunDir(nothing_done.path))

    damaged = make_run(tmp_path / "c", rounds_done=1, trained=[0])
    (damaged.round_dir(0) / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lacks adapter_model.safetensors"):
        export_run(RunDir(damaged.path))
