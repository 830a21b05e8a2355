"""Bad inputs as a careless or hostile user gives them: each ends in a clear message (what is
wrong, how to fix it) before any expensive work, never a traceback, never silent wrong data."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loop.config import ROOT, ConfigError, load_config
from loop.records import Sample, Verdict

PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
DEFAULT = ROOT / "configs" / "default.yaml"
BASE = yaml.safe_load(DEFAULT.read_text())


def raw(**sections) -> dict:
    out = json.loads(json.dumps(BASE))
    out.update(sections)
    return out


def config_error(*overrides: str, **sections) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(None, list(overrides), raw=raw(**sections))
    return str(e.value)


# ---- the config: what validates field by field but cannot make sense -----------------------
@pytest.mark.parametrize("overrides, sections, expect", [
    (["sampling.n=true"], {}, "sampling.n: expected a number, got a boolean"),
    (["loop.rounds=false"], {}, "loop.rounds: expected a number, got a boolean"),
    (["training.learning_rate=true"], {}, "training.learning_rate: expected a number"),
    (["run.name=../../x"], {}, "run.name: must be a plain name"),
    (["run.name=/abs"], {}, "run.name: must be a plain name"),
    (["run.name=.hidden"], {}, "run.name: must be a plain name"),
    (["loop.rounds=[1"], {}, "is not valid YAML"),
    (["sampling.n={a: 1"], {}, "quote it to mean a string"),
    ([], {"generators": [{"family": "arithmetic", "categories": {"add": {"budget": 0}, "sub": {"budget": 0}}}]},
     "no category has budget > 0"),
    ([], {"generators": [{"family": "arithmetic", "categories": {}}]}, "no category has budget > 0"),
    ([], {"generators": [{"family": "arithmetic", "categories": {"add": {"budget": 4}}},
                         {"family": "arithmetic", "categories": {"sub": {"budget": 4}}}]},
     "generators.1.family: 'arithmetic' is already listed as generators.0"),
    ([], {"verifiers": [{"name": "exact_match"}, {"name": "exact_match", "required": False}]},
     "verifiers.1.name: 'exact_match' is already listed as verifiers.0"),
    ([], {"verifiers": [{"name": "exact_match", "required": False}, {"name": "format", "required": False}]},
     "no verifier has required: true"),
    (["cluster.sampler.num_gpus=1", "model.dtype=float32"], {}, "model.dtype: float32 with vLLM LoRA on a GPU"),
    (["verifiers.0.max_error_share=2"], {}, "verifiers.0.max_error_share"),
])
def test_config_that_cannot_make_sense(overrides, sections, expect):
    assert expect in config_error(*overrides, **sections)


def test_structural_problems_are_reported_together():
    msg = config_error(generators=[{"family": "arithmetic", "categories": {"add": {"budget": 0}}},
                                   {"family": "arithmetic", "categories": {"sub": {"budget": 0}}}],
                       verifiers=[{"name": "format", "required": False}, {"name": "format", "required": False}])
    for part in ("generators.1.family", "no category has budget", "verifiers.1.name", "no verifier has required"):
        assert part in msg, msg


def test_duplicate_yaml_keys_name_both_lines(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(DEFAULT.read_text().replace("sampling:\n", "sampling:\n  n: 2\n", 1))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    first = DEFAULT.read_text().splitlines().index("sampling:") + 2
    assert f"(line {first + 1}, column 3): duplicate key 'n' (first at line {first})" in msg


def test_duplicate_key_inside_a_flow_mapping_and_a_list_item(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("generators:\n  - family: arithmetic\n    categories:\n      add: {budget: 1, budget: 128}\n"
                 "verifiers: [{name: exact_match}]\n")
    with pytest.raises(ConfigError, match="duplicate key 'budget'"):
        load_config(p)


def test_config_file_that_is_a_directory_or_not_utf8(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    p = tmp_path / "c.yaml"
    p.write_bytes(b"run:\n  name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 on line 2\)"):
        load_config(p)


def test_good_values_still_load():
    cfg = load_config(None, ["sampling.n=3", "run.name=my-run_1.2", "training.learning_rate=1e-3"], raw=raw())
    assert cfg.sampling.n == 3 and cfg.run.name == "my-run_1.2"
    assert cfg.quantization.load_in_4bit is True  # booleans where booleans belong


# ---- data files ------------------------------------------------------------------------------
def files_generator(path: Path, **opts):
    from generators.base import GENERATORS

    return GENERATORS.build("files", {"path": str(path), **opts})


def test_same_prompt_two_answers_is_kept_out_of_both_splits(tmp_path, caplog):
    data = tmp_path / "d.jsonl"
    rows = [{"question": "What is 2+2?", "answer": "4"},
            {"question": "What is 3+3?", "answer": "6"},
            {"question": "What  is 2+2? ", "answer": "5"},  # same prompt once normalised, other answer
            {"question": "What is 3+3?", "answer": "6"}]   # an exact repeat
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    gen = files_generator(data)
    prompts = [p.prompt[0].content for ps in gen._pool["default"].values() for p in ps]
    assert prompts == ["What is 3+3?"]
    warn = "\n".join(r.getMessage() for r in caplog.records)
    assert "conflicting references" in warn and "line 1" in warn and "line 3" in warn


def test_all_rows_conflicting_is_an_error(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "1"}\n{"question": "q", "answer": "2"}\n')
    with pytest.raises(ValueError, match="every row was dropped as a conflicting duplicate"):
        files_generator(data)


def test_not_gzip_although_named_gz(tmp_path):
    data = tmp_path / "d.jsonl.gz"
    data.write_text('{"question": "q", "answer": "1"}\n')
    with pytest.raises(ValueError, match="not gzip-compressed; rename it to d.jsonl"):
        files_generator(data)


def test_truncated_gzip(tmp_path):
    data = tmp_path / "d.jsonl.gz"
    blob = gzip.compress(b"".join(json.dumps({"question": f"q{i}", "answer": str(i)}).encode() + b"\n"
                                  for i in range(2000)))
    data.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        files_generator(data)


def test_real_gzip_loads(tmp_path):
    data = tmp_path / "d.jsonl.gz"
    data.write_bytes(gzip.compress(b'{"question": "q", "answer": "1"}\n'))
    assert files_generator(data).categories() == ["default"]


def test_undecodable_row_is_named_by_file_and_line(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'{"question": "q", "answer": "1"}\n{"question": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(ValueError) as e:
        files_generator(data)
    assert f"{data}:line 2: not valid UTF-8 (byte 0xe9" in str(e.value)


def test_utf8_bom_is_accepted(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'\xef\xbb\xbf{"question": "q", "answer": "1"}\n')
    assert files_generator(data).categories() == ["default"]


# ---- verifiers cannot take the run down or fake its numbers ---------------------------------------
def _samples(n: int) -> list[Sample]:
    return [Sample(id=f"s{i}", problem_id="p", round=0, index=i, text="x", num_tokens=1, finish_reason="stop")
            for i in range(n)]


@pytest.mark.parametrize("returned, expect", [
    (lambda ss: [None] * len(ss), "returned NoneType (None) where a Verdict belongs"),
    (lambda ss: None, "returned a NoneType (None), not a list of verdicts"),
    (lambda ss: [], "returned 0 verdicts for 3 samples"),
    (lambda ss: [Verdict(sample_id="other", verifier="v", outcome="pass") for _ in ss],
     "wrong sample ids (e.g. 'other'"),
    (lambda ss: [Verdict(sample_id=ss[0].id, verifier="v", outcome="pass") for _ in ss], "wrong sample ids"),
    (lambda ss: [Verdict(sample_id=s.id, verifier="exact_match", outcome="pass") for s in ss],
     "signed by another verifier ('exact_match')"),
    (lambda ss: [0.5] * len(ss), "returned float (0.5)"),
])
def test_malformed_verdicts_become_errors_naming_the_verifier(returned, expect):
    from loop.cluster.driver import checked_verdicts

    ss = _samples(3)
    out = checked_verdicts("v", ss, returned(ss))
    assert [v.sample_id for v in out] == ["s0", "s1", "s2"]
    assert all(v.outcome == "error" and v.verifier == "v" for v in out)
    assert expect in out[0].reason and out[0].reason.startswith("verifier v:")


def test_good_verdicts_pass_through_in_any_order():
    from loop.cluster.driver import checked_verdicts

    ss = _samples(3)
    good = [Verdict(sample_id=s.id, verifier="v", outcome="fail") for s in reversed(ss)]
    assert checked_verdicts("v", ss, good) == good


def _cfg_with(required_share: float = 0.05):
    return load_config(None, [f"verifiers.0.max_error_share={required_share}"], raw=raw())


def test_required_verifier_erroring_fails_the_stage_loudly():
    from loop.cluster.driver import check_required_errors
    from loop.run.state import StageFailed

    ss = _samples(20)
    out = {s.id: [Verdict(sample_id=s.id, verifier="exact_match",
                          outcome="error" if i < 2 else "pass", reason=f"sandbox died {i}")] for i, s in enumerate(ss)}
    with pytest.raises(StageFailed) as e:
        check_required_errors(_cfg_with(0.05), ss, out)  # 2 of 20 = 10% > 5%
    msg = str(e.value)
    assert "required verifier 'exact_match'" in msg and "2 of 20" in msg and "sandbox died 0" in msg
    check_required_errors(_cfg_with(0.10), ss, out)  # at the limit: allowed


def test_optional_verifier_errors_do_not_fail_the_stage():
    from loop.cluster.driver import check_required_errors

    ss = _samples(4)
    out = {s.id: [Verdict(sample_id=s.id, verifier="format", outcome="error", reason="boom")] for s in ss}
    check_required_errors(_cfg_with(), ss, out)


# ---- report ------------------------------------------------------------------------------------
def test_report_names_round_files_that_are_gone(tmp_path):
    from loop.report.summary import write_report
    from loop.run.state import RunDir

    run = RunDir.create(tmp_path, "t")
    run.manifest.update(rounds_completed=3, status="completed")
    run.save()
    for r in (0, 2):
        d = run.round_dir(r)
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"round": r, "samples": 4, "accepted": 2,
                                                    "heldout": {"accuracy": 0.5, "by_category": {"a": 0.5}}}))
    (run.round_dir(1)).mkdir()  # its metrics.json is gone
    text = write_report(run.path).read_text()
    assert "rounds completed: 3; in this report: 2 (round-001/metrics.json missing" in text
    assert "round-001/metrics.json is missing or unreadable although the manifest says round 1 finished" in text
    assert not list((run.path / "report").glob(".*tmp"))  # plots and summary written atomically
    assert (run.path / "report" / "heldout.png").read_bytes()[:4] == b"\x89PNG"


def test_report_of_a_running_run_nobody_holds(tmp_path):
    from loop.report.summary import write_report
    from loop.run.state import RunDir

    run = RunDir.create(tmp_path, "t")
    assert "no process holds the run" in write_report(run.path).read_text()


# ---- launch.py as a user runs it -----------------------------------------------------------------
def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "launch.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def clear_error(p: subprocess.CompletedProcess, rc: int = 2) -> str:
    out = p.stdout + p.stderr
    assert p.returncode == rc, (p.returncode, out)
    assert "Traceback" not in out, out
    assert "Started a local Ray" not in out and "vLLM" not in out, out
    assert p.stderr.startswith("error: "), p.stderr
    return p.stderr


def test_cli_damaged_manifest_and_config(tmp_path):
    from loop.run.state import RunDir

    run = RunDir.create(tmp_path, "t")
    (run.path / "config.yaml").write_text("run: [\n")
    for cmd in ("resume", "export"):
        err = clear_error(cli(cmd, str(run.path)))
        assert "config.yaml is damaged at line" in err, (cmd, err)
    (run.path / "manifest.json").write_text('{"run_id": ')
    for cmd in ("resume", "report", "export"):
        err = clear_error(cli(cmd, str(run.path)))
        assert "manifest.json is damaged" in err and "manifest.json.bak" in err, (cmd, err)


def test_cli_resume_refused_while_another_process_holds_the_run(tmp_path):
    from loop.run.state import RunDir

    run = RunDir.create(tmp_path, "t")
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from loop.run.state import RunDir; "
            f"r = RunDir({str(run.path)!r}); r.acquire('run'); print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        err = clear_error(cli("resume", str(run.path)))
        assert f"in use by pid {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()


def test_cli_stop_after_typo_and_missing_model(tmp_path):
    err = clear_error(cli("run", "--set", f"run.state_dir={tmp_path}", "--set", f"model.path={tmp_path}/m",
                          "--stop-after", "round-0/smaple"))
    assert "preflight found 2 problems" in err and "did you mean round-0/sample" in err
    assert not (tmp_path / "runs").exists()  # nothing was started, not even a run directory


def test_cli_plugin_that_fails_to_import(tmp_path):
    plugin = tmp_path / "bad_plugin.py"
    plugin.write_text("raise RuntimeError('plug-in bug')\n")
    for args in (["list", "--plugin", str(plugin)], ["run", "--set", f"plugins=[{plugin}]"]):
        err = clear_error(cli(*args))
        assert str(plugin) in err and "RuntimeError: plug-in bug" in err, err


def test_unexpected_error_is_one_line_naming_where_the_traceback_went(tmp_path, capsys):
    """A bug (not a user error) is one line: type, where it happened, the log with the traceback."""
    import launch
    from loop.run.logs import attach_run_log, detach_run_log

    attach_run_log(tmp_path)
    try:
        try:
            {}["missing"]
        except KeyError as e:
            rc = launch._unexpected(e, str(tmp_path))
    finally:
        detach_run_log()
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: unexpected KeyError at tests/test_bad_inputs.py:")
    assert f"full traceback in {tmp_path / 'run.log'}" in err
    assert "Traceback (most recent call last)" in (tmp_path / "run.log").read_text()


def test_import_error_in_a_builtin_plugin_module_names_the_file(tmp_path, capsys):
    import launch

    bad = tmp_path / "zz_plugin.py"
    bad.write_text("import no_such_dependency_xyz\n")
    sys.path.insert(0, str(tmp_path))
    try:
        try:
            __import__("zz_plugin")
        except ImportError as e:
            rc = launch._unexpected(e, str(tmp_path))
    finally:
        sys.path.remove(str(tmp_path))
    err = capsys.readouterr().err
    assert rc == 1 and "ModuleNotFoundError" in err and "no_such_dependency_xyz" in err
    assert "remove its import line" in err and "crash-" in err
