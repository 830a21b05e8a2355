"""Sandboxed code verification throughput, against the pre-trust-boundary verifier in the same run.

    python benchmarks/code_sandbox.py [--n 164] [--batch 16] [--cpus 2] [--repeats 2] [--no-ray]

All runs judge the same HumanEval canonical solutions (each must pass). Measured:

- old: the verifier as it was before the trust boundary (same-process harness, no pid/ipc
  namespaces, no minimal root, no cgroup), loaded from git at BASELINE_REV into a temp
  directory, with a thread pool of --cpus workers;
- new: today's `code_tests` (translated path where possible) with the same pool;
- new, test-process path only (`translate: false`, two sandboxes per program);
- new on Ray: ray.init(num_cpus=CPUS), the batch split into @ray.remote tasks, timed after
  one warm-up task per CPU.

Old and new alternate `--repeats` times so that load on the machine hits both alike; the
ratios are of the medians. CPU seconds per program (this process plus the sandboxes) are
reported too: unlike wall time they hardly depend on what else the machine is running.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generators.humaneval import load_problems  # noqa: E402
from loop.records import Sample  # noqa: E402
from verifiers.base import VERIFIERS  # noqa: E402

# The last commit before the trust boundary (verifiers/code.py and the sandbox as they were).
BASELINE_REV = "08b88b8382df02b303e18f1da0d4e1810b3963b4"
OLD_FILES = ("code.py", "sandbox.py", "sandbox_launch.py", "sandbox_procs.py")


def verify_batch(problems, samples, options):
    import verifiers  # noqa: F401  (registers code_tests in a fresh Ray worker)

    return VERIFIERS.build("code_tests", options).verify(problems, samples)


def old_verifier(tmp: str, options: dict):
    """The baseline CodeTests class, imported from BASELINE_REV under other module names."""
    for name in OLD_FILES:
        src = subprocess.run(["git", "show", f"{BASELINE_REV}:verifiers/{name}"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        src = (src.replace("from verifiers import sandbox\n", "import old_sandbox as sandbox\n")
               .replace("from verifiers.sandbox_procs import", "from old_sandbox_procs import")
               .replace('@VERIFIERS.register("code_tests")\n', ""))
        Path(tmp, name if name == "sandbox_launch.py" else f"old_{name}").write_text(src)
    sys.path.insert(0, tmp)
    import old_code  # noqa: E402

    old_code.CodeTests.name = "code_tests_old"
    return old_code.CodeTests(old_code.CodeTests.Options(**options))


def _cpu() -> float:
    """CPU seconds of this process and every child it has reaped (the sandboxes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(label, fn, n, cpu_here=True):
    t, c = time.perf_counter(), _cpu()
    verdicts = fn()
    dt, cpu = time.perf_counter() - t, _cpu() - c
    passed = sum(v.outcome == "pass" for v in verdicts)
    if passed != n:
        bad = [v.reason for v in verdicts if v.outcome != "pass"][:3]
        raise SystemExit(f"{label}: only {passed}/{n} reference solutions passed: {bad}")
    cpu_text = f"{1000 * cpu / n:5.1f} CPU ms/program" if cpu_here else "(CPU spent in Ray workers)"
    print(f"{label:<44} {n:4d} programs  {dt:6.2f} s  {n / dt:6.1f} programs/s  {cpu_text}", flush=True)
    return n / dt, cpu / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=164, help="HumanEval problems to judge")
    ap.add_argument("--batch", type=int, default=16, help="samples per Ray task")
    ap.add_argument("--cpus", type=int, default=2, help="thread-pool workers and ray.init(num_cpus=...)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating old/new measurements")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray measurement")
    args = ap.parse_args()

    problems = list(load_problems(None))[: args.n]
    samples = [Sample(id=f"{p.id}:bench:0", problem_id=p.id, round=0, index=0, text=p.reference.chain,
                      num_tokens=0, finish_reason="stop") for p in problems]
    options = {"timeout_s": 20, "workers": args.cpus}
    n = len(problems)
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load {load:.1f}, python {sys.version.split()[0]}, euid {os.geteuid()}")
    new = VERIFIERS.build("code_tests", options)
    iso = new.verify(problems[:1], samples[:1])[0].evidence["isolation"]
    print(f"isolation now: {iso}")

    with tempfile.TemporaryDirectory() as tmp:
        old = old_verifier(tmp, options)
        old.verify(problems[:1], samples[:1])
        olds, news = [], []
        for _ in range(args.repeats):
            olds.append(timed(f"old: same-process harness (workers={args.cpus})",
                              lambda: old.verify(problems, samples), n))
            news.append(timed(f"new: trust boundary (workers={args.cpus})", lambda: new.verify(problems, samples), n))
    paths = [v.evidence["path"] for v in new.verify(problems, samples)]
    print(f"new: {paths.count('translated')} translated, {paths.count('test_process')} in a test process")
    test_process = VERIFIERS.build("code_tests", {**options, "translate": False})
    timed(f"new: test-process path only (workers={args.cpus})", lambda: test_process.verify(problems, samples), n)
    old_m, new_m = statistics.median(r for r, _ in olds), statistics.median(r for r, _ in news)
    old_c, new_c = statistics.median(c for _, c in olds), statistics.median(c for _, c in news)
    print(f"new / old throughput (median of {args.repeats}): {new_m / old_m:.2f}x  ({new_m:.1f} vs {old_m:.1f} programs/s)")
    print(f"new / old CPU per program: {new_c / old_c:.2f}x  ({1000 * new_c:.1f} vs {1000 * old_c:.1f} ms); "
          f"on {args.cpus} idle cores that is about {args.cpus / new_c:.0f} vs {args.cpus / old_c:.0f} programs/s")

    if args.no_ray:
        return
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        task = ray.remote(num_cpus=1)(verify_batch)
        seq = {**options, "workers": 1}
        ray.get([task.remote(problems[:1], samples[:1], seq) for _ in range(args.cpus)])  # warm-up

        def on_ray():
            refs = [task.remote(problems[i:i + args.batch], samples[i:i + args.batch], seq)
                    for i in range(0, n, args.batch)]
            return [v for batch in ray.get(refs) for v in batch]

        timed(f"new on ray ({args.cpus} CPUs, batches of {args.batch})", on_ray, n, cpu_here=False)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
