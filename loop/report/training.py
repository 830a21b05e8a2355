"""report/training.png: the trainer's steps across rounds (round-NNN/train_log.jsonl) and the speed of a round.

Panels: loss per step (steps counted over the run, a dashed line where a round starts), the learning-rate
schedule, the gradient norm, tokens/s of the sampler (tokens sampled / the sample stage's seconds) and of the
trainer per round, and on a GPU the memory over the train stages' steps (torch's allocated and reserved,
and the device's used memory as NVML or nvidia-smi saw it).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loop.report.plots import Rounds, _save, plt

LOG = "train_log.jsonl"


def read_steps(run_dir: Path, rounds: Rounds, notes: list[str]) -> list[tuple[int, list[dict[str, Any]]]]:
    """[(round, its step rows)] for the rounds that trained; a torn or unreadable line is named in the notes."""
    out = []
    for i, _ in rounds:
        path = run_dir / f"round-{i:03d}" / LOG
        if not path.exists():
            continue
        rows, bad = [], 0
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
                rows.append(row)
        if bad:
            notes.append(f"round-{i:03d}/{LOG}: {bad} line(s) could not be read; training.png leaves them out")
        if rows:
            out.append((i, rows))
    return out


def _series(steps: list[tuple[int, list[dict]]], key: str) -> list[tuple[int, list[float], list[float]]]:
    """Per round: (round, x = step counted over the run, y) for the rows that have `key`."""
    out, offset = [], 0
    for i, rows in steps:
        pts = [(offset + r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        out.append((i, [p[0] for p in pts], [p[1] for p in pts]))
        offset += max(r["step"] for r in rows)
    return out


def _per_step(ax: Any, steps: list[tuple[int, list[dict]]], key: str, label: str, log_y: bool = False) -> None:
    series = _series(steps, key)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (i, xs, ys) in enumerate(series):
        if xs:
            ax.plot(xs, ys, color=colors[n % len(colors)], linewidth=1.2, label=f"round {i}")
    offset = 0
    for _, rows in steps:  # where each round's training starts
        ax.axvline(offset, color="grey", linestyle="--", linewidth=0.8)
        offset += max(r["step"] for r in rows)
    if log_y and any(y > 0 for _, _, ys in series for y in ys):
        ax.set_yscale("log")
    ax.set_xlabel("trainer step (over the run; dashed: a round starts)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)


def _speed(ax: Any, rounds: Rounds) -> bool:
    labels, sampler, trainer = [], [], []
    for i, m in rounds:
        secs = (m.get("stage_seconds") or {}).get("sample")
        tok = m.get("tokens_sampled")
        t = m.get("train") if isinstance(m.get("train"), dict) else {}
        labels.append(str(i))
        sampler.append(tok / secs if isinstance(tok, (int, float)) and secs else 0.0)
        trainer.append(float(t.get("tokens_per_s") or 0.0))
    if not any(sampler) and not any(trainer):
        return False
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], sampler, width=0.4, label="sampler")
    ax.bar([x + 0.2 for x in xs], trainer, width=0.4, label="trainer")
    ax.set_xticks(list(xs), labels)
    ax.set_xlabel("round")
    ax.set_ylabel("tokens/s")
    ax.set_ylim(0, 1.3 * max(sampler + trainer))  # room for the legend above the bars
    ax.legend(fontsize="small", loc="upper center", ncol=2)
    ax.grid(alpha=0.3, axis="y")
    return True


def _memory(ax: Any, steps: list[tuple[int, list[dict]]]) -> None:
    for key, label in (("cuda_allocated_gib", "torch allocated"), ("cuda_reserved_gib", "torch reserved"),
                       ("gpu_mem_used_gib", "device used (NVML / nvidia-smi)")):
        xs, ys = [], []
        for _, x, y in _series(steps, key):
            xs += x
            ys += y
        if xs:
            ax.plot(xs, ys, linewidth=1.2, label=label)
    util = [(x, y) for _, xs, ys in _series(steps, "gpu_util") for x, y in zip(xs, ys)]
    if util:
        twin = ax.twinx()
        twin.plot([u[0] for u in util], [u[1] for u in util], color="grey", alpha=0.5, linewidth=0.8)
        twin.set_ylabel("GPU utilisation % (grey)")
        twin.set_ylim(0, 105)
    ax.set_xlabel("trainer step (over the run)")
    ax.set_ylabel("GiB")
    ax.set_ylim(bottom=0)
    ax.set_title("GPU memory during the train stages", fontsize="medium")
    ax.legend(fontsize="small", loc="upper left")
    ax.grid(alpha=0.3)


def training(run_dir: Path, rounds: Rounds, path: Path, notes: list[str]) -> Path | None:
    steps = read_steps(run_dir, rounds, notes)
    if not steps:
        return None
    gpu = any("cuda_allocated_gib" in r or "gpu_mem_used_gib" in r for _, rows in steps for r in rows)
    fig = plt.figure(figsize=(12, 10.5 if gpu else 7.5))
    grid = fig.add_gridspec(3 if gpu else 2, 2)
    ax = [fig.add_subplot(grid[i // 2, i % 2]) for i in range(4)]
    _per_step(ax[0], steps, "loss", "training loss")
    ax[0].set_title("loss per step", fontsize="medium")
    ax[0].legend(fontsize="small")
    _per_step(ax[1], steps, "learning_rate", "learning rate")
    ax[1].set_title("learning-rate schedule", fontsize="medium")
    _per_step(ax[2], steps, "grad_norm", "gradient norm", log_y=True)
    ax[2].set_title("gradient norm (before clipping)", fontsize="medium")
    if _speed(ax[3], rounds):
        ax[3].set_title("tokens/s per round (sampled / sample s; trained / train s)", fontsize="medium")
    else:
        ax[3].axis("off")
    if gpu:
        _memory(fig.add_subplot(grid[2, :]), steps)
    fig.suptitle(f"training: {sum(len(rows) for _, rows in steps)} logged steps over {len(steps)} round(s)")
    return _save(fig, path)
