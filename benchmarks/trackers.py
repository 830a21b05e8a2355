"""What the experiment trackers (`run.report_to`) cost a round, on this machine.

    python benchmarks/trackers.py [--pairs 2] [--set KEY=VALUE ...]

Runs the loop's real first round (`launch.py run --set loop.rounds=1` on configs/default.yaml, the learned
verifier off so the round is the policy's own stages) several times, alternating trackers off and on
(`run.report_to=[tensorboard]`, and `[tensorboard, wandb]` with WANDB_MODE=offline when wandb is installed),
and compares per pair: the round's stage seconds (manifest `seconds`, round-0/*), its train stage (where TRL's
TensorBoard callback writes every step) and the whole process's wall time (trackers start and the per-round
sync happen outside the stages). Ratios are on / off of the same pair; the median over the pairs is reported.
Then the trainer alone (TrainerWorker.train, 256 chains) with and without TensorBoard, alternating.
Writes benchmarks/results/trackers.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BASE = ["--set", "loop.rounds=1", "--set", "learned_verifier.enabled=false"]


def one_run(state: Path, report_to: list[str], extra: list[str]) -> dict:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(state), "WANDB_SILENT": "true"}
    args = [sys.executable, "launch.py", "run", *BASE, *extra, "--set", f"run.state_dir={state}",
            "--set", f"run.report_to=[{', '.join(report_to)}]"]
    t0 = time.time()
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=3600)
    wall = time.time() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    (run,) = (state / "runs").iterdir()
    secs = json.loads((run / "manifest.json").read_text())["seconds"]
    rnd = {k.split("/", 1)[1]: v for k, v in secs.items() if k.startswith("round-0/")}
    return {"report_to": report_to, "wall_s": round(wall, 1), "round_s": round(sum(rnd.values()), 1),
            "train_s": rnd.get("train"), "steps": json.loads((run / "round-000" / "train.json").read_text())["steps"],
            "console_lines": len((p.stdout + p.stderr).splitlines())}


def trainer_only(pairs: int) -> dict:
    from benchmarks.sampler_lora_mode import problems
    from loop.cluster.trainer import TrainerWorker
    from loop.config import TINY_MODEL, LoraCfg, QuantCfg, TrainingCfg

    examples = [{"prompt": [m.model_dump() for m in p.prompt],
                 "completion": [{"role": "assistant", "content": p.reference.chain}]} for p in problems(256)]
    tr = TrainingCfg(epochs=1, batch_size=16, learning_rate=4e-3, max_seq_len=256, gradient_checkpointing=False)
    w = TrainerWorker(str(TINY_MODEL), QuantCfg().model_dump(), LoraCfg().model_dump(), tr.model_dump())
    out: dict[str, list[float]] = {"off": [], "tensorboard": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(pairs):
            for mode in ("off", "tensorboard"):
                tb = os.path.join(tmp, f"tb-{i}") if mode == "tensorboard" else None
                if tb:
                    os.makedirs(tb)
                m = w.train(examples, os.path.join(tmp, f"a-{mode}-{i}"), None, seed=0, tb_dir=tb)
                out[mode].append(m["train_seconds"])
    ratios = [b / a for a, b in zip(out["off"], out["tensorboard"])]
    return {"train_seconds": out, "steps": m["steps"], "ratio_tensorboard_over_off": [round(r, 3) for r in ratios],
            "median_ratio": round(statistics.median(ratios), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--skip-rounds", action="store_true", help="only the trainer-alone comparison")
    a = ap.parse_args()
    extra = [x for kv in a.extra for x in ("--set", kv)]
    try:
        import wandb  # noqa: F401
        on = [["tensorboard"], ["tensorboard", "wandb"]]
    except ImportError:
        on = [["tensorboard"]]
    runs = []
    if not a.skip_rounds:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(a.pairs):
                for j, report_to in enumerate([[]] + on):
                    r = one_run(Path(tmp) / f"{i}-{j}", report_to, extra)
                    runs.append({"pair": i, **r})
                    print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for report_to in on:
        name = "+".join(report_to)
        for key in ("round_s", "train_s", "wall_s"):
            rs = [next(r for r in runs if r["pair"] == i and r["report_to"] == report_to)[key]
                  / next(r for r in runs if r["pair"] == i and r["report_to"] == [])[key] for i in range(a.pairs)
                  if runs]
            if rs:
                summary[f"{name}/{key}"] = {"ratios": [round(x, 3) for x in rs], "median": round(statistics.median(rs), 3)}
    trainer = trainer_only(a.pairs)
    print(json.dumps(trainer), flush=True)
    out = {"what": "trackers on / off: the default config's round 0 (learned verifier off) and the trainer alone",
           "command": "python benchmarks/trackers.py " + " ".join(sys.argv[1:]), "machine": platform.node(),
           "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "runs": runs, "ratios": summary,
           "trainer_alone": trainer}
    path = ROOT / "benchmarks" / "results" / "trackers.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
