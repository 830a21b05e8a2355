"""Code verifier: the chain's program answers calls in a sandbox; trusted code judges.

The trust boundary (docs/plugins.md, "The trust boundary"): the program runs alone in a
sandbox (verifiers/sandbox/harness_candidate.py loads it and answers call requests). Its answers
come back as type-tagged JSON (verifiers/sandbox/wire.py) and are rebuilt here as plain built-ins.
The tests' expected values and every comparison stay on this side:

- translated path: assert-style tests are turned into calls plus checks
  (verifiers/code_cases.py) that are evaluated in this process over the rebuilt answers;
- test-process path: other tests run in a second sandbox (verifiers/sandbox/harness_tests.py)
  whose only contact with the program is the same request/answer channel.

Functions the prompt defines (HumanEval's `poly`) run from the prompt on the tests' side; the
check in this process has a CPU and size budget (code_cases.CHECK_CPU_S, MAX_UNITS) charged to
the program; one sample's failure of any kind stays that sample's verdict (issue 20).

Nothing the program can read holds an expected value or a "passed" secret; a program that
rewrites its harness can only make its own answers wrong. What the harness saw of the
program reaching for it (heap walks, harness frames, tracing, native code, a forged
channel, results imitating built-ins) makes the verdict `fail` with status `tamper`.
"""
from __future__ import annotations

import ast
import json
import logging
import marshal
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from loop.records import Problem, Sample, Verdict
from verifiers import code_cases
from verifiers.base import VERIFIERS, Verifier
from verifiers.code_cases import Failure, NotTranslatable, Outcome, Plan, TestsError
from verifiers.sandbox import pyast, wire
from verifiers.sandbox import runner as sandbox

FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.DOTALL | re.MULTILINE)
PYTHON_TAGS = {"python", "py", "python3"}
HERE = Path(__file__).parent / "sandbox"  # the harnesses and the wire format run inside the sandbox
WIRE_SRC = (HERE / "wire.py").read_text(encoding="utf-8")
CANDIDATE_HARNESS = (HERE / "harness_candidate.py").read_text(encoding="utf-8")
TESTS_HARNESS = (HERE / "harness_tests.py").read_text(encoding="utf-8")
STOPPED = ("timeout", "memory", "output_limit", "killed")
log = logging.getLogger(__name__)


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


@lru_cache(maxsize=1024)
def prompt_helpers(prompt_text: str, entry_point: str | None) -> tuple[str, frozenset[str]]:
    """(source, names) of what the prompt's own code defines besides the function under test:
    HumanEval's `poly`, `encode_cyclic`, ... and the imports they need. The tests' calls of these
    run this source on the tests' side; the program never answers for them (issue 20, item 1)."""
    kept, names = [], set()
    for tag, body in FENCE.findall(prompt_text):
        if tag.lower() not in PYTHON_TAGS and tag:
            continue
        try:
            tree = pyast.parse(body)
        except (SyntaxError, ValueError):
            continue
        for st in tree.body:
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if st.name == entry_point or _stub(st):
                    continue  # the program's to write
                names.add(st.name)
            elif not isinstance(st, (ast.Import, ast.ImportFrom)):
                continue
            kept.append(ast.get_source_segment(body, st) or "")
    return ("\n\n".join(kept) + "\n" if names else ""), frozenset(names)


def _stub(node: ast.AST) -> bool:
    """A function whose body is only a docstring, `pass` or `...`: the prompt asks for it."""
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and all(
        isinstance(s, ast.Pass) or isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) for s in node.body)


def helpers_of(problem: Problem) -> tuple[str, frozenset[str]]:
    text = "\n".join(m.content for m in problem.prompt if m.role == "user" and isinstance(m.content, str))
    return prompt_helpers(text, problem.reference.entry_point)


@lru_cache(maxsize=4096)
def plan_for(tests: str, entry_point: str | None,
             helpers: frozenset[str] = frozenset()) -> tuple[Plan | None, bytes, str]:
    """(plan or None for the test-process path, the encoded requests, why not translated).
    TestsError when the tests themselves are broken."""
    try:
        plan = code_cases.translate(tests, entry_point, helpers)
        frames = []
        for i, c in enumerate(plan.calls):
            body = marshal.dumps({"id": i, "fn": c.fn, "args": wire.encode(list(c.args)),
                                  "kwargs": wire.encode(c.kwargs)})
            frames.append(len(body).to_bytes(4, "big") + body)
    except NotTranslatable as e:
        return None, b"", str(e)
    except wire.Unserialisable as e:
        return None, b"", f"an argument ({e.kind}) cannot be sent"
    return plan, b"".join(frames), ""


def isolation_summary(iso: dict) -> dict:
    """What the run got, short enough for every verdict."""
    return {"root": iso.get("root"), "namespaces": iso.get("namespaces", []), "cgroup": iso.get("cgroup"),
            "own_uid": iso.get("uid") is not None, "seccomp": iso.get("seccomp")}


class Channel:
    """The candidate harness's records, checked against the protocol it is supposed to follow."""

    def __init__(self, data: bytes, calls: list[code_cases.Call]):
        self.loaded: bool | None = None
        self.load_error: dict | None = None
        self.outcomes: list[Outcome] = []
        self.done = False
        self.tamper: list[str] = []
        lines = data.split(b"\n")[:-1]  # a last line without newline was cut off by a kill
        for line in lines:
            try:
                self._take(json.loads(line, parse_constant=wire._no_constant), calls)
            except Exception as e:  # noqa: BLE001 - whatever the bytes do to the decoder is the program's doing
                self.tamper.append(f"the result channel carried something the harness did not write "
                                   f"({type(e).__name__}: {str(e)[:80]})")
                break
        self.outcomes += [Outcome("missing")] * (len(calls) - len(self.outcomes))

    def _take(self, rec, calls) -> None:
        if type(rec) is not dict:
            raise ValueError("a record that is not an object")
        if set(rec) == {"tamper"}:
            self.tamper.append(str(rec["tamper"])[:200])
            return
        if self.loaded is None and rec == {"loaded": True}:
            self.loaded = True
            return
        if self.loaded is None and set(rec) == {"load_error"}:
            self.loaded, self.load_error = False, _info(rec["load_error"])
            return
        if (self.loaded and not self.done and type(rec.get("id")) is int and rec["id"] == len(self.outcomes)
                and len(self.outcomes) < len(calls) and len(rec) == 2):
            kind = next(k for k in rec if k != "id")
            if kind == "value":
                self.outcomes.append(Outcome("value", wire.decode(rec["value"])))
            elif kind == "raised":
                self.outcomes.append(Outcome("raised", info=_info(rec["raised"])))
            elif kind == "unserialisable":
                info = rec["unserialisable"]
                out = Outcome("unserialisable", info={"kind": str(info["kind"])[:200],
                                                      "suspicious": info["suspicious"] is True})
                if out.info["suspicious"]:
                    self.tamper.append(f"{calls[len(self.outcomes)].text} returned {out.info['kind']}, "
                                       "an imitation of a built-in value")
                self.outcomes.append(out)
            else:
                raise ValueError(f"unknown answer {kind!r}")
            return
        if self.loaded and not self.done and rec == {"done": True} and len(self.outcomes) == len(calls):
            self.done = True
            return
        raise ValueError(f"unexpected record {str(rec)[:60]}")


def _clean(v):
    """`v` with every string made valid UTF-8 (a lone surrogate becomes its escape)."""
    if type(v) is str:
        try:
            v.encode("utf-8")
            return v
        except UnicodeEncodeError:
            return v.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(v, dict):
        return {_clean(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _info(raw) -> dict:
    """An exception report from the sandbox, reduced to strings of bounded length."""
    if type(raw) is not dict:
        raise TypeError("an exception report that is not an object")
    line = raw.get("line")
    return {"exception": str(raw.get("exception", "?"))[:80], "message": str(raw.get("message", ""))[:500],
            "line": str(line)[:300] if line is not None else None}


@VERIFIERS.register("code_tests")
class CodeTests(Verifier):
    """Runs the chain's python code block against the problem's tests, across a sandbox boundary."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        block: Literal["last", "first", "longest"] = Field(
            "last", description="which python fenced block is the program")
        after_think: bool = Field(
            True, description="only look for code after </think>; a chain with an unclosed <think> has no code")
        timeout_s: float = Field(
            5.0, gt=0, le=600, description="wall-clock limit per program, interpreter start included")
        memory_mb: int = Field(
            512, ge=64, description="memory for the whole run (cgroup) and address space per process")
        max_output_bytes: int = Field(
            1 << 20, ge=1024, description="stdout+stderr cap; beyond it the program is killed")
        workers: int = Field(1, ge=1, le=64, description="programs run at once by a thread pool inside one batch")
        translate: bool = Field(True, description="judge assert-style tests in the verifier's process; False runs "
                                "every test in a second sandbox (slower, same verdicts)")

    def verify(self, problems: Sequence[Problem], samples: Sequence[Sample]) -> list[Verdict]:
        if self.options.workers == 1 or len(samples) < 2:
            return [self.verify_alone(p, s) for p, s in zip(problems, samples)]
        with ThreadPoolExecutor(self.options.workers) as pool:
            return list(pool.map(self.verify_alone, problems, samples))

    def verify_alone(self, problem: Problem, sample: Sample) -> Verdict:
        """verify_one, kept to its own sample: a bug it hits is that sample's `error`, never the batch's."""
        try:
            return self.verify_one(problem, sample)
        except Exception as e:  # noqa: BLE001
            log.exception("code_tests: verifying %s failed", sample.id)
            return self.verdict(sample, "error", reason=f"the verifier failed on this sample: {type(e).__name__}: {e}",
                                status="verifier_error")

    def verdict(self, sample: Sample, outcome: str, score: float = 0.0, reason: str = "", **evidence) -> Verdict:
        """Every verdict serialises: strings from the sandbox may hold lone surrogates ("\\ud800")."""
        return super().verdict(sample, outcome, score, _clean(reason), **_clean(evidence))

    def limits(self) -> sandbox.SandboxLimits:
        o = self.options
        return sandbox.SandboxLimits(timeout_s=o.timeout_s, memory_mb=o.memory_mb, max_output_bytes=o.max_output_bytes)

    def verify_one(self, problem: Problem, sample: Sample) -> Verdict:
        o = self.options
        ref = problem.reference
        if not ref.tests:
            return self.verdict(sample, "abstain", reason="the problem has no reference.tests")
        code = extract_code(sample.text, o.block, o.after_think)
        if code is None:
            return self.verdict(sample, "fail", reason="no code block", status="no_code")
        helpers, helper_names = helpers_of(problem)
        try:
            plan, requests, why = plan_for(ref.tests, ref.entry_point, helper_names)
            if plan is not None and o.translate:
                return self._translated(sample, plan, requests, code, helpers)
        except TestsError as e:
            return self.verdict(sample, "error", reason=f"the problem's tests are broken: {e}", status="bad_tests")
        except NotTranslatable as e:  # this answer only (e.g. an iterator's .upper()): the plan stays
            why = f"found while checking: {e}"
        return self._test_process(sample, ref.tests, ref.entry_point, code, why or "translation disabled",
                                  helpers, helper_names)

    # ------------------------------------------------------------ translated path

    def _translated(self, sample: Sample, plan: Plan, requests: bytes, code: str, helpers: str) -> Verdict:
        r = sandbox.run(CANDIDATE_HARNESS, files=self._program_files(code, helpers), stdin=requests,
                        limits=self.limits(), channel=True)
        base = self._base(r, "translated")
        if r.status == "sandbox_error":
            return self.verdict(sample, "error", reason=f"sandbox error: {r.error}", status=r.status,
                                stderr_tail=r.stderr[-1000:], **base)
        ch = Channel(r.channel, plan.calls)
        if ch.tamper:
            return self._tamper(sample, ch.tamper, base)
        if ch.load_error:
            return self._program_error(sample, ch.load_error, base)
        failure = plan.check(ch.outcomes) if ch.loaded else None
        if failure is not None:
            return self._failure(sample, failure, r, base)
        if not ch.loaded or not ch.done or r.status != "ok":
            return self._stopped(sample, r, base)
        return self.verdict(sample, "pass", score=1.0, reason="all tests passed", status="ok", **base)

    # ------------------------------------------------------------ test-process path

    @staticmethod
    def _program_files(code: str, helpers: str) -> dict[str, str]:
        """The program, with the prompt's helpers loaded before it (as in one file, prompt + program)."""
        return {"wire.py": WIRE_SRC, "solution.py": code, **({"helpers.py": helpers} if helpers else {})}

    def _test_process(self, sample: Sample, tests: str, entry_point: str | None, code: str, why: str,
                      helpers: str = "", helper_names: frozenset[str] = frozenset()) -> Verdict:
        try:
            tree = code_cases.parse_tests(tests)
            _, names = code_cases.body_of(tree, entry_point)
        except TestsError as e:
            return self.verdict(sample, "error", reason=f"the problem's tests are broken: {e}", status="bad_tests")
        except NotTranslatable:
            names = {n: n for n in code_cases.free_names(tree)}
        names = {k: v for k, v in names.items() if k not in helper_names or v == entry_point}
        config = json.dumps({"entry_point": entry_point, "names": names,
                             "modules": sorted(code_cases.implicit_modules(tree))})
        req_r, req_w = os.pipe()
        ans_r, ans_w = os.pipe()
        limits = self.limits()
        box: dict = {}
        program = threading.Thread(target=lambda: box.update(r=sandbox.run(
            CANDIDATE_HARNESS, files=self._program_files(code, helpers), stdin=req_r,
            fds={3: ans_w}, limits=limits)))
        program.start()
        t = sandbox.run(TESTS_HARNESS, files={"wire.py": WIRE_SRC, "tests.py": tests, "config.json": config,
                                              **({"helpers.py": helpers} if helpers else {})},
                        fds={4: ans_r, 5: req_w}, limits=limits, channel=True)
        program.join()
        r = box["r"]
        base = {**self._base(r, "test_process"), "why_not_translated": why[:200]}
        for run in (r, t):
            if run.status == "sandbox_error":
                return self.verdict(sample, "error", reason=f"sandbox error: {run.error}", status=run.status,
                                    stderr_tail=run.stderr[-1000:], **base)
        tamper, rec = [], None
        for line in t.channel.split(b"\n")[:-1]:  # tamper notes as they came, then the verdict
            try:
                got = json.loads(line, parse_constant=wire._no_constant)
            except ValueError:
                break
            if type(got) is dict and set(got) == {"tamper"}:
                tamper.append(str(got["tamper"])[:200])
            elif type(got) is dict:
                rec = got
                break
        if rec is None:
            if tamper:
                return self._tamper(sample, tamper, base)
            if t.status == "timeout" or r.status in STOPPED:
                return self._stopped(sample, r if r.status in STOPPED else t, base)
            return self.verdict(sample, "error", reason=f"the test process ended without a verdict ({t.status})",
                                status="sandbox_error", stderr_tail=t.stderr[-1000:], **base)
        if "protocol" in rec:
            tamper.append("the result channel carried something the harness did not write "
                          f"({str(rec['protocol'])[:80]})")
        if tamper:
            return self._tamper(sample, tamper, base)
        if "helpers_error" in rec:
            return self.verdict(sample, "error", reason=f"the prompt's own code fails: {_info(rec['helpers_error'])}",
                                status="bad_tests", **base)
        if "program_error" in rec:
            info = _info(rec["program_error"])
            if info["exception"] == "exited":
                return self._stopped(sample, r, base)
            return self._program_error(sample, info, base)
        if "failed" in rec:
            f = rec["failed"]
            info = _info(f)
            failure = Failure(str(f.get("test_line") or ""), info["exception"], info["message"])
            if f.get("raised_by") == "program":
                failure.outcome = Outcome("raised", info=info)
            if info["exception"] == "ProgramError" and r.status in STOPPED:
                return self._stopped(sample, r, base)
            return self._failure(sample, failure, r, base)
        if rec.get("passed") is True and r.status == "ok" and t.status == "ok":
            return self.verdict(sample, "pass", score=1.0, reason="all tests passed", status="ok", **base)
        return self._stopped(sample, r if r.status != "ok" else t, base)

    # ------------------------------------------------------------ verdicts

    @staticmethod
    def _base(r: sandbox.SandboxResult, path: str) -> dict:
        return {"duration_s": round(r.duration_s, 3), "exit_code": r.exit_code, "signal": r.signal, "path": path,
                "isolation": isolation_summary(r.isolation)}

    def _tamper(self, sample: Sample, notes: list[str], base: dict) -> Verdict:
        return self.verdict(sample, "fail", reason="tamper: " + "; ".join(notes[:3]), status="tamper",
                            tamper=notes[:20], **base)

    def _program_error(self, sample: Sample, info: dict, base: dict) -> Verdict:
        status = "memory" if info["exception"] == "MemoryError" else "failed"
        msg = f": {info['message']}" if info["message"] else ""
        return self.verdict(sample, "fail", reason=f"program raised {info['exception']}{msg}", status=status,
                            phase="program", test_line=None, **info, **base)

    def _failure(self, sample: Sample, f: Failure, r: sandbox.SandboxResult, base: dict) -> Verdict:
        if f.exception == "EvalLimit" and f.outcome is None:  # the program's answers made the check expensive
            why = f"checking its answers at `{f.test_line}` was too expensive: {f.message}"
            return self._tamper(sample, [why], base)
        kind = f.outcome.kind if f.outcome else None
        if kind == "missing":
            return self._stopped(sample, r, base)
        where = f" at `{f.test_line}`" if f.test_line else ""
        if kind == "unserialisable":
            what = f.call.text if f.call else "the program"
            return self.verdict(sample, "fail", reason=f"{what} returned {f.outcome.info['kind']}: only plain "
                                "built-in values are compared", status="unserialisable", phase="tests",
                                test_line=f.test_line, result_type=f.outcome.info["kind"], **base)
        line = f.outcome.info.get("line") if f.outcome else None
        status = "memory" if f.exception == "MemoryError" else "failed"
        msg = f": {f.message}" if f.message else ""
        return self.verdict(sample, "fail", reason=f"tests raised {f.exception}{msg}{where}", status=status,
                            phase="tests", exception=f.exception, message=f.message, test_line=f.test_line,
                            line=line, raised_by="program" if f.outcome else "tests", **base)

    def _stopped(self, sample: Sample, r: sandbox.SandboxResult, base: dict) -> Verdict:
        if r.status in STOPPED:
            return self.verdict(sample, "fail", reason=f"program stopped: {r.status}", status=r.status,
                                stderr_tail=r.stderr[-1000:], **base)
        return self.verdict(sample, "fail", reason="the program exited before the tests completed",
                            status="exited_early", stdout_tail=r.stdout[-1000:], stderr_tail=r.stderr[-1000:], **base)
