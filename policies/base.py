"""The policy contracts (acceptance, targeting, stopping) and their one registry."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

from pydantic import BaseModel

from loop.records import Plan, RoundAnalysis, Row
from loop.registry import NoOptions, Registry
from policies.budget import min_share_problem


class Policy(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    role: ClassVar[Literal["acceptance", "targeting", "stopping"]]
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, options: BaseModel):
        self.options = options


class AcceptancePolicy(Policy):
    role = "acceptance"

    @abstractmethod
    def accept(self, rows: list[Row]) -> list[Row]:
        """The rows (samples) to train on next; rows carry verdicts and errors."""


class TargetingPolicy(Policy):
    role = "targeting"

    @abstractmethod
    def plan(self, analysis: RoundAnalysis, previous: Plan, total_budget: int,
             difficulty_range: dict[str, tuple[int, int]]) -> Plan:
        """Next round's per-category budget and difficulty, each with its reason.

        `previous` is the plan that produced `analysis`; budgets should sum to `total_budget`.
        """

    @classmethod
    def check_config(cls, options: BaseModel, ranges: dict[str, tuple[int, int]], total_budget: int,
                     max_tokens: int, max_model_len: int) -> list[str]:
        """What is wrong with `options` given the run (categories and their difficulty ranges, the
        total budget, the token limits); called when the config is loaded. Empty = fine. The default
        checks a `min_share` option (unless an absolute `floor` replaces it)."""
        share = getattr(options, "min_share", None)
        why = None if share is None or getattr(options, "floor", None) is not None else min_share_problem(share,
                                                                                                          len(ranges))
        return [why] if why else []


class StoppingPolicy(Policy):
    role = "stopping"

    @abstractmethod
    def should_stop(self, heldout_history: list[float]) -> tuple[bool, str]:
        """heldout_history[0] is the baseline before round 0; then one entry per round."""


POLICIES: Registry[Policy] = Registry("policy")
