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
