"""Sandboxed code verification throughput: sequential vs a thread pool vs Ray tasks.

    python benchmarks/code_sandbox.py [--n 164] [--batch 16] [--cpus 2]

All runs judge the same HumanEval canonical solutions (each must pass). The Ray run
uses ray.init(num_cpus=CPUS), splits the batch into @ray.remote tasks that build the
verifier and call it, and is timed after one warm-up task per CPU (worker start-up is
a one-off cost of the run, not of verification).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generators.humaneval import load_problems  # noqa: E402
from loop.records import Sample  # noqa: E402
from verifiers.base import VERIFIERS  # noqa: E402


def verify_batch(problems, samples, options):
    import verifiers  # noqa: F401  (registers code_tests in a fresh Ray worker)

    return VERIFIERS.build("code_tests", options).verify(problems, samples)


def timed(label, fn, n):
    t = time.perf_counter()
    verdicts = fn()
    dt = time.perf_counter() - t
    passed = sum(v.outcome == "pass" for v in verdicts)
    if passed != n:
        bad = [v.reason for v in verdicts if v.outcome != "pass"][:3]
        raise SystemExit(f"{label}: only {passed}/{n} reference solutions passed: {bad}")
    print(f"{label:<34} {n:4d} programs  {dt:6.2f} s  {n / dt:6.1f} programs/s")
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=164, help="HumanEval problems to judge")
    ap.add_argument("--batch", type=int, default=16, help="samples per Ray task")
    ap.add_argument("--cpus", type=int, default=2, help="ray.init(num_cpus=...)")
    args = ap.parse_args()

    problems = list(load_problems(None))[: args.n]
    samples = [Sample(id=f"{p.id}:bench:0", problem_id=p.id, round=0, index=0, text=p.reference.chain,
                      num_tokens=0, finish_reason="stop") for p in problems]
    options = {"timeout_s": 10}
    n = len(problems)
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, euid {os.geteuid()}")

    seq = timed("sequential (in-process)", lambda: verify_batch(problems, samples, options), n)
    timed(f"thread pool (workers={args.cpus})",
          lambda: verify_batch(problems, samples, {**options, "workers": args.cpus}), n)

    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        task = ray.remote(num_cpus=1)(verify_batch)
        ray.get([task.remote(problems[:1], samples[:1], options) for _ in range(args.cpus)])  # warm-up

        def on_ray():
            refs = [task.remote(problems[i:i + args.batch], samples[i:i + args.batch], options)
                    for i in range(0, n, args.batch)]
            return [v for batch in ray.get(refs) for v in batch]

        par = timed(f"ray ({args.cpus} CPUs, batches of {args.batch})", on_ray, n)
    finally:
        ray.shutdown()
    print(f"ray / sequential: {par / seq:.2f}x")


if __name__ == "__main__":
    main()
