"""Integer budget arithmetic shared by the targeting policies."""
from __future__ import annotations

import math

from loop.records import CategoryStats, Plan, RoundAnalysis


def floor_per_category(total: int, n: int, min_share: float) -> int:
    """Problems every category gets at least: min_share of the total (and at least one
    when there are enough to go round), never more than an equal split."""
    if n == 0:
        return 0
    want = max(int(total >= n), math.floor(min_share * total + 1e-9))
    return min(want, total // n)


def min_share_problem(min_share: float, n: int) -> str | None:
    """Why a share floor cannot hold for n categories (the floors alone would exceed the budget), or None."""
    if n > 1 and min_share * n > 1 + 1e-9:
        return (f"min_share {min_share:g} x {n} categories = {min_share * n:g} of the budget: the floors alone are "
                f"more than all of it, so the budget could not follow weakness; lower min_share to at most "
                f"{1 / n:.4g}")
    return None


def allocate(weights: dict[str, float], total: int, floor: int = 0) -> dict[str, int]:
    """Split `total` into integers summing exactly to it: `floor` each, the rest in
    proportion to `weights` by largest remainder (ties by key order). All-zero weights
    split the rest equally."""
    if total < 0:
        raise ValueError(f"total budget must be >= 0, got {total}")
    keys = sorted(weights)
    if not keys:
        return {}
    floor = min(max(floor, 0), total // len(keys))
    rest = total - floor * len(keys)
    w = {k: max(float(weights[k]), 0.0) for k in keys}
    if sum(w.values()) <= 0:
        w = {k: 1.0 for k in keys}
    wsum = sum(w.values())
    quota = {k: rest * w[k] / wsum for k in keys}
    out = {k: floor + math.floor(quota[k]) for k in keys}
    left = total - sum(out.values())
    by_frac = sorted(keys, key=lambda k: (-(quota[k] - math.floor(quota[k])), keys.index(k)))
    for k in by_frac[:left]:
        out[k] += 1
    return out


def categories_of(analysis: RoundAnalysis, previous: Plan,
                  difficulty_range: dict[str, tuple[int, int]]) -> list[str]:
    """The categories to plan: the configured ones (previous plan, ranges), else the analysed ones."""
    keys = set(previous.categories) | set(difficulty_range)
    return sorted(keys or analysis.categories)


def clamp(d: int, key: str, difficulty_range: dict[str, tuple[int, int]]) -> int:
    lo, hi = difficulty_range.get(key, (0, max(d, 0)))
    return max(lo, min(hi, d))


def current_difficulty(key: str, previous: Plan, difficulty_range: dict[str, tuple[int, int]]) -> int:
    """The difficulty the previous plan used for `key` (the range's lowest if it had none)."""
    if key in previous.categories:
        return clamp(previous.categories[key].difficulty, key, difficulty_range)
    return difficulty_range.get(key, (1, 1))[0]


def undecided(st: CategoryStats) -> str | None:
    """Why a category's failure rate is unknown, or None. Samples that no check could call pass or fail (a
    category without gold answers, `learned_verifier.answerless`; a verifier that always abstains) are not
    samples that passed: read as a failure rate of 0 they would take the category down to the floor, and a
    category the loop cannot check would starve. Such a category is weighted at the mean rate instead."""
    if st.samples and not st.passed and not st.by_difficulty and not any(st.errors.values()):
        return (f"none of its {st.samples} samples got a programmatic pass or fail (no gold answers?), so its "
                "failure rate is unknown")
    return None
