"""Does the learned verifier work? AUC, best-of-n selection and acceptance without gold answers, on the default.

    nice -n 5 python benchmarks/verifier_efficacy.py [--seeds 0 1 2] [--rounds 3] [--reuse | --collect]
                                                     [--only main answerless] [--answerless-seeds 0]

Runs, all through `launch.py run` on configs/default.yaml (the embedded tiny model, CPU), one at a time:

- main-s<seed>: the default with `learned_verifier.selection_n=8`. After each round the held-out problems
  are sampled 8 times; the learned verifier (trained from that round's verdicts and earlier rounds') scores
  every chain. From the last round: AUC of P(Yes) against the programmatic outcome on those held-out
  chains, and held-out accuracy of greedy, majority vote over the 8, verifier best-of-8 and verifier-
  weighted vote. This run is also the `gold` arm below (every category verified against gold answers).
- answerless-learned-s<seed>: the loop is not given the gold answers of arithmetic/sub on the training
  side (`learned_verifier.answerless`); its chains are accepted when P(Yes) clears a threshold chosen on
  arithmetic/add's labelled chains of the same round. The held-out check still uses gold answers.
- answerless-all-s<seed>: the same, accepting every arithmetic/sub chain (the control).

Gain = held-out accuracy of arithmetic/sub after the last round minus the baseline of the same run.
Writes benchmarks/results/verifier.json. `--reuse` takes the newest completed run of each label
(state/runs/verifier-<label>-*) instead of running it again.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

# verifier.json was measured on the 2026-12-06 default: the overrides that keep it so live in efficacy.py
from efficacy import FIVE_DIGIT_DEFAULT

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "verifier.json"
DEFAULT = "configs/default.yaml"
BLIND = "arithmetic/sub"
N = 8


def plan(seeds: list[int], answerless_seeds: list[int], only: set[str]) -> dict[str, list[str]]:
    """label -> overrides; per seed the main run, then its answerless arms (so a cut-short benchmark has pairs)."""
    runs: dict[str, list[str]] = {}
    for s in dict.fromkeys([*seeds, *answerless_seeds]):
        if "main" in only and s in seeds:
            runs[f"main-s{s}"] = [f"run.seed={s}", f"learned_verifier.selection_n={N}"]
        if "answerless" in only and s in answerless_seeds:
            for mode in ("learned", "all"):
                runs[f"answerless-{mode}-s{s}"] = [f"run.seed={s}", f"learned_verifier.answerless=[{BLIND}]",
                                                   f"learned_verifier.answerless_accept={mode}"]
    return runs


def configured_rounds(run: Path) -> int | None:
    """loop.rounds of a run, from the config.yaml it saved."""
    import yaml

    try:
        return int(yaml.safe_load((run / "config.yaml").read_text())["loop"]["rounds"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None


TAG = ""  # --tag: runs of a variant (--set) are named verifier-<tag>-<label>-<time>, kept apart from the default's


def existing(label: str, partial: bool = False, rounds: int | None = None) -> Path | None:
    """The newest completed run of `label` (with partial: the newest with at least one finished round); with
    `rounds`, only runs configured for that many rounds (2- and 5-round runs share their labels)."""
    for d in sorted((ROOT / "state" / "runs").glob(f"verifier-{TAG}{label}-*"), reverse=True):
        m = d / "manifest.json"
        if rounds is not None and configured_rounds(d) != rounds:
            continue
        if m.exists():
            man = json.loads(m.read_text())
            if man.get("status") == "completed" or (partial and man.get("rounds_completed", 0) > 0):
                return d
    return None


def execute(label: str, overrides: list[str], rounds: int) -> Path:
    name = f"verifier-{TAG}{label}"
    before = set((ROOT / "state" / "runs").glob(f"{name}-*"))
    sets = [x for o in [*FIVE_DIGIT_DEFAULT, *overrides, f"run.name={name}", f"loop.rounds={rounds}"]
            for x in ("--set", o)]
    t0 = time.time()
    subprocess.run([sys.executable, "launch.py", "run", "-c", DEFAULT, *sets], cwd=ROOT, check=True)
    (new,) = set((ROOT / "state" / "runs").glob(f"{name}-*")) - before
    (new / "wall_s.txt").write_text(f"{time.time() - t0:.0f}\n")
    return new


def _json(p: Path) -> dict:
    return json.loads(p.read_text())


def within_problem_auc(path: Path) -> float | None:
    """Mean AUC of P(Yes) within each problem whose sampled chains both pass and fail, from a round's
    heldout/selection_outcomes.jsonl (runs made before `selection` reported it)."""
    from collections import defaultdict

    from loop.verifier_data import auc

    by: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r.get("outcome") in ("pass", "fail") and r.get("p_yes") is not None:
            by[r["sample_id"].split(":")[0]].append((r["p_yes"], r["outcome"] == "pass"))
    per = [a for v in by.values() if (a := auc([x for x, _ in v], [y for _, y in v])) is not None]
    return sum(per) / len(per) if per else None


def summary(run: Path) -> dict:
    base = _json(run / "baseline" / "metrics.json")
    rounds = sorted(d for d in run.glob("round-*") if (d / "metrics.json").exists())
    last = _json(rounds[-1] / "metrics.json")
    held = _json(rounds[-1] / "heldout" / "metrics.json")
    sel = held.get("selection") or {}
    if sel and sel.get("within_problem_auc") is None and (rounds[-1] / "heldout" / "selection_outcomes.jsonl").exists():
        sel = {**sel, "within_problem_auc": within_problem_auc(rounds[-1] / "heldout" / "selection_outcomes.jsonl")}
    wall = run / "wall_s.txt"
    return {"run": run.name, "rounds": len(rounds), "status": _json(run / "manifest.json").get("status"),
            "heldout": [base["accuracy"]] + [_json(d / "heldout" / "metrics.json")["accuracy"] for d in rounds],
            "blind_heldout": [base["by_category"].get(BLIND)] + [
                _json(d / "heldout" / "metrics.json")["by_category"].get(BLIND) for d in rounds],
            "auc_heldout_n": (sel.get("agreement") or {}).get("auc"),
            "auc_heldout_greedy": (held.get("learned_verifier") or {}).get("auc"),
            "auc_train_side": ((last.get("verifier_health") or {}).get("learned") or {}).get("auc"),
            "selection": {k: sel.get(k) for k in ("n", "greedy", "majority", "verifier_best_of_n",
                                                  "verifier_weighted_vote", "pass_at_n", "within_problem_auc")}
            if sel else None,
            "verifier_train": [{k: (_json(d / "verifier.json").get("data") or {}).get(k) for k in
                                ("examples", "replayed")} | {"last_loss": _json(d / "verifier.json").get("last_loss")}
                               for d in rounds if (d / "verifier.json").exists()],
            "answerless": [_json(d / "answerless.json") | {"sample_ids": None} for d in rounds
                           if (d / "answerless.json").exists()],
            "wall_s": int(wall.read_text()) if wall.exists() else None}


def _stats(xs: list[float]) -> dict:
    xs = [x for x in xs if x is not None]
    return {"mean": statistics.mean(xs) if xs else None, "std": statistics.stdev(xs) if len(xs) > 1 else None,
            "n": len(xs)}


def gain(s: dict) -> float:
    return s["blind_heldout"][-1] - s["blind_heldout"][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--answerless-seeds", type=int, nargs="+", default=None, help="default: --seeds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--collect", action="store_true", help="launch nothing: summarise the newest runs of each label, "
                                                           "unfinished ones from their last finished round")
    ap.add_argument("--only", nargs="+", default=["main", "answerless"], choices=["main", "answerless"])
    ap.add_argument("--out", type=Path, default=OUT, help=f"results file (default {OUT.relative_to(ROOT)})")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every run (a variant of the default; use with --tag)")
    ap.add_argument("--tag", default="", help="name of the variant: its runs are verifier-<tag>-<label>-*")
    args = ap.parse_args()
    global TAG
    TAG = f"{args.tag}-" if args.tag else ""
    aseeds = args.answerless_seeds if args.answerless_seeds is not None else args.seeds
    runs = {k: [*v, *args.sets] for k, v in plan(args.seeds, aseeds, set(args.only)).items()}
    got: dict[str, dict] = {}
    for label, overrides in runs.items():
        run = existing(label, partial=args.collect, rounds=args.rounds) if args.reuse or args.collect else None
        if run is None and args.collect:
            print(f"== {label}: no run with a finished round; left out", flush=True)
            continue
        if run is None:
            print(f"== {label}: launch.py run {' '.join(overrides)}", flush=True)
            run = execute(label, overrides, args.rounds)
        got[label] = summary(run)
        write(got, args)


def write(got: dict[str, dict], args) -> None:
    main_runs = {k: v for k, v in got.items() if k.startswith("main-")}
    seeds = sorted(int(k.rsplit("-s", 1)[1]) for k in main_runs)
    aucs = {str(int(k.rsplit("-s", 1)[1])): v["auc_heldout_n"] for k, v in main_runs.items()}
    sel = [v["selection"] for v in main_runs.values() if v["selection"]]
    keys = ("greedy", "majority", "verifier_best_of_n", "verifier_weighted_vote", "pass_at_n")
    selection = {"n": N, **{k: _stats([s[k] for s in sel])["mean"] for k in keys},
                 "std": {k: _stats([s[k] for s in sel])["std"] for k in keys}, "seeds": len(sel)}
    within = [s["within_problem_auc"] for s in sel if s.get("within_problem_auc") is not None]
    selection["within_problem_auc"] = _stats(within) if within else None  # what best-of-n needs
    diffs = {"best_of_n_minus_majority": _stats([s["verifier_best_of_n"] - s["majority"] for s in sel]),
             "best_of_n_minus_greedy": _stats([s["verifier_best_of_n"] - s["greedy"] for s in sel])}
    arms: dict[str, list[float]] = {"gold": [], "learned": [], "all": []}
    for k, v in got.items():
        if k.startswith("main-") and any(x.startswith("answerless-") and x.endswith(k[4:]) for x in got):
            arms["gold"].append(gain(v))
        elif k.startswith("answerless-learned-"):
            arms["learned"].append(gain(v))
        elif k.startswith("answerless-all-"):
            arms["all"].append(gain(v))
    names = {"gold": "gold_gain", "learned": "learned_gain", "all": "accept_all_gain"}
    answerless = {"category": BLIND, **{names[a]: _stats(v)["mean"] for a, v in arms.items()},
                  "std": {names[a]: _stats(v)["std"] for a, v in arms.items()},
                  "per_seed": {names[a]: v for a, v in arms.items()},
                  "seeds": sorted({int(k.rsplit("-s", 1)[1]) for k in got if k.startswith("answerless-")})}
    out = {"seeds": seeds, "rounds_configured": args.rounds,
           "rounds_measured": {k: v["rounds"] for k, v in got.items()},
           "auc": {**_stats(list(aucs.values())), "per_seed": aucs},
           "selection": selection, "selection_differences": diffs, "answerless": answerless,
           "command": "python benchmarks/verifier_efficacy.py " + " ".join(sys.argv[1:]),
           "runs": got}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("seeds", "auc", "answerless")}, indent=1), flush=True)


if __name__ == "__main__":
    main()
