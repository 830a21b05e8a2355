"""Code verifier: run the chain's program against the problem's tests in the sandbox."""
from __future__ import annotations

import json
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from loop.records import Problem, Sample, Verdict
from verifiers import sandbox
from verifiers.base import VERIFIERS, Verifier

FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.DOTALL | re.MULTILINE)
PYTHON_TAGS = {"python", "py", "python3"}
PASS_MARK = "__code_tests_passed__"
FAIL_MARK = "__code_tests_failed__"

# Runs inside the sandbox as main.py. The nonce arrives on stdin, is read before the
# program runs and printed only after every test returned, so exiting early (sys.exit,
# os._exit, a killed process) cannot look like a pass. A program that deliberately digs
# the nonce out of the harness's memory (gc, frames) could still forge one; that is
# outside what a same-process harness can prevent.
HARNESS = r'''
import json, os, sys, traceback
# Bound before the program runs, so replacing builtins.exec & co. cannot skip the tests.
_exec, _compile, _open, _BaseException, _write = exec, compile, open, BaseException, os.write
def _main(nonce, entry_point):
    ns = {"__name__": "solution", "__builtins__": __builtins__}
    phase = "program"
    try:
        _exec(_compile(_open("solution.py").read(), "solution.py", "exec"), ns)
        phase = "tests"
        tests = dict(ns)  # the program keeps no handle on the dict the tests run in
        _exec(_compile(_open("tests.py").read(), "tests.py", "exec"), tests)
        if entry_point:
            if entry_point not in tests:
                raise NameError("the program does not define %r" % entry_point)
            tests["check"](tests[entry_point])
    except _BaseException as e:
        frames = traceback.extract_tb(e.__traceback__)
        test_lines = [f.line for f in frames if f.filename == "tests.py" and f.line]
        info = {"phase": phase, "exception": type(e).__name__, "message": str(e)[:500],
                "test_line": test_lines[-1] if test_lines else None,
                "line": frames[-1].line if frames else None}
        if isinstance(e, SyntaxError):
            info["line"] = (e.text or "").strip() or None
        traceback.print_exception(e, limit=-8)
        sys.stderr.write("\n%s %s\n" % (FAIL_MARK, json.dumps(info)))
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    _write(1, ("\n%s %s\n" % (PASS_MARK, nonce)).encode())
    os._exit(0)
_nonce = sys.stdin.readline().strip()
sys.stdin = open(os.devnull)
_main(_nonce, ENTRY_POINT)
'''


def extract_code(text: str, block: str = "last", after_think: bool = True) -> str | None:
    """The chosen python fenced block of `text` (untagged blocks only if no tagged one)."""
    if after_think and "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    elif after_think and "<think>" in text:
        return None  # still thinking: truncated, no answer yet
    blocks = [(tag.lower(), body) for tag, body in FENCE.findall(text)]
    chosen = [b for t, b in blocks if t in PYTHON_TAGS] or [b for t, b in blocks if not t]
    if not chosen:
        return None
    if block == "first":
        return chosen[0]
    if block == "longest":
        return max(chosen, key=len)
    return chosen[-1]


@VERIFIERS.register("code_tests")
class CodeTests(Verifier):
    """Runs the chain's python code block against the problem's tests in a sandbox."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        block: Literal["last", "first", "longest"] = Field("last", description="which python fenced block is the program")
        after_think: bool = Field(True, description="only look for code after </think>; a chain with an unclosed <think> has no code")
        timeout_s: float = Field(5.0, gt=0, le=600, description="wall-clock limit per program, interpreter start included")
        memory_mb: int = Field(512, ge=64, description="address-space limit per process")
        max_output_bytes: int = Field(1 << 20, ge=1024, description="stdout+stderr cap; beyond it the program is killed")
        workers: int = Field(1, ge=1, le=64, description="programs run at once by a thread pool inside one batch")

    def verify(self, problems: Sequence[Problem], samples: Sequence[Sample]) -> list[Verdict]:
        if self.options.workers == 1 or len(samples) < 2:
            return [self.verify_one(p, s) for p, s in zip(problems, samples)]
        with ThreadPoolExecutor(self.options.workers) as pool:
            return list(pool.map(self.verify_one, problems, samples))

    def verify_one(self, problem: Problem, sample: Sample) -> Verdict:
        o = self.options
        ref = problem.reference
        if not ref.tests:
            return self.verdict(sample, "abstain", reason="the problem has no reference.tests")
        code = extract_code(sample.text, o.block, o.after_think)
        if code is None:
            return self.verdict(sample, "fail", reason="no code block", status="no_code")
        nonce = secrets.token_hex(16)
        harness = HARNESS.replace("PASS_MARK", repr(PASS_MARK)).replace("FAIL_MARK", repr(FAIL_MARK))
        harness = harness.replace("ENTRY_POINT", repr(ref.entry_point))
        limits = sandbox.SandboxLimits(timeout_s=o.timeout_s, memory_mb=o.memory_mb,
                                       max_output_bytes=o.max_output_bytes)
        r = sandbox.run(harness, files={"solution.py": code, "tests.py": ref.tests},
                        stdin=(nonce + "\n").encode(), limits=limits)
        return self._judge(sample, r, nonce)

    def _judge(self, sample: Sample, r: sandbox.SandboxResult, nonce: str) -> Verdict:
        base = {"duration_s": round(r.duration_s, 3), "exit_code": r.exit_code, "signal": r.signal}
        if r.status == "sandbox_error":
            return self.verdict(sample, "error", reason=f"sandbox error: {r.error}", status=r.status,
                                stderr_tail=r.stderr[-1000:], **base)
        lines = r.stdout.rstrip("\n").splitlines()
        if r.status == "ok" and lines and lines[-1] == f"{PASS_MARK} {nonce}":
            return self.verdict(sample, "pass", score=1.0, reason="all tests passed", status="ok", **base)
        failure = _failure_info(r.stderr)
        if r.status in ("timeout", "memory", "output_limit", "killed"):
            status = "memory" if failure and failure["exception"] == "MemoryError" else r.status
            return self.verdict(sample, "fail", reason=f"program stopped: {status}", status=status,
                                stderr_tail=r.stderr[-1000:], **base)
        if failure:
            if failure["exception"] == "MemoryError":
                return self.verdict(sample, "fail", reason="program stopped: memory", status="memory", **base)
            where = f" at `{failure['test_line']}`" if failure.get("test_line") else ""
            msg = f": {failure['message']}" if failure["message"] else ""
            reason = f"{failure['phase']} raised {failure['exception']}{msg}{where}"
            return self.verdict(sample, "fail", reason=reason, status="failed", **failure, **base)
        return self.verdict(sample, "fail", reason="the program exited before the tests completed",
                            status="exited_early", stdout_tail=r.stdout[-1000:],
                            stderr_tail=r.stderr[-1000:], **base)


def _failure_info(stderr: str) -> dict | None:
    for line in reversed(stderr.splitlines()):
        if line.startswith(FAIL_MARK + " "):
            try:
                return json.loads(line[len(FAIL_MARK) + 1:])
            except json.JSONDecodeError:
                return None
    return None
