"""Run state that survives bad days: one writer per run, manifest.json.bak, a clear error for a
damaged manifest, `interrupted` on signals, stale `running`, paths relative to the run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loop.run.state import RunDir, RunStateError, find_run

ROOT = Path(__file__).resolve().parent.parent


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process that holds the run's lock until killed."""
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from loop.run.state import RunDir; "
            f"r = RunDir({str(run_dir)!r}); r.acquire('resume'); print('held', flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    run = RunDir.create(tmp_path, "t")
    holder = _hold_lock(run.path)
    try:
        with pytest.raises(RunStateError) as e:
            RunDir(run.path).acquire("resume")
        msg = str(e.value)
        assert f"pid {holder.pid}" in msg and "in use" in msg and os.uname().nodename in msg
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone (killed -9 style): its lock is stale and is taken over.
    again = RunDir(run.path)
    again.acquire("resume")
    assert json.loads((run.path / ".lock").read_text())["pid"] == os.getpid()
    again.release()
    assert not (run.path / ".lock").exists()


def test_lock_is_exclusive_within_one_process_too(tmp_path):
    run = RunDir.create(tmp_path, "t")
    run.acquire("run")
    try:
        with pytest.raises(RunStateError, match="in use by pid"):
            RunDir(run.path).acquire("resume")
        assert RunDir(run.path).lock.is_held()
    finally:
        run.release()
    assert not RunDir(run.path).lock.is_held()


def test_manifest_bak_keeps_the_previous_version(tmp_path):
    run = RunDir.create(tmp_path, "t")
    run.manifest["cursor"] = "first"
    run.save()
    run.manifest["cursor"] = "second"
    run.save()
    assert json.loads((run.path / "manifest.json").read_text())["cursor"] == "second"
    assert json.loads((run.path / "manifest.json.bak").read_text())["cursor"] == "first"
    assert not list(run.path.glob(".*tmp"))


@pytest.mark.parametrize("content, what", [
    ('{"run_id": "x", "status": "runn', "not valid JSON"),
    ("", "empty"),
    ("[1, 2]", "JSON list"),
    ('{"run_id": "x"}', "fields missing"),
    (b"\xff\xfe{}", "not UTF-8"),
])
def test_damaged_manifest_gets_a_clear_message_and_a_way_out(tmp_path, content, what):
    run = RunDir.create(tmp_path, "t")
    run.manifest["cursor"] = "round-0/sample"
    run.save()  # now there is a .bak of the good first version
    mode = "wb" if isinstance(content, bytes) else "w"
    with open(run.path / "manifest.json", mode) as f:
        f.write(content)
    with pytest.raises(RunStateError) as e:
        find_run(tmp_path, run.path.name)
    msg = str(e.value)
    assert what in msg and "manifest.json.bak" in msg and "cp " in msg
    # The way out works: restore the .bak and the run loads again.
    (run.path / "manifest.json").write_bytes((run.path / "manifest.json.bak").read_bytes())
    assert find_run(tmp_path, run.path.name).manifest["status"] == "running"


def test_damaged_manifest_without_bak(tmp_path):
    d = tmp_path / "runs" / "r"
    d.mkdir(parents=True)
    (d / "manifest.json").write_text("{")
    with pytest.raises(RunStateError, match="no manifest.json.bak"):
        find_run(tmp_path, "r")


def test_run_config_damaged_or_missing(tmp_path):
    run = RunDir.create(tmp_path, "t")
    with pytest.raises(RunStateError, match="config.yaml is missing"):
        run.config_raw()
    (run.path / "config.yaml").write_text("run: [\n")
    with pytest.raises(RunStateError, match="config.yaml is damaged at line"):
        run.config_raw()
    (run.path / "config.yaml").write_text("- a\n")
    with pytest.raises(RunStateError, match="expected a mapping"):
        run.config_raw()


def test_paths_are_relative_to_the_run_and_resolve_after_a_move(tmp_path):
    run = RunDir.create(tmp_path / "a", "t")
    adapter = run.round_dir(1) / "adapter"
    adapter.mkdir(parents=True)
    stored = run.rel(adapter)
    assert stored == "round-001/adapter"
    moved = tmp_path / "b" / run.path.name
    moved.parent.mkdir()
    run.path.rename(moved)
    again = RunDir(moved)
    assert again.resolve(stored) == (moved / "round-001" / "adapter").resolve()
    # Runs written before paths were relative: absolute, or relative to the old cwd.
    assert again.resolve(str(tmp_path / "a" / "runs" / moved.name / "round-001" / "adapter")) == \
        (moved / "round-001" / "adapter").resolve()
    assert again.resolve(f"state/runs/{moved.name}/round-001/adapter") == (moved / "round-001" / "adapter").resolve()
    assert again.resolve(None) is None


def test_create_refuses_unwritable_state_dir(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunStateError, match="run.state_dir"):
        RunDir.create(f, "t")


_SIGNAL_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    import loop.cluster.driver, loop.controller
    from loop import runner
    from loop.config import load_config
    from loop.run.state import RunDir, install_signal_handlers

    class FakeCluster:  # stands in for Ray: this test is about the runner's bookkeeping
        def __init__(self, cfg):
            pass
        def shutdown(self):
            open({marker!r}, "w").write("shutdown")

    class SlowController:
        def __init__(self, cfg, run, cluster, trackers=None):
            pass
        def run_all(self):
            print("working", flush=True)
            time.sleep(60)

    loop.cluster.driver.Cluster, loop.controller.Controller = FakeCluster, SlowController
    install_signal_handlers()
    cfg = load_config({root!r} + "/configs/default.yaml")
    run = RunDir.create({state!r}, "sig")
    run.acquire("run")
    print(run.path, flush=True)
    try:
        runner._execute(cfg, run)
    except BaseException as e:
        print("raised", type(e).__name__, flush=True)
        sys.exit(130)
""")


def test_sigterm_marks_the_run_interrupted_and_releases_everything(tmp_path):
    marker = tmp_path / "shutdown"
    code = _SIGNAL_SCRIPT.format(root=str(ROOT), marker=str(marker), state=str(tmp_path))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_path = Path(p.stdout.readline().strip())
    assert p.stdout.readline().strip() == "working"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "raised Interrupted" in out or "raised KeyboardInterrupt" in out
    m = json.loads((run_path / "manifest.json").read_text())
    assert m["status"] == "interrupted" and "SIGTERM" in m["error"]
    assert marker.read_text() == "shutdown"
    assert not (run_path / ".lock").exists()


def test_stale_running_is_detected(tmp_path):
    run = RunDir.create(tmp_path, "t")  # status running, nobody holds it
    assert RunDir(run.path).is_stale_running()
    run.acquire("run")
    try:
        assert not RunDir(run.path).is_stale_running()
    finally:
        run.release()


def test_reap_waits_then_kills_what_is_left():
    from loop.cluster.cleanup import reap

    quick = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        killed = reap({quick.pid, stuck.pid}, timeout=3.0)
        quick.wait(timeout=5)
        assert killed == [stuck.pid]
        assert stuck.wait(timeout=5) == -signal.SIGKILL
    finally:
        stuck.kill()
