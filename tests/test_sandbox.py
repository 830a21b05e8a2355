"""The sandbox's statuses, limits and isolation layers, on small real programs."""
import os
import signal
import sys

import pytest

from verifiers.sandbox import SandboxLimits, leftover_processes, run
from verifiers.sandbox import cgroup as sandbox_cgroup
from verifiers.sandbox import launcher as sandbox_launch
from verifiers.sandbox import runner as sandbox

FAST = SandboxLimits(timeout_s=10.0)  # generous: these programs end at once; CI machines may be loaded
from tests.kernel_caps import NS, ROOT  # noqa: E402


def _clean(r):
    assert leftover_processes(uid=r.isolation.get("uid")) == [], "a sandbox process survived"


def test_ok_captures_stdout_and_reports_isolation():
    r = run("print('hello'); import sys; print('err', file=sys.stderr)", limits=FAST)
    assert (r.status, r.exit_code, r.signal) == ("ok", 0, None)
    assert r.stdout == "hello\n" and r.stderr == "err\n"
    assert r.duration_s < 10.0
    if ROOT:
        assert r.isolation["uid"] >= sandbox.UID_BASE
    if NS:  # the kernel allows them, so the sandbox must have used them
        assert r.isolation["network_off"] and "/tmp" in r.isolation["private_tmp"]
        assert r.isolation["root"] == "minimal" and r.isolation["workdir"] == "/work"
        assert {"mnt", "pid", "ipc", "net"} <= set(r.isolation["namespaces"])
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
    # the wall clock's SIGKILL, or on an idle machine the CPU rlimit's SIGXCPU first (both are the timeout)
    assert r.status == "timeout" and r.signal in (signal.SIGKILL, signal.SIGXCPU)
    assert 1.0 <= r.duration_s < 1.0 + sandbox.SETUP_S  # the clock starts when the program does
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
    r = run(src, limits=SandboxLimits(timeout_s=20))
    assert r.status == "ok" and r.duration_s < 10  # not the straggler's 30 s, nor the timeout
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
    r = run(src, limits=SandboxLimits(timeout_s=20, max_procs=8))
    # 8 tasks for the run: with a cgroup the launcher and init count too, else the uid's processes
    assert r.status == "ok" and int(r.stdout) == (5 if r.isolation["cgroup"].startswith("v") else 7)
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


@pytest.mark.skipif(not NS, reason="the kernel refuses mount/pid namespaces here; the sandbox says so in isolation")
def test_minimal_filesystem_view_and_own_pid_namespace():
    src = ("import os, sys\nprint(sorted(os.listdir('/')))\nprint(sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
           "print(os.getppid(), os.path.exists(sys.prefix + '/lib/python3.11/site-packages/pytest'))\n"
           "open('/tmp/x', 'w').write('1'); open('/work/y', 'w').write('1'); open('/dev/shm/z', 'w').write('1')\n"
           "for ro in ('/usr/x', '/x'):\n    try:\n        open(ro, 'w')\n        print('wrote', ro)\n"
           "    except OSError:\n        pass")
    r = run(src, limits=FAST)
    assert r.status == "ok", r.stderr
    top, pids, parent = r.stdout.splitlines()[:3]
    assert set(eval(top)) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "root", "sbin", "tmp",
                              "usr", "work"}
    assert eval(pids) == ["1", "2"]  # init and the program, nothing of the host
    assert parent == "1 False"       # site-packages of the runtime are masked
    assert "wrote" not in r.stdout


@pytest.mark.skipif(not sandbox_cgroup.bases()[0], reason="no usable cgroup here (not root, or no delegation)")
def test_one_memory_budget_for_the_whole_run():
    src = ("import os, time\nkids = []\nfor i in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
           "        b = bytearray(60 << 20)\n        for j in range(0, len(b), 4096):\n            b[j] = 1\n"
           "        time.sleep(2)\n        os._exit(0)\n    kids.append(pid)\n"
           "print(sum(os.waitpid(k, 0)[1] == 0 for k in kids))")
    r = run(src, limits=SandboxLimits(timeout_s=20, memory_mb=150))
    assert r.status == "ok" and int(r.stdout) < 4  # each fits its own 150 MiB; together they do not
    assert r.isolation["oom_kills"] >= 1 and r.isolation["cgroup"].startswith("v")


def test_channel_and_passed_fds():
    read_end, write_end = os.pipe()
    r = run("import os\nos.write(3, b'to the verifier')\nos.write(4, b'to the pipe')\nos.close(4)",
            limits=FAST, channel=True, fds={4: write_end})
    assert r.status == "ok" and r.channel == b"to the verifier"
    assert os.read(read_end, 100) == b"to the pipe" and os.read(read_end, 100) == b""  # EOF: no copy left here
    os.close(read_end)
    r = run("import os\nos.write(3, b'x' * (3 << 20))", limits=SandboxLimits(timeout_s=3, max_channel_bytes=1 << 20),
            channel=True)
    assert r.status == "output_limit" and len(r.channel) == 1 << 20


def test_cleanup_of_a_dead_verifiers_work_directory(tmp_path):
    stale = tmp_path / "sandbox-stale"
    stale.mkdir()
    (stale / sandbox.OWNER_FILE).write_text('{"pid": 999999999, "start": 1, "uid": null}')
    (stale / "main.py").write_text("x")
    live = tmp_path / "sandbox-live"
    live.mkdir()
    me = os.getpid()
    (live / sandbox.OWNER_FILE).write_text(f'{{"pid": {me}, "start": {sandbox_cgroup.start_time(me)}, "uid": null}}')
    assert sandbox.cleanup_stale(str(tmp_path))["dirs"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["sandbox-live"]


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the seccomp filter is written for x86_64")
def test_seccomp_denies_tracing_and_new_namespaces_but_not_threads_or_fork():
    src = ("import ctypes, os, threading, multiprocessing\nlibc = ctypes.CDLL(None, use_errno=True)\n"
           "t = threading.Thread(target=lambda: print('thread'))\nt.start()\nt.join()\n"
           "pid = os.fork()\nif pid == 0:\n    os._exit(0)\nprint('fork', os.waitpid(pid, 0)[1])\n"
           "print('ptrace', libc.ptrace(16, 1, 0, 0), ctypes.get_errno())\n"
           "print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n"
           "print('clone', libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0), ctypes.get_errno())\n"
           "with multiprocessing.Pool(2) as p:\n    print('pool', p.map(abs, [-1, -2]))")
    r = run(src, limits=SandboxLimits(timeout_s=20))
    assert r.status == "ok", r.stderr
    assert r.stdout.split("\n")[:6] == ["thread", "fork 0", "ptrace -1 1", "unshare -1 1", "clone -1 1", "pool [1, 2]"]
    assert r.isolation["seccomp"].startswith(f"{len(sandbox_launch.DENIED_X86_64)} calls denied")
    _clean(r)


def test_no_python_reachable_by_the_uid_matters_only_without_a_minimal_root(monkeypatch):
    def none(unprivileged):
        raise OSError("no interpreter usable by an unprivileged uid")

    monkeypatch.setattr(sandbox, "interpreter", none)
    r = run("print(1)", limits=FAST)
    if NS:  # the minimal root always holds our own interpreter
        assert r.status == "ok" and r.isolation["root"] == "minimal"
    else:
        assert r.status == "sandbox_error" and "no interpreter usable" in r.error


def test_parsing_from_many_threads_at_once_never_fails():
    """CPython 3.11's AST constructor shares its recursion counter between threads ("SystemError:
    AST constructor recursion depth mismatch" made a correct HumanEval solution a sandbox error
    under load): every parse of the verifier goes through verifiers.sandbox.pyast's lock."""
    from concurrent.futures import ThreadPoolExecutor

    from verifiers.sandbox import pyast

    deep = "x = " + "(" * 60 + "1" + ")" * 60 + "\n" + "assert f([1, 2, 3]) == [" + ", ".join(map(str, range(200))) + "]\n"

    def work(i):
        for _ in range(200):
            pyast.parse(deep, f"t{i}.py")
            pyast.literal_eval("{'namespaces': ['mnt', 'pid'], 'depth': [[[1]]]}")
        return i

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(work, range(8))) == list(range(8))
