"""docs/plugins.md is executed exactly as written: its plug-ins register, its config loads,
its test passes, and its example verifier judges a passing and a failing sample."""
import re
from pathlib import Path

import pytest
import yaml

from loop.config import load_config
from loop.records import Message, Problem, Reference, Sample
from verifiers.base import VERIFIERS

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def blocks(lang: str) -> list[str]:
    return [body for tag, body in BLOCK.findall(GUIDE.read_text()) if tag == lang]


@pytest.fixture(scope="module")
def guide():
    """Execute every python block of the guide in order, in one namespace; afterwards the
    guide's plug-ins leave the registries again, so later tests see only the built-ins."""
    from generators.base import GENERATORS
    from policies.base import POLICIES

    registries = (VERIFIERS, GENERATORS, POLICIES)
    before = [set(r.names()) for r in registries]
    ns: dict = {"__name__": "plugin_guide"}
    for i, code in enumerate(blocks("python")):
        exec(compile(code, f"{GUIDE}:python-block-{i}", "exec"), ns)
    yield ns
    for reg, names in zip(registries, before):
        for name in set(reg.names()) - names:
            reg._items.pop(name, None)
            reg._sources.pop(name, None)


def sample(problem: Problem, text: str, i: int = 0) -> Sample:
    return Sample(id=f"{problem.id}:r0:{i}", problem_id=problem.id, round=0, index=i, text=text,
                  num_tokens=0, finish_reason="stop")


def config_snippet() -> str:
    return next(b for b in blocks("yaml") if "guide_squares" in b)


def test_guide_has_the_three_examples(guide):
    assert len(blocks("python")) >= 4 and len(blocks("yaml")) == 3
    from generators.base import GENERATORS
    from policies.base import POLICIES

    assert "guide_squares" in GENERATORS.names() and "guide_target_accuracy" in POLICIES.names()
    assert VERIFIERS.get("guide_stdout_answer").__doc__.startswith("Runs the chain's python block")


def test_guide_verifier_is_about_thirty_lines():
    verifier_block = next(b for b in blocks("python") if "guide_stdout_answer" in b)
    assert 25 <= len(verifier_block.strip().splitlines()) <= 45


def test_guide_tests_pass(guide):
    tests = [f for name, f in guide.items() if name.startswith("test_") and callable(f)]
    assert tests
    for t in tests:
        t()


def test_example_verifier_on_passing_and_failing_samples(guide):
    p = Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content="print 7*6")],
                reference=Reference(answer="42"))
    v = VERIFIERS.build("guide_stdout_answer", {"timeout_s": 2})
    good, wrong, slow, none = v.verify([p] * 4, [
        sample(p, "<think>\n7*6\n</think>\n```python\nprint(7 * 6)\n```", 0),
        sample(p, "```python\nprint(41)\n```", 1),
        sample(p, "```python\nwhile True: pass\n```", 2),
        sample(p, "42", 3)])
    assert (good.outcome, good.score) == ("pass", 1.0)
    assert wrong.outcome == "fail" and "41" in wrong.reason
    assert slow.outcome == "fail" and slow.evidence["status"] == "timeout"
    assert (none.outcome, none.reason) == ("fail", "no code block")
    q = Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content="x")])
    assert v.verify([q], [sample(q, "```python\nprint(1)\n```")])[0].outcome == "abstain"


def test_guide_config_snippet_validates(guide):
    raw = yaml.safe_load(config_snippet())
    cfg = load_config(None, raw=raw)
    assert [v.name for v in cfg.verifiers] == ["guide_stdout_answer", "code_tests"]
    assert cfg.policies.stopping.name == "guide_target_accuracy"
    assert cfg.category_keys() == ["guide_squares/squares", "humaneval/humaneval"]


def test_outside_the_repo_route_comes_first():
    text = GUIDE.read_text()
    assert text.index("## From your own package or file") < text.index("## A verifier")


def test_guide_plugins_list_loads_a_module_and_a_file(tmp_path, monkeypatch):
    """The guide's `plugins:` snippet, with a my_pkg.checks and a ./my_plugins.py made here."""
    snippet = yaml.safe_load(next(b for b in blocks("yaml") if "plugins:" in b))
    (tmp_path / "my_pkg").mkdir()
    (tmp_path / "my_pkg" / "__init__.py").write_text("")
    (tmp_path / "my_pkg" / "checks.py").write_text(
        "from verifiers.answer import ExactMatch\nfrom verifiers.base import VERIFIERS\n\n\n"
        "@VERIFIERS.register('my_checker')\nclass MyChecker(ExactMatch):\n    \"\"\"Guide test.\"\"\"\n")
    (tmp_path / "my_plugins.py").write_text("GUIDE_FILE_LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    raw = {"generators": [{"family": "arithmetic", "categories": {"add": {}}}], **snippet}
    cfg = load_config(None, raw=raw)
    assert cfg.plugins == ["my_pkg.checks", str(tmp_path / "my_plugins.py")]
    assert VERIFIERS.source("my_checker") == "plugins: my_pkg.checks"
    del VERIFIERS._items["my_checker"], VERIFIERS._sources["my_checker"]  # other tests compare with `list`


def test_guide_entry_point_groups_are_the_real_ones():
    import tomllib

    from loop.plugins import ENTRY_POINT_GROUPS

    toml = tomllib.loads(blocks("toml")[0])
    assert set(toml["project"]["entry-points"]) == set(ENTRY_POINT_GROUPS)


def test_guide_files_route_for_mbpp_style_code(tmp_path, monkeypatch):
    """The guide's `files` + `tests` column route: its data line and config, and `code_tests`
    passing a right program and failing a wrong one on that problem."""
    import json

    from generators.base import GENERATORS

    (tmp_path / "data").mkdir()
    row = json.loads(blocks("json")[0])
    (tmp_path / "data" / "mbpp.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, raw=yaml.safe_load(next(b for b in blocks("yaml") if "family: files" in b)))
    g = cfg.generators[0]
    [p] = GENERATORS.build(g.family, g.options).generate("mbpp", 1, 1, seed=0)
    assert p.reference.tests == row["test_code"] and p.reference.answer is None
    v = VERIFIERS.build("code_tests", cfg.verifiers[0].options)
    good, bad = v.verify([p, p], [sample(p, "```python\ndef add(a, b):\n    return a + b\n```", 0),
                                  sample(p, "```python\ndef add(a, b):\n    return a - b\n```", 1)])
    assert (good.outcome, bad.outcome) == ("pass", "fail"), (good.reason, bad.reason)
