"""export_run on synthetic run directories: real problems, samples and verdicts, fake adapter
bytes (no model is loaded). The real-model route is tests/test_export_rl.py."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import generators  # noqa: F401
from generators.base import GENERATORS, draw
from loop.config import ROOT, dump_config, load_config
from loop.export import export_run, load_bundle, load_problems, reward_funcs
from loop.export.bundle import BundleError
from loop.export.choice import ExportError, resolve_in_run
from loop.records import Sample, Verdict
from loop.run.state import RunDir, read_json, write_json, write_jsonl

BASELINE = {"accuracy": 0.25, "by_category": {"arithmetic/add": 0.5, "arithmetic/mul": 0.0}, "adapter": None, "n": 64}
PASSES = [0, 1, 2, 3, 4]  # passes out of 4 samples, by problem index mod 5: rates 0, .25, .5, .75, 1


def heldout(acc):
    return {"accuracy": acc, "by_category": {"arithmetic/add": acc + 0.1, "arithmetic/mul": acc - 0.1}}


def answer_text(answer: str) -> str:
    return f"<think>\nok\n</think>\nAnswer: {answer}"


def make_run(tmp_path: Path, accuracies: list[float], trained: list[int], status: str = "completed",
             adapter_paths: str = "relative", in_progress: bool = True, passes: list[int] = PASSES,
             overrides: tuple[str, ...] = ()) -> RunDir:
    """Round r trained an adapter iff r in `trained` (else it kept the previous one) and its
    held-out accuracy is accuracies[r]. Round r+1 samples with round r's adapter: problem i
    passes passes[i % 5] of its 4 samples. adapter_paths: how metrics record the adapter
    ('relative' to the run, 'absolute', or 'cwd' = relative to the old working directory)."""
    cfg = load_config(ROOT / "configs" / "default.yaml", list(overrides))
    run = RunDir.create(tmp_path / "state", "t")
    (run.path / "config.yaml").write_text(dump_config(cfg))
    write_json(run.path / "baseline" / "metrics.json", BASELINE)
    gen = GENERATORS.build("arithmetic", {})
    write_jsonl(run.path / "eval" / "problems.jsonl", draw(gen, "add", 2, 6, 99, "heldout", cfg.heldout.fraction))
    adapter = None
    done = len(accuracies)
    for r in range(done + (1 if in_progress else 0)):
        rd = run.round_dir(r)
        # rounds overlap in one problem, which must appear once in the export
        problems = draw(gen, "add", 2, 10, r, "train", cfg.heldout.fraction) + \
            draw(gen, "mul", 1, 1, 0, "train", cfg.heldout.fraction)
        write_jsonl(rd / "problems.jsonl", problems)
        if adapter is not None:
            samples, verdicts = [], []
            for i, p in enumerate(problems):
                for k in range(4):
                    s = Sample(id=Sample.make_id(p.id, r, k), problem_id=p.id, round=r, index=k, num_tokens=9,
                               finish_reason="stop", adapter=adapter,
                               text=answer_text(p.reference.answer if k < passes[i % 5] else "-1"))
                    samples.append(s)
                    ok = k < passes[i % 5]
                    verdicts.append(Verdict(sample_id=s.id, verifier="exact_match", outcome="pass" if ok else "fail",
                                            score=float(ok)))
            write_jsonl(rd / "samples.jsonl", samples)
            write_jsonl(rd / "verdicts.jsonl", verdicts)
        if r in trained:
            (rd / "adapter").mkdir(parents=True)
            (rd / "adapter" / "adapter_model.safetensors").write_bytes(b"weights of round %d" % r)
            (rd / "adapter" / "adapter_config.json").write_text(json.dumps(
                {"r": 16, "round": r, "base_model_name_or_path": str(ROOT / "loop/assets/tiny-qwen3")}))
            (rd / "adapter" / "tokenizer.json").write_text('{"tok": %d}' % r)
            (rd / "adapter" / "chat_template.jinja").write_text("{{ messages }} round %d" % r)
            adapter = {"relative": f"{rd.name}/adapter", "absolute": str(rd / "adapter"),
                       "cwd": f"state/runs/{run.path.name}/{rd.name}/adapter"}[adapter_paths]
        if r < done:
            write_json(rd / "metrics.json", {"round": r, "heldout": heldout(accuracies[r]), "adapter": adapter})
    run.manifest["rounds_completed"] = done
    run.set_status(status, **({"final_adapter": adapter} if status == "completed" else {}))
    return run


def absolute_paths(obj, where="") -> list[str]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in absolute_paths(v, f"{where}.{k}")]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in absolute_paths(v, f"{where}.{i}")]
    return [f"{where}={obj}"] if isinstance(obj, str) and obj.startswith("/") else []


def test_exports_the_best_heldout_adapter_with_relative_paths(tmp_path):
    run = make_run(tmp_path, accuracies=[0.4, 0.6, 0.5], trained=[0, 1, 2])
    out = export_run(RunDir(run.path))
    assert out == run.path / "export"
    src = run.round_dir(1) / "adapter"   # round 1 is the best on held-out, not the last one
    for name in ("adapter_model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (out / name).read_bytes() == (src / name).read_bytes()
    # the adapter lacked tokenizer_config.json: the base model's is copied, with its config.json
    assert (out / "tokenizer_config.json").read_bytes() == (ROOT / "loop/assets/tiny-qwen3/tokenizer_config.json").read_bytes()
    assert (out / "config.json").is_file() and (out / "base" / "model.safetensors").is_file()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not list(run.path.glob(".export-*"))

    b = read_json(out / "bundle.json")
    assert b["run_id"] == run.path.name and b["partial"] is False and b["status"] == "completed"
    assert b["adapter"]["round"] == 1 and b["adapter"]["beats_base"] is True
    assert "held-out accuracy 0.600" in b["adapter"]["why"] and "base model 0.250" in b["adapter"]["why"]
    assert [c["accuracy"] for c in b["adapter"]["candidates"]] == [0.4, 0.6, 0.5]
    import hashlib

    digest = hashlib.sha256((ROOT / "loop/assets/tiny-qwen3/model.safetensors").read_bytes()).hexdigest()
    assert b["base_model"] == {"path": "base", "configured": "builtin:tiny-qwen3", "copied": True,
                               "weights_sha256": digest}
    assert read_json(out / "adapter_config.json")["base_model_name_or_path"] == "base"
    assert absolute_paths({k: v for k, v in b.items() if k != "config"}) == []
    assert load_bundle(out).base_model == str((out / "base").resolve())
    assert b["heldout"]["baseline"]["accuracy"] == 0.25 and b["heldout"]["final"] == heldout(0.6)
    specs = {v["name"]: (v["required"], v["reward"]) for v in b["verifiers"]}
    assert specs["exact_match"] == (True, True) and specs["format"] == specs["process"] == (False, False)
    assert [n for n, (_, reward) in specs.items() if reward] == ["exact_match"]
    assert b["chat_template"] == "{{ messages }} round 1"
    cfg = load_config(ROOT / "configs" / "default.yaml")
    assert b["sampling"]["temperature"] == cfg.sampling.temperature
    assert b["quantization"] == cfg.quantization.model_dump(mode="json")

    # the pool: round 2's samples were made by round 1's adapter; only 0 < rate < 1 stays
    assert b["pool"]["pass_rates"]["source"] == "samples" and "round-002" in b["pool"]["pass_rates"]["detail"]
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    r2 = [json.loads(line)["id"] for line in (run.round_dir(2) / "problems.jsonl").read_text().splitlines()]
    expect = {pid: PASSES[i % 5] / 4 for i, pid in enumerate(r2) if 0 < PASSES[i % 5] < 4}
    assert {r["problem_id"]: r["pass_rate"] for r in rows} == expect
    assert b["pool"]["train_count"] == len(rows) == len(expect)
    assert b["pool"]["pass_rates"]["left_out"]["not sampled by this adapter"] > 0
    heldout_ids = [json.loads(line)["id"] for line in (run.path / "eval/problems.jsonl").read_text().splitlines()]
    val = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    assert [v["problem_id"] for v in val] == heldout_ids and not set(heldout_ids) & set(expect)
    assert rows[0]["prompt"][0]["role"] == "user"

    readme = (out / "README.md").read_text()
    for needle in ('python "$BUNDLE/train_grpo.py"', '"$BUNDLE/train.parquet"', "reward.reward_manager.name=naive",
                   "reward.custom_reward_function.name=compute_score", '"$BUNDLE/reward_openrlhf.py"',
                   "LoRARequest", "--enable-lora --lora-modules bundle=", "kv_cache_memory_bytes=",
                   'if __name__ == "__main__":', "| **overall** | 25.0% | 60.0% |",
                   "round 1's adapter"):
        assert needle in readme, needle
    # no path of this machine: the README works wherever the bundle is copied
    assert str(tmp_path) not in readme and str(ROOT) not in readme
    assert "Partial export" not in readme and "does not beat" not in readme


def test_refuses_when_no_adapter_beats_the_base_unless_told(tmp_path, caplog):
    run = make_run(tmp_path, accuracies=[0.25, 0.2], trained=[0, 1])
    with pytest.raises(ExportError, match=r"no adapter .* beats the base model.*0\.250.*--allow-no-gain"):
        export_run(RunDir(run.path))
    assert not (run.path / "export").exists()
    with caplog.at_level(logging.WARNING, logger="loop"):
        out = export_run(RunDir(run.path), allow_no_gain=True)
    b = read_json(out / "bundle.json")
    assert b["adapter"]["beats_base"] is False and b["adapter"]["round"] == 0  # the tie goes to the better one
    assert "does not beat the base model" in (out / "README.md").read_text()
    assert any("beats the base" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_round_option_picks_that_adapter(tmp_path):
    run = make_run(tmp_path, accuracies=[0.4, 0.6, 0.5], trained=[0, 1, 2], in_progress=False)
    with pytest.raises(ExportError, match="no adapter trained in round 5"):
        export_run(RunDir(run.path), round_=5)
    # round 2's adapter never sampled (it is the last); `samples` cannot give its pass rates
    with pytest.raises(ExportError, match="--pass-rates measure"):
        export_run(RunDir(run.path), round_=2, pass_rates="samples")
    out = export_run(RunDir(run.path), round_=0)
    b = read_json(out / "bundle.json")
    assert b["adapter"]["round"] == 0 and "--round 0" in b["adapter"]["why"]
    assert (out / "adapter_model.safetensors").read_bytes() == b"weights of round 0"


@pytest.mark.parametrize("recorded", ["relative", "absolute", "cwd"])
def test_adapter_paths_resolve_inside_the_run_only(tmp_path, recorded):
    """A moved run whose records still point at the old location exports its own adapter;
    when that adapter is missing it refuses, although the old location still has one."""
    run = make_run(tmp_path / "a", accuracies=[0.4, 0.6], trained=[0, 1], adapter_paths=recorded)
    moved = tmp_path / "b" / run.path.name
    shutil.copytree(run.path, moved)
    (run.round_dir(1) / "adapter" / "adapter_model.safetensors").write_bytes(b"the OLD run's file")
    out = export_run(RunDir(moved))
    assert (out / "adapter_model.safetensors").read_bytes() == b"weights of round 1"
    assert resolve_in_run(RunDir(moved), str(run.round_dir(1) / "adapter")) == (moved / "round-001/adapter").resolve()

    (moved / "round-001" / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lacks adapter_model.safetensors.*never another run's"):
        export_run(RunDir(moved))
    assert (moved / "export" / "adapter_model.safetensors").read_bytes() == b"weights of round 1"  # old bundle kept


def test_empty_pool_is_refused_and_the_measurement_kept(tmp_path):
    run = make_run(tmp_path, accuracies=[0.4, 0.6], trained=[0, 1], passes=[0, 4, 4, 0, 4])  # always or never
    with pytest.raises(ExportError, match=r"strictly between 0 and 1.*pass rate 1 \(always solved\)"):
        export_run(RunDir(run.path), round_=0)
    kept = [json.loads(line) for line in (run.path / "export-pass-rates.jsonl").read_text().splitlines()]
    assert len(kept) == 11 and {k["pass_rate"] for k in kept} == {0.0, 1.0}


def test_heldout_problems_never_enter_the_pool(tmp_path, caplog):
    run = make_run(tmp_path, accuracies=[0.4, 0.6], trained=[0, 1])
    leaked = json.loads((run.path / "eval/problems.jsonl").read_text().splitlines()[0])
    with (run.round_dir(1) / "problems.jsonl").open("a") as f:
        f.write(json.dumps(leaked) + "\n")
    with caplog.at_level(logging.WARNING, logger="loop"):
        out = export_run(RunDir(run.path))
    assert leaked["id"] not in (out / "train.jsonl").read_text()
    assert any("held-out side" in r.getMessage() for r in caplog.records)


def test_reward_funcs_score_completions_by_problem_id(tmp_path):
    out = export_run(make_run(tmp_path, accuracies=[0.4, 0.6], trained=[0, 1]))
    problems = load_problems(out)
    pid, p = next(iter(problems.items()))
    [reward] = reward_funcs(out)
    right = [{"role": "assistant", "content": answer_text(p.reference.answer)}]
    wrong = answer_text(str(int(p.reference.answer) + 1))
    assert reward(prompts=[p.prompt, p.prompt], completions=[right, wrong], problem_id=[pid, pid]) == [1.0, 0.0]
    assert [f.__name__ for f in reward_funcs(out, names=["exact_match", "format"])] == ["reward_exact_match",
                                                                                          "reward_format"]
    with pytest.raises(ValueError, match="not in this bundle"):
        reward_funcs(out, names=["numeric"])
    logged = load_bundle(out).reward_funcs(log_to=tmp_path / "r.jsonl")[0]
    assert logged(prompts=[p.prompt], completions=[wrong], problem_id=[pid]) == [0.0]
    assert json.loads((tmp_path / "r.jsonl").read_text()) == {"reward": "reward_exact_match", "problem_id": pid,
                                                             "completion": wrong, "score": 0.0}


def test_partial_run_chooses_among_completed_rounds(tmp_path, caplog):
    run = make_run(tmp_path, accuracies=[0.5, 0.4], trained=[0, 1, 2], status="failed")
    with caplog.at_level(logging.WARNING, logger="loop"):
        out = export_run(RunDir(run.path))
    b = read_json(out / "bundle.json")
    assert b["partial"] is True and b["status"] == "failed"
    assert b["adapter"]["round"] == 0 and b["heldout"]["final_round"] == 0
    assert (out / "adapter_model.safetensors").read_bytes() == b"weights of round 0"
    assert "Partial export" in (out / "README.md").read_text()
    assert any("not completed" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_missing_adapter_messages(tmp_path):
    never_trained = make_run(tmp_path / "a", accuracies=[0.4, 0.5], trained=[])
    with pytest.raises(FileNotFoundError, match="no trained adapter.*launch.py resume"):
        export_run(RunDir(never_trained.path))
    assert not (never_trained.path / "export").exists()

    nothing_done = make_run(tmp_path / "b", accuracies=[], trained=[0], status="interrupted")
    with pytest.raises(FileNotFoundError, match="no completed round"):
        export_run(RunDir(nothing_done.path))


def test_a_local_base_model_is_named_relative_to_the_bundle(tmp_path):
    base = tmp_path / "models" / "my-base"
    shutil.copytree(ROOT / "loop/assets/tiny-qwen3", base)
    run = make_run(tmp_path, accuracies=[0.4, 0.6], trained=[0, 1], overrides=(f"model.path={base}",))
    out = export_run(RunDir(run.path))
    b = read_json(out / "bundle.json")
    assert b["base_model"]["path"] == "../../../../models/my-base" and not (out / "base").exists()
    assert absolute_paths({k: v for k, v in b.items() if k != "config"}) == []
    assert Path(load_bundle(out).base_model) == base.resolve()
    assert read_json(out / "adapter_config.json")["base_model_name_or_path"] == "../../../../models/my-base"

    # Copied elsewhere, the bundle finds the base where the run had it (the config's absolute model.path) ...
    copy = tmp_path / "far" / "away" / "bundle"
    shutil.copytree(out, copy)
    assert Path(load_bundle(copy).base_model) == base.resolve()
    # ... and without it, says what to do, in Python and on the command line
    base.rename(tmp_path / "models" / "elsewhere")
    with pytest.raises(BundleError, match=r"moved without its base.*copy the base model to .*BUNDLE_BASE_MODEL="):
        _ = load_bundle(copy).base_model
    p = subprocess.run([sys.executable, "-m", "loop.export", "base-model", str(copy)], capture_output=True, text=True,
                       cwd=tmp_path)
    assert p.returncode == 2 and "BUNDLE_BASE_MODEL" in p.stderr and "Traceback" not in p.stderr, p.stderr
    env = os.environ | {"BUNDLE_BASE_MODEL": str(tmp_path / "models" / "elsewhere")}
    p = subprocess.run([sys.executable, "-m", "loop.export", "base-model", str(copy)], capture_output=True, text=True,
                       cwd=tmp_path, env=env)
    assert p.returncode == 0 and p.stdout.strip() == str((tmp_path / "models" / "elsewhere").resolve()), p.stderr


def test_a_copied_bundle_with_the_embedded_base_works_anywhere(tmp_path):
    out = export_run(make_run(tmp_path / "a", accuracies=[0.4, 0.6], trained=[0, 1]))
    copy = tmp_path / "b" / "bundle"
    shutil.copytree(out, copy)
    shutil.rmtree(tmp_path / "a")  # the run is gone: the copy has all it needs
    b = load_bundle(copy)
    assert b.base_model == str((copy / "base").resolve())
    assert len(b.dataset("train")) == b.meta["pool"]["train_count"] and len(b.problems()) > 0
    shutil.rmtree(copy / "base")
    with pytest.raises(BundleError, match="copied incompletely"):
        _ = b.base_model


def test_a_directory_that_is_not_a_bundle_is_named(tmp_path):
    run = make_run(tmp_path, accuracies=[0.4, 0.6], trained=[0, 1])
    with pytest.raises(BundleError, match="has no RL bundle yet.*launch.py export"):
        load_bundle(run.path)
    export_run(RunDir(run.path))
    with pytest.raises(BundleError, match=r"is a run directory, not its RL bundle; give .*export"):
        load_bundle(run.path)
    with pytest.raises(BundleError, match="adapter but no bundle.json"):
        load_bundle(run.round_dir(1) / "adapter")
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match=r"not an RL bundle \(no bundle.json\)"):
        load_bundle(tmp_path)
    (run.path / "export" / "bundle.json").write_text("{broken")
    with pytest.raises(BundleError, match="damaged"):
        load_bundle(run.path / "export")


def _run_on_a_copied_base(tmp_path: Path):
    from loop.run import base_record

    base = tmp_path / "models" / "my-base"
    shutil.copytree(ROOT / "loop/assets/tiny-qwen3", base)
    run = make_run(tmp_path, accuracies=[0.4, 0.6], trained=[0, 1], overrides=(f"model.path={base}",))
    cfg = load_config(None, raw=run.config_raw())
    recorded = base_record.record(run, cfg)
    return base, run, cfg, recorded


def test_export_refuses_a_base_that_changed_since_the_run_started(tmp_path):
    """The adapters are deltas on the weights they were trained on: a base directory whose weights
    changed (rebuilt, re-downloaded) must not be packaged with them."""
    from loop.run.state import RunStateError

    base, run, _, recorded = _run_on_a_copied_base(tmp_path)
    weights = base / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(RunStateError) as e:
        export_run(RunDir(run.path))
    msg = str(e.value)
    assert "is not the one run t" in msg and recorded["weights_sha256"][:12] in msg and "model.safetensors" in msg
    assert not (run.path / "export").exists()
    data[-1] ^= 1  # put the old weights back: the export goes through and names them
    weights.write_bytes(bytes(data))
    b = read_json(export_run(RunDir(run.path)) / "bundle.json")
    assert b["base_model"]["weights_sha256"] == recorded["weights_sha256"]


def test_resume_refuses_a_base_that_changed_before_starting_anything(tmp_path):
    from loop import runner
    from loop.run.state import RunStateError

    base, run, _, _ = _run_on_a_copied_base(tmp_path)
    run.set_status("interrupted")
    (base / "model.safetensors").write_bytes((base / "model.safetensors").read_bytes()[:-1] + b"\0")
    with pytest.raises(RunStateError, match="Put the old weights back"):
        runner.resume(run.path.name, str(tmp_path / "state"), [])
    assert read_json(run.path / "manifest.json")["status"] == "interrupted"  # untouched, lock released
    again = RunDir(run.path)
    again.acquire("resume")  # the refused resume released its lock (this raises if not)
    again.release()


def test_a_run_without_a_base_record_exports_with_a_warning(tmp_path, caplog):
    run = make_run(tmp_path, accuracies=[0.4, 0.6], trained=[0, 1])
    with caplog.at_level(logging.WARNING):
        export_run(RunDir(run.path))
    assert any("did not record its base model's digest" in r.message for r in caplog.records)


def test_a_damaged_base_record_is_named_with_the_way_out(tmp_path):
    from loop.run.state import RunStateError

    _, run, _, _ = _run_on_a_copied_base(tmp_path)
    (run.path / "base.json").write_text("{not json")
    with pytest.raises(RunStateError, match=r"base\.json is damaged .*delete it to skip this check"):
        export_run(RunDir(run.path))
