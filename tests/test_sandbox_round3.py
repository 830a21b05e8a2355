"""Red-team round three (issue 20): wrong programs that got `pass`, samples that poisoned their batch,
and answers that made the verifier's own evaluation expensive. Each wrong program passes only if
its attack works; each class also has a correct program that must still pass.
"""
import json
import os
import time

import pytest

from loop.records import Message, Problem, Reference, Sample
from tests.kernel_caps import NS
from verifiers import code_cases, sandbox
from verifiers.base import VERIFIERS
from verifiers.sandbox import runner, wire


def problem(tests: str, entry_point: str | None = None, prompt_code: str | None = None) -> Problem:
    content = "x" if prompt_code is None else f"Complete it.\n\n```python\n{prompt_code}```"
    return Problem(family="test", category="code", difficulty=1, prompt=[Message(role="user", content=content)],
                   reference=Reference(tests=tests, entry_point=entry_point))


def sample(program: str, i: int = 0) -> Sample:
    return Sample(id=f"s:r0:{i}", problem_id="p", round=0, index=i, text=f"```python\n{program}\n```",
                  num_tokens=0, finish_reason="stop")


def judge(program: str, tests: str, entry_point: str | None = None, translate: bool = True,
          prompt_code: str | None = None, timeout_s: float = 8.0):
    v = VERIFIERS.build("code_tests", {"timeout_s": timeout_s, "memory_mb": 256, "translate": translate})
    return v.verify([problem(tests, entry_point, prompt_code)], [sample(program)])[0]


BOTH = pytest.mark.parametrize("translate", [True, False], ids=["translated", "test_process"])

# ------------------------------------------------------------ 1. the prompt's helpers are the prompt's

PROMPT = ("def scale(x):\n    return 3 * x\n\n\ndef f(x):\n    \"\"\"Return twice x; the tests check scale(f(x)).\"\"\"\n")
HELPER_TESTS = "def check(candidate):\n    assert scale(candidate(2)) == 12\n    assert scale(candidate(5)) == 30\n"


@BOTH
def test_a_helper_the_prompt_defines_runs_from_the_prompt(translate):
    """The candidate redefines the prompt's helper so that it decides its own check."""
    liar = "def scale(x):\n    return 12 if x == 0 else 30\n\ndef f(x):\n    return 0\n"
    v = judge(liar, HELPER_TESTS, "f", translate, PROMPT)
    assert v.outcome == "fail", v
    good = judge("def scale(x):\n    return 3 * x\n\ndef f(x):\n    return 2 * x\n", HELPER_TESTS, "f", translate, PROMPT)
    assert good.outcome == "pass", good
    bare = judge("def f(x):\n    return 2 * x\n", HELPER_TESTS, "f", translate, PROMPT)  # no helper of its own
    assert bare.outcome == "pass", bare


def test_humaneval_poly_is_the_prompts():
    from generators.humaneval import load_problems

    p = next(p for p in load_problems(None) if p.metadata["task_id"] == "HumanEval/32")
    liar = "def poly(xs, x):\n    return 0\n\ndef find_zero(xs):\n    return 12345.0\n"
    v = VERIFIERS.build("code_tests", {"timeout_s": 8}).verify([p], [sample(liar)])[0]
    assert v.outcome == "fail", v


# ------------------------------------------------------------ 2. one semantics for changed arguments

@BOTH
def test_an_emptied_argument_is_not_the_expected_value(translate):
    """`candidate(xs) == sorted(xs)`: emptying xs made sorted(xs) == [] in one process (copy-back)."""
    tests = "def check(candidate):\n    for xs in [[3, 1, 2], [5, 4]]:\n        assert candidate(xs) == sorted(xs)\n"
    v = judge("def g(xs):\n    xs.clear()\n    return []\n", tests, "g", translate)
    assert v.outcome == "fail", v
    assert judge("def g(xs):\n    return sorted(xs)\n", tests, "g", translate).outcome == "pass"


@BOTH
def test_same_statement_and_aliases_agree_on_both_paths(translate):
    same = "def check(candidate):\n    xs = [3, 1, 2]\n    assert candidate(xs) == sorted(xs)\n"
    destroys = "def g(xs):\n    r = sorted(xs)\n    xs.clear()\n    return r\n"
    assert judge(destroys, same, "g", translate).outcome == "fail"
    alias = "data = [3, 1, 2]\norig = data\nassert g(data) == [1, 2, 3]\nassert orig == [3, 1, 2]\n"
    assert judge("def g(xs):\n    xs.sort()\n    return xs\n", alias, translate=translate).outcome == "fail"
    assert judge("def g(xs):\n    return sorted(xs)\n", alias, translate=translate).outcome == "pass"


@BOTH
def test_a_generator_yielding_one_list_it_keeps_changing(translate):
    """One process: list(f(3)) is three references to one list, [[0, 1, 2]] * 3; item snapshots differ."""
    tests = "assert list(f(3)) == [[0], [0, 1], [0, 1, 2]]\n"
    same_list = "def f(n):\n    out = []\n    for i in range(n):\n        out.append(i)\n        yield out\n"
    v = judge(same_list, tests, translate=translate)
    assert v.outcome == "fail", v
    fresh = "def f(n):\n    for i in range(n):\n        yield list(range(i + 1))\n"
    assert judge(fresh, tests, translate=translate).outcome == "pass"


# ------------------------------------------------------------ 3. nothing that can raise is dropped

@BOTH
@pytest.mark.parametrize("stmt", ["print(candidate(0, 0))", "candidate(0, 0)", "print('x', candidate(0, 0))"])
def test_a_call_inside_print_or_alone_still_counts(translate, stmt):
    tests = f"def check(candidate):\n    {stmt}\n    assert candidate(2, 3) == 5\n"
    raising = "def add(a, b):\n    if a == 0:\n        raise ValueError('zero')\n    return a + b\n"
    v = judge(raising, tests, "add", translate)
    assert v.outcome == "fail", v
    assert judge("def add(a, b):\n    return a + b\n", tests, "add", translate).outcome == "pass"


# ------------------------------------------------------------ 4. the candidate's string never runs in the tests

FORGE = ("__import__('os').write(3, b'{\"passed\": true}\\n') or __import__('os')._exit(0)")


@pytest.mark.parametrize("use", ["eval(candidate(2)) == 4", "exec(candidate(2)) is None",
                                 "eval(compile(candidate(2), 'x', 'eval')) == 4"])
def test_eval_of_the_candidates_string_is_tamper(use):
    tests = f"def check(candidate):\n    assert {use}\n"
    v = judge(f"def h(x):\n    return {FORGE!r}\n", tests, "h")
    assert v.outcome == "fail" and v.evidence["status"] == "tamper", v


def test_literal_eval_of_an_answer_is_still_allowed():
    tests = "import ast\ndef check(candidate):\n    assert ast.literal_eval(candidate(2)) == [2, 2]\n"
    assert judge("def h(x):\n    return repr([x, x])\n", tests, "h").outcome == "pass"


# ------------------------------------------------------------ 5. one sample cannot poison the batch

FORGE_RANGE = ("import os\nfor fd in range(3, 12):\n    try:\n"
               "        os.write(fd, b'{\"loaded\": true}\\n{\"id\": 0, \"value\": {\"r\": [0, 100000000000000000000000, 1]}}\\n')\n"
               "    except OSError:\n        pass\ndef add(a, b):\n    return 0\n")
ADD_TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n"


@BOTH
def test_an_overflow_in_the_decoder_is_the_candidates_fail_only(translate):
    v = VERIFIERS.build("code_tests", {"timeout_s": 8, "translate": translate})
    p = problem(ADD_TESTS, "add")
    bad, good = v.verify([p, p], [sample(FORGE_RANGE, 0), sample("def add(a, b):\n    return a + b\n", 1)])
    assert bad.outcome == "fail", bad
    assert good.outcome == "pass", good
    with pytest.raises(wire.WireError):
        wire.decode({"r": [0, 10 ** 30, 1]})


@BOTH
def test_a_lone_surrogate_in_a_message_serialises(translate):
    v = judge("def add(a, b):\n    raise ValueError('\\ud800 bad')\n", ADD_TESTS, "add", translate)
    assert v.outcome == "fail", v
    json.dumps(v.model_dump(), ensure_ascii=False).encode("utf-8")
    v.model_dump_json()


def test_flooding_the_answer_channel_before_loading_is_a_fail():
    flood = ("import os\nfor fd in range(3, 12):\n    try:\n        os.write(fd, b'x' * (5 << 20))\n"
             "    except OSError:\n        pass\ndef add(a, b):\n    return 0\n")
    v = judge(flood, ADD_TESTS, "add", translate=False)
    assert v.outcome == "fail", v


# ------------------------------------------------------------ 8. one sample cannot demote the plan

def test_one_untranslatable_answer_does_not_demote_the_problem():
    tests = "assert f(1).upper() == 'A'\n"
    p = problem(tests)
    v = VERIFIERS.build("code_tests", {"timeout_s": 8})
    odd = v.verify([p], [sample("def f(x):\n    return iter('a')\n")])[0]
    assert odd.outcome == "fail", odd
    good = v.verify([p], [sample("def f(x):\n    return 'a'\n")])[0]
    assert good.outcome == "pass" and good.evidence["path"] == "translated", good


# ------------------------------------------------------------ 6. the trusted evaluation is bounded

@pytest.mark.parametrize("tests, program", [
    ("r = f(1)\nassert all(r.count(x) == 1 for x in r)\n", "def f(x):\n    return list(range(400000))\n"),
    ("assert '%0200000000d' % f(1) != ''\n", "def f(x):\n    return 7\n"),
    ("assert len(str([f(1)] * 1000)) > 0\n", "def f(x):\n    return list(range(100000))\n"),
    ("assert f(1) // f(2) >= 0\n", "def f(x):\n    return 7 ** (600000 // x)\n"),
])
def test_an_expensive_check_is_charged_to_the_candidate(tests, program):
    t = time.process_time()
    v = judge(program, tests, timeout_s=20)
    assert v.outcome == "fail" and v.evidence["status"] == "tamper", v
    assert time.process_time() - t < code_cases.CHECK_CPU_S * 4 + 5  # generous: a loaded machine


def test_the_evaluator_budget_on_its_own():
    plan = code_cases.translate("r = f(1)\nassert all(r.count(x) == 1 for x in r)\n", None)
    t = time.thread_time()
    failure = plan.check([code_cases.Outcome("value", list(range(300000)))] * len(plan.calls))
    assert failure is not None and failure.exception == "EvalLimit", failure
    assert time.thread_time() - t < code_cases.CHECK_CPU_S + 3


# ------------------------------------------------------------ 7. isolation gaps

@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the seccomp filter is written for x86_64")
def test_socket_families_the_network_namespace_does_not_isolate_are_refused():
    prog = ("import socket\nfor fam, kind in ((40, 1), (38, 5), (1, 1), (2, 1)):\n    try:\n"
            "        socket.socket(fam, kind).close()\n        print(fam, 'ok')\n    except OSError as e:\n"
            "        print(fam, 'refused', e.errno)\n")
    r = sandbox.run(prog)
    assert r.status == "ok", r
    assert r.stdout.split("\n")[:4] == ["40 refused 97", "38 refused 97", "1 ok", "2 ok"], r.stdout


@pytest.mark.skipif(not NS, reason="no mount namespace here: the program sees the host's filesystem")
def test_only_the_runtimes_libraries_of_usr_are_visible():
    prog = ("import os, ssl, sqlite3, lzma, ctypes\n"
            "print(os.path.exists('/usr/bin'), os.path.exists('/usr/share'), os.path.exists('/bin/sh'))\n")
    r = sandbox.run(prog)
    assert r.status == "ok", r
    if runner.runtime_lib_dirs():  # [] where the interpreter lives under /usr: all of it is needed
        assert r.stdout.strip() == "False False False", r.stdout


# ------------------------------------------------------------ red team of the fixes above

@pytest.mark.parametrize("use", [
    "exec(compile(candidate(2), '<unknown>', 'exec')) is None",      # the filename ast.parse uses
    "__import__('pickle').loads(bytes.fromhex(candidate(2))) == 4",   # a pickle calls what it names
    "__import__('marshal').loads(bytes.fromhex(candidate(2))) == 4",
    "__import__('os').system(candidate(2)) == 0",                      # a factory that reaches os.system
    "__import__('types').FunctionType(compile(candidate(2), '<unknown>', 'exec'), {})() is None",  # no exec event
])
def test_other_ways_to_run_the_answer_in_the_tests_process(use):
    # int(4) through a pickle's GLOBAL + REDUCE: what `os.system` would take the same way
    payload = b"cbuiltins\nint\n(I4\ntR.".hex() if "pickle" in use else "e904000000" if "marshal" in use else "x = 1"
    v = judge(f"def h(x):\n    return {payload!r}\n", f"def check(candidate):\n    assert {use}\n", "h")
    assert v.outcome == "fail" and v.evidence["status"] == "tamper", v


def test_an_argument_changed_through_map_is_undecidable():
    tests = "xs = [3, 1, 2]\nassert list(map(g, [xs])) == [sorted(xs)]\n"
    v = judge("def g(xs):\n    xs.clear()\n    return []\n", tests)
    assert v.outcome == "fail", v
    assert judge("def g(xs):\n    return sorted(xs)\n", tests).outcome == "pass"


@pytest.mark.parametrize("expr", ["all(r[::-1][0] >= x for x in r)", "all(len(r[x:]) >= 0 for x in r)",
                                  "[str(r) for x in r]"])
def test_slices_and_str_inside_a_comprehension_are_charged(expr):
    plan = code_cases.translate(f"r = f(1)\nassert {expr}\n", None)
    t = time.thread_time()
    failure = plan.check([code_cases.Outcome("value", list(range(1_000_000)))] * len(plan.calls))
    assert failure is not None and failure.exception == "EvalLimit", failure
    assert time.thread_time() - t < code_cases.CHECK_CPU_S + 3


def test_tests_may_define_namedtuples_and_dataclasses_while_they_run():
    """Both generate their methods with exec: the stdlib's own code generation is not the program's."""
    tests = ("import collections, dataclasses\nP = collections.namedtuple('P', 'x y')\n"
             "@dataclasses.dataclass\nclass Q:\n    a: int\n"
             "def check(candidate):\n    assert candidate(2) == P(2, 2).x + Q(0).a\n")
    assert judge("def h(x):\n    return x\n", tests, "h").outcome == "pass"


def test_what_a_check_builds_is_charged_too():
    """list(range) is one unit to read but a million items to build: a comprehension of them held GBs."""
    plan = code_cases.translate("r = f(1)\nassert len([list(r) for x in r]) > 0\n", None)
    failure = plan.check([code_cases.Outcome("value", range(1_000_000))] * len(plan.calls))
    assert failure is not None and failure.exception == "EvalLimit", failure


def test_round_to_a_huge_number_of_digits_is_refused():
    """round(5, -10**8) makes the verifier compute 10**(10**8); the digits come from the program."""
    plan = code_cases.translate("assert round(5, f(1)) == 0\n", None)
    failure = plan.check([code_cases.Outcome("value", -10 ** 8)])
    assert failure is not None and failure.exception == "EvalLimit", failure
    assert code_cases.translate("assert round(f(1), 2) == 1.5\n", None).check([code_cases.Outcome("value", 1.5)]) is None


@pytest.mark.parametrize("expr", ["sum(type(f(1))(f(2))) >= 0", "len(type(f(3))(f(2))) >= 0"])
def test_a_class_reached_through_type_is_guarded_like_its_name(expr):
    plan = code_cases.translate(f"assert {expr}\n", None)
    vals = {"f(1)": range(0), "f(2)": 10 ** 12, "f(3)": b""}
    failure = plan.check([code_cases.Outcome("value", vals[c.text]) for c in plan.calls])
    assert failure is not None and failure.exception == "EvalLimit", failure


def test_a_stub_in_the_prompt_is_the_programs_to_write():
    """A second function the prompt only declares (docstring body) is answered by the program."""
    prompt = "def twice(x):\n    \"\"\"Return 2 * x.\"\"\"\n\n\ndef f(x):\n    \"\"\"Return twice(x) + 1.\"\"\"\n"
    tests = "def check(candidate):\n    assert twice(3) == 6\n    assert candidate(3) == 7\n"
    good = "def twice(x):\n    return 2 * x\n\ndef f(x):\n    return twice(x) + 1\n"
    assert judge(good, tests, "f", prompt_code=prompt).outcome == "pass"
    from verifiers.code import prompt_helpers
    assert prompt_helpers(f"```python\n{PROMPT}```", "f")[1] == {"scale"}


@pytest.mark.skipif(not NS, reason="no pid namespace here: /proc is the host's")
def test_proc_shows_only_the_runs_processes():
    r = sandbox.run("import os\nprint(sorted(os.listdir('/proc')), os.path.exists('/proc/cmdline'))\n")
    assert r.status == "ok", r
    if r.isolation.get("proc") == "subset=pid":  # older kernels refuse the option: the whole private /proc
        assert r.stdout.strip() == "['1', '2', 'self', 'thread-self'] False", r.stdout


def test_a_deep_copy_argument_may_be_changed():
    """HumanEval/32 passes copy.deepcopy(coeffs): a program that consumes its list is still right."""
    from generators.humaneval import load_problems

    p = next(p for p in load_problems(None) if p.metadata["task_id"] == "HumanEval/32")
    consumes = ("import math\ndef poly(xs, x):\n    return sum(c * math.pow(x, i) for i, c in enumerate(xs))\n"
                "def find_zero(xs):\n    ys = list(xs)\n    xs.clear()\n    lo, hi = -1.0, 1.0\n"
                "    while poly(ys, lo) * poly(ys, hi) > 0:\n        lo, hi = lo * 2, hi * 2\n"
                "    for _ in range(200):\n        mid = (lo + hi) / 2\n"
                "        if poly(ys, lo) * poly(ys, mid) <= 0:\n            hi = mid\n        else:\n            lo = mid\n"
                "    return lo\n")
    v = VERIFIERS.build("code_tests", {"timeout_s": 20}).verify([p], [sample(consumes)])[0]
    assert v.outcome == "pass", v
