"""Acceptance policies that are controls, not methods: they answer "does verification matter?"
and "does the loop's own data matter?" (benchmarks/efficacy.py runs them).

- `accept_all`: every sampled chain is training data, right or wrong (the loop without
  verification). Same per-problem cap and exact dedup as `verified`.
- `reference`: the problem's reference chain instead of the model's samples (one per
  problem): the warm start trained further on data like its original warm-start data,
  through the same trainer, when the problems are drawn at the warm start's levels.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict

from pydantic import BaseModel, ConfigDict, Field

from loop.records import Row
from policies.acceptance import normalize_chain
from policies.base import POLICIES, AcceptancePolicy


def at_most(rows: list[Row], limit: int | None) -> list[Row]:
    """A deterministic pseudo-random subset of `limit` rows (by a hash of the sample id), in
    their original order: caps a control's training data at the loop's, for equal compute."""
    if limit is None or len(rows) <= limit:
        return rows
    keep = set(sorted(range(len(rows)), key=lambda i: hashlib.sha256(rows[i].sample.id.encode()).digest())[:limit])
    return [r for i, r in enumerate(rows) if i in keep]


_MAX_CHAINS = ("most chains accepted per round (a hash-random subset); set it near the number the loop accepts "
               "so the control gets the same training compute; null = no cap")


@POLICIES.register("accept_all")
class AcceptAll(AcceptancePolicy):
    """Control: accept every sample whatever its verdicts (exact duplicates dropped, capped per problem)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        max_per_problem: int = Field(4, ge=1, description="most chains accepted per problem")
        include_hinted: bool = Field(False, description="also accept STaR rationalized (hinted) chains")
        max_chains: int | None = Field(None, ge=1, description=_MAX_CHAINS)

    def accept(self, rows: list[Row]) -> list[Row]:
        seen: dict[str, list[str]] = defaultdict(list)
        out: list[Row] = []
        for r in sorted(rows, key=lambda r: (r.sample.hinted, r.sample.index)):
            kept = seen[r.problem.id]
            if (r.sample.hinted and not self.options.include_hinted) or len(kept) >= self.options.max_per_problem:
                continue
            norm = normalize_chain(r.sample.text)
            if norm in kept:
                continue
            kept.append(norm)
            out.append(r)
        return at_most(out, self.options.max_chains)


@POLICIES.register("reference")
class Reference(AcceptancePolicy):
    """Control: train on each sampled problem's reference (gold) chain, ignoring the samples."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        max_chains: int | None = Field(None, ge=1, description=_MAX_CHAINS)

    def accept(self, rows: list[Row]) -> list[Row]:
        out: dict[str, Row] = {}
        for r in rows:
            chain = r.problem.reference.chain
            if chain and r.problem.id not in out and not r.sample.hinted:
                sample = r.sample.model_copy(update={"text": chain, "num_tokens": 0, "finish_reason": "stop"})
                out[r.problem.id] = r.model_copy(update={"sample": sample, "outcome": "pass", "error": None})
        return at_most(list(out.values()), self.options.max_chains)
