"""Hostile programs judged by code_tests: never `pass`, host unharmed, nothing left running."""
import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from loop.records import Problem, Message, Reference, Sample
from verifiers import code as code_mod
from verifiers.base import VERIFIERS
from verifiers.sandbox import leftover_processes

REPO = Path(__file__).resolve().parent.parent
ROOT = os.geteuid() == 0
ADD = "def add(a, b):\n    return a + b\n"
PROBLEM = Problem(family="test", category="code", difficulty=1, prompt=[Message(role="user", content="add")],
                  reference=Reference(tests="def check(candidate):\n    assert candidate(2, 3) == 5\n",
                                      entry_point="add"))


@pytest.fixture
def judge(monkeypatch):
    """Runs one program; returns (verdict, sandbox result) and checks no process survived."""
    results = []
    real_run = code_mod.sandbox.run

    def recording_run(*a, **kw):
        results.append(real_run(*a, **kw))
        return results[-1]

    monkeypatch.setattr(code_mod.sandbox, "run", recording_run)
    verifier = VERIFIERS.build("code_tests", {"timeout_s": 1.5, "memory_mb": 256, "max_output_bytes": 1 << 20})

    def go(program: str):
        sample = Sample(id="s:r0:0", problem_id=PROBLEM.id, round=0, index=0,
                        text=f"<think>\nx\n</think>\n```python\n{program}\n```", num_tokens=0, finish_reason="stop")
        [verdict] = verifier.verify([PROBLEM], [sample])
        r = results[-1]
        assert verdict.outcome != "pass", verdict
        assert leftover_processes(uid=r.isolation.get("uid")) == [], "a sandbox process survived"
        return verdict, r

    return go


def test_control_correct_program_passes():
    v = VERIFIERS.build("code_tests", {"timeout_s": 1.5})
    s = Sample(id="s:r0:0", problem_id=PROBLEM.id, round=0, index=0, text=f"```python\n{ADD}```",
               num_tokens=0, finish_reason="stop")
    assert v.verify([PROBLEM], [s])[0].outcome == "pass"


def test_infinite_loop(judge):
    v, _ = judge("while True:\n    pass")
    assert v.evidence["status"] == "timeout"


def test_memory_bomb(judge):
    v, _ = judge("blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))")
    assert v.evidence["status"] == "memory"


def test_deep_recursion(judge):
    v, _ = judge("def f(n):\n    return f(n + 1) + 1\nf(0)")
    assert v.evidence["exception"] == "RecursionError"
    v, _ = judge("import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1) + 1\nf(0)")
    # 3.11 keeps Python frames on the heap: the run ends by memory, timeout, or SIGSEGV
    assert v.evidence["status"] in ("killed", "memory", "timeout")


def test_printing_gigabytes(judge):
    v, r = judge("import sys\nwhile True:\n    sys.stdout.write('x' * (1 << 20))")
    assert v.evidence["status"] == "output_limit" and r.duration_s < 1.5


@pytest.mark.skipif(not ROOT, reason="RLIMIT_NPROC is only per-run under the unprivileged uid (root); "
                    "as a normal user a fork bomb would share the caller's process quota")
def test_fork_bomb(judge):
    probe = code_mod.sandbox.run(
        "import os, time\nn = 0\nfor i in range(100):\n    try:\n        pid = os.fork()\n    except OSError:\n"
        "        break\n    if pid == 0:\n        time.sleep(20)\n        os._exit(0)\n    n += 1\nprint(n)",
        limits=code_mod.sandbox.SandboxLimits(timeout_s=3))
    assert probe.status == "ok" and int(probe.stdout) < 40, "the process limit does not hold; not running the bomb"
    v, _ = judge("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
    assert v.evidence["status"] == "timeout"


def test_writing_outside_the_sandbox(judge):
    nonce = secrets.token_hex(6)
    targets = [f"/tmp/pwned-{nonce}", f"/var/tmp/pwned-{nonce}", f"/dev/shm/pwned-{nonce}", str(REPO / f"pwned-{nonce}")]
    prog = (f"import os\nfor t in {targets!r}:\n    try:\n        open(t, 'w').write('x')\n"
            "    except OSError:\n        pass\nos._exit(0)")
    judge(prog)
    assert [t for t in targets if os.path.exists(t)] == []


def test_environment_secrets_are_not_visible(judge, monkeypatch):
    monkeypatch.setenv("CODE_TESTS_SECRET", "s3cr3t-token")
    # The program passes only if it can see the secret somewhere.
    prog = ("import os\nseen = 's3cr3t-token' in str(os.environ)\nfor pid in (os.getppid(), 1):\n    try:\n"
            "        seen |= b's3cr3t-token' in open(f'/proc/{pid}/environ', 'rb').read()\n"
            "    except OSError:\n        pass\nassert seen, 'secret not visible'\n" + ADD)
    v, _ = judge(prog)
    assert v.evidence["message"] == "secret not visible"


def test_network_connection(judge):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        srv.setblocking(False)
        port = srv.getsockname()[1]
        prog = (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5).close()\n"
                "import os\nos._exit(0)")
        v, r = judge(prog)
        try:
            srv.accept()
            connected = True
        except BlockingIOError:
            connected = False
    # Where the OS gives us a network namespace the connection must fail; elsewhere we only record it.
    assert connected == (not r.isolation["network_off"])
    if r.isolation["network_off"]:
        assert v.evidence["exception"] in ("OSError", "ConnectionRefusedError", "TimeoutError")


@pytest.mark.parametrize("early_exit", ["import sys\nsys.exit(0)", "import os\nos._exit(0)",
                                        "raise SystemExit", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"])
def test_exiting_before_the_tests_is_not_a_pass(judge, early_exit):
    v, _ = judge(ADD + early_exit)
    assert v.outcome == "fail"


def test_forged_pass_line_without_the_nonce(judge):
    v, _ = judge(ADD + f"print({code_mod.PASS_MARK!r} + ' ' + 'f' * 32)\nimport os\nos._exit(0)")
    assert v.evidence["status"] == "exited_early"


def test_killing_the_parent_leaves_the_host_unharmed():
    """Run the verifier in a throwaway process so a containment failure cannot kill pytest."""
    prog = ("import os, signal\nfor f in (lambda: os.kill(os.getppid(), 9),\n"
            "          lambda: os.killpg(os.getpgid(os.getppid()), 9)):\n    try:\n        f()\n"
            "    except OSError:\n        pass\n" + ADD)
    text = "```python\n" + prog + "```"
    script = f"""
import json
from loop.records import Sample
from verifiers.base import VERIFIERS
from tests.test_sandbox_hostile import PROBLEM
s = Sample(id="s:r0:0", problem_id=PROBLEM.id, round=0, index=0, text={text!r},
           num_tokens=0, finish_reason="stop")
print(json.dumps(VERIFIERS.build("code_tests", {{"timeout_s": 2}}).verify([PROBLEM], [s])[0].model_dump()))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                         timeout=30, start_new_session=True)
    assert out.returncode == 0, out.stderr  # -9 here would mean the sandbox killed its parent
    verdict = json.loads(out.stdout.strip().splitlines()[-1])
    # Root: the kills fail (other uid) and the correct add() passes; otherwise it must not pass.
    assert verdict["outcome"] == "pass" if ROOT else verdict["outcome"] != "pass"


def test_replacing_exec_to_skip_the_tests(judge):
    v, _ = judge("import builtins\ndef check(candidate):\n    pass\ndef add(a, b):\n    return 0\n"
                 "builtins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None")
    assert v.evidence["exception"] == "AssertionError"


def test_thread_overwriting_check_from_the_program_namespace(judge):
    v, _ = judge("import threading\ndef add(a, b):\n    return 0\ndef _noop(candidate):\n    pass\n"
                 "def _spin():\n    g = globals()\n    while True:\n        g['check'] = _noop\n"
                 "threading.Thread(target=_spin, daemon=True).start()")
    assert v.evidence["exception"] == "AssertionError"
