"""launch.py as a user runs it: help, the plug-in list, and one-line errors (exit 2) for mistakes."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import generators  # noqa: F401  (register, to compare with `list`)
import policies  # noqa: F401
import verifiers  # noqa: F401
from generators.base import GENERATORS
from loop.config import ROOT, dump_config, load_config
from loop.run.state import RunDir
from policies.base import POLICIES
from verifiers.base import VERIFIERS

PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "launch.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    assert p.stderr.startswith("error: "), p.stderr
    return p.stderr


@pytest.mark.parametrize("cmd, options", [
    ([], ["run", "resume", "report", "export", "eval", "list", "--verbose"]),
    (["run"], ["--config", "--set", "KEY=VALUE", "--stop-after"]),
    (["resume"], ["--state-dir", "--set", "loop.rounds", "latest"]),
    (["report"], ["--state-dir", "latest"]),
    (["export"], ["--state-dir", "RL"]),
    (["eval"], ["--config", "--set", "--adapter"]),
    (["list"], ["generator", "verifier", "polic"]),
])
def test_help(cmd, options):
    p = cli(*cmd, "--help")
    assert p.returncode == 0, p.stderr
    for o in options:
        assert o in p.stdout, f"{o!r} missing from `launch.py {' '.join(cmd)} --help`:\n{p.stdout}"


def test_list_prints_every_registered_plugin():
    p = cli("list")
    assert p.returncode == 0, p.stderr
    listed = set(re.findall(r"^  (\S+)\s", p.stdout, flags=re.MULTILINE))
    for registry in (GENERATORS, VERIFIERS, POLICIES):
        assert registry.names(), registry.kind
        missing = set(registry.names()) - listed
        assert not missing, f"`launch.py list` omits {registry.kind}s {sorted(missing)}"
    for role in ("acceptance", "targeting", "stopping"):
        assert f"{role} policies (policies.{role}.name)" in p.stdout


def test_missing_config_file():
    err = one_line_error(cli("run", "-c", "/nonexistent.yaml"))
    assert "/nonexistent.yaml does not exist" in err and len(err.strip().splitlines()) == 1


def test_bad_override_names_the_field():
    err = one_line_error(cli("run", "--set", "loop.rounds=0"))
    assert "loop.rounds" in err and "(got 0)" in err


def test_report_of_unknown_run():
    err = one_line_error(cli("report", "no-such-run"))
    assert "no-such-run" in err and "not a run directory" in err and len(err.strip().splitlines()) == 1


def test_export_without_adapter(tmp_path: Path):
    run = RunDir.create(tmp_path, "t")
    (run.path / "config.yaml").write_text(dump_config(load_config(ROOT / "configs" / "default.yaml")))
    run.manifest["rounds_completed"] = 1
    run.set_status("completed", final_adapter=None)
    err = one_line_error(cli("export", str(run.path)))
    assert "no trained adapter" in err and len(err.strip().splitlines()) == 1
    assert not (run.path / "export" / "bundle.json").exists()


@pytest.mark.parametrize("args, says", [
    (["--samples", "0", "--pass-rates", "measure"], "argument --samples: 0 completions per problem: give 1 to 16384"),
    (["--samples", "-3"], "argument --samples: -3 completions"),
    (["--samples", "many"], "argument --samples: 'many' is not a whole number"),
    (["--round", "-1"], "argument --round: -1: rounds count from 0"),
])
def test_export_arguments_are_checked_before_anything_starts(tmp_path, args, says):
    """`export --samples 0 --pass-rates measure` used to start vLLM and wait; refused at parse time."""
    p = cli("export", str(tmp_path), *args)
    assert p.returncode == 2 and says in p.stderr and "Traceback" not in p.stderr, p.stderr
