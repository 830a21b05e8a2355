"""verl's RL dataset layout and reward function, from an export bundle.

    train.parquet / val.parquet, one row per problem:
      data_source   "reasoning_loop/<family>/<category>"
      prompt        chat messages [{role, content}]  (verl applies the chat template)
      ability       the family
      reward_model  {style: "rule", ground_truth: gold answer (code: the tests)}
      extra_info    {split, index, problem_id, pass_rate, problem (the whole Problem as JSON)}

    reward_verl.py (in the bundle): `compute_score(data_source, solution_str, ground_truth,
      extra_info=None)` for verl's `custom_reward_function.path`; it runs the bundle's reward
      verifiers (the same ones the TRL reward functions run) on `solution_str`.

verl itself is not a dependency: the layout follows verl's RLHFDataset and its
NaiveRewardManager's call, and tests read the files back with `datasets` and score
through `compute_score`.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from loop.records import Problem, Sample

REWARD_FILE = "reward_verl.py"
REWARD_SOURCE = '''"""verl reward function of this bundle:
    custom_reward_function.path=<this file>  custom_reward_function.name=compute_score
It needs the reasoning-loop package importable (pip install -e <repo>)."""
from pathlib import Path

from loop.export.verl import bundle_scorer

compute_score = bundle_scorer(Path(__file__).resolve().parent)
'''


def reference_text(p: Problem) -> str:
    r = p.reference
    if r.answer is not None:
        return r.answer
    return json.dumps({"tests": r.tests, "entry_point": r.entry_point}, sort_keys=True)


def verl_row(row: dict[str, Any], index: int) -> dict[str, Any]:
    """A bundle dataset row (loop.export.pool.problem_row) in verl's layout."""
    p = Problem.model_validate_json(row["problem"])
    return {
        "data_source": f"reasoning_loop/{p.family}/{p.category}",
        "prompt": row["prompt"],
        "ability": p.family,
        "reward_model": {"style": "rule", "ground_truth": reference_text(p)},
        "extra_info": {"split": row["split"], "index": index, "problem_id": p.id,
                       "pass_rate": row["pass_rate"], "problem": row["problem"]},
    }


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([verl_row(r, i) for i, r in enumerate(rows)], schema=_schema())
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _schema():
    import pyarrow as pa

    msg = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([
        ("data_source", pa.string()), ("prompt", pa.list_(msg)), ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64()), ("problem_id", pa.string()),
                                  ("pass_rate", pa.float64()), ("problem", pa.string())])),
    ])


def score(verifiers: list, problem: Problem, text: str) -> dict[str, float]:
    """The bundle's reward for one completion: the sum of the reward verifiers' scores (what
    TRL adds up over `reward_funcs`), skipping a verifier that abstains or breaks."""
    from verifiers.base import safe_verify

    sample = Sample(id=f"{problem.id}:verl:0", problem_id=problem.id, round=-1, index=0, text=text,
                    num_tokens=0, finish_reason="stop")
    total, judged, passed, broke = 0.0, 0, 0, 0
    for v in verifiers:
        [verdict] = safe_verify(v, [problem], [sample])
        if verdict.outcome in ("pass", "fail"):
            total += verdict.score
            judged += 1
            passed += verdict.outcome == "pass"
        broke += verdict.outcome == "error"
    return {"score": total, "acc": float(judged > 0 and passed == judged), "verifier_error": float(broke > 0)}


@lru_cache(maxsize=8)
def _verifiers_of(bundle_dir: str) -> list:
    from loop.export.bundle import reward_verifiers

    return reward_verifiers(bundle_dir)


def bundle_scorer(bundle_dir: str | Path) -> Callable[..., dict[str, float]]:
    """verl's `compute_score` for one bundle."""
    bundle_dir = str(Path(bundle_dir).resolve())

    def compute_score(data_source: str, solution_str: str, ground_truth: str,
                      extra_info: dict[str, Any] | None = None) -> dict[str, float]:
        if not extra_info or not extra_info.get("problem"):
            raise ValueError(f"compute_score({data_source!r}): extra_info has no 'problem'; use the rows of this "
                             f"bundle's train/val parquet (verl passes their extra_info through)")
        problem = Problem.model_validate_json(extra_info["problem"])
        if reference_text(problem) != ground_truth:
            raise ValueError(f"compute_score: ground_truth {ground_truth!r:.80} does not match problem "
                             f"{problem.id}'s reference; the row was edited or mixed up")
        return score(_verifiers_of(bundle_dir), problem, solution_str)

    return compute_score
