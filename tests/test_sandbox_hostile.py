"""Programs written to fool code_tests or harm the host: never `pass`, and the host is checked after.

Each attack is a program that would pass if the attack worked (it answers the test right
only when it has fooled or reached something). Every one must get `fail` or `error`; the
fixture then checks the host: no process of the run left, no SysV shared memory, no new
cgroup, nothing in the sandbox's temp root. Attacks run on both paths of the trust
boundary where they apply: the translated one (checks in the verifier) and the test
process one (checks in a second sandbox).
"""
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from loop.records import Message, Problem, Reference, Sample
from verifiers import code as code_mod
from verifiers.base import VERIFIERS
from verifiers.sandbox import cgroup as sandbox_cgroup
from verifiers.sandbox import leftover_processes
from verifiers.sandbox import runner as sandbox

REPO = Path(__file__).resolve().parent.parent
from tests.kernel_caps import NS, ROOT  # noqa: E402

ADD = "def add(a, b):\n    return a + b\n"
TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(10, -4) == 6\n"
PROBLEM = Problem(family="test", category="code", difficulty=1, prompt=[Message(role="user", content="add")],
                  reference=Reference(tests=TESTS, entry_point="add"))
# A wrong add() that "passes" only if it fooled the comparison; the attacks below build on it.
WRONG = "def add(a, b):\n    return 0\n"


def _shm_ids() -> set[str]:
    """SysV segments on the host made by a sandbox uid (as root) or by anyone (otherwise)."""
    try:
        rows = [line.split() for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]]
    except OSError:
        return set()
    return {r[1] for r in rows if not ROOT or int(r[9]) >= sandbox.UID_BASE}  # r[9]: creator uid


def _cgroups() -> set[str]:
    """Run cgroups of this process (other verifiers on the machine make their own)."""
    found, _ = sandbox_cgroup.bases()
    mine = f"{os.getpid()}."
    return {str(p) for base in found.values() for p in base.iterdir() if p.name.startswith(mine)} if found else set()


@pytest.fixture
def judge(monkeypatch, tmp_path):
    """judge(program, translate=True) -> (verdict, [sandbox results]); asserts not pass and a clean host."""
    results = []
    real_run = sandbox.run

    def recording_run(*a, **kw):
        results.append(real_run(*a, **kw))
        return results[-1]

    monkeypatch.setattr(code_mod.sandbox, "run", recording_run)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the sandbox's work dirs go here

    def go(program: str, translate: bool = True, timeout_s: float = 6.0, problem: Problem = PROBLEM):
        del results[:]
        shm, cgroups = _shm_ids(), _cgroups()
        verifier = VERIFIERS.build("code_tests", {"timeout_s": timeout_s, "memory_mb": 256, "translate": translate})
        sample = Sample(id="s:r0:0", problem_id=problem.id, round=0, index=0,
                        text=f"<think>\nx\n</think>\n```python\n{program}\n```", num_tokens=0, finish_reason="stop")
        [verdict] = verifier.verify([problem], [sample])
        assert verdict.outcome in ("fail", "error"), verdict
        assert verdict.evidence["path"] == ("translated" if translate else "test_process")
        for r in results:
            assert leftover_processes(uid=r.isolation.get("uid")) == [], "a sandbox process survived"
        assert _shm_ids() <= shm, "SysV shared memory left on the host"
        assert _cgroups() <= cgroups, "a run cgroup was left behind"
        assert list(tmp_path.iterdir()) == [], "a work directory was left behind"
        return verdict, results

    return go


BOTH = pytest.mark.parametrize("translate", [True, False], ids=["translated", "test_process"])


@BOTH
def test_control_correct_program_passes(translate):
    v = VERIFIERS.build("code_tests", {"timeout_s": 3, "translate": translate})
    s = Sample(id="s:r0:0", problem_id=PROBLEM.id, round=0, index=0, text=f"```python\n{ADD}```",
               num_tokens=0, finish_reason="stop")
    verdict = v.verify([PROBLEM], [s])[0]
    assert verdict.outcome == "pass", verdict
    if NS:  # the evidence says which isolation applied
        assert verdict.evidence["isolation"]["root"] == "minimal"
        assert {"pid", "ipc", "mnt", "net"} <= set(verdict.evidence["isolation"]["namespaces"])


# ------------------------------------------------------------------ fooling the comparison

EQ_TRUE = {  # add() returns an object that claims to equal anything
    "object": "class R:\n    def __eq__(self, o):\n        return True\n    __hash__ = None\nVALUE = R()\n",
    "int subclass": "class R(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\nVALUE = R(0)\n",
    "str subclass": "class R(str):\n    def __eq__(self, o):\n        return True\n    __hash__ = str.__hash__\nVALUE = R()\n",
    "list subclass": "class R(list):\n    def __eq__(self, o):\n        return True\nVALUE = R()\n",
    "float subclass": "class R(float):\n    def __eq__(self, o):\n        return True\n    def __ne__(self, o):\n"
                      "        return False\n    __hash__ = float.__hash__\nVALUE = R(0)\n",
}


@BOTH
@pytest.mark.parametrize("kind", sorted(EQ_TRUE))
def test_results_equal_to_everything(judge, kind, translate):
    v, _ = judge(EQ_TRUE[kind] + "def add(a, b):\n    return VALUE\n", translate)
    assert v.evidence["status"] == "tamper" and "imitation of a built-in" in v.reason


@BOTH
def test_a_plain_builtin_subclass_is_compared_by_its_data(judge, translate):
    """`class R(int): pass` (or an IntEnum, a namedtuple, a defaultdict) is an ordinary answer:
    right data passes, wrong data fails, and neither is called tampering."""
    plain = "class R(int):\n    pass\n"
    v = VERIFIERS.build("code_tests", {"timeout_s": 3, "translate": translate})
    s = Sample(id="s:r0:0", problem_id=PROBLEM.id, round=0, index=0,
               text=f"```python\n{plain}def add(a, b):\n    return R(a + b)\n```", num_tokens=0, finish_reason="stop")
    assert v.verify([PROBLEM], [s])[0].outcome == "pass"
    wrong, _ = judge(plain + "def add(a, b):\n    return R(0)\n", translate)
    assert wrong.evidence["status"] != "tamper"
    # redefining comparison after the class was made is an imitation all the same
    patched, _ = judge(plain + "R.__eq__ = lambda s, o: True\ndef add(a, b):\n    return R(0)\n", translate)
    assert patched.evidence["status"] == "tamper"


@BOTH
def test_generator_and_other_non_values_are_not_compared(judge, translate):
    v, _ = judge("def add(a, b):\n    yield a + b\n", translate)
    assert v.evidence["status"] in ("unserialisable", "failed") and v.outcome == "fail"


@pytest.mark.parametrize("program, status", [
    ("def add(a, b):\n    return float('nan')\n", "failed"),
    ("def add(a, b):\n    x = []\n    x.append(x)\n    return x\n", "unserialisable"),
    ("def add(a, b):\n    x = []\n    for _ in range(500):\n        x = [x]\n    return x\n", "unserialisable"),
    ("def add(a, b):\n    return str(a + b)\n", "failed"),
    ("def add(a, b):\n    return [a + b]\n", "failed"),
])
def test_lookalike_values_fail(judge, program, status):
    v, _ = judge(program)
    assert v.evidence["status"] == status


@BOTH
def test_overriding_json_marshal_and_the_encoder(judge, translate):
    prog = ("import json, marshal, sys\njson.dumps = lambda *a, **k: '{\"id\": 0, \"value\": 5}'\n"
            "json.loads = lambda *a, **k: {}\nmarshal.loads = lambda b: {'id': 0, 'fn': 'x', 'args': [], 'kwargs': {}}\n"
            "main = sys.modules['__main__']\nfor name in ('send', '_dump', 'encode'):\n"
            "    if hasattr(main, name):\n        setattr(main, name, lambda *a, **k: None)\n" + WRONG)
    v, _ = judge(prog, translate)
    assert v.outcome == "fail"


@BOTH
def test_exception_whose_str_lies_and_raises(judge, translate):
    prog = ("class AssertionError(Exception):\n    def __str__(self):\n        raise SystemExit(0)\n"
            "    @property\n    def __class__(self):\n        raise SystemExit(0)\n"
            "def add(a, b):\n    raise AssertionError()\n")
    v, _ = judge(prog, translate)
    assert v.outcome == "fail"


@BOTH
@pytest.mark.parametrize("early", ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit",
                                   "raise KeyboardInterrupt", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"])
def test_exiting_before_or_during_the_tests(judge, early, translate):
    judge(ADD + early, translate)  # at load time
    body = "\n".join("    " + line for line in early.splitlines())
    judge(f"def add(a, b):\n{body}\n    return a + b\n", translate)  # inside the call


# ------------------------------------------------------------------ forging the channel or the harness

@BOTH
def test_writing_the_result_channel_early(judge, translate):
    for fd in (3, 4, 5, 6):  # the channel and whatever private copies the harness made
        prog = (f"import os\nfor rec in ('{{\"loaded\": true}}', '{{\"id\": 0, \"value\": 5}}', '{{\"id\": 1, \"value\": 6}}',"
                f" '{{\"done\": true}}', '{{\"passed\": true}}'):\n    try:\n        os.write({fd}, (rec + '\\n').encode())\n"
                "    except OSError:\n        pass\n" + WRONG)
        v, _ = judge(prog, translate)
        assert v.outcome == "fail"


def test_forged_records_from_a_signal_handler_and_a_thread(judge):
    prog = ("import os, signal, threading, time\n"
            "def forge(*_):\n    for fd in range(3, 8):\n        try:\n"
            "            os.write(fd, b'{\"id\": 1, \"value\": 6}\\n{\"done\": true}\\n')\n        except OSError:\n"
            "            pass\nsignal.signal(signal.SIGALRM, forge)\nsignal.setitimer(signal.ITIMER_REAL, 0.05)\n"
            "threading.Thread(target=lambda: (time.sleep(0.1), forge()), daemon=True).start()\n"
            "def add(a, b):\n    time.sleep(0.2)\n    return 5\n")
    v, _ = judge(prog)
    assert v.evidence["status"] == "tamper"


@BOTH
def test_replacing_the_harness_and_builtins(judge, translate):
    prog = ("import builtins, sys\nmain = sys.modules['__main__']\nfor k in list(vars(main)):\n"
            "    if callable(getattr(main, k)) and not k.startswith('__'):\n"
            "        setattr(main, k, lambda *a, **kw: None)\n"
            "builtins.dict = lambda *a, **k: {}\nbuiltins.exec = lambda *a, **k: None\n" + WRONG)
    v, _ = judge(prog, translate)
    assert v.outcome == "fail"


@BOTH
def test_settrace_skipping_lines(judge, translate):
    prog = ("import sys\ndef tracer(frame, event, arg):\n    if event == 'line':\n        try:\n"
            "            frame.f_lineno = frame.f_lineno + 1\n        except Exception:\n            pass\n"
            "    return tracer\nsys.settrace(tracer)\nsys._getframe(1).f_trace = tracer\n" + WRONG)
    v, _ = judge(prog, translate)
    assert v.evidence["status"] == "tamper" and "trace" in v.reason


@BOTH
def test_reading_the_tests_and_answering_from_a_table(judge, translate):
    prog = ("import glob, os\ntable = {}\nfor path in glob.glob('/**/*.py', recursive=True) + ['tests.py', '../tests.py']:\n"
            "    try:\n        text = open(path).read()\n    except OSError:\n        continue\n"
            "    if 'candidate(2, 3) ==' in text:\n        table[(2, 3)] = 5\n        table[(10, -4)] = 6\n"
            "        open(path, 'w').write('')\n"
            "def add(a, b):\n    return table.get((a, b), 0)\n")
    v, _ = judge(prog, translate, timeout_s=5)
    assert v.outcome == "fail"
    assert "assert candidate(2, 3) == 5" in TESTS  # the tests were never readable, let alone rewritten


@BOTH
def test_walking_the_heap_and_frames_for_expected_values(judge, translate):
    prog = ("import gc, sys\nfound = [o for o in gc.get_objects() if isinstance(o, dict) and 'expected' in o]\n"
            "frames = sys._current_frames()\nf = sys._getframe(1)\n" + WRONG)
    v, _ = judge(prog, translate)
    assert v.evidence["status"] == "tamper"
    assert any("heap" in t or "frame" in t for t in v.evidence["tamper"])


@pytest.mark.skipif(not ROOT, reason="ptrace protection relies on the run's own uid (root only)")
def test_ptrace_of_the_harness_and_init(judge):
    prog = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nok = []\nfor pid in (1, os.getppid()):\n"
            "    ok.append(libc.ptrace(16, pid, 0, 0) == 0)  # PTRACE_ATTACH\n"
            "def add(a, b):\n    return a + b if any(ok) else 0\n")
    v, _ = judge(prog)
    assert v.evidence["status"] == "tamper" and "ctypes" in v.reason


# ------------------------------------------------------------------ the host

@BOTH
def test_host_files_are_not_visible(judge, translate):
    probes = [str(REPO / "README.md"), str(REPO), str(Path.home() / ".bashrc"), "/home", "/etc/passwd",
              "/etc/hostname", sys.prefix + "/pyvenv.cfg", "/var", "/opt"]
    # /root holds only the path to the Python runtime when that lives under it (as here).
    prog = (f"import os\nseen = [p for p in {probes!r} if os.path.exists(p)]\n"
            "if os.path.isdir('/root'):\n    seen += sorted(set(os.listdir('/root')) - {'.pyenv'})\nprint(seen)\n"
            "def add(a, b):\n    return a + b if seen else 0\n")
    if not NS:
        pytest.skip("no mount namespace here: host files are visible (isolation says root: host)")
    v, _ = judge(prog, translate)
    assert v.evidence["exception"] == "AssertionError", v


@pytest.mark.skipif(not NS, reason="the kernel refuses pid namespaces here")
def test_host_processes_are_not_visible(judge):
    prog = (f"import os\npids = [int(p) for p in os.listdir('/proc') if p.isdigit()]\n"
            f"seen = {os.getpid()} in pids or len(pids) > 8\n"
            "cmdlines = [open(f'/proc/{p}/cmdline', 'rb').read() for p in pids if os.access(f'/proc/{p}/cmdline', os.R_OK)]\n"
            "seen = seen or any(b'pytest' in c for c in cmdlines)\n"
            "def add(a, b):\n    return a + b if seen else 0\n")
    v, _ = judge(prog)
    assert v.evidence["exception"] == "AssertionError", v


@pytest.mark.skipif(not NS, reason="no ipc namespace here")
def test_sysv_shared_memory_does_not_outlive_the_run(judge):
    # Leaves a segment without a process attached; the fixture checks the host's list after.
    prog = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "ok = libc.shmget(0x5eed, 1 << 20, 0o1000 | 0o666) >= 0\n"  # IPC_CREAT
            "print('segment made', ok)\n" + WRONG)
    _, results = judge(prog)
    assert "segment made True" in results[0].stdout  # made inside; gone with the run's ipc namespace


@pytest.mark.skipif(not ROOT, reason="the cgroup budget needs root")
def test_memory_budget_is_for_the_whole_run(judge):
    # 6 processes x 100 MiB each fit under a per-process limit of 256 MiB but not in one of 256 MiB.
    # Each child reports once its 100 MiB are really in memory; the program passes if all 6 do.
    prog = ("import os, select, time\nr, w = os.pipe()\nfor i in range(6):\n    if os.fork() == 0:\n"
            "        block = bytearray(100 << 20)\n        for j in range(0, len(block), 4096):\n            block[j] = 1\n"
            "        os.write(w, b'x')\n        time.sleep(30)\n        os._exit(0)\nos.close(w)\n"
            "held, deadline = 0, time.time() + 8\nwhile held < 6 and time.time() < deadline:\n"
            "    if select.select([r], [], [], 0.2)[0]:\n        got = os.read(r, 6)\n        if not got:\n"
            "            break\n        held += len(got)\nprint('held', held)\n"
            "def add(a, b):\n    return a + b if held == 6 else 0\n")
    v, _ = judge(prog, timeout_s=20)
    if sandbox_cgroup.bases()[0]:  # an OOM kill: of a child (the program then sees it) or of the program
        assert v.evidence.get("exception") == "AssertionError" or v.evidence["status"] in ("memory", "killed"), v


def test_infinite_loop(judge):
    v, _ = judge("while True:\n    pass")
    assert v.evidence["status"] == "timeout"


def test_memory_bomb(judge):
    v, _ = judge("blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))")
    assert v.evidence["status"] == "memory"


def test_deep_recursion(judge):
    v, _ = judge("import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1) + 1\nf(0)")
    assert v.evidence["status"] in ("killed", "memory", "timeout", "failed")


@BOTH
def test_huge_outputs(judge, translate):
    v, _ = judge("import sys\nwhile True:\n    sys.stdout.write('x' * (1 << 20))", translate)
    assert v.evidence["status"] == "output_limit"
    v, _ = judge("import os\nwhile True:\n    os.write(3, b'{\"tamper\": \"' + b'x' * (1 << 20) + b'\"}\\n')", translate)
    assert v.outcome == "fail"
    v, _ = judge("def add(a, b):\n    return 'x' * (64 << 20)\n", translate, timeout_s=6)
    assert v.evidence["status"] in (("output_limit", "memory") if translate else ("failed", "memory", "timeout"))


@pytest.mark.skipif(not ROOT, reason="per-run process budget needs root (uid + cgroup)")
def test_fork_bomb(judge):
    v, _ = judge("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
    assert v.evidence["status"] == "timeout"


@pytest.mark.skipif(not NS, reason="no mount namespace here: /tmp and /dev/shm are the host's (isolation says so)")
def test_writing_outside_the_sandbox(judge):
    nonce = secrets.token_hex(6)
    targets = [f"/tmp/pwned-{nonce}", f"/var/tmp/pwned-{nonce}", f"/dev/shm/pwned-{nonce}", str(REPO / f"pwned-{nonce}")]
    prog = (f"import os\nok = 0\nfor t in {targets!r}:\n    try:\n        open(t, 'w').write('x')\n        ok += 1\n"
            "    except OSError:\n        pass\n" + WRONG)
    judge(prog)
    assert [t for t in targets if os.path.exists(t)] == []


def test_environment_secrets_are_not_visible(judge, monkeypatch):
    monkeypatch.setenv("CODE_TESTS_SECRET", "s3cr3t-token")
    prog = ("import os\nseen = 's3cr3t-token' in str(os.environ)\nfor pid in range(1, 64):\n    try:\n"
            "        seen |= b's3cr3t-token' in open(f'/proc/{pid}/environ', 'rb').read()\n"
            "    except OSError:\n        pass\ndef add(a, b):\n    return a + b if seen else 0\n")
    v, _ = judge(prog)
    assert v.evidence["status"] in ("failed", "tamper")


@pytest.mark.skipif(not NS, reason="no network namespace here (isolation: network_off False)")
def test_network_connection(judge):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        srv.setblocking(False)
        port = srv.getsockname()[1]
        prog = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=0.5).close()\n"
                "    ok = True\nexcept OSError:\n    ok = False\ndef add(a, b):\n    return a + b if ok else 0\n")
        v, results = judge(prog)
        try:
            srv.accept()
            connected = True
        except BlockingIOError:
            connected = False
    assert connected == (not results[0].isolation["network_off"])


# ------------------------------------------------------------------ the verifier itself

VERIFY_SCRIPT = """
import json, sys
from loop.records import Sample
from verifiers.base import VERIFIERS
from tests.test_sandbox_hostile import PROBLEM
s = Sample(id="s:r0:0", problem_id=PROBLEM.id, round=0, index=0, text=sys.argv[1], num_tokens=0, finish_reason="stop")
print(json.dumps(VERIFIERS.build("code_tests", {"timeout_s": float(sys.argv[2])}).verify([PROBLEM], [s])[0].model_dump()))
"""


def _verify_elsewhere(program: str, timeout_s: float, tmp: Path, **popen):
    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.Popen([sys.executable, "-c", VERIFY_SCRIPT, f"```python\n{program}\n```", str(timeout_s)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **popen)


def test_killing_the_verifier_is_not_possible(tmp_path):
    prog = ("import os, signal\nfor f in (lambda: os.kill(os.getppid(), 9), lambda: os.kill(-1, 9),\n"
            "          lambda: os.killpg(os.getpgid(os.getppid()), 9)):\n    try:\n        f()\n"
            "    except OSError:\n        pass\n" + ADD)
    p = _verify_elsewhere(prog, 3, tmp_path)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err  # -9 would mean the program killed the verifier
    assert json.loads(out.strip().splitlines()[-1])["outcome"] in ("pass", "fail")


@pytest.mark.skipif(not (ROOT and NS), reason="the namespace (killed with init) and per-run uids need both")
def test_a_crashed_verifier_leaves_nothing_running_and_the_next_one_cleans_up(tmp_path):
    nonce = secrets.token_hex(6)
    prog = (f"import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            f"        open('/tmp/daemon-{nonce}', 'w').write(str(os.getpid()))\n        time.sleep(120)\n"
            "    os._exit(0)\ntime.sleep(120)\n" + ADD)
    p = _verify_elsewhere(prog, 60, tmp_path)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(f"sandbox-*/{sandbox.OWNER_FILE}")):
        time.sleep(0.05)
    [workdir] = list(tmp_path.glob("sandbox-*"))
    time.sleep(0.2)  # the owner file is written in one go, but give it a moment
    owner = json.loads((workdir / sandbox.OWNER_FILE).read_text())
    while time.time() < deadline and len(leftover_processes(uid=owner["uid"])) < 2:
        time.sleep(0.05)  # wait for the program and the setsid daemon (their go-between has exited)
    assert len(leftover_processes(uid=owner["uid"])) >= 2, "the program and its daemon should be running"
    os.killpg(p.pid, signal.SIGKILL)  # the verifier dies mid-run
    p.wait()
    deadline = time.time() + 15
    while time.time() < deadline and leftover_processes(uid=owner["uid"]):
        time.sleep(0.05)
    assert leftover_processes(uid=owner["uid"]) == [], "the program or its daemon outlived the verifier"
    assert workdir.exists()  # debris the dead verifier could not remove ...
    left = sandbox.cleanup_stale(str(tmp_path))  # ... is removed by the next one
    assert left["dirs"] == 1 and list(tmp_path.iterdir()) == []
    assert not any(str(owner["pid"]) == c.rsplit("/", 1)[-1].split(".")[0] for c in _cgroups())
