"""The run report: run_dir/report/summary.md and PNG plots, read from a run directory.

It reads only what the loop wrote (manifest.json, baseline.json or baseline/metrics.json,
round-NNN/metrics.json, analysis.json, plan.json) and tolerates a run in progress: a round without metrics.json
is skipped and named in the notes, an unreadable file is named and skipped.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from loop.analysis import error_table
from loop.records import ERROR_CLASSES, RoundAnalysis
from loop.report.learned import calibration_plot, learned_lines

log = logging.getLogger(__name__)

_ROUND_DIR = re.compile(r"^round-(\d+)$")


def _load(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        notes.append(f"{path.name} in {path.parent.name} could not be read ({e}); skipped")
        return None
    if not isinstance(data, dict):
        notes.append(f"{path.parent.name}/{path.name} is not a JSON object; skipped")
        return None
    return data


def _put_in_place(new: Path, final: Path) -> None:
    """Replace the directory `final` by `new`: the old one is renamed away first, then removed."""
    old = None
    if final.exists():
        old = final.with_name(f".report.old.{os.getpid()}.tmp")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    os.rename(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    for stale in final.parent.glob(".report.*.tmp"):  # left by a report that was killed (not one running now)
        try:
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass


def _write(path: Path, text: str) -> None:
    from loop.run.state import atomic_write_text

    atomic_write_text(path, text)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return "-" if v is None else str(v).replace("|", "\\|").replace("\n", " ")
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return out


def read_run(run_dir: Path) -> dict[str, Any]:
    """Everything the report needs: manifest, baseline, finished rounds, notes."""
    notes: list[str] = []
    manifest = _load(run_dir / "manifest.json", notes)
    if manifest is None:
        notes.append("manifest.json is missing: the run may not have started properly")
    # The baseline (held-out eval before round 0): baseline.json {"heldout": {...}}, or the
    # eval stage's own baseline/metrics.json {"accuracy", "by_category", ...}.
    baseline = _load(run_dir / "baseline.json", notes)
    baseline = (baseline.get("heldout", baseline) if baseline is not None
                else _load(run_dir / "baseline" / "metrics.json", notes))
    rounds, analyses, plans, levels, missing = [], {}, {}, {}, []
    dirs = dict(sorted((int(m.group(1)), p) for p in run_dir.iterdir()
                       if p.is_dir() and (m := _ROUND_DIR.match(p.name))))
    finished = (manifest or {}).get("rounds_completed")
    finished = finished if isinstance(finished, int) else 0
    # A round the manifest calls finished must have its files: name every one that is gone.
    for i in range(finished):
        if i not in dirs:
            missing.append(f"round-{i:03d}/")
            notes.append(f"round-{i:03d}/ is missing although the manifest says round {i} finished (the run "
                         "directory was damaged or edited); it is left out of the tables and plots")
    for i, d in dirs.items():
        metrics = _load(d / "metrics.json", notes)
        if metrics is None:
            if i < finished:
                missing.append(f"{d.name}/metrics.json")
                notes.append(f"{d.name}/metrics.json is missing or unreadable although the manifest says round {i} "
                             "finished (the run directory was damaged or edited); round "
                             f"{i} is left out of the tables and plots")
            else:
                notes.append(f"{d.name} has no metrics.json (unfinished round); left out of the tables and plots")
            continue
        rounds.append((i, metrics))
        if (a := _load(d / "analysis.json", notes)) is not None:
            analyses[i] = a
        if (p := _load(d / "plan.json", notes)) is not None:
            plans[i] = p
        if (h := _load(d / "heldout" / "metrics.json", notes)) is not None:
            levels[i] = h.get("by_category_difficulty") or {}
    return {"manifest": manifest or {}, "baseline": baseline, "rounds": rounds, "levels": levels,
            "analyses": analyses, "plans": plans, "notes": notes, "missing": missing}


def _train_row(i: int, t: dict[str, Any]) -> list[Any]:
    """One round's training: what it trained on, how fast, and which fast paths served it."""
    if t.get("skipped"):
        return [i, t.get("examples", 0), "", "", f"skipped: {t['skipped']}", "", "", ""]
    speed = f"{t['tokens_per_s']:,.0f}" if isinstance(t.get("tokens_per_s"), (int, float)) else None
    first, last = t.get("first_loss"), t.get("last_loss")
    loss = f"{first:.3f} -> {last:.3f}" if isinstance(first, float) and isinstance(last, float) else None
    kernels = []
    if t.get("packed_attention"):
        kernels.append(f"packed ({t['packed_attention']})")
    if (t.get("lora_calls") or {}).get("fused"):
        kernels.append("fused LoRA")
    if t.get("fused_kernels") == "liger":
        kernels.append("Liger")
    peak = f"{t['peak_gib']:.2f}" if isinstance(t.get("peak_gib"), (int, float)) else None
    return [i, t.get("examples"), t.get("tokens"), speed, loss, peak, t.get("device"), ", ".join(kernels) or "-"]


def _summary(run_dir: Path, run: dict[str, Any], plots: dict[str, Path | None]) -> str:
    man, base, rounds = run["manifest"], run["baseline"], run["rounds"]
    status = man.get("status", "unknown")
    if status == "running":
        from loop.run.state import RunLock

        if not RunLock(run_dir).is_held():
            status = "running according to the manifest, but no process holds the run (killed?): resume it"
    done = man.get("rounds_completed", len(rounds))
    gone = f" ({', '.join(run['missing'])} missing: see Notes)" if run.get("missing") else ""
    lines = [f"# Run report: {run_dir.name}", "",
             f"- status: {status}",
             f"- rounds completed: {done}; in this report: {len(rounds)}{gone}",
             f"- cursor: {man.get('cursor', '-')}", ""]

    cols = (["base"] if base else []) + [f"round {i}" for i, _ in rounds]
    hs = ([base] if base else []) + [m.get("heldout") or {} for _, m in rounds]
    cats = sorted({c for h in hs for c in (h.get("by_category") or {})})
    lines += ["## Held-out accuracy", ""]
    if hs:
        rows = [[c, *[(h.get("by_category") or {}).get(c) for h in hs]] for c in cats]
        rows.append(["**overall**", *[h.get("accuracy") for h in hs]])
        lines += _table(["category", *cols], rows)
    else:
        lines.append("No held-out evaluation yet.")

    by_level = ([(base or {}).get("by_category_difficulty") or {}] if base else []) + [
        run.get("levels", {}).get(i, {}) for i, _ in rounds]
    level_keys = sorted({k for h in by_level for k in h},
                        key=lambda k: (k.rsplit("@", 1)[0], k.rsplit("@", 1)[-1].zfill(6)))
    if len({k.rsplit("@", 1)[0] for k in level_keys}) < len(level_keys):  # some category has several levels
        lines += ["", "Held-out accuracy per difficulty (category@digits):", ""]
        lines += _table(["category@difficulty", *cols], [[k, *[h.get(k) for h in by_level]] for k in level_keys])

    lines += ["", "## Rounds", ""]
    if rounds:
        rows = []
        for i, m in rounds:
            n, acc = m.get("samples", 0), m.get("accepted", 0)
            secs = sum((m.get("stage_seconds") or {}).values())
            rows.append([i, n, acc, acc / n if n else None, m.get("tokens_sampled"), f"{secs:.1f}",
                         m.get("adapter")])
        lines += _table(["round", "samples", "accepted", "acceptance", "tokens sampled", "seconds", "adapter"], rows)
        stages = list(dict.fromkeys(s for _, m in rounds for s in (m.get("stage_seconds") or {})))
        lines += ["", "### Seconds per stage", ""]
        lines += _table(["round", *stages], [[i, *[f"{(m.get('stage_seconds') or {}).get(s, 0.0):.1f}"
                                                    for s in stages]] for i, m in rounds])
        lines += ["", "### Error classes", ""]
        lines += _table(["round", *ERROR_CLASSES], [[i, *[(m.get("errors") or {}).get(c, 0) for c in ERROR_CLASSES]]
                                                     for i, m in rounds])
        bcats = sorted({c for _, m in rounds for c in (m.get("budget") or {})})
        lines += ["", "### Budget per category", ""]
        lines += _table(["round", *bcats], [[i, *[(m.get("budget") or {}).get(c, 0) for c in bcats]]
                                            for i, m in rounds])
        trained = [(i, m["train"]) for i, m in rounds if isinstance(m.get("train"), dict)]
        if trained:
            lines += ["", "### Training", ""]
            lines += _table(["round", "chains", "tokens", "tokens/s", "loss first -> last", "peak GiB", "device",
                             "kernels"], [_train_row(i, t) for i, t in trained])
    else:
        lines.append("No finished round yet.")

    health = [(i, m["verifier_health"]) for i, m in rounds if isinstance(m.get("verifier_health"), dict)]
    if health:
        i, h = health[-1]
        outs = ("pass", "fail", "abstain", "error")
        lines += ["", f"## Verifier health (round {i})", ""]
        lines += _table(["verifier", *outs], [[k, *[c.get(o, 0) for o in outs]]
                                              for k, c in sorted((h.get("verifiers") or {}).items())])
        j = h.get("judge") or {}
        if j.get("compared"):
            lines += ["", f"Judge {j.get('name')} agrees with the programmatic outcome on {j.get('agree')} of "
                          f"{j.get('compared')} decided samples ({j['agree'] / j['compared']:.0%})."]
    lines += learned_lines(rounds, _table)
    if run["analyses"]:
        last = max(run["analyses"])
        try:
            tbl = error_table(RoundAnalysis.model_validate(run["analyses"][last]))
            lines += ["", f"## Errors by category (round {last})", ""] + _table(tbl[0], tbl[1:])
        except ValueError as e:
            run["notes"].append(f"round-{last:03d}/analysis.json does not match RoundAnalysis ({e}); skipped")
    if run["plans"]:
        last = max(run["plans"])
        plan = run["plans"][last]
        lines += ["", f"## Plan for round {plan.get('round', last + 1)} (policy {plan.get('policy', '?')})", ""]
        lines += _table(["category", "budget", "difficulty", "reason"],
                        [[k, c.get("budget"), c.get("difficulty"), c.get("reason", "")]
                         for k, c in sorted((plan.get("categories") or {}).items())])
        acts = [[k, a.get("action"), a.get("error_class") or "-", a.get("evidence", "")]
                for k, c in sorted((plan.get("categories") or {}).items()) for a in c.get("actions") or []]
        if acts:
            lines += ["", "Decisions and the evidence behind them:", ""]
            lines += _table(["category", "action", "error class", "evidence"], acts)

    made = {k: p for k, p in plots.items() if p is not None}
    if made:
        lines += ["", "## Plots", ""] + [f"![{k}]({p.name})" for k, p in made.items()]
    if run["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in run["notes"]]
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path) -> Path:
    """Write run_dir/report/summary.md and the plots; returns the summary's path."""
    from loop.report import plots  # matplotlib is imported only when a report is made
    from loop.report.training import training

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist; pass a directory under state/runs/")
    run = read_run(run_dir)
    final = run_dir / "report"
    # Whole or not at all: made in a temporary directory beside it, then put in place by renames
    # (a kill midway leaves the old report, or none, never a mix).
    out = Path(tempfile.mkdtemp(dir=run_dir, prefix=".report.", suffix=".tmp"))
    mask = os.umask(0)
    os.umask(mask)
    out.chmod(0o777 & ~mask)  # mkdtemp's 0700 would make the report private to its writer
    try:
        rounds = run["rounds"]
        made = {
            "held-out accuracy": plots.heldout(run["baseline"], rounds, out / "heldout.png"),
            "error classes": plots.errors(rounds, out / "errors.png"),
            "acceptance rate": plots.acceptance(rounds, out / "acceptance.png"),
            "tokens and seconds": plots.cost(rounds, out / "cost.png"),
            "budget": plots.budget(rounds, out / "budget.png"),
            "learned verifier calibration": calibration_plot(rounds, out / "calibration.png"),
            "training": training(run_dir, rounds, out / "training.png", run["notes"]),
        }
        _write(out / "summary.md", _summary(run_dir, run, made))
        _put_in_place(out, final)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    path = final / "summary.md"
    for m in run["missing"]:
        log.warning("%s is missing although the manifest says that round finished; the report leaves it out "
                    "(see its Notes)", m)
    log.info("report written to %s", path)
    return path
