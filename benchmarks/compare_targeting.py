"""Does targeting help? Runs the same config under several targeting policies with the
same total budget and seed, then prints held-out accuracy per category after each round.

    python benchmarks/compare_targeting.py [-c configs/default.yaml] [--policies uniform analyst]
                                           [--set loop.rounds=3 ...]

Each policy gets its own run directory under state/runs/ (name compare-<policy>), so the
runs stay inspectable with `launch.py report`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--config", default="configs/default.yaml")
    ap.add_argument("--policies", nargs="+", default=["uniform", "analyst"])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from loop.config import load_config

    cfg = load_config(ROOT / args.config, args.overrides)
    runs: dict[str, Path] = {}
    for pol in args.policies:
        sets = [x for o in args.overrides for x in ("--set", o)]
        name = f"compare-{pol}"
        before = set((ROOT / cfg.run.state_dir / "runs").glob(f"{name}-*"))
        subprocess.run([sys.executable, "launch.py", "run", "-c", args.config, *sets, "--set", f"run.name={name}",
                        "--set", f"policies.targeting.name={pol}", "--set", f"loop.total_budget={cfg.total_budget()}"],
                       cwd=ROOT, check=True)
        (runs[pol],) = set((ROOT / cfg.run.state_dir / "runs").glob(f"{name}-*")) - before
    cats = cfg.category_keys()
    print(f"\nheld-out accuracy per category (same seed {cfg.run.seed}, total budget {cfg.total_budget()} problems "
          f"x n={cfg.sampling.n} per round)")
    print(f"{'policy':<16}{'round':<7}" + "".join(f"{c.split('/')[-1]:>10}" for c in cats) + f"{'overall':>10}")
    for pol, d in runs.items():
        base = json.loads((d / "baseline" / "metrics.json").read_text())
        rows = [("base", base["by_category"], base["accuracy"])]
        for rd in sorted(d.glob("round-*")):
            if (rd / "metrics.json").exists():
                m = json.loads((rd / "metrics.json").read_text())
                rows.append((rd.name[-1], m["heldout"]["by_category"], m["heldout"]["accuracy"]))
        for r, by, acc in rows:
            print(f"{pol:<16}{r:<7}" + "".join(f"{by.get(c, float('nan')):>10.3f}" for c in cats) + f"{acc:>10.3f}")
        budgets = [json.loads((rd / "metrics.json").read_text())["budget"] for rd in sorted(d.glob("round-*"))
                   if (rd / "metrics.json").exists()]
        print(f"{'':<16}budgets: " + "; ".join(", ".join(f"{k.split('/')[-1]} {v}" for k, v in b.items())
                                               for b in budgets))


if __name__ == "__main__":
    main()
