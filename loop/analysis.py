"""Error analysis of one round: per-category statistics, error tables, deltas, verifier health.

The rules that classify a failure (and the taxonomy itself) live in loop/taxonomy.py;
`combine`, `classify` and `refine_with_judge` are re-exported here.

Pass statistics leave out STaR-hinted samples (they were given the answer) and count
only decided samples (pass or fail) in pass rates: an `error` or all-`abstain` sample
is neither right nor wrong. Error counts include every non-hinted failed sample; the
`tamper` class counts programs caught reaching for the code harness (reward hacking), so
its delta across rounds shows whether training is learning to game the verifier.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from loop.records import ERROR_CLASSES, CategoryStats, RoundAnalysis, Row
from loop.taxonomy import (  # noqa: F401 (re-exported)
    FORMAT_VERIFIER,
    JUDGE_VERIFIER,
    PROCESS_VERIFIER,
    TRAINABLE_CLASSES,
    classify,
    combine,
    final_answer,
    refine_with_judge,
    verdict_of,
)

# ---------------------------------------------------------------- tables

def analyze(round: int, rows: Sequence[Row], heldout_by_category: dict[str, float] | None = None,
            heldout_accuracy: float | None = None) -> RoundAnalysis:
    """Per-category statistics of one round. Rows without an error record are classified here."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        groups[r.category_key].append(r)
    cats = {}
    for key in sorted(groups):
        st = CategoryStats(key=key)
        per_problem: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # [decided, passed]
        by_diff: dict[int, list[int]] = {}
        errors: Counter[str] = Counter()
        for r in groups[key]:
            if r.sample.hinted:
                continue
            st.samples += 1
            err = r.error or classify(r)
            if err is not None:
                errors[err.error_class] += 1
            if r.outcome not in ("pass", "fail"):
                continue
            ok = int(r.outcome == "pass")
            st.passed += ok
            per_problem[r.problem.id][0] += 1
            per_problem[r.problem.id][1] += ok
            d = by_diff.setdefault(r.problem.difficulty, [0, 0])
            d[0] += 1
            d[1] += ok
        rates = {pid: p / n for pid, (n, p) in sorted(per_problem.items())}
        st.problems = len({r.problem.id for r in groups[key] if not r.sample.hinted})
        st.pass_at_1 = sum(rates.values()) / len(rates) if rates else 0.0
        st.pass_at_k = sum(1 for v in rates.values() if v > 0) / len(rates) if rates else 0.0
        st.by_difficulty = dict(sorted(by_diff.items()))
        st.errors = dict(sorted(errors.items()))
        st.problem_pass_rates = rates
        cats[key] = st
    hb = dict(heldout_by_category or {})
    if heldout_accuracy is None and hb:
        heldout_accuracy = sum(hb.values()) / len(hb)
    return RoundAnalysis(round=round, categories=cats, heldout_by_category=hb, heldout_accuracy=heldout_accuracy)


def error_table(analysis: RoundAnalysis) -> list[list]:
    """[["category", *classes, "total"], [key, counts..., total], ..., ["all", ...]]."""
    table: list[list] = [["category", *ERROR_CLASSES, "total"]]
    totals = [0] * len(ERROR_CLASSES)
    for key, st in analysis.categories.items():
        counts = [st.errors.get(c, 0) for c in ERROR_CLASSES]
        totals = [a + b for a, b in zip(totals, counts)]
        table.append([key, *counts, sum(counts)])
    table.append(["all", *totals, sum(totals)])
    return table


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def compare(prev: RoundAnalysis | None, cur: RoundAnalysis) -> dict:
    """Per category: current values and deltas since `prev` (None where unknown)."""
    out: dict[str, dict] = {}
    for key in sorted(set(cur.categories) | set(cur.heldout_by_category)):
        c = cur.categories.get(key)
        p = prev.categories.get(key) if prev else None
        errs = c.errors if c else {}
        perrs = p.errors if p else {}
        out[key] = {
            "pass_at_1": c.pass_at_1 if c else None,
            "pass_at_k": c.pass_at_k if c else None,
            "heldout": cur.heldout_by_category.get(key),
            "d_pass_at_1": _delta(p.pass_at_1 if p else None, c.pass_at_1 if c else None),
            "d_pass_at_k": _delta(p.pass_at_k if p else None, c.pass_at_k if c else None),
            "d_heldout": _delta(prev.heldout_by_category.get(key) if prev else None,
                                cur.heldout_by_category.get(key)),
            "d_errors": ({k: errs.get(k, 0) - perrs.get(k, 0) for k in sorted(set(errs) | set(perrs))}
                         if p else {}),
        }
    out["_overall"] = {"heldout": cur.heldout_accuracy,
                       "d_heldout": _delta(prev.heldout_accuracy if prev else None, cur.heldout_accuracy)}
    return out


def verifier_health(rows: Sequence[Row], judge_name: str = JUDGE_VERIFIER,
                    required: set[str] | None = None) -> dict:
    """Outcome counts per verifier, and how often the judge agrees with the programmatic
    combined outcome (over `required` minus the judge; all non-judge verifiers if None)
    on rows where both gave pass or fail."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    compared = agree = 0
    for r in rows:
        for v in r.verdicts:
            counts[v.verifier][v.outcome] += 1
        judge = verdict_of(r, judge_name)
        if judge is None or judge.outcome not in ("pass", "fail"):
            continue
        others = [v for v in r.verdicts if v.verifier != judge_name]
        names = (required - {judge_name}) if required is not None else {v.verifier for v in others}
        prog = combine(others, names)
        if prog in ("pass", "fail"):
            compared += 1
            agree += int(prog == judge.outcome)
    return {
        "verifiers": {k: {o: counts[k].get(o, 0) for o in ("pass", "fail", "abstain", "error")}
                      for k in sorted(counts)},
        "judge": {"name": judge_name, "compared": compared, "agree": agree,
                  "agreement": agree / compared if compared else None},
    }


def _fmt(v: float | None, d: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" + (f" ({d:+.2f})" if d is not None else "")


def format_round_table(analysis: RoundAnalysis, prev: RoundAnalysis | None = None) -> str:
    """A short fixed-width table of the round, with deltas since `prev`."""
    cmp_ = compare(prev, analysis)
    keys = [k for k in cmp_ if k != "_overall"]
    w = max([len("category"), *(len(k) for k in keys)]) + 2
    head = f"{'category':<{w}}{'samples':>8}  {'pass@1':<14}{'pass@k':<14}{'held-out':<14}top errors"
    lines = [f"round {analysis.round}", head, "-" * len(head)]
    for k in keys:
        c, st = cmp_[k], analysis.categories.get(k)
        top = sorted((st.errors if st else {}).items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        lines.append(f"{k:<{w}}{(st.samples if st else 0):>8}  {_fmt(c['pass_at_1'], c['d_pass_at_1']):<14}"
                     f"{_fmt(c['pass_at_k'], c['d_pass_at_k']):<14}{_fmt(c['heldout'], c['d_heldout']):<14}"
                     + (", ".join(f"{n} {m}" for n, m in top) or "-"))
    o = cmp_["_overall"]
    lines.append(f"{'overall':<{w}}{'':>8}  {'':<14}{'':<14}{_fmt(o['heldout'], o['d_heldout'])}")
    return "\n".join(lines)
