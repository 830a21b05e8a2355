"""Problems from reasoning-gym datasets, with the entry kept for its own answer scorer."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from generators.base import GENERATORS, Generator
from generators.chains import check_request
from loop.records import Message, Problem, Reference


def _rg_datasets() -> dict[str, tuple[type, type]]:
    # Imported lazily: reasoning_gym takes about a second to import, and most runs
    # that import `generators` never touch it.
    from reasoning_gym.factory import DATASETS

    return DATASETS


def _check_config(name: str, kwargs: dict[str, Any], where: str) -> None:
    """Build the dataset's config class once so a bad key or value fails at config time."""
    cfg_cls = _rg_datasets()[name][1]
    fields = [f.name for f in dataclasses.fields(cfg_cls) if f.name not in ("seed", "size")]
    bad = [k for k in kwargs if k in ("seed", "size") or k not in fields]
    if bad:
        raise ValueError(
            f"reasoning_gym dataset {name!r} {where}: unknown option(s) {bad}; "
            f"its options are: {', '.join(fields)} (seed and size are set by the loop)")
    try:
        cfg = cfg_cls(**kwargs)
        if hasattr(cfg, "validate"):
            cfg.validate()
    except (AssertionError, TypeError, ValueError) as e:
        raise ValueError(f"reasoning_gym dataset {name!r} {where}: invalid options {kwargs}: {e}") from None


@GENERATORS.register("reasoning_gym")
class ReasoningGym(Generator):
    """reasoning-gym datasets as categories; difficulty levels map to per-dataset config kwargs."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        datasets: dict[str, dict[str, Any]] = Field(
            {"basic_arithmetic": {}, "chain_sum": {}},
            description="dataset name -> config kwargs passed to reasoning_gym.create_dataset")
        difficulty_params: dict[str, dict[int, dict[str, Any]]] = Field(
            {}, description="dataset name -> {level: extra kwargs}; levels must be consecutive; "
                            "a dataset without an entry has the single level 1")
        instruction: str = Field(
            "End your reply with 'Answer: <answer>'.", description="appended to the question")

        @field_validator("datasets")
        @classmethod
        def _known(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
            if not v:
                raise ValueError("give at least one dataset, e.g. {'chain_sum': {}}")
            known = _rg_datasets()
            unknown = [n for n in v if n not in known]
            if unknown:
                raise ValueError(
                    f"unknown reasoning_gym dataset(s) {unknown}; some valid ones: "
                    f"{', '.join(sorted(known)[:25])} ... ({len(known)} in all, "
                    f"see reasoning_gym.factory.DATASETS)")
            return v

        @field_validator("difficulty_params")
        @classmethod
        def _consecutive(cls, v: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[int, dict[str, Any]]]:
            for name, levels in v.items():
                keys = sorted(levels)
                if not keys or keys != list(range(keys[0], keys[-1] + 1)) or keys[0] < 0:
                    raise ValueError(
                        f"difficulty_params[{name!r}] levels {keys} must be consecutive integers >= 0, "
                        f"e.g. {{1: {{...}}, 2: {{...}}}}")
            return v

    def __init__(self, options: BaseModel):
        super().__init__(options)
        opts = self.options
        extra = [n for n in opts.difficulty_params if n not in opts.datasets]
        if extra:
            raise ValueError(
                f"reasoning_gym: difficulty_params names {extra} which are not in datasets "
                f"({', '.join(opts.datasets)}); add them to datasets or remove them")
        for name, base in opts.datasets.items():
            _check_config(name, base, "in datasets")
            for level, kw in opts.difficulty_params.get(name, {}).items():
                _check_config(name, {**base, **kw}, f"at difficulty {level}")

    def categories(self) -> list[str]:
        return list(self.options.datasets)

    def difficulties(self, category: str) -> tuple[int, int]:
        levels = self.options.difficulty_params.get(category)
        return (min(levels), max(levels)) if levels else (1, 1)

    def generate(self, category: str, difficulty: int, count: int, seed: int) -> list[Problem]:
        import reasoning_gym

        check_request(self, category, difficulty)
        kwargs = {**self.options.datasets[category],
                  **self.options.difficulty_params.get(category, {}).get(difficulty, {})}
        # One dataset seed per (dataset, level, seed): stable across processes.
        ds_seed = int(hashlib.sha256(f"{category}:{difficulty}:{seed}".encode()).hexdigest()[:8], 16)
        ds = reasoning_gym.create_dataset(category, seed=ds_seed, size=max(count, 1), **kwargs)
        out = []
        for i in range(count):
            # Round-trip through JSON so the entry in memory equals the one read back from disk.
            entry = json.loads(json.dumps(dict(ds[i]), default=str))
            answer = entry.get("answer")
            question = entry["question"]
            if self.options.instruction:
                question = f"{question}\n\n{self.options.instruction}"
            out.append(Problem(
                family=self.name, category=category, difficulty=difficulty,
                prompt=[Message(role="user", content=question)],
                reference=Reference(answer=None if answer is None else str(answer)),
                metadata={"rg_dataset": category, "rg_entry": entry, "rg_config": kwargs},
            ))
        return out
