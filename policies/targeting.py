"""Targeting policies: next round's problems per category, and at which difficulty."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loop.records import ERROR_CLASSES, TRAINABLE_CLASSES, CategoryPlan, Plan, RoundAnalysis
from policies.base import POLICIES, TargetingPolicy
from policies.budget import allocate, categories_of, clamp, current_difficulty, floor_per_category, undecided

Ranges = dict[str, tuple[int, int]]


@POLICIES.register("uniform")
class Uniform(TargetingPolicy):
    """Split the budget equally over categories and keep each category's difficulty."""

    def plan(self, analysis: RoundAnalysis, previous: Plan, total_budget: int, difficulty_range: Ranges) -> Plan:
        keys = categories_of(analysis, previous, difficulty_range)
        budgets = allocate({k: 1.0 for k in keys}, total_budget)
        cats = {}
        for k in keys:
            d = current_difficulty(k, previous, difficulty_range)
            cats[k] = CategoryPlan(budget=budgets[k], difficulty=d, reason=(
                f"uniform: {budgets[k]} of {total_budget} problems, an equal share over {len(keys)} "
                f"categories; difficulty kept at {d}"))
        return Plan(round=analysis.round + 1, policy=self.name, categories=cats)


@POLICIES.register("error_weighted")
class ErrorWeighted(TargetingPolicy):
    """More budget to categories whose samples fail more often for trainable reasons."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        min_share: float = Field(0.1, ge=0, le=1, description="every category gets at least this share of the "
                                                               "total budget (capped at an equal split)")
        classes: list[str] = Field(list(TRAINABLE_CLASSES),
                                   description="error classes that training can fix and that attract budget")

        @field_validator("classes")
        @classmethod
        def _known(cls, v: list[str]) -> list[str]:
            bad = [c for c in v if c not in ERROR_CLASSES or c == "infra"]
            if bad:
                raise ValueError(f"{bad} not allowed; choose from {[c for c in ERROR_CLASSES if c != 'infra']} "
                                 "(infra failures are not the model's and never attract budget)")
            return v

    def plan(self, analysis: RoundAnalysis, previous: Plan, total_budget: int, difficulty_range: Ranges) -> Plan:
        keys = categories_of(analysis, previous, difficulty_range)
        rates, notes = {}, {}
        for k in keys:
            st = analysis.categories.get(k)
            if st is None or st.samples == 0:
                continue
            if unknown := undecided(st):
                notes[k] = unknown
                continue
            fails = {c: n for c, n in st.errors.items() if c in self.options.classes and n}
            rates[k] = sum(fails.values()) / st.samples
            top = ", ".join(f"{c} {n}" for c, n in sorted(fails.items(), key=lambda kv: (-kv[1], kv[0]))[:3])
            notes[k] = (f"{sum(fails.values())} of {st.samples} samples ({rates[k]:.0%}) failed for trainable "
                        f"reasons" + (f" ({top})" if top else ""))
        # A category without samples last round is explored at the mean rate.
        mean = sum(rates.values()) / len(rates) if rates else 1.0
        notes.update({k: f"{w}; explored at the mean failure rate {mean:.0%}"
                      for k, w in notes.items() if k not in rates})
        weights = {k: rates.get(k, mean) for k in keys}
        floor = floor_per_category(total_budget, len(keys), self.options.min_share)
        budgets = allocate(weights, total_budget, floor)
        all_zero = not any(weights.values())
        cats = {}
        for k in keys:
            d = current_difficulty(k, previous, difficulty_range)
            why = notes.get(k, f"no samples last round, explored at the mean failure rate {mean:.0%}")
            split = "no trainable failures anywhere, split equally" if all_zero else f"floor {floor}"
            cats[k] = CategoryPlan(budget=budgets[k], difficulty=d, reason=(
                f"{why}: {budgets[k]} of {total_budget} problems ({split}); difficulty kept at {d}"))
        return Plan(round=analysis.round + 1, policy=self.name, categories=cats)


@POLICIES.register("pass_band")
class PassBand(TargetingPolicy):
    """Target what the model solves sometimes: move difficulty toward a pass-rate band."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        low: float = Field(0.2, ge=0, le=1, description="below this pass rate the difficulty goes down")
        high: float = Field(0.8, ge=0, le=1, description="above this pass rate the difficulty goes up")
        min_samples: int = Field(4, ge=1, description="decided samples needed before moving a difficulty")
        min_share: float = Field(0.1, ge=0, le=1, description="every category gets at least this share of the "
                                                               "total budget (capped at an equal split)")
        stuck_weight: float = Field(0.25, ge=0, le=1, description=(
            "budget weight, relative to 1 for the others, of a category outside the band that cannot move "
            "(already at the end of its difficulty range)"))

        @model_validator(mode="after")
        def _band(self) -> PassBand.Options:
            if self.low >= self.high:
                raise ValueError(f"low ({self.low}) must be below high ({self.high}), e.g. low=0.2 high=0.8")
            return self

    def _step(self, analysis: RoundAnalysis, key: str, d: int, ranges: Ranges) -> tuple[int, float, str]:
        """(next difficulty, budget weight, why) for one category."""
        o = self.options
        st = analysis.categories.get(key)
        rows = st.by_difficulty if st else {}
        n, p = rows.get(d, [0, 0])
        where = f"at difficulty {d}"
        if n < o.min_samples and rows:  # too little at the planned level: use every level seen
            n, p = sum(v[0] for v in rows.values()), sum(v[1] for v in rows.values())
            where = "over all difficulties"
        if n < o.min_samples:
            return d, 1.0, f"only {n} decided samples (< {o.min_samples}); difficulty kept at {d}"
        rate = p / n
        seen = f"pass rate {rate:.2f} ({p}/{n}) {where}"
        lo, hi = ranges.get(key, (0, 10**9))
        if rate > o.high:
            if d < hi:
                return clamp(d + 1, key, ranges), 1.0, f"{seen} > {o.high}: raised to {clamp(d + 1, key, ranges)}"
            return d, o.stuck_weight, f"{seen} > {o.high} but {d} is the highest difficulty; weight {o.stuck_weight}"
        if rate < o.low:
            if d > lo:
                return clamp(d - 1, key, ranges), 1.0, f"{seen} < {o.low}: lowered to {clamp(d - 1, key, ranges)}"
            return d, o.stuck_weight, f"{seen} < {o.low} but {d} is the lowest difficulty; weight {o.stuck_weight}"
        return d, 1.0, f"{seen} within [{o.low}, {o.high}]: difficulty kept at {d}"

    def plan(self, analysis: RoundAnalysis, previous: Plan, total_budget: int, difficulty_range: Ranges) -> Plan:
        keys = categories_of(analysis, previous, difficulty_range)
        steps = {k: self._step(analysis, k, current_difficulty(k, previous, difficulty_range), difficulty_range)
                 for k in keys}
        floor = floor_per_category(total_budget, len(keys), self.options.min_share)
        budgets = allocate({k: s[1] for k, s in steps.items()}, total_budget, floor)
        cats = {k: CategoryPlan(budget=budgets[k], difficulty=steps[k][0],
                                reason=f"{steps[k][2]}; {budgets[k]} of {total_budget} problems (floor {floor})")
                for k in keys}
        return Plan(round=analysis.round + 1, policy=self.name, categories=cats)
