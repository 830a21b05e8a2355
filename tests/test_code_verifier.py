"""code_tests: program extraction, HumanEval reference solutions, wrong programs and their evidence."""
import tempfile

import pytest

from generators.humaneval import load_problems
from loop.records import Message, Problem, Reference, Sample
from loop.registry import RegistryError
from verifiers.base import VERIFIERS, as_reward_func
from verifiers.code import extract_code

HE = {p.metadata["task_id"]: p for p in load_problems(None)}


def sample(problem: Problem, text: str, i: int = 0) -> Sample:
    return Sample(id=f"{problem.id}:r0:{i}", problem_id=problem.id, round=0, index=i, text=text,
                  num_tokens=0, finish_reason="stop")


def verifier(**opts):
    return VERIFIERS.build("code_tests", {"timeout_s": 20, **opts})  # generous: CI machines may be loaded


def fenced(code: str, tag: str = "python") -> str:
    return f"```{tag}\n{code}\n```"


def test_extract_blocks():
    text = "<think>\n```python\ndraft()\n```\n</think>\nHere:\n" + fenced("a = 1") + "\n" + \
        fenced("console.log(1)", "js") + "\n" + fenced("b = 2\nc = 3", "py") + "\ntext"
    assert extract_code(text) == "b = 2\nc = 3\n"
    assert extract_code(text, "first") == "a = 1\n"
    assert extract_code(text, "longest") == "b = 2\nc = 3\n"
    assert extract_code(text, "first", after_think=False) == "draft()\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"            # untagged only when no python block
    assert extract_code(fenced("x = 1", "js")) is None
    assert extract_code("<think>\n" + fenced("x = 1")) is None     # truncated inside thinking
    assert extract_code("no code here") is None
    assert extract_code("```python\nx = 1\n") is None              # unclosed fence


def test_all_humaneval_reference_solutions_pass():
    problems = list(HE.values())
    verdicts = verifier(workers=2, timeout_s=20).verify(problems, [sample(p, p.reference.chain) for p in problems])
    bad = [(p.metadata["task_id"], v.reason) for p, v in zip(problems, verdicts) if v.outcome != "pass"]
    assert bad == [] and len(verdicts) == 164
    assert all(v.score == 1.0 and v.verifier == "code_tests" for v in verdicts)
    paths = [v.evidence["path"] for v in verdicts]
    assert paths.count("translated") >= 159  # judged in the verifier; the rest (5) in a test process


@pytest.mark.parametrize("task", ["HumanEval/0", "HumanEval/12", "HumanEval/32", "HumanEval/53", "HumanEval/151"])
def test_both_paths_agree(task):
    p = HE[task]
    entry = p.reference.entry_point
    wrong = fenced(f"def {entry}(*args, **kwargs):\n    return None")
    for translate in (True, False):
        good, bad = verifier(translate=translate).verify([p, p], [sample(p, p.reference.chain, 0), sample(p, wrong, 1)])
        assert (good.outcome, bad.outcome) == ("pass", "fail"), (translate, good.reason, bad.reason)
        if not translate:
            assert good.evidence["path"] == "test_process"


def test_wrong_solution_fails_with_the_failing_assertion():
    p = HE["HumanEval/0"]
    wrong = "def has_close_elements(numbers, threshold):\n    return False"
    [v] = verifier().verify([p], [sample(p, fenced(wrong))])
    assert v.outcome == "fail" and v.score == 0.0
    assert v.evidence["status"] == "failed" and v.evidence["phase"] == "tests"
    assert v.evidence["exception"] == "AssertionError"
    assert v.evidence["test_line"].startswith("assert candidate(")
    assert v.evidence["test_line"] in v.reason


def test_program_errors_are_reported_by_phase():
    p = HE["HumanEval/0"]
    [syn, missing, crash] = verifier().verify([p] * 3, [
        sample(p, fenced("def has_close_elements(:\n    pass"), 0),
        sample(p, fenced("def other():\n    return 1"), 1),
        sample(p, fenced("def has_close_elements(n, t):\n    return 1 / 0"), 2)])
    assert (syn.evidence["phase"], syn.evidence["exception"]) == ("program", "SyntaxError")
    assert missing.evidence["exception"] == "NameError" and "has_close_elements" in missing.reason
    assert crash.evidence["exception"] == "ZeroDivisionError" and crash.evidence["line"] == "return 1 / 0"
    assert all(v.outcome == "fail" for v in (syn, missing, crash))


def test_no_code_block_and_no_tests():
    p = HE["HumanEval/2"]
    [v] = verifier().verify([p], [sample(p, "<think>\nhmm\n</think>\nreturn number % 1.0")])
    assert (v.outcome, v.reason) == ("fail", "no code block")
    q = Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content="x")])
    [v] = verifier().verify([q], [sample(q, fenced("x = 1"))])
    assert v.outcome == "abstain"


def test_plain_assert_tests_without_entry_point():
    q = Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content="x")],
                reference=Reference(tests="assert square(2) == 4\nassert square(3) == 9\n"))
    good, bad = verifier().verify([q, q], [sample(q, fenced("def square(x):\n    return x * x"), 0),
                                           sample(q, fenced("def square(x):\n    return 2 * x"), 1)])
    assert good.outcome == "pass"
    assert bad.outcome == "fail" and bad.evidence["test_line"] == "assert square(3) == 9"


def test_sandbox_failure_is_an_error_not_a_wrong_answer(monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", "/nonexistent-sandbox-root")
    p = HE["HumanEval/0"]
    [v] = verifier().verify([p], [sample(p, p.reference.chain)])
    assert v.outcome == "error" and v.evidence["status"] == "sandbox_error"
    assert "cannot prepare" in v.reason


def test_workers_keep_order():
    problems = [HE[f"HumanEval/{i}"] for i in (3, 4, 5, 6)]
    texts = [p.reference.chain if i % 2 == 0 else fenced("pass") for i, p in enumerate(problems)]
    samples = [sample(p, t, i) for i, (p, t) in enumerate(zip(problems, texts))]
    verdicts = verifier(workers=3).verify(problems, samples)
    assert [v.sample_id for v in verdicts] == [s.id for s in samples]
    assert [v.outcome for v in verdicts] == ["pass", "fail", "pass", "fail"]


def test_reward_function_adapter():
    p = HE["HumanEval/7"]
    reward = as_reward_func(verifier(), {p.id: p})
    assert reward(["q", "q"], [p.reference.chain, fenced("pass")], problem_id=[p.id, p.id]) == [1.0, 0.0]


def test_options_are_validated():
    with pytest.raises(RegistryError, match="timeout_s"):
        VERIFIERS.build("code_tests", {"timeout_s": 0})
    with pytest.raises(RegistryError, match="allowed options"):
        VERIFIERS.build("code_tests", {"blok": "last"})


def test_broken_tests_are_an_error_not_a_wrong_answer():
    q = Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content="x")],
                reference=Reference(tests="assert square(2) == 4 +\n"))
    [v] = verifier().verify([q], [sample(q, fenced("def square(x):\n    return x * x"))])
    assert v.outcome == "error" and v.evidence["status"] == "bad_tests" and "do not parse" in v.reason


def test_results_compare_by_value_and_exact_builtin_type():
    q = Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content="x")],
                reference=Reference(tests="assert f(1) == (1, 2)\nassert g() is None\nassert h() == 0.5\n"
                                          "assert abs(h() - 0.5) < 1e-9\nassert set(k()) == {1, 2}\n"))
    ok = "def f(x):\n    return (1, 2)\ndef g():\n    pass\ndef h():\n    return 1 / 2\ndef k():\n    return [2, 1, 1]"
    as_list = ok.replace("return (1, 2)", "return [1, 2]")
    as_false = ok.replace("    pass", "    return False")
    verdicts = verifier().verify([q] * 3, [sample(q, fenced(c), i) for i, c in enumerate((ok, as_list, as_false))])
    assert [v.outcome for v in verdicts] == ["pass", "fail", "fail"]
    assert verdicts[1].evidence["test_line"] == "assert f(1) == (1, 2)"
    assert verdicts[2].evidence["test_line"] == "assert g() is None"


# ------------------------------------------------------------------ the pieces of the trust boundary

def test_iterators_cross_as_iterators():
    q = Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content="x")],
                reference=Reference(tests="assert list(f(3)) == [0, 1, 4]\nassert sorted(g()) == [1, 2]\n"))
    r = Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content="x")],
                reference=Reference(tests="assert f(3) == [0, 1, 4]\n"))
    gen = "def f(n):\n    return (i * i for i in range(n))\ndef g():\n    return map(int, '21')"
    a, b = verifier().verify([q, r], [sample(q, fenced(gen), 0), sample(r, fenced(gen), 1)])
    assert a.outcome == "pass" and b.outcome == "fail"  # a generator is not a list, as in plain Python


def test_wire_round_trip_keeps_exact_types():
    from verifiers.sandbox import wire

    values = [None, True, 0, 1, -7, 10**40, 1.0, -0.0, float("inf"), "é\n\"", b"\x00\xff", (1, [2.5, (None,)]),
              {"a": 1, 2: (3,)}, {1, 2}, frozenset({"x"}), complex(1, -2), [], (), {}, range(1, 9, 2)]
    for v in values:
        back = wire.loads(wire.dumps(v))
        assert back == v and type(back) is type(v), v
    assert type(wire.loads(wire.dumps([True]))[0]) is bool and wire.loads(wire.dumps(1.0)) == 1.0
    assert wire.loads(wire.dumps(float("nan"))) != wire.loads(wire.dumps(float("nan")))  # nan stays nan


@pytest.mark.parametrize("bad", ['{"f": 1}', '{"x": []}', '{"t": [], "s": []}', '{"d": [[[1], 2]]}', "NaN",
                                 '{"b": "zz"}', "[" * 5000 + "]" * 5000, '{"c": "ab"}',
                                 '{"s": [' + ",".join(str(i << 61) for i in range(20_000)) + "]}"])
def test_wire_rejects_anything_else(bad):
    from verifiers.sandbox import wire

    with pytest.raises(wire.WireError):
        wire.loads(bad)


def test_wire_refuses_imitations():
    from verifiers.sandbox import wire

    class Int(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    class Eq:
        def __eq__(self, other):
            return True

    class Row(list):
        pass

    class Sneaky(Row):  # the override may sit anywhere between the class and the built-in
        def __ne__(self, other):
            return False

    class FakeCounter(__import__("collections").Counter):  # only the standard library's own Counter may
        def __eq__(self, other):
            return True

    class Meta(type):  # a metaclass whose == says "I am str" to any `in` test
        def __eq__(cls, other):
            return True

        __hash__ = type.__hash__

    class MetaStr(str, metaclass=Meta):
        def __eq__(self, other):
            return True

        __hash__ = str.__hash__

    for v, suspicious in ((Int(1), True), (Eq(), True), (object(), False), ([Int(1)], True), ({}.keys(), False),
                          (set(range(20_000)), False), (Sneaky([1]), True), (FakeCounter(a=1), True),
                          (MetaStr("x"), True)):
        with pytest.raises(wire.Unserialisable) as e:
            wire.encode(v)
        assert e.value.suspicious is suspicious


def test_wire_carries_builtin_subclasses_as_their_builtin_data():
    """defaultdict, Counter, OrderedDict, namedtuples, IntEnum/StrEnum members and plain user
    subclasses are ordinary answers: they cross as exact built-ins holding the same data."""
    import collections
    import enum

    from verifiers.sandbox import wire

    class Color(enum.IntEnum):
        RED = 3

    class Tag(str, enum.Enum):
        A = "a"

    class Row(list):
        pass

    point = collections.namedtuple("Point", "x y")
    cases = [(collections.defaultdict(int, {"a": 2}), {"a": 2}), (collections.Counter("abb"), {"a": 1, "b": 2}),
             (collections.OrderedDict(z=1, a=2), {"z": 1, "a": 2}), (point(1, 2), (1, 2)), (Color.RED, 3),
             (Tag.A, "a"), (Row([1, Row([2])]), [1, [2]]), ({"k": point(3, 4)}, {"k": (3, 4)})]
    for value, plain in cases:
        got = wire.loads(wire.dumps(value))
        assert got == plain and type(got) is type(plain), (value, got)
        if isinstance(got, dict):
            assert all(type(v) in (int, tuple) for v in got.values())


def test_translation_of_humaneval_check():
    from verifiers.code_cases import Outcome, translate

    plan = translate(HE["HumanEval/0"].reference.tests, "has_close_elements")
    assert len(plan.calls) == 7 and plan.calls[0].fn == "has_close_elements"
    assert plan.calls[0].args == ([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3)
    right = [True, False, True, False, True, True, False]
    assert plan.check([Outcome("value", x) for x in right]) is None
    failure = plan.check([Outcome("value", x) for x in [True, True, *right[2:]]])
    assert failure.exception == "AssertionError" and "0.05) == False" in failure.test_line
    raised = plan.check([Outcome("raised", info={"exception": "ValueError", "message": "m"})] * 7)
    assert raised.exception == "ValueError" and raised.outcome.kind == "raised"


@pytest.mark.parametrize("tests", [
    "def check(candidate):\n    for i in range(3):\n        assert candidate(i) == i\n",
    "def check(candidate):\n    assert candidate(candidate(1)) == 1\n",
    "def check(candidate):\n    x = [3, 1]\n    candidate(x)\n    assert x == [1, 3]\n",
    "def check(candidate):\n    import random\n    assert candidate(random.randint(1, 2)) > 0\n",
    "def check(candidate):\n    assert callable(candidate)\n",
    "def helper():\n    return 1\ndef check(candidate):\n    assert candidate(helper()) == 1\n",
    "def check(candidate):\n    try:\n        candidate(-1)\n    except ValueError:\n        pass\n",
    "def check(candidate):\n    assert candidate(lambda x: x) == 1\n",
])
def test_what_is_not_translated(tests):
    from verifiers.code_cases import NotTranslatable, translate

    with pytest.raises(NotTranslatable):
        translate(tests, "f")


def test_the_evaluator_refuses_to_build_huge_values():
    from verifiers.code_cases import Outcome, translate

    plan = translate("assert f() == 'x' * 10 ** 9\n", None)
    assert plan.check([Outcome("value", "x")]).exception == "EvalLimit"
    plan = translate("assert f() == 7 ** 10 ** 8\n", None)
    assert plan.check([Outcome("value", 1)]).exception == "EvalLimit"
    plan = translate("assert set(f()) == {1, 2}\nassert dict(g()) == {}\n", None)  # colliding hashes: quadratic
    assert plan.check([Outcome("value", [i << 61 for i in range(20_000)]), Outcome("value", [])]).exception == "EvalLimit"
    assert plan.check([Outcome("value", [2, 1, 1]), Outcome("value", [])]) is None


def test_tamper_is_an_error_class_counted_per_round():
    from loop.analysis import analyze, compare, error_table
    from loop.records import ERROR_CLASSES, Row
    from loop.taxonomy import classify

    p = HE["HumanEval/7"]
    forged = fenced("class R(list):\n    def __eq__(self, o):\n        return True\n"
                    "def filter_by_substring(strings, substring):\n    return R()")
    wrong = fenced("def filter_by_substring(strings, substring):\n    return []")
    texts = [forged, forged, wrong, p.reference.chain]
    verdicts = verifier().verify([p] * 4, [sample(p, t, i) for i, t in enumerate(texts)])
    assert [v.evidence["status"] for v in verdicts] == ["tamper", "tamper", "failed", "ok"]
    rows = [Row(problem=p, sample=sample(p, t, i), verdicts=[v], outcome=v.outcome)
            for i, (t, v) in enumerate(zip(texts, verdicts))]
    assert [classify(r).error_class if classify(r) else None for r in rows] == ["tamper", "tamper", "other", None]
    assert "tamper" in ERROR_CLASSES
    round0, round1 = analyze(0, rows), analyze(1, rows[2:])
    assert round0.categories["humaneval/humaneval"].errors["tamper"] == 2
    assert compare(round0, round1)["humaneval/humaneval"]["d_errors"]["tamper"] == -2
    assert error_table(round0)[0][ERROR_CLASSES.index("tamper") + 1] == "tamper"


def test_what_only_checking_finds_untranslatable_goes_to_a_test_process():
    from verifiers.code import plan_for

    tests = "import os\nassert f(1) != os\nassert f(2) == 3\n"  # `os` is unknown to the evaluator
    q = Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content="x")],
                reference=Reference(tests=tests))
    good, bad = verifier().verify([q, q], [sample(q, fenced("def f(x):\n    return x + 1"), 0),
                                          sample(q, fenced("def f(x):\n    return x"), 1)])
    assert (good.outcome, bad.outcome) == ("pass", "fail")
    assert good.evidence["path"] == bad.evidence["path"] == "test_process"
    assert "os" in bad.evidence["why_not_translated"] and bad.evidence["test_line"] == "assert f(2) == 3"
    assert plan_for(tests, None)[0] is not None  # the plan stays: one answer never demotes it (issue 20)


def test_modules_the_tests_use_without_importing_them():
    # MBPP's tests call math.isclose relying on the solution's `import math`.
    tests = ("assert math.isclose(area(2), 12.566, rel_tol=0.001)\n"
             "assert re.fullmatch('[0-9]+', str(int(area(1))))\n")
    q = Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content="x")],
                reference=Reference(tests=tests))
    prog = fenced("import math\ndef area(r):\n    return math.pi * r * r")
    for translate in (True, False):
        [v] = verifier(translate=translate).verify([q], [sample(q, prog)])
        assert v.outcome == "pass" and v.evidence["path"] == "test_process", v  # `re` needs the test process
    q2 = Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content="x")],
                 reference=Reference(tests="assert math.isclose(area(2), 12.566, rel_tol=0.001)\n"))
    [v] = verifier().verify([q2], [sample(q2, prog)])
    assert v.outcome == "pass" and v.evidence["path"] == "translated"


def test_a_function_named_like_a_module_is_still_the_programs():
    from verifiers.code_cases import free_names, implicit_modules, parse_tests

    tree = parse_tests("assert calendar(3) == 3\nassert math.floor(string(2.5)) == 2\n")
    assert free_names(tree) == {"calendar", "string"} and implicit_modules(tree) == {"math"}


def test_wire_carries_ints_past_python_s_decimal_limit():
    """JSON writes ints in decimal and Python refuses to print one past 4,300 digits: such an
    answer (10 ** 5000, a big factorial) crosses as hex, and a malformed hex body is refused."""
    from verifiers.sandbox import wire

    for v in (10 ** 5000, -(10 ** 5000) + 7, 2 ** wire.BIG_INT_BITS, [{"k": -3 ** 9000}]):
        assert wire.loads(wire.dumps(v)) == v
    for bad in ('{"x": "zz"}', '{"x": 5}', '{"x": "1_000"}', '{"x": " 1"}', '{"x": "%s"}' % ("f" * (wire.MAX_HEX + 2))):
        with pytest.raises(wire.WireError):
            wire.loads(bad)


@pytest.mark.parametrize("translate", [True, False])
def test_a_correct_answer_with_a_5000_digit_int_passes(translate):
    tests = "def check(candidate):\n    assert candidate(5000) == 10 ** 5000\n    assert candidate(3) == 1000\n"
    problem = Problem(family="test", category="code", difficulty=1, prompt=[Message(role="user", content="p")],
                      reference=Reference(tests=tests, entry_point="p"))
    right, wrong = (fenced(f"def p(n):\n    return 10 ** n{tail}") for tail in ("", " + 1"))
    v = verifier(translate=translate)
    assert [x.outcome for x in v.verify([problem, problem], [sample(problem, right), sample(problem, wrong, 1)])] \
        == ["pass", "fail"]
