"""The report's learned-verifier section: per round, what it was trained on, how well it agrees with
the programmatic verdicts (AUC, accuracy at its threshold, calibration), and held-out selection
(greedy vs majority vote vs verifier best-of-n). Reads metrics.json's `learned_verifier` and
`verifier_health.learned` (written by loop/controller.py)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


def learned_lines(rounds: list[tuple[int, dict[str, Any]]], table: Callable[[list[str], list[list[Any]]], list[str]]
                  ) -> list[str]:
    have = [(i, m) for i, m in rounds if isinstance(m.get("learned_verifier"), dict)
            or isinstance((m.get("verifier_health") or {}).get("learned"), dict)]
    if not have:
        return []
    lines = ["", "## Learned verifier", "",
             "Agreement with the programmatic verdicts: on the round's training samples (scored by the previous "
             "round's verifier) and on the held-out greedy chains (this round's verifier).", ""]
    rows = []
    for i, m in have:
        lv = m.get("learned_verifier") or {}
        tr = lv.get("train") or {}
        data = tr.get("data") or {}
        on_train = (m.get("verifier_health") or {}).get("learned") or {}
        held = lv.get("heldout") or {}
        rows.append([i, data.get("examples", tr.get("skipped", "-")), data.get("replayed"),
                     _loss(tr), on_train.get("compared"), on_train.get("auc"), on_train.get("accuracy"),
                     held.get("compared"), held.get("auc"), held.get("accuracy")])
    lines += table(["round", "trained on", "replayed", "loss first -> last", "scored (train)", "AUC (train)",
                    "accuracy (train)", "scored (held-out)", "AUC (held-out)", "accuracy (held-out)"], rows)
    sel = [(i, (m.get("learned_verifier") or {}).get("selection")) for i, m in have]
    sel = [(i, s) for i, s in sel if isinstance(s, dict)]
    if sel:
        n = sel[-1][1].get("n")
        lines += ["", f"Held-out selection over n = {n} sampled chains a problem (accuracy; pass@n is the "
                      "ceiling):", ""]
        keys = ("greedy", "majority", "verifier_best_of_n", "verifier_weighted_vote", "pass_at_n")
        lines += table(["round", *keys, "AUC (n chains)", "AUC within a problem"],
                       [[i, *[s.get(k) for k in keys], (s.get("agreement") or {}).get("auc"),
                         s.get("within_problem_auc")] for i, s in sel])
    cal = next(((i, s["agreement"]["calibration"]) for i, s in reversed(sel)
                if (s.get("agreement") or {}).get("calibration")), None)
    if cal:
        lines += ["", f"Calibration (round {cal[0]}, held-out sampled chains): mean P(Yes) vs the programmatic pass "
                      "rate per score bin:", ""]
        lines += table(["P(Yes) bin", "chains", "mean P(Yes)", "pass rate"],
                       [[f"{b['bin'][0]:.1f}-{b['bin'][1]:.1f}", b["n"], b["mean_score"], b["pass_rate"]]
                        for b in cal[1]])
    return lines


def _loss(tr: dict) -> str:
    a, b = tr.get("first_loss"), tr.get("last_loss")
    return f"{a:.3f} -> {b:.3f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) else "-"


def calibration_plot(rounds: list[tuple[int, dict[str, Any]]], path: Any) -> Any:
    """Reliability diagram of the newest round's held-out selection chains: mean P(Yes) against the
    programmatic pass rate per score bin (the diagonal is perfect calibration). None: nothing to draw."""
    from loop.report import plots

    cal = None
    for i, m in rounds:
        s = (m.get("learned_verifier") or {}).get("selection") or {}
        if (s.get("agreement") or {}).get("calibration"):
            cal = (i, s["agreement"])
    if cal is None:
        return None
    i, a = cal
    xs = [b["mean_score"] for b in a["calibration"]]
    ys = [b["pass_rate"] for b in a["calibration"]]
    fig, ax = plots.plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    ax.plot(xs, ys, marker="o")
    for x, y, b in zip(xs, ys, a["calibration"]):
        ax.annotate(str(b["n"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    auc = a.get("auc")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean P(Yes) in the bin", ylabel="programmatic pass rate",
           title=f"learned verifier, round {i}" + (f" (AUC {auc:.2f})" if auc is not None else ""))
    return plots._save(fig, path)
