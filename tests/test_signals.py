"""A user's Ctrl-C or `kill` always stops a run: status `interrupted`, exit 128+signal, no traceback,
wherever the signal lands (inside ray.init, inside a `__del__` that swallows the raise, in cleanup)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY_RUN


def _py(code: str, **kw) -> subprocess.Popen:
    # SIGINT is ignored in background jobs of a non-interactive shell; a user's terminal delivers it.
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


def test_a_raise_swallowed_by_a_finalizer_is_raised_again_at_the_next_checkpoint():
    """Python prints and drops an exception raised in `__del__` ("Exception ignored in"): a signal
    handled there would be lost. The signal is kept until the top level has seen it."""
    p = _py("""
        import gc, os, signal, sys
        sys.path.insert(0, ".")
        from loop.run.state import install_signal_handlers, check_interrupted
        install_signal_handlers()
        class Finalized:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(10**5): pass   # the handler runs in here: its raise is swallowed
        Finalized(); gc.collect()
        print("went on", flush=True)
        try:
            check_interrupted()
            print("LOST")
        except KeyboardInterrupt as e:
            print("raised", type(e).__name__, e)
    """)
    out, err = p.communicate(timeout=60)
    assert "went on" in out and "raised Interrupted SIGTERM" in out, (out, err)
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_deferred_signals_hold_a_signal_until_the_block_ends():
    p = _py("""
        import os, signal, sys, time
        sys.path.insert(0, ".")
        from loop.run.state import deferred_signals, exit_code
        try:
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
                print("block finished", flush=True)
        except KeyboardInterrupt as e:
            print("raised after the block", e, exit_code(), flush=True)
        with deferred_signals(reraise=False):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
        print("dropped in cleanup", flush=True)
        with deferred_signals():
            for _ in range(3):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
        print("NOT REACHED")
    """)
    out, err = p.communicate(timeout=60)
    assert "block finished\nraised after the block SIGTERM 143\ndropped in cleanup\n" in out, (out, err)
    assert "NOT REACHED" not in out and p.returncode == 130 and "three times" in err, (out, err, p.returncode)


def _wait_for_handler(pid: int, sig: int) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
        if caught >> (sig - 1) & 1:
            return
        time.sleep(0.01)
    raise AssertionError("launch.py never installed a SIGTERM handler")


@pytest.mark.parametrize("delay", [0.0, 0.5, 1.5])
def test_signal_while_the_cli_imports_is_an_interrupt_not_a_traceback(tmp_path, delay):
    """`launch.py run` spends its first seconds importing (config, plug-ins, preflight): a SIGTERM
    there exits 143 with one line, no traceback."""
    p = subprocess.Popen([sys.executable, "launch.py", "run", "--set", f"run.state_dir={tmp_path}"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_handler(p.pid, signal.SIGTERM)  # the interpreter's own start-up is not ours to handle
    time.sleep(delay)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143 and "Traceback" not in err and "interrupted (SIGTERM)" in err, (p.returncode, err)


@pytest.mark.integration
@pytest.mark.parametrize("sig,after,rc", [(signal.SIGINT, "run directory", 130),
                                          (signal.SIGTERM, "run directory", 143),
                                          (signal.SIGTERM, "baseline (in progress)", 143)])  # vLLM starting
def test_signal_during_ray_start_ends_the_run_interrupted(tmp_path, sig, after, rc):
    """The signal lands while Ray starts (the run directory exists, ray.init takes seconds): it is
    never lost (the run used to go on and complete), and never a SIGSEGV exit (a KeyboardInterrupt
    inside Ray's CoreWorker constructor crashed the interpreter at exit)."""
    cfg = json.loads(json.dumps(TINY_RUN))
    cfg["run"]["state_dir"] = str(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    p = subprocess.Popen([sys.executable, "launch.py", "run", "-c", str(tmp_path / "c.yaml"), "--stop-after",
                          "round-0/sample"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in p.stderr:
        lines.append(line)
        if "run directory" in line:
            break
    if after != "run directory":  # a stage: wait until the manifest says it runs (its engine starts then)
        manifest = Path(line.split("run directory: ", 1)[1].split(" (log:")[0]) / "manifest.json"
        deadline = time.time() + 240
        while time.time() < deadline and json.loads(manifest.read_text()).get("cursor") != after:
            time.sleep(0.2)
    time.sleep(1.0 if after == "run directory" else 2.0)
    p.send_signal(sig)
    _, rest = p.communicate(timeout=300)
    err = "".join(lines) + rest
    assert p.returncode == rc, err
    assert "Traceback" not in err and f"interrupted ({sig.name})" in err, err
    run = next(Path(tmp_path, "runs").iterdir())
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "interrupted" and sig.name in m["error"], m
    assert not any(s.startswith("round-0") for s in m["done"]), m  # it stopped; it did not go on
    if after != "run directory":
        assert m["cursor"] == after, m  # interrupted there, while the baseline's vLLM engine started
