"""PNG plots of a run, one function per figure. Matplotlib with the Agg backend (no display).

Each function takes plain per-round data (as read by loop/report/summary.py) and a path, writes
the figure and returns the path, or None when there is nothing to draw.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from loop.records import ERROR_CLASSES  # noqa: E402

Rounds = list[tuple[int, dict[str, Any]]]  # (round index, metrics.json)


def _save(fig: Any, path: Path) -> Path:
    """Written to a temp name and renamed, like every file of a run: a crash mid-write
    leaves the old plot, never half a PNG."""
    import io

    from loop.run.state import atomic_write_bytes

    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=100, format="png")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _stacked(ax: Any, labels: list[str], series: dict[str, list[float]]) -> None:
    bottom = [0.0] * len(labels)
    for name, vals in series.items():
        if not any(vals):
            continue
        ax.bar(labels, vals, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, vals)]
    if any(bottom):
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))


def heldout(baseline: dict[str, Any] | None, rounds: Rounds, path: Path) -> Path | None:
    """Held-out accuracy per category per round; 'base' is the model before round 0."""
    points: list[tuple[str, dict[str, Any]]] = []
    if baseline:
        points.append(("base", baseline))
    points += [(str(i), m.get("heldout") or {}) for i, m in rounds]
    if not points:
        return None
    xs = [p[0] for p in points]
    cats = sorted({c for _, h in points for c in (h.get("by_category") or {})})
    fig, ax = plt.subplots(figsize=(7, 4))
    for c in cats:
        ax.plot(xs, [(h.get("by_category") or {}).get(c, float("nan")) for _, h in points], marker="o", label=c)
    ax.plot(xs, [h.get("accuracy", float("nan")) if h.get("accuracy") is not None else float("nan")
                 for _, h in points], marker="s", color="black", linewidth=2, label="overall")
    ax.set_xlabel("round")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def errors(rounds: Rounds, path: Path) -> Path | None:
    """Error classes per round, stacked."""
    if not rounds:
        return None
    labels = [str(i) for i, _ in rounds]
    series = {c: [float((m.get("errors") or {}).get(c, 0)) for _, m in rounds] for c in ERROR_CLASSES}
    fig, ax = plt.subplots(figsize=(7, 4))
    _stacked(ax, labels, series)
    ax.set_xlabel("round")
    ax.set_ylabel("failed samples")
    ax.set_title("error classes per round")
    return _save(fig, path)


def acceptance(rounds: Rounds, path: Path) -> Path | None:
    """Share of sampled chains accepted for training, per round."""
    if not rounds:
        return None
    labels = [str(i) for i, _ in rounds]
    rates = [m.get("accepted", 0) / m["samples"] if m.get("samples") else 0.0 for _, m in rounds]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(labels, rates, color="tab:green")
    for x, (r, (_, m)) in enumerate(zip(rates, rounds)):
        ax.annotate(f"{m.get('accepted', 0)}/{m.get('samples', 0)}", (x, r), ha="center", va="bottom",
                    fontsize="small")
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("round")
    ax.set_ylabel("acceptance rate")
    return _save(fig, path)


def cost(rounds: Rounds, path: Path) -> Path | None:
    """Tokens sampled and seconds per stage (stacked), per round."""
    if not rounds:
        return None
    labels = [str(i) for i, _ in rounds]
    stages = list(dict.fromkeys(s for _, m in rounds for s in (m.get("stage_seconds") or {})))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.bar(labels, [m.get("tokens_sampled", 0) for _, m in rounds], color="tab:blue")
    ax1.set_xlabel("round")
    ax1.set_ylabel("tokens sampled")
    _stacked(ax2, labels, {s: [float((m.get("stage_seconds") or {}).get(s, 0)) for _, m in rounds]
                           for s in stages})
    ax2.set_xlabel("round")
    ax2.set_ylabel("seconds")
    ax2.set_title("seconds per stage")
    return _save(fig, path)


def budget(rounds: Rounds, path: Path) -> Path | None:
    """Problems sampled per category per round, stacked."""
    if not rounds:
        return None
    labels = [str(i) for i, _ in rounds]
    cats = sorted({c for _, m in rounds for c in (m.get("budget") or {})})
    fig, ax = plt.subplots(figsize=(7, 4))
    _stacked(ax, labels, {c: [float((m.get("budget") or {}).get(c, 0)) for _, m in rounds] for c in cats})
    ax.set_xlabel("round")
    ax.set_ylabel("problems")
    ax.set_title("budget per category")
    return _save(fig, path)
