"""The verifier contract, its registry, and the adapter to TRL reward functions."""
from __future__ import annotations

import logging
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel

from loop.records import Problem, Sample, Verdict
from loop.registry import NoOptions, Registry

log = logging.getLogger(__name__)


class Verifier(ABC):
    """Judges a batch of samples; returns one Verdict per sample, in order."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    # Verifiers that need a model (the LLM judge) run on the driver with the sampler;
    # the others are shipped to Ray tasks.
    needs_engine: ClassVar[bool] = False

    def __init__(self, options: BaseModel):
        self.options = options

    @abstractmethod
    def verify(self, problems: Sequence[Problem], samples: Sequence[Sample]) -> list[Verdict]:
        """problems[i] is the problem of samples[i]."""

    def verdict(self, sample: Sample, outcome: str, score: float = 0.0, reason: str = "",
                **evidence: Any) -> Verdict:
        return Verdict(sample_id=sample.id, verifier=self.name, outcome=outcome, score=score,
                       reason=reason, evidence=evidence)


VERIFIERS: Registry[Verifier] = Registry("verifier")


def safe_verify(verifier: Verifier, problems: Sequence[Problem], samples: Sequence[Sample]) -> list[Verdict]:
    """Run a verifier; if it crashes or returns the wrong count, every sample gets an
    `error` verdict (an infrastructure failure, never a wrong answer)."""
    try:
        out = verifier.verify(problems, samples)
        if len(out) != len(samples):
            raise RuntimeError(f"returned {len(out)} verdicts for {len(samples)} samples")
        return out
    except Exception as e:  # noqa: BLE001 - a plug-in may raise anything
        tb = traceback.format_exc(limit=4)
        log.warning("verifier %s crashed on a batch of %d: %s", verifier.name, len(samples), e)
        return [
            Verdict(sample_id=s.id, verifier=verifier.name, outcome="error",
                    reason=f"verifier crashed: {type(e).__name__}: {e}", evidence={"traceback": tb})
            for s in samples
        ]


def as_reward_func(verifier: Verifier, problems_by_id: dict[str, Problem]) -> Callable[..., list[float | None]]:
    """A TRL `reward_funcs` callable: (prompts, completions, problem_id=[...]) -> scores.

    The dataset must carry a `problem_id` column. `abstain` and `error` map to None
    ("not applicable"), so a broken sandbox never reads as reward 0.
    """

    def reward(prompts: list[Any], completions: list[Any], problem_id: list[str], **_: Any) -> list[float | None]:
        samples, problems = [], []
        for i, (c, pid) in enumerate(zip(completions, problem_id)):
            text = c if isinstance(c, str) else c[-1]["content"]
            samples.append(Sample(id=f"{pid}:rl:{i}", problem_id=pid, round=-1, index=i, text=text,
                                  num_tokens=0, finish_reason="stop"))
            problems.append(problems_by_id[pid])
        return [v.score if v.outcome in ("pass", "fail") else None
                for v in safe_verify(verifier, problems, samples)]

    reward.__name__ = f"reward_{verifier.name}"
    return reward
