"""The records that flow through a round: Problem -> Sample -> Verdict -> ErrorRecord.

They are pydantic models so that every file in a run directory round-trips exactly
(JSONL, one record per line).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Outcome = Literal["pass", "fail", "abstain", "error"]
ERROR_CLASSES = ("format", "truncated", "calculation", "logic", "comprehension", "infra", "tamper", "other")
# Error classes a round of training can address (infra, tamper and other are not the model's to fix).
TRAINABLE_CLASSES = ("calculation", "logic", "format", "truncated", "comprehension")
# The built-in verifiers whose verdicts the taxonomy and the acceptance policies read by name.
FORMAT_VERIFIER = "format"
PROCESS_VERIFIER = "process"
JUDGE_VERIFIER = "llm_judge"
ErrorClass = Literal["format", "truncated", "calculation", "logic", "comprehension", "infra", "tamper", "other"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Literal["system", "user", "assistant"]
    content: str


class Reference(BaseModel):
    """What a verifier may check against. Any field may be absent."""

    model_config = ConfigDict(extra="forbid")
    answer: str | None = None          # gold final answer, as text
    chain: str | None = None           # a reference chain of thought (for warm start / SFT)
    tests: str | None = None           # code: test source to run against the program
    entry_point: str | None = None     # code: function under test


def content_id(*parts: Any) -> str:
    """Stable 16-hex id of JSON-serialisable content (sorted keys, no whitespace)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


class Problem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = ""
    family: str
    category: str
    difficulty: int = Field(ge=0)
    prompt: list[Message]
    reference: Reference = Reference()
    metadata: dict[str, Any] = {}

    def model_post_init(self, _ctx: Any) -> None:
        if not self.id:
            # The id hashes what the model sees and what it is judged against, so the same
            # problem produced twice (by any seed) gets the same id and is deduplicated.
            self.id = content_id(
                self.family, self.category, [m.model_dump() for m in self.prompt],
                self.reference.answer, self.reference.tests,
            )

    def is_heldout(self, fraction: float) -> bool:
        return split_of(self.id, fraction) == "heldout"


def split_of(problem_id: str, heldout_fraction: float) -> Literal["train", "heldout"]:
    """Train / held-out split decided by the id hash alone: a problem is in exactly one."""
    bucket = int(hashlib.sha256(("split:" + problem_id).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "heldout" if bucket < heldout_fraction else "train"


def dedup(problems: list[Problem]) -> list[Problem]:
    seen: set[str] = set()
    out = []
    for p in problems:
        if p.id not in seen:
            seen.add(p.id)
            out.append(p)
    return out


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str                      # "<problem_id>:r<round>:<index>"
    problem_id: str
    round: int
    index: int
    text: str
    num_tokens: int
    finish_reason: str           # "stop" | "length" | "prompt_too_long" (nothing sampled: prompt over max_model_len)
    adapter: str | None = None   # adapter version that produced it; None = base model
    hinted: bool = False         # STaR rationalization: sampled with the gold answer as a hint
    gold: bool = False           # not sampled: the problem's reference chain, replayed (acceptance gold_replay)

    @staticmethod
    def make_id(problem_id: str, round_: int, index: int, hinted: bool = False) -> str:
        return f"{problem_id}:r{round_}:{'h' if hinted else ''}{index}"


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sample_id: str
    verifier: str
    outcome: Outcome
    score: float = 0.0
    reason: str = ""
    evidence: dict[str, Any] = {}


class ErrorRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sample_id: str
    problem_id: str
    category: str
    error_class: ErrorClass
    evidence: dict[str, Any] = {}
    decided_by: Literal["rule", "judge"]


# ---- the joined view of a round, consumed by error analysis, policies and the report ----

class Row(BaseModel):
    """One sample with its problem, every verdict, the combined outcome and its error."""

    model_config = ConfigDict(extra="forbid")
    problem: Problem
    sample: Sample
    verdicts: list[Verdict]
    outcome: Outcome                      # combined over the required verifiers
    error: ErrorRecord | None = None      # set for outcome fail / error after analysis

    @property
    def category_key(self) -> str:
        return f"{self.problem.family}/{self.problem.category}"


class CategoryStats(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str                                   # "family/category"
    samples: int = 0
    passed: int = 0
    problems: int = 0
    pass_at_1: float = 0.0                     # mean per-problem pass rate
    pass_at_k: float = 0.0                     # fraction of problems with >= 1 pass
    by_difficulty: dict[int, list[int]] = {}   # difficulty -> [samples, passed]
    errors: dict[str, int] = {}                # error class -> count
    problem_pass_rates: dict[str, float] = {}  # problem id -> pass rate (for band policies)


class RoundAnalysis(BaseModel):
    model_config = ConfigDict(extra="forbid")
    round: int
    categories: dict[str, CategoryStats]
    heldout_by_category: dict[str, float] = {}
    heldout_accuracy: float | None = None


class PlanAction(BaseModel):
    """One decision of a targeting policy about one category, with the evidence behind it."""
    model_config = ConfigDict(extra="forbid")
    action: str                     # e.g. more_problems, rationalize, more_tokens, climb (policies/actions.py)
    error_class: str | None = None  # the error class that triggered it (None: a pass-rate decision)
    evidence: str                   # what the error analysis showed


class CategoryPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    budget: int = Field(ge=0)       # number of problems to sample next round
    difficulty: int = Field(ge=0)
    reason: str
    # Optional execution details (defaults = plain: all `budget` problems at `difficulty`).
    mix: dict[int, int] = {}        # difficulty -> problems; sums to budget when set
    actions: list[PlanAction] = []
    rationalize: bool = False       # answer-hinted retries of this category's failed problems
    token_scale: float = Field(1.0, gt=0)  # sampling token budget = sampling.max_tokens x this
    augment: list[str] = []         # ids of last round's failed problems to re-draw variants of
    format_replay: bool = False     # also train on earlier rounds' well-formatted accepted chains


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    round: int                      # the round this plan is for
    policy: str
    categories: dict[str, CategoryPlan]


def verdict_of(row: Row, name: str) -> Verdict | None:
    """The verdict of verifier `name` on this row, or None if it did not run."""
    return next((v for v in row.verdicts if v.verifier == name), None)
