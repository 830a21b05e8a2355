"""Acceptance policies: which verified chains become next round's training data."""
from __future__ import annotations

import difflib
import re
from collections import defaultdict

from pydantic import BaseModel, ConfigDict, Field

from generators.rationalize import leaks_hint
from loop.records import Row
from loop.taxonomy import FORMAT_VERIFIER, PROCESS_VERIFIER, verdict_of
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
    """Accept chains whose combined outcome is pass, deduplicated and capped per problem."""

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
            True, description="accept STaR rationalized (hinted) chains too; those that leak the hint are always dropped")
        format_verifier: str = Field(FORMAT_VERIFIER, description="name of the format verifier")
        process_verifier: str = Field(PROCESS_VERIFIER, description="name of the process (step) verifier")

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
        return out
