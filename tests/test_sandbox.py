"""The sandbox's statuses, limits and isolation layers, on small real programs."""
import os
import sys

import pytest

from verifiers import sandbox
from verifiers.sandbox import SandboxLimits, leftover_processes, run

FAST = SandboxLimits(timeout_s=2.0)
ROOT = os.geteuid() == 0


def _clean(r):
    assert leftover_processes(uid=r.isolation.get("uid")) == [], "a sandbox process survived"


def test_ok_captures_stdout_and_reports_isolation():
    r = run("print('hello'); import sys; print('err', file=sys.stderr)", limits=FAST)
    assert (r.status, r.exit_code, r.signal) == ("ok", 0, None)
    assert r.stdout == "hello\n" and r.stderr == "err\n"
    assert r.duration_s < 2.0
    if ROOT:
        assert r.isolation["uid"] >= sandbox.UID_BASE
        assert r.isolation["network_off"] and "/tmp" in r.isolation["private_tmp"]
    _clean(r)


def test_files_stdin_and_minimal_environment(monkeypatch):
    monkeypatch.setenv("SANDBOX_TEST_SECRET", "hunter2")
    src = "import os, sys\nprint(open('data.txt').read(), sys.stdin.read(), sorted(os.environ))"
    r = run(src, files={"data.txt": "payload"}, stdin=b"from-stdin", limits=FAST)
    assert r.status == "ok"
    assert "payload from-stdin" in r.stdout
    assert "SANDBOX_TEST_SECRET" not in r.stdout
    assert "['HOME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE', 'TMPDIR']" in r.stdout


def test_failed_exit_code():
    r = run("import sys; sys.exit(3)", limits=FAST)
    assert (r.status, r.exit_code) == ("failed", 3)


def test_timeout_kills():
    r = run("while True: pass", limits=SandboxLimits(timeout_s=1.0))
    assert r.status == "timeout" and r.signal == 9
    assert 1.0 <= r.duration_s < 1.8
    _clean(r)


def test_memory_limit():
    r = run("x = bytearray(4 << 30)", limits=SandboxLimits(timeout_s=2, memory_mb=256))
    assert r.status == "memory" and "MemoryError" in r.stderr


def test_output_cap_keeps_the_tail():
    r = run("import sys\nwhile True: sys.stdout.write('x' * 65536)",
            limits=SandboxLimits(timeout_s=5, max_output_bytes=200_000, tail_bytes=100))
    assert r.status == "output_limit"
    assert r.stdout == "x" * 100 and 200_000 < r.stdout_bytes < 2_000_000
    _clean(r)


def test_file_size_limit():
    r = run("open('big', 'wb').write(b'0' * (3 << 20))", limits=SandboxLimits(timeout_s=2, max_file_mb=1))
    assert r.status in ("output_limit", "failed")  # SIGXFSZ, or EFBIG when the signal is ignored


def test_killed_by_signal():
    r = run("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", limits=FAST)
    assert (r.status, r.signal) == ("killed", 11)


def test_straggler_holding_pipes_is_killed():
    src = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(30)\n"
           "print('main done')")
    r = run(src, limits=SandboxLimits(timeout_s=3))
    assert r.status == "ok" and r.duration_s < 1.5
    _clean(r)


def test_workdir_is_removed(tmp_path):
    r = run("import os; open('left.txt', 'w').write('x'); print(os.getcwd())", limits=FAST, tmp_root=str(tmp_path))
    assert r.status == "ok"
    assert list(tmp_path.iterdir()) == []


def test_sandbox_error_when_tempdir_cannot_be_created(tmp_path):
    r = run("print(1)", limits=FAST, tmp_root=str(tmp_path / "missing"))
    assert r.status == "sandbox_error" and "cannot prepare" in r.error


def test_sandbox_error_when_exec_fails():
    r = run("print(1)", limits=FAST, python="/nonexistent/python3")
    assert r.status == "sandbox_error" and "nonexistent" in r.error
    assert r.exit_code is None


def test_bad_file_name_is_a_sandbox_error():
    r = run("print(1)", files={"../x.py": ""}, limits=FAST)
    assert r.status == "sandbox_error" and "plain name" in r.error


@pytest.mark.skipif(not ROOT, reason="the unprivileged-uid layer applies only when the verifier runs as root")
def test_process_limit_holds_under_root():
    src = ("import os, time\nn = 0\nfor i in range(60):\n    try:\n        pid = os.fork()\n"
           "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(20)\n        os._exit(0)\n"
           "    n += 1\nprint(n)")
    r = run(src, limits=SandboxLimits(timeout_s=3, max_procs=8))
    assert r.status == "ok" and int(r.stdout) == 7  # 8 processes of the run's uid, main included
    _clean(r)


def test_interpreter_is_usable_by_the_sandbox_uid():
    py = sandbox.interpreter(ROOT)
    assert os.path.isabs(py)
    if not ROOT:
        assert py == sys.executable


def test_without_pidfd_the_exit_is_polled(monkeypatch):
    def no_pidfd(pid):
        raise OSError("pidfd_open not supported")

    monkeypatch.setattr(sandbox.os, "pidfd_open", no_pidfd)
    r = run("print('polled')", limits=FAST)
    assert r.status == "ok" and r.stdout == "polled\n"
    r = run("while True: pass", limits=SandboxLimits(timeout_s=1.0))
    assert r.status == "timeout"
    _clean(r)
