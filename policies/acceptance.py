"""Acceptance policies: which verified chains become next round's training data."""
from __future__ import annotations

import difflib
import re
from collections import defaultdict
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from generators.rationalize import leaks_hint
from loop.records import FORMAT_VERIFIER, PROCESS_VERIFIER, Row, Sample, verdict_of
from policies.base import POLICIES, AcceptancePolicy

_WS = re.compile(r"\s+")


def normalize_chain(text: str) -> str:
    """Whitespace-insensitive form of a chain; digits are kept, since they carry the math."""
    return _WS.sub(" ", text).strip()


def is_near_duplicate(a: str, b: str, threshold: float) -> bool:
    """difflib ratio of two normalized chains >= threshold (cheap upper bounds first)."""
    m = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return m.real_quick_ratio() >= threshold and m.quick_ratio() >= threshold and m.ratio() >= threshold


@POLICIES.register("verified")
class Verified(AcceptancePolicy):
    """Accept chains whose combined outcome is pass, deduplicated and capped per problem;
    optionally replay the problems' reference chains next to them (`gold_replay`, as in
    ReST/RFT-style mixes of gold and self-generated data)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        require_format: bool = Field(False, description="also require the format verifier to pass (when it ran)")
        require_process_clean: bool = Field(
            False, description="also reject chains in which the process verifier found a wrong step")
        similarity: float | None = Field(
            None, gt=0, le=1,
            description="drop a chain whose difflib ratio to an accepted chain of the same problem is >= this; "
                        "null = only exact duplicates (after whitespace normalization); e.g. 0.9")
        max_per_problem: int = Field(4, ge=1, description="most chains accepted per problem")
        include_hinted: bool = Field(
            True,
            description="accept STaR rationalized (hinted) chains too; those that leak the hint are always dropped")
        format_verifier: str = Field(FORMAT_VERIFIER, description="name of the format verifier")
        process_verifier: str = Field(PROCESS_VERIFIER, description="name of the process (step) verifier")
        gold_replay: Literal["off", "unsolved", "all"] = Field(
            "off", description="ReST/RFT gold replay: also train on the problems' reference chains "
                               "(reference.chain), next to the accepted self-generated ones. 'unsolved': only for "
                               "problems with no accepted chain this round; 'all': for every problem of the round. "
                               "Problems without a reference chain add nothing. Replayed chains are marked gold.")

    def _clean(self, row: Row) -> bool:
        o = self.options
        if row.outcome != "pass":
            return False
        if row.sample.hinted and (not o.include_hinted or leaks_hint(row.sample.text, row.problem)):
            return False
        if o.require_format:
            fmt = verdict_of(row, o.format_verifier)
            if fmt is not None and fmt.outcome != "pass":
                return False
        if o.require_process_clean:
            proc = verdict_of(row, o.process_verifier)
            if proc is not None and (proc.outcome == "fail" or proc.evidence.get("wrong")):
                return False
        return True

    def accept(self, rows: list[Row]) -> list[Row]:
        o = self.options
        by_problem: dict[str, list[Row]] = defaultdict(list)
        for r in rows:
            if self._clean(r):
                by_problem[r.problem.id].append(r)
        out: list[Row] = []
        for pid in by_problem:
            # Unhinted chains first: the model found them on its own.
            cands = sorted(by_problem[pid], key=lambda r: (r.sample.hinted, r.sample.index))
            kept: list[str] = []
            for r in cands:
                if len(kept) >= o.max_per_problem:
                    break
                norm = normalize_chain(r.sample.text)
                if norm in kept or (o.similarity is not None
                                    and any(is_near_duplicate(norm, k, o.similarity) for k in kept)):
                    continue
                kept.append(norm)
                out.append(r)
        if o.gold_replay != "off":
            out += gold_rows(rows, skip={r.problem.id for r in out} if o.gold_replay == "unsolved" else set())
        return out


def gold_rows(rows: list[Row], skip: set[str]) -> list[Row]:
    """One row per problem of `rows` (not in `skip`) that has a reference chain: that chain as a
    `gold` sample of the problem's round, outcome pass (it is the reference, not a model's claim)."""
    out: list[Row] = []
    seen = set(skip)
    for r in rows:
        p = r.problem
        if p.id in seen or not (p.reference.chain or "").strip():
            continue
        seen.add(p.id)
        sample = Sample(id=f"{p.id}:r{r.sample.round}:gold", problem_id=p.id, round=r.sample.round, index=-1,
                        text=p.reference.chain, num_tokens=0, finish_reason="stop", adapter=None, gold=True)
        out.append(Row(problem=p, sample=sample, verdicts=[], outcome="pass"))
    return out
