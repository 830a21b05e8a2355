"""Targeting and stopping policies on crafted analysis tables."""
from __future__ import annotations

import pytest

import policies  # noqa: F401  (registers the built-ins)
from loop.records import CategoryPlan, CategoryStats, Plan, RoundAnalysis
from loop.registry import RegistryError
from policies.base import POLICIES
from policies.budget import allocate, floor_per_category


def stats(key: str, samples: int, passed: int, errors: dict[str, int] | None = None,
          by_difficulty: dict[int, list[int]] | None = None) -> CategoryStats:
    return CategoryStats(key=key, samples=samples, passed=passed, errors=errors or {},
                         by_difficulty=by_difficulty or {})


def prev_plan(difficulties: dict[str, int], budget: int = 10) -> Plan:
    return Plan(round=0, policy="uniform", categories={
        k: CategoryPlan(budget=budget, difficulty=d, reason="start") for k, d in difficulties.items()})


RANGES = {"arith/add": (1, 5), "arith/mul": (1, 5), "rules/logic": (1, 3)}


def analysis(*cats: CategoryStats) -> RoundAnalysis:
    return RoundAnalysis(round=0, categories={c.key: c for c in cats})


@pytest.mark.parametrize("total", [0, 1, 2, 7, 64, 101])
@pytest.mark.parametrize("name", ["uniform", "error_weighted", "pass_band"])
def test_budgets_sum_exactly_and_reasons_present(name, total):
    an = analysis(stats("arith/add", 40, 38, {"calculation": 1, "infra": 1}, {2: [40, 38]}),
                  stats("arith/mul", 40, 10, {"calculation": 20, "logic": 8, "truncated": 2}, {2: [40, 10]}),
                  stats("rules/logic", 40, 20, {"logic": 10, "format": 10}, {1: [40, 20]}))
    plan = POLICIES.build(name).plan(an, prev_plan({"arith/add": 2, "arith/mul": 2, "rules/logic": 1}),
                                     total, RANGES)
    assert plan.round == 1 and plan.policy == name
    assert set(plan.categories) == set(RANGES)
    assert sum(c.budget for c in plan.categories.values()) == total
    for k, c in plan.categories.items():
        assert c.reason and f"{c.budget} of {total}" in c.reason
        lo, hi = RANGES[k]
        assert lo <= c.difficulty <= hi


def test_uniform_keeps_difficulty():
    plan = POLICIES.build("uniform").plan(analysis(), prev_plan({"arith/add": 3, "arith/mul": 1}), 10,
                                          {"arith/add": (1, 5), "arith/mul": (1, 5)})
    assert {k: (c.budget, c.difficulty) for k, c in plan.categories.items()} == {
        "arith/add": (5, 3), "arith/mul": (5, 1)}


def test_error_weighted_follows_trainable_failures_with_floor():
    an = analysis(stats("arith/add", 40, 40, {}),
                  stats("arith/mul", 40, 10, {"calculation": 20, "logic": 10}),
                  stats("rules/logic", 40, 30, {"infra": 10}))          # infra attracts nothing
    pol = POLICIES.build("error_weighted", {"min_share": 0.1})
    plan = pol.plan(an, prev_plan({k: 2 for k in RANGES}), 100, RANGES)
    b = {k: c.budget for k, c in plan.categories.items()}
    assert b == {"arith/add": 10, "arith/mul": 80, "rules/logic": 10}   # floors hold, rest by failure rate
    assert "30 of 40 samples (75%)" in plan.categories["arith/mul"].reason
    assert "calculation 20, logic 10" in plan.categories["arith/mul"].reason
    # two categories failing 2:1 share what is above the floors 2:1 (70 -> 46.7 + 23.3)
    an2 = analysis(stats("arith/add", 40, 28, {"logic": 12}), stats("arith/mul", 40, 34, {"format": 6}),
                   stats("rules/logic", 40, 40))
    b2 = {k: c.budget for k, c in pol.plan(an2, prev_plan({k: 2 for k in RANGES}), 100, RANGES).categories.items()}
    assert b2 == {"arith/add": 57, "arith/mul": 33, "rules/logic": 10}


def test_error_weighted_options_are_checked():
    with pytest.raises(RegistryError, match="infra failures are not the model's"):
        POLICIES.build("error_weighted", {"classes": ["logic", "infra"]})
    with pytest.raises(RegistryError, match="allowed options"):
        POLICIES.build("error_weighted", {"min_shar": 0.1})


def test_pass_band_moves_difficulty():
    an = analysis(stats("arith/add", 20, 19, by_difficulty={2: [20, 19]}),     # too easy -> up
                  stats("arith/mul", 20, 2, by_difficulty={2: [20, 2]}),       # too hard -> down
                  stats("rules/logic", 20, 10, by_difficulty={1: [20, 10]}))   # in band -> keep
    pol = POLICIES.build("pass_band", {"low": 0.2, "high": 0.8, "min_share": 0.1})
    plan = pol.plan(an, prev_plan({"arith/add": 2, "arith/mul": 2, "rules/logic": 1}), 30, RANGES)
    d = {k: c.difficulty for k, c in plan.categories.items()}
    assert d == {"arith/add": 3, "arith/mul": 1, "rules/logic": 1}
    assert "0.95 (19/20) at difficulty 2 > 0.8: raised to 3" in plan.categories["arith/add"].reason
    assert "lowered to 1" in plan.categories["arith/mul"].reason
    assert "within [0.2, 0.8]" in plan.categories["rules/logic"].reason


def test_pass_band_at_range_edge_gets_less_but_not_starved():
    an = analysis(stats("arith/add", 20, 20, by_difficulty={5: [20, 20]}),     # solved at the top level
                  stats("arith/mul", 20, 0, by_difficulty={1: [20, 0]}),       # hopeless at the bottom
                  stats("rules/logic", 20, 10, by_difficulty={2: [20, 10]}),
                  stats("rules/other", 2, 0, by_difficulty={2: [2, 0]}))        # too few samples to move
    ranges = {**RANGES, "rules/other": (1, 4)}
    pol = POLICIES.build("pass_band", {"min_share": 0.1, "stuck_weight": 0.0})
    plan = pol.plan(an, prev_plan({"arith/add": 5, "arith/mul": 1, "rules/logic": 2, "rules/other": 2}), 40,
                    ranges)
    c = plan.categories
    assert c["arith/add"].difficulty == 5 and "highest difficulty" in c["arith/add"].reason
    assert c["arith/mul"].difficulty == 1 and "lowest difficulty" in c["arith/mul"].reason
    assert c["rules/other"].difficulty == 2 and "only 2 decided samples" in c["rules/other"].reason
    assert c["arith/add"].budget == c["arith/mul"].budget == 4       # the floor, nothing more
    assert c["rules/logic"].budget == c["rules/other"].budget == 16   # 4 + (40 - 16) / 2
    with pytest.raises(RegistryError, match="must be below high"):
        POLICIES.build("pass_band", {"low": 0.8, "high": 0.2})


def test_allocate_and_floor():
    assert allocate({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    assert allocate({"a": 0, "b": 0}, 5, floor=1) == {"a": 3, "b": 2}
    assert allocate({"a": 1, "b": 0}, 3, floor=5) == {"a": 2, "b": 1}     # floor capped at an equal split
    assert floor_per_category(100, 3, 0.1) == 10
    assert floor_per_category(100, 12, 0.1) == 8                           # capped at 100 // 12
    assert floor_per_category(5, 3, 0.0) == 1                              # no category starves
    assert floor_per_category(2, 3, 0.5) == 0
    with pytest.raises(ValueError, match=">= 0"):
        allocate({"a": 1}, -1)


@pytest.mark.parametrize("history,stop", [
    ([0.30], False),
    ([0.30, 0.40, 0.50], False),
    ([0.30, 0.40, 0.405, 0.40], True),         # two rounds below best + min_delta
    ([0.30, 0.40, 0.39, 0.45], False),         # improved again in the last round
    ([0.50, 0.45, 0.44], True),                # never beat the baseline
])
def test_patience(history, stop):
    done, why = POLICIES.build("patience", {"patience": 2, "min_delta": 0.01}).should_stop(history)
    assert done is stop and why
    if stop:
        assert "has not improved by 0.01 for 2 rounds" in why


def test_never_stops_never():
    assert POLICIES.build("never").should_stop([0.5, 0.4, 0.3, 0.2])[0] is False
