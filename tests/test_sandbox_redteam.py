"""Red-team regressions for code_tests (issue 8 follow-up): wrong programs that once got `pass`,
answers that once hung or swamped the verifier's own process, and attacks that failed as they
should. Each wrong program here is written to pass only if the attack works.
"""
import time

import pytest

from loop.records import Message, Problem, Reference, Sample
from verifiers import code_cases
from verifiers.base import VERIFIERS
from verifiers.sandbox import wire


def judge(program: str, tests: str, entry_point: str | None = None, translate: bool = True, timeout_s: float = 8.0):
    problem = Problem(family="test", category="code", difficulty=1, prompt=[Message(role="user", content="x")],
                      reference=Reference(tests=tests, entry_point=entry_point))
    sample = Sample(id="s:r0:0", problem_id=problem.id, round=0, index=0, text=f"```python\n{program}\n```",
                    num_tokens=0, finish_reason="stop")
    v = VERIFIERS.build("code_tests", {"timeout_s": timeout_s, "memory_mb": 256, "translate": translate})
    return v.verify([problem], [sample])[0]


BOTH = pytest.mark.parametrize("translate", [True, False], ids=["translated", "test_process"])

# ------------------------------------------------------------ the program mutates its arguments

NO_MUTATION = "a = [3, 1, 2]\nassert f(a) == [1, 2, 3]\nassert a == [3, 1, 2]\n"
SORTS_IN_PLACE = "def f(x):\n    x.sort()\n    return x\n"


@BOTH
def test_mutating_an_argument_the_tests_inspect_later(translate):
    """The tests check that f leaves its argument alone; the program sorts it in place."""
    v = judge(SORTS_IN_PLACE, NO_MUTATION, translate=translate)
    assert v.outcome == "fail", v
    correct = judge("def f(x):\n    return sorted(x)\n", NO_MUTATION, translate=translate)
    assert correct.outcome == "pass", correct


def test_mutating_an_argument_reached_through_a_wrapper():
    """`a` goes out inside another list: the translated path used to keep the host's untouched copy."""
    tests = "a = [3, 1, 2]\nassert f([a]) == [[1, 2, 3]]\nassert a == [3, 1, 2]\n"
    v = judge("def f(x):\n    x[0].sort()\n    return x\n", tests)
    assert v.outcome == "fail", v


def test_in_place_mutation_the_tests_expect_is_seen():
    """The other side of copying back: a program that must sort in place now passes (it used to fail)."""
    tests = "a = [3, 1, [5, 4]]\nb = {'k': 1}\nf(a, b)\nassert a == [1, 3, [4, 5]] and b == {'k': 2}\n"
    prog = "def f(x, d):\n    x[2].sort()\n    x[:2] = sorted(x[:2])\n    d['k'] += 1\n"
    assert judge(prog, tests).outcome == "pass"
    aliased = "a = [1]\nf(a, a)\nassert a == [1, 1]\n"  # only the argument that changed is copied back
    assert judge("def f(x, y):\n    x.extend(y)\n", aliased).outcome == "pass"


# ------------------------------------------------------------ StopIteration ends the tests' own loops

@BOTH
def test_stop_iteration_from_the_program_does_not_end_the_tests_loop(translate):
    """all(map(...)) and for-loops over map(candidate, ...) treat StopIteration as 'no more items'."""
    tests = ("assert all(map(lambda p: f(p[0]) == p[1], [(1, 2), (2, 4)]))\n"
             "for x, y in zip([1, 2], map(f, [1, 2])):\n    assert y == 2 * x\n")
    v = judge("def f(x):\n    raise StopIteration\n", tests, translate=translate)
    assert v.outcome == "fail", v


# ------------------------------------------------------------ translated checks vs Python scoping

def test_a_call_inside_a_comprehension_uses_the_comprehension_variable():
    """`n` is bound outside and inside the comprehension: only f(2) used to be asked."""
    tests = "n = 2\nassert [f(n) for n in [2, 3, 5]] == [True, True, True]\n"
    v = judge("def f(n):\n    return n == 2\n", tests)
    assert v.outcome == "fail", v
    assert judge("def f(n):\n    return n in (2, 3, 5)\n", tests).outcome == "pass"


# ------------------------------------------------------------ the verifier's own process

def test_a_huge_range_is_not_iterated_by_the_verifier():
    """range(10**18) crossed as a range; `sum(f(5))` in the verifier's evaluator never ended."""
    with pytest.raises(wire.WireError):
        wire.decode({"r": [0, 10 ** 18, 1]})
    with pytest.raises(wire.Unserialisable):
        wire.encode(range(2 * wire.MAX_ITEMS))
    v = judge("def f(n):\n    return range(2 * 10**6)\n", "assert sum(f(5)) == 10\n")
    assert v.outcome == "fail" and v.evidence["status"] == "unserialisable", v
    assert judge("def f(n):\n    return range(n)\n", "assert list(f(5)) == [0, 1, 2, 3, 4]\n").outcome == "pass"


COLLIDING = [((1 << 61) - 1) * k for k in range(1, 3001)]  # all hash to 0


def test_hash_collisions_are_refused_before_building_a_set_or_dict():
    """Ints that all hash alike made one decoded set cost seconds of the verifier's CPU (quadratic)."""
    for tree in ({"s": COLLIDING}, {"fs": COLLIDING}, {"d": [[k, 0] for k in COLLIDING]}):
        t = time.perf_counter()
        with pytest.raises(wire.WireError, match="hash"):
            wire.decode(tree)
        assert time.perf_counter() - t < 2
    assert wire.decode({"s": list(range(10_000))}) == set(range(10_000))  # plain ints are fine
    plain = {-1, -2, 1.5, "a", (1, 2), *range(100)}
    assert wire.decode(wire.encode(plain)) == plain


@pytest.mark.parametrize("expr", ["set(f(1))", "{x for x in f(1)}", "{x: 0 for x in f(1)}", "dict.fromkeys(f(1))"])
def test_hash_collisions_are_refused_by_the_evaluator(expr):
    """set(f(x)) over a list the program chose: the same quadratic build, in the verifier."""
    tests = f"assert len({expr}) == 3\n"
    try:
        plan = code_cases.translate(tests, None)
    except code_cases.NotTranslatable:
        return  # not evaluated here at all
    t = time.perf_counter()
    failure = plan.check([code_cases.Outcome("value", list(COLLIDING))])
    assert time.perf_counter() - t < 2
    assert failure is not None and failure.exception == "EvalLimit", failure


# ------------------------------------------------------------ attacks that fail as they should

@pytest.mark.parametrize("program, tests", [
    ("def f(x):\n    return True\n", "assert f(1) == 1\nassert f(2) == 2\n"),          # True == 1 only
    ("def f(x):\n    return 0.0\n", "assert f(1) == -0.0 and str(f(1)) == '-0.0'\n"),  # sign kept
    ("def f(x):\n    return float('nan')\n", "assert not f(1) != 1.5\n"),
    ("def f(x):\n    return {3, 1}\n", "assert list(f(1)) == [3, 1, 2]\n"),
    ("def f(x):\n    return iter([1, 2])\n", "assert f(1) == [1, 2]\n"),
    ("c = [0]\ndef f(x):\n    c[0] += 1\n    return c[0]\n", "assert f(5) == f(5)\n"),   # stateful
    ("import sys\nsys.modules['marshal'].loads = lambda b: {'id': 0, 'fn': 'f', 'args': [], 'kwargs': {}}\n"
     "def f(x):\n    return 0\n", "assert f(1) == 2\n"),
])
def test_answers_that_only_look_right_fail(program, tests):
    v = judge(program, tests)
    assert v.outcome == "fail", v


FORGED = ("import os, threading\n"
          "def spam():\n"
          "    for fd in range(3, 12):\n"
          "        for rec in (b'{\"id\":0,\"value\":2}\\n', b'{\"done\":true}\\n', b'{\"passed\":true}\\n'):\n"
          "            try:\n                os.write(fd, rec)\n            except OSError:\n                pass\n"
          "def f(x):\n"
          "    spam()\n"
          "    if os.fork() == 0:\n        spam()\n        os._exit(0)\n"
          "    threading.Thread(target=spam).start()\n"
          "    return 0\n")


@BOTH
def test_forged_records_from_a_child_and_a_thread(translate):
    v = judge(FORGED, "assert f(1) == 2\n", translate=translate)
    assert v.outcome == "fail", v


# ------------------------------------------------------------ the tests' own try/except

@pytest.mark.parametrize("handler", ["except Exception:", "except:", "except BaseException:"])
def test_a_refused_answer_is_not_taken_for_the_program_raising(handler):
    """The tests want f(-1) to raise; a program answering with a function made the harness raise
    ProgramResultError, which the tests' own handler took for the program's exception."""
    tests = f"try:\n    f(-1)\n{handler}\n    pass\nelse:\n    assert False, 'f(-1) must raise'\nassert f(2) == 4\n"
    v = judge("def f(x):\n    return (lambda: 0) if x < 0 else x * x\n", tests)
    assert v.outcome == "fail" and "ProgramResultError" in v.reason, v
    assert judge("def f(x):\n    if x < 0:\n        raise ValueError\n    return x * x\n", tests).outcome == "pass"


@pytest.mark.parametrize("raising", ["class E(BaseException):\n    pass\n", "E = SystemExit\n", "E = KeyboardInterrupt\n"])
def test_a_base_exception_is_not_caught_by_except_exception(raising):
    """In one process `except Exception` does not catch SystemExit or a BaseException of the program's;
    the tests' process used to re-raise both as an Exception, so the test below passed."""
    tests = "try:\n    f(-1)\nexcept Exception:\n    pass\nelse:\n    assert False, 'f(-1) must raise'\nassert f(2) == 4\n"
    v = judge(raising + "def f(x):\n    if x < 0:\n        raise E(0)\n    return x * x\n", tests)
    assert v.outcome == "fail" and "ProgramBaseError" in v.reason, v
