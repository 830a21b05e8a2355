"""The `analyst` targeting policy: every decision of next round's plan comes from the error analysis.

- Budget follows weakness: the fixed total is split by each category's trainable-failure rate
  (raised to `power`, so differences count), after a floor per category.
- Each error class with enough failures in a category triggers its action (policies/actions.py),
  written into the plan with the evidence.
- Difficulty climbs: above `climb_above` at its level, a category's next round is a mix, mostly
  the current level and `climb_share` of the next; once the next level passes at `promote_at`,
  it becomes the current one. Below `lower_below`, the level goes down.
"""
from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loop.records import (
    ERROR_CLASSES,
    TRAINABLE_CLASSES,
    CategoryPlan,
    CategoryStats,
    Plan,
    PlanAction,
    RoundAnalysis,
)
from policies.actions import ACTIONS, DEFAULT_ACTIONS
from policies.base import POLICIES, TargetingPolicy
from policies.budget import allocate, categories_of, current_difficulty, floor_per_category, undecided

Ranges = dict[str, tuple[int, int]]
_CLASSES = [c for c in ERROR_CLASSES if c != "infra"]


class AnalystOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_share: float = Field(0.15, ge=0, le=1, description="floor: every category gets at least this share of the "
                                                           "total budget (capped at an equal split)")
    floor: int | None = Field(None, ge=0, description="floor in problems per category (instead of min_share); "
                                                      "floor x categories must fit the total budget")
    power: float = Field(2.0, gt=0, description="budget weight = trainable-failure rate ** power (1 = proportional)")
    classes: list[str] = Field(list(TRAINABLE_CLASSES), description="error classes that count as weakness")
    actions: dict[str, str] = Field(dict(DEFAULT_ACTIONS), description=(
        "error class -> action (" + ", ".join(ACTIONS) + "); classes left out keep their default"))
    min_failures: int = Field(8, ge=1, description="failures of a class in a category needed to trigger its action")
    min_class_share: float = Field(0.1, ge=0, le=1, description="and the class's least share of the category's "
                                                                "failed samples")
    neighbour_share: float = Field(0.1, ge=0, le=1, description="more_problems: budget share at d-1 and d+1")
    shorter_share: float = Field(0.25, ge=0, le=1, description="shorter_problems: budget share one level lower")
    token_step: float = Field(1.5, gt=1, description="more_tokens: token budget multiplier per trigger")
    max_token_scale: float = Field(2.0, ge=1, description="more_tokens: most x sampling.max_tokens")
    augment_max: int = Field(32, ge=0, description="augment: most failed problems re-drawn per category")
    augment_share: float = Field(0.25, ge=0, le=1, description="augment: most share of the category's budget")
    climb_above: float = Field(0.8, ge=0, le=1, description="pass rate at the current level above which the next "
                                                            "level joins the mix")
    climb_share: float = Field(0.25, ge=0, le=1, description="share of the budget at the next level while climbing")
    promote_at: float = Field(0.5, ge=0, le=1, description="pass rate at the next level that makes it the current")
    lower_below: float = Field(0.1, ge=0, le=1, description="pass rate below which the level goes down")
    min_samples: int = Field(8, ge=1, description="decided samples at a level needed to judge its pass rate")
    max_difficulty: dict[str, int] = Field({}, description="family/category -> highest level to climb to "
                                                           "(default: the family's highest)")

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c not in _CLASSES]
        if bad:
            raise ValueError(f"unknown error class {bad}; choose from {_CLASSES} (infra is never the model's)")
        return v

    @field_validator("actions")
    @classmethod
    def _known_actions(cls, v: dict[str, str]) -> dict[str, str]:
        bad_c = [c for c in v if c not in _CLASSES]
        if bad_c:
            raise ValueError(f"unknown error class {bad_c} in actions; error classes: {_CLASSES}")
        bad_a = {c: a for c, a in v.items() if a not in ACTIONS}
        if bad_a:
            raise ValueError(f"unknown action {bad_a}; actions: {list(ACTIONS)}")
        return {**DEFAULT_ACTIONS, **v}

    @model_validator(mode="after")
    def _band(self) -> AnalystOptions:
        if self.lower_below >= self.climb_above:
            raise ValueError(f"lower_below ({self.lower_below}) must be below climb_above ({self.climb_above})")
        if self.neighbour_share + self.climb_share + self.augment_share > 1:
            raise ValueError("neighbour_share + climb_share + augment_share must be <= 1 (they are shares of one "
                             "category's budget)")
        return self


def _rate(st: CategoryStats | None, d: int) -> tuple[int, float | None]:
    n, p = (st.by_difficulty.get(d, [0, 0]) if st else [0, 0])
    return n, (p / n if n else None)


# Below this share of problems solved *sometimes* (some samples right, some wrong), a category's samples agree
# with each other: on one GPU (2026-12-07, 10 seeds) 2-digit `mul` had 4 % such problems and did not improve with
# 1.6x the problems, `sub` had 11-12 % and rose from 0.27 to 0.8 (README, "The same comparison on one GPU").
AGREEING_BELOW = 0.05


def _agreeing(st: CategoryStats) -> str:
    """A note on the plan when more problems of a category will mostly repeat what the model already solves."""
    r = st.problem_pass_rates
    if len(r) < 16 or st.samples < 2 * max(st.problems, 1):  # one sample a problem: no agreement to see
        return ""
    mixed = sum(1 for v in r.values() if 0 < v < 1) / len(r)
    if mixed >= AGREEING_BELOW:
        return ""
    return (f" (only {mixed:.0%} of its {len(r)} problems solved sometimes: its samples agree, so more problems "
            "mostly repeat what it already solves or already fails)")


@POLICIES.register("analyst")
class Analyst(TargetingPolicy):
    """Budget by failure share with a floor, an action per error class, difficulty that climbs in a mix."""

    Options = AnalystOptions

    @classmethod
    def check_config(cls, options: AnalystOptions, ranges: Ranges, total_budget: int,
                     max_tokens: int, max_model_len: int) -> list[str]:
        out = super().check_config(options, ranges, total_budget, max_tokens, max_model_len)
        n = len(ranges)
        if options.floor is not None and options.floor * n > total_budget:
            out.append(f"floor {options.floor} x {n} categories = {options.floor * n} problems is more than the "
                       f"total budget {total_budget}; lower floor to at most {total_budget // max(n, 1)}")
        for key, d in options.max_difficulty.items():
            if key not in ranges:
                out.append(f"max_difficulty: unknown category {key!r}; categories: {sorted(ranges)}")
            elif not ranges[key][0] <= d <= ranges[key][1]:
                out.append(f"max_difficulty.{key}: the family cannot make difficulty {d}; allowed: "
                           f"{ranges[key][0]}..{ranges[key][1]}")
        if "more_tokens" in options.actions.values() and max_tokens * options.max_token_scale >= max_model_len:
            out.append(f"max_token_scale {options.max_token_scale} x sampling.max_tokens {max_tokens} reaches "
                       f"model.max_model_len {max_model_len}; lower max_token_scale or raise max_model_len")
        return out

    def _floor(self, total: int, n: int) -> int:
        o = self.options
        if o.floor is not None:
            return min(o.floor, total // max(n, 1))
        return floor_per_category(total, n, o.min_share)

    def plan(self, analysis: RoundAnalysis, previous: Plan, total_budget: int, difficulty_range: Ranges) -> Plan:
        o = self.options
        keys = categories_of(analysis, previous, difficulty_range)
        rates, why = {}, {}
        for k in keys:
            st = analysis.categories.get(k)
            if st is None or st.samples == 0:
                continue
            if unknown := undecided(st):
                why[k] = unknown
                continue
            fails = sum(n for c, n in st.errors.items() if c in o.classes)
            rates[k] = fails / st.samples
            why[k] = f"{fails} of {st.samples} samples ({rates[k]:.0%}) failed for trainable reasons" + _agreeing(st)
        mean = sum(rates.values()) / len(rates) if rates else 1.0
        why.update({k: f"{w}; weighted at the mean failure rate {mean:.0%}" for k, w in why.items() if k not in rates})
        weights = {k: rates.get(k, mean) ** o.power for k in keys}
        floor = self._floor(total_budget, len(keys))
        budgets = allocate(weights, total_budget, floor)
        cats = {}
        for k in keys:
            prev = previous.categories.get(k)
            cp = self._category(k, analysis.categories.get(k), prev, budgets[k],
                                current_difficulty(k, previous, difficulty_range), difficulty_range)
            head = why.get(k, f"no samples last round, weighted at the mean failure rate {mean:.0%}")
            cp.reason = (f"{head}: {budgets[k]} of {total_budget} problems (weight rate^{o.power:g}, floor {floor}); "
                         + cp.reason)
            cats[k] = cp
        return Plan(round=analysis.round + 1, policy=self.name, categories=cats)

    # ---- one category ---------------------------------------------------------------------
    def _category(self, key: str, st: CategoryStats | None, prev: CategoryPlan | None, budget: int, d: int,
                  ranges: Ranges) -> CategoryPlan:
        o = self.options
        lo, hi = ranges.get(key, (d, d))
        hi = min(hi, o.max_difficulty.get(key, hi))
        acts: list[PlanAction] = []
        d, climbing = self._level(key, st, d, lo, hi, acts)
        shares: dict[int, float] = {}
        if climbing:
            shares[d + 1] = o.climb_share
        cp = CategoryPlan(budget=budget, difficulty=d, reason="",
                          token_scale=prev.token_scale if prev else 1.0)
        failed = sum(st.errors.values()) if st else 0
        for cls, n in sorted((st.errors if st else {}).items(), key=lambda kv: (-kv[1], kv[0])):
            action = o.actions.get(cls)
            if action is None or n < o.min_failures or n < o.min_class_share * failed:
                continue
            ev = (f"{cls}: {n} of {st.samples} samples ({n / st.samples:.0%}), {n / failed:.0%} of the category's "
                  f"{failed} failures")
            note = self._apply(action, cp, st, d, lo, hi, shares, budget)
            acts.append(PlanAction(action=action, error_class=cls, evidence=f"{ev}; {note}"))
        levels = {lv: s for lv, s in shares.items() if lo <= lv <= max(hi, d) and s > 0}
        if levels:
            levels[d] = max(0.0, 1.0 - sum(s for lv, s in levels.items() if lv != d))
            mix = allocate(levels, budget - len(cp.augment))
            mix[d] = mix.get(d, 0) + len(cp.augment)
            cp.mix = {lv: n for lv, n in sorted(mix.items()) if n}
        cp.actions = acts
        mix_s = f", mix {cp.mix}" if cp.mix else ""
        cp.reason = (f"difficulty {d}{mix_s}; " + "; ".join(a.action for a in acts)) if acts else f"difficulty {d}"
        return cp

    def _level(self, key: str, st: CategoryStats | None, d: int, lo: int, hi: int,
               acts: list[PlanAction]) -> tuple[int, bool]:
        """(current level, whether the next level joins the mix), with the climb decision recorded."""
        o = self.options
        n, rate = _rate(st, d)
        if rate is None or n < o.min_samples:
            return d, False
        seen = f"pass rate {rate:.2f} ({n} samples) at difficulty {d}"
        if rate > o.climb_above and d < hi:
            n1, r1 = _rate(st, d + 1)
            if r1 is not None and n1 >= o.min_samples and r1 >= o.promote_at:
                acts.append(PlanAction(action="promote", evidence=f"{seen} > {o.climb_above} and {r1:.2f} ({n1} "
                                       f"samples) at {d + 1} >= {o.promote_at}: difficulty {d + 1} is the current"))
                d += 1
                return d, d < hi
            acts.append(PlanAction(action="climb", evidence=f"{seen} > {o.climb_above}: {o.climb_share:.0%} of the "
                                   f"budget at difficulty {d + 1}"))
            return d, True
        if rate < o.lower_below and d > lo:
            acts.append(PlanAction(action="lower", evidence=f"{seen} < {o.lower_below}: lowered to {d - 1}"))
            return d - 1, False
        return d, False

    def _apply(self, action: str, cp: CategoryPlan, st: CategoryStats, d: int, lo: int, hi: int,
               shares: dict[int, float], budget: int) -> str:
        """Carry `action` into the plan; returns what it changed."""
        o = self.options
        if action == "more_problems":
            near = [lv for lv in (d - 1, d + 1) if lo <= lv <= hi]
            for lv in near:
                shares[lv] = shares.get(lv, 0.0) + o.neighbour_share / len(near)
            return (f"{o.neighbour_share:.0%} of the budget at difficulty {' and '.join(map(str, near))}" if near
                    else "no neighbouring difficulty in range; the budget share alone")
        if action == "shorter_problems":
            if d - 1 < lo:
                return f"already at the lowest difficulty {lo}; nothing shorter"
            shares[d - 1] = shares.get(d - 1, 0.0) + o.shorter_share
            return f"{o.shorter_share:.0%} of the budget at difficulty {d - 1}"
        if action == "rationalize":
            cp.rationalize = True
            return "answer-hinted retries of this category's unsolved problems next round"
        if action == "more_tokens":
            before = cp.token_scale
            cp.token_scale = min(o.max_token_scale, before * o.token_step)
            return f"token budget x{before:g} -> x{cp.token_scale:g} of sampling.max_tokens"
        if action == "format_replay":
            cp.format_replay = True
            return "training replays earlier rounds' accepted chains that passed the format verifier"
        if action == "augment":
            unsolved = sorted(pid for pid, r in st.problem_pass_rates.items() if r == 0)
            cap = min(o.augment_max, math.floor(o.augment_share * budget))
            cp.augment = unsolved[:cap]
            return f"variants of {len(cp.augment)} of {len(unsolved)} unsolved problems (where the family can)"
        return "recorded only"
