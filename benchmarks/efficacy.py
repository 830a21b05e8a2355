"""Does the loop make the model better? Learning curves on the default, with controls.

    python benchmarks/efficacy.py [--seeds 0 1 2] [--rounds 5] [--reuse] [--only loop controls targeting]

Runs, all through `launch.py run` (the same code path as `make run`, one at a time):

- loop, one run per seed: configs/default.yaml with `run.seed=<seed>`;
- controls, seed 0, same rounds, problems per round, samples per problem and trainer, training
  data capped at 300 chains a round (about what the loop accepts):
  `accept_all` (the same loop accepting every sample: no verification) and
  `warm_start_data` (acceptance `reference` on problems drawn by `uniform` targeting at the
  warm start's main level, 2 digits: the warm start trained further on data like its own
  original data);
- targeting, one run per targeting seed (--targeting-seeds, default 0 1): configs/targeting.yaml
  under its own targeting policy and under `uniform` (same total budget a round): the
  `targeting_tight_budget` section;
- default_targeting, one pair per targeting seed: configs/default.yaml (the `analyst` policy) and the
  same config under `uniform` (same total budget): the `targeting` section, judged on the category
  named by --weakest (default arithmetic/sub, the one uniform leaves weakest), and the `curriculum`
  section (held-out accuracy at the first difficulty the warm start solves 0 % of, per round; from
  `curriculum-*` runs if there are any, else from the default's own analyst runs, which it says).

Results are merged into --out: the curves already there are kept and every section is recomputed.

Gain = held-out accuracy after the last round minus the baseline (the warm start) of the
same run. Writes benchmarks/results/efficacy.json and efficacy.png. `--reuse` takes the
newest completed run of each label (state/runs/efficacy-<label>-*) instead of running it
again, so an interrupted benchmark continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT, TARGETING = "configs/default.yaml", "configs/targeting.yaml"
# The warm start's main level (loop/models/tiny_model.py WARM_START): 2-digit add and sub.
# The controls' training data is capped near what the loop accepts a round (about 250 to 400
# chains), so they get the same training compute, not more.
CONTROL_CHAINS = "policies.acceptance.options.max_chains=300"
WARM_START_DATA = ["policies.acceptance.name=reference", CONTROL_CHAINS, "policies.targeting.name=uniform",
                   "policies.targeting.options={}",
                   "generators.0.categories.add.difficulty=2", "generators.0.categories.sub.difficulty=2"]


CURRICULUM_ROUNDS = 10
# The curriculum section here and benchmarks/verifier_efficacy.py's results were measured on the default of
# 2026-12-06: both categories at 5 digits, held out at 5 and 6, 192 problems each a round. The default since
# 2026-12-07 starts `add` at 4 digits on half the budget; these overrides keep those runs as they were measured.
FIVE_DIGIT_DEFAULT = ["generators.0.categories.add.difficulty=5", "generators.0.categories.add.heldout_difficulties=[5,6]",
                      "generators.0.categories.add.budget=192", "generators.0.categories.sub.budget=192"]


def plan(seeds: list[int], only: set[str], targeting_seeds: list[int] = (0, 1)) -> dict[str, tuple[str, list[str]]]:
    """label -> (config, overrides)."""
    runs: dict[str, tuple[str, list[str]]] = {}
    if "loop" in only:
        runs |= {f"loop-s{s}": (DEFAULT, [f"run.seed={s}"]) for s in seeds}
    if "controls" in only:
        runs["accept_all"] = (DEFAULT, ["policies.acceptance.name=accept_all", CONTROL_CHAINS])
        runs["warm_start_data"] = (DEFAULT, WARM_START_DATA)
    if "default_targeting" in only:  # the default (analyst targeting) vs the same config under uniform
        for s in targeting_seeds:
            runs[f"dt-analyst-s{s}"] = (DEFAULT, [f"run.seed={s}"])
            runs[f"dt-uniform-s{s}"] = (DEFAULT, ["policies.targeting.name=uniform", "policies.targeting.options={}",
                                                  f"run.seed={s}"])
    if "curriculum" in only:  # the default for CURRICULUM_ROUNDS rounds, held out at one more level than it starts
        for s in targeting_seeds:
            runs[f"curriculum-s{s}"] = (DEFAULT, [f"run.seed={s}", f"loop.rounds={CURRICULUM_ROUNDS}", *FIVE_DIGIT_DEFAULT,
                                                  *(f"generators.0.categories.{c}.heldout_difficulties=[5,6,7]"
                                                    for c in ("add", "sub"))])
    if "targeting" in only:
        for s in targeting_seeds:
            runs[f"targeting-targeted-s{s}"] = (TARGETING, [f"run.seed={s}"])
            runs[f"targeting-uniform-s{s}"] = (TARGETING, ["policies.targeting.name=uniform", f"run.seed={s}"])
    return runs


def existing(label: str, partial: bool) -> Path | None:
    """The newest completed run of `label` (or, with partial, the newest run with at least one round)."""
    cands = sorted((ROOT / "state" / "runs").glob(f"efficacy-{label}-*"))
    for d in reversed(cands):
        m = d / "manifest.json"
        if m.exists():
            man = json.loads(m.read_text())
            if man.get("status") == "completed" or (partial and man.get("rounds_completed", 0) > 0):
                return d
    return None


def execute(label: str, config: str, overrides: list[str], rounds: int | None, log: Path | None = None) -> Path:
    """One `launch.py run`; rounds=None keeps the config's own loop.rounds. With `log`, its output goes there
    (runs in parallel, --jobs)."""
    before = set((ROOT / "state" / "runs").glob(f"efficacy-{label}-*"))
    extra = [f"run.name=efficacy-{label}"] + ([f"loop.rounds={rounds}"] if rounds else [])
    sets = [x for o in [*overrides, *extra] for x in ("--set", o)]
    t0 = time.time()
    cmd = [sys.executable, "launch.py", "run", "-c", config, *sets]
    if log is None:
        subprocess.run(cmd, cwd=ROOT, check=True)
    else:
        with log.open("w") as f:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
        if rc:
            raise RuntimeError(f"{label}: launch.py run exited {rc}; its log: {log}")
    (new,) = set((ROOT / "state" / "runs").glob(f"efficacy-{label}-*")) - before
    (new / "efficacy_wall_s.txt").write_text(f"{time.time() - t0:.0f}\n")
    return new


def curve(run: Path) -> dict:
    """Held-out accuracy (overall, per category, per category@difficulty) at baseline and after each round."""
    base = json.loads((run / "baseline" / "metrics.json").read_text())
    points = [base]
    for rd in sorted(run.glob("round-*")):
        if (rd / "heldout" / "metrics.json").exists():
            points.append(json.loads((rd / "heldout" / "metrics.json").read_text()))
    wall = run / "efficacy_wall_s.txt"
    man = json.loads((run / "manifest.json").read_text())
    return {"run": run.name, "status": man.get("status"), "rounds_completed": man.get("rounds_completed", 0),
            "accuracy": [p["accuracy"] for p in points],
            "by_category": [p["by_category"] for p in points],
            "by_category_difficulty": [p.get("by_category_difficulty", {}) for p in points],
            "accepted": [json.loads((rd / "metrics.json").read_text())["accepted"]
                         for rd in sorted(run.glob("round-*")) if (rd / "metrics.json").exists()],
            # the problems each round drew per category@difficulty, and the decisions of each round's plan
            "drawn": [_drawn(rd) for rd in sorted(run.glob("round-*")) if (rd / "metrics.json").exists()],
            "decisions": [[f"{k.split('/')[-1]}: {a['action']}" for k, c in json.loads(
                (rd / "plan.json").read_text())["categories"].items() for a in c.get("actions", [])]
                for rd in sorted(run.glob("round-*")) if (rd / "plan.json").exists()],
            "wall_s": int(wall.read_text()) if wall.exists() else None}


def _drawn(rd: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (rd / "problems.jsonl").read_text().splitlines():
        p = json.loads(line)
        k = f"{p['family']}/{p['category']}@{p['difficulty']}"
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def _stats(xs: list[float]) -> dict:
    sd = statistics.stdev(xs) if len(xs) > 1 else None
    return {"mean": statistics.mean(xs), "std": sd, "se": sd / math.sqrt(len(xs)) if sd is not None else None}


def paired(curves: dict[str, dict], targeted: str, uniform: str, config: str, weakest: str | None) -> dict | None:
    """Targeted vs uniform, same seeds: the weakest category's held-out accuracy after the last round
    (`weakest` named in advance, else the lowest at the baseline), overall, and per difficulty."""
    seeds = sorted(int(k.rsplit("-s", 1)[1]) for k in curves if k.startswith(targeted + "-s")
                   and f"{uniform}-s{k.rsplit('-s', 1)[1]}" in curves)
    if not seeds:
        return None
    base = curves[f"{targeted}-s{seeds[0]}"]["by_category"][0]
    k = weakest or min(base, key=base.get)
    per = {}
    for s in seeds:
        t, u = curves[f"{targeted}-s{s}"], curves[f"{uniform}-s{s}"]
        n = min(len(t["accuracy"]), len(u["accuracy"]))  # partial runs (--partial) compare at the rounds both have
        t, u = ({**c, **{f: c[f][:n] for f in ("accuracy", "by_category", "by_category_difficulty")}} for c in (t, u))
        per[str(s)] = {"rounds_compared": n - 1,"baseline_weakest": t["by_category"][0][k], "targeted_weakest": t["by_category"][-1][k],
                       "uniform_weakest": u["by_category"][-1][k], "targeted_overall": t["accuracy"][-1],
                       "uniform_overall": u["accuracy"][-1],
                       "difference_weakest": t["by_category"][-1][k] - u["by_category"][-1][k],
                       "difference_overall": t["accuracy"][-1] - u["accuracy"][-1],
                       # secondary, less noisy than one final point: the weakest category's
                       # accuracy averaged over all rounds after the baseline
                       "difference_weakest_mean_over_rounds": statistics.mean(b[k] for b in t["by_category"][1:])
                       - statistics.mean(b[k] for b in u["by_category"][1:]),
                       "targeted_by_difficulty": t["by_category_difficulty"][-1],
                       "uniform_by_difficulty": u["by_category_difficulty"][-1]}
    d, o = _stats([p["difference_weakest"] for p in per.values()]), _stats([p["difference_overall"]
                                                                              for p in per.values()])
    levels = sorted({lv for p in per.values() for lv in p["targeted_by_difficulty"]})
    return {
        "config": config, "weakest_category": k, "weakest_named_in_advance": weakest is not None, "seeds": seeds,
        "targeted_weakest": statistics.mean(p["targeted_weakest"] for p in per.values()),
        "uniform_weakest": statistics.mean(p["uniform_weakest"] for p in per.values()),
        "difference_mean": d["mean"], "difference_std": d["std"], "difference_se": d["se"],
        "difference_mean_over_rounds": statistics.mean(p["difference_weakest_mean_over_rounds"] for p in per.values()),
        "rounds_compared": sorted({p["rounds_compared"] for p in per.values()}),
        "targeted_overall": statistics.mean(p["targeted_overall"] for p in per.values()),
        "uniform_overall": statistics.mean(p["uniform_overall"] for p in per.values()),
        "difference_overall_mean": o["mean"], "difference_overall_std": o["std"], "difference_overall_se": o["se"],
        "by_difficulty": {lv: {"targeted": statistics.mean(p["targeted_by_difficulty"].get(lv, 0) for p in per.values()),
                               "uniform": statistics.mean(p["uniform_by_difficulty"].get(lv, 0) for p in per.values())}
                          for lv in levels},
        "goal_met": bool(d["se"] is not None and d["mean"] >= 0.05 and d["mean"] - 2 * d["se"] > 0
                         and o["mean"] >= 0),
        "labels": {"targeted": targeted, "uniform": uniform}, "per_seed": per}


def curriculum(curves: dict[str, dict], labels: list[str], source: str) -> dict | None:
    """Held-out accuracy at the first difficulty the warm start solves 0 % of, per round (mean over runs)."""
    runs = [curves[x] for x in labels if x in curves]
    if not runs:
        return None
    base = runs[0]["by_category_difficulty"][0]
    zero = sorted(int(k.rsplit("@", 1)[1]) for k, v in base.items() if v == 0)
    if not zero:
        return None
    level = zero[0]
    keys = [k for k in base if k.endswith(f"@{level}")]
    per_run = [[statistics.mean(p.get(k, 0.0) for k in keys) for p in c["by_category_difficulty"]] for c in runs]
    n = min(len(r) for r in per_run)
    finals = [r[n - 1] for r in per_run]
    st = _stats(finals)
    return {"source": source, "runs": [c["run"] for c in runs], "difficulty": level, "categories": keys,
            "heldout_beyond_warm_start": st["mean"], "heldout_beyond_warm_start_std": st["std"],
            "heldout_beyond_warm_start_se": st["se"],
            "curve": [statistics.mean(r[i] for r in per_run) for i in range(n)],
            "per_run_curve": per_run, "rounds": n - 1}


def gain(c: dict) -> float:
    return c["accuracy"][-1] - c["accuracy"][0]


def summarize(curves: dict[str, dict], seeds: list[int], weakest: str | None = None) -> dict:
    out: dict = {"seeds": seeds, "curves": curves}
    done = [s for s in seeds if f"loop-s{s}" in curves]
    loop = [curves[f"loop-s{s}"] for s in done]
    if loop:
        gains = [gain(c) for c in loop]
        out["loop"] = {"gain_mean": statistics.mean(gains),
                       "gain_std": statistics.stdev(gains) if len(gains) > 1 else 0.0,
                       "per_seed": {str(s): {"baseline": c["accuracy"][0], "final": c["accuracy"][-1], "gain": gain(c)}
                                    for s, c in zip(done, loop)}}
    ctrl = {k: gain(curves[k]) for k in ("accept_all", "warm_start_data") if k in curves}
    if ctrl:
        out["controls"] = ctrl
    tight = paired(curves, "targeting-targeted", "targeting-uniform", TARGETING, None)
    if tight:
        out["targeting_tight_budget"] = tight
    dt = paired(curves, "dt-analyst", "dt-uniform", DEFAULT, weakest)
    if dt:
        out["targeting"] = dt
    cur = curriculum(curves, sorted(k for k in curves if k.startswith("curriculum-")),
                     "curriculum runs: the default with more rounds and held-out levels")
    if cur is None and dt:
        cur = curriculum(curves, [f"dt-analyst-s{s}" for s in dt["seeds"]],
                         f"the default's own runs (dt-analyst, {len(dt['seeds'])} seeds), not a longer run")
    if cur:
        out["curriculum"] = cur
    return out


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = summary["curves"]
    panels = [(summary[k], title) for k, title in (
        ("targeting_tight_budget", "configs/targeting.yaml: targeted vs uniform, same budget"),
        ("targeting", "default: analyst vs uniform, same budget")) if k in summary]
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(6.5 + 4.5 * len(panels), 4), squeeze=False)
    ax = axes[0][0]
    colors = {"accept_all": "tab:red", "warm_start_data": "tab:orange"}
    for label, c in curves.items():
        if not (label.startswith("loop") or label in colors):
            continue
        style = dict(color="tab:blue", alpha=0.8) if label.startswith("loop") else dict(ls="--", color=colors.get(label))
        ax.plot(range(len(c["accuracy"])), c["accuracy"], marker="o", label=label, **style)
    ax.set_xlabel("rounds done (0 = the warm start)")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("default config: loop (3 seeds) vs controls")
    ax.legend(fontsize=8)
    for i, (t, title) in enumerate(panels, start=1):
        ax = axes[0][i]
        k = t["weakest_category"]
        for s in t["seeds"]:
            for policy, color in (("targeted", "tab:green"), ("uniform", "tab:gray")):
                c = curves[f"{t['labels'][policy]}-s{s}"]
                ax.plot(range(len(c["accuracy"])), [b[k] for b in c["by_category"]], marker="o", color=color,
                        alpha=0.85, label=f"{policy}: {k.split('/')[-1]} (weakest)" if s == t["seeds"][0] else None)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("rounds done (0 = the warm start)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the loop and control runs (the targeting "
                                                              "runs use configs/targeting.yaml's own)")
    ap.add_argument("--targeting-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--only", nargs="+", choices=["loop", "controls", "targeting", "default_targeting", "curriculum"],
                    default=["loop", "controls", "targeting"])
    ap.add_argument("--labels", nargs="+", help="run only these labels (e.g. targeting-uniform); with --out, to run "
                                                "parts in parallel, then assemble them all with --reuse")
    ap.add_argument("--reuse", action="store_true", help="reuse the newest completed run of each label")
    ap.add_argument("--partial", action="store_true", help="with --reuse: also take runs that stopped early (their "
                                                           "curves are shorter; status and rounds_completed say so)")
    ap.add_argument("--assemble", action="store_true", help="run nothing: summarize the runs there are (--reuse "
                                                            "--partial), skipping labels without one")
    ap.add_argument("--weakest", default="arithmetic/sub", help="the category the default_targeting comparison "
                    "judges, named in advance (the one uniform leaves weakest: issue 22); '' = lowest at the baseline")
    ap.add_argument("--fresh", action="store_true", help="do not merge into the curves already in --out")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for every run (repeatable), e.g. a GPU's model.dtype=bfloat16")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (a machine with the cores or a GPU to share; "
                                                        "each run's output goes to state/efficacy-logs/LABEL.log)")
    ap.add_argument("--out", default=str(RESULTS / "efficacy.json"))
    args = ap.parse_args()
    out = Path(args.out)
    # Earlier sections are kept: their curves are stored in --out, and every section is recomputed from them.
    old = json.loads(out.read_text()) if out.exists() and not args.fresh else {}
    curves = dict(old.get("curves", {}))
    todo = {}
    for label, (config, overrides) in plan(args.seeds, set(args.only), args.targeting_seeds).items():
        if args.labels and label not in args.labels:
            continue
        run = existing(label, args.partial or args.assemble) if args.reuse or args.assemble else None
        if run is None and args.assemble:
            continue
        todo[label] = (run, config, [*args.sets, *overrides])

    def one(label: str) -> tuple[str, Path]:
        run, config, overrides = todo[label]
        if run is None:
            rounds = None if config == TARGETING or label.startswith("curriculum-") else args.rounds
            log = None
            if args.jobs > 1:
                (ROOT / "state" / "efficacy-logs").mkdir(parents=True, exist_ok=True)
                log = ROOT / "state" / "efficacy-logs" / f"{label}.log"
            run = execute(label, config, overrides, rounds, log)
        return label, run

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = []
        for i, label in enumerate(todo):
            futures.append(pool.submit(one, label))
            if args.jobs > 1 and i < args.jobs:
                time.sleep(5)  # staggered: local Ray clusters starting at the same instant race for ports
        for fut in futures:
            try:
                label, run = fut.result()
            except (RuntimeError, ValueError, subprocess.CalledProcessError) as e:  # the others are kept
                print(f"FAILED: {e}", flush=True)
                continue
            curves[label] = curve(run)
            print(f"{label}: {' -> '.join(f'{a:.3f}' for a in curves[label]['accuracy'])} ({run.name}, "
                  f"{curves[label]['status']})", flush=True)
    summary = summarize(curves, old.get("seeds", args.seeds) if "loop" not in args.only else args.seeds,
                        args.weakest or None)
    # Sections no curve here recomputes (results recorded by hand with their command, e.g. an earlier default's) stay.
    summary = {**{k: v for k, v in old.items() if k not in summary}, **summary}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    plot(summary, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in summary.items() if k != "curves"}, indent=1))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
