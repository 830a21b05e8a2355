"""Sandboxed code verification throughput, against the verifier of BASELINE_REV in the same run.

    python benchmarks/code_sandbox.py [--n 164] [--batch 16] [--cpus 2] [--repeats 2] [--no-ray]

All runs judge the same HumanEval canonical solutions (each must pass). Measured:

- old: the verifier as it was at BASELINE_REV (e612acf, before issue 20's round three: no prompt
  helpers on the tests' side, no check budget, the whole of /usr visible), loaded from git into a
  temp directory as the package `old_verifiers`, with a thread pool of --cpus workers;
- new: the working tree's `code_tests` (translated path where possible) with the same pool;
- new, test-process path only (`translate: false`, two sandboxes per program);
- new on Ray: ray.init(num_cpus=CPUS), the batch split into @ray.remote tasks, timed after
  one warm-up task per CPU;
- the hard cap on the verifier's own CPU per sample: the thread CPU the trusted check spends on
  the most expensive answers we know (issue 20, item 6), against code_cases.CHECK_CPU_S.

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

# The last commit before issue 20's round three (verifiers/code.py, code_cases.py and verifiers/sandbox/).
BASELINE_REV = "e612acf"
OLD_FILES = ("verifiers/code.py", "verifiers/code_cases.py", "verifiers/sandbox")


def verify_batch(problems, samples, options):
    import verifiers  # noqa: F401  (registers code_tests in a fresh Ray worker)

    return VERIFIERS.build("code_tests", options).verify(problems, samples)


def old_verifier(tmp: str, options: dict):
    """The baseline CodeTests class, imported from BASELINE_REV as the package `old_verifiers`
    (verifiers.base, the registry, stays today's; the old class is not registered)."""
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", BASELINE_REV, *OLD_FILES], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split()
    for name in files:
        src = subprocess.run(["git", "show", f"{BASELINE_REV}:{name}"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        src = (src.replace("from verifiers import code_cases", "from old_verifiers import code_cases")
               .replace("from verifiers.code_cases", "from old_verifiers.code_cases")
               .replace("from verifiers.sandbox", "from old_verifiers.sandbox")
               .replace('@VERIFIERS.register("code_tests")\n', ""))
        dest = Path(tmp, "old_" + name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(src)
    Path(tmp, "old_verifiers", "__init__.py").write_text("")
    sys.path.insert(0, tmp)
    from old_verifiers import code as old_code  # noqa: E402

    old_code.CodeTests.name = "code_tests_old"
    return old_code.CodeTests(old_code.CodeTests.Options(**options))


EXPENSIVE = [  # (tests, program): answers that make the trusted check expensive (issue 20, item 6)
    ("r = f(1)\nassert all(r.count(x) == 1 for x in r)\n", "def f(x):\n    return list(range(400000))\n"),
    ("assert len(str([f(1)] * 1000)) > 0\n", "def f(x):\n    return list(range(100000))\n"),
    ("assert f(1) // f(2) >= 0\n", "def f(x):\n    return 7 ** (600000 // x)\n"),
    ("r = f(1)\nassert sorted(r) == sorted(r, reverse=True)[::-1] == [x for x in r if x in r]\n",
     "def f(x):\n    return list(range(60000))\n"),
]


def check_cap() -> None:
    """The verifier's own CPU (this thread) per expensive sample, and the cap it must stay under."""
    from verifiers import code_cases
    from verifiers.code import CANDIDATE_HARNESS, WIRE_SRC, Channel, plan_for
    from verifiers.sandbox import runner as sandbox

    worst = 0.0
    for tests, program in EXPENSIVE:
        plan, requests, _ = plan_for(tests, None)
        r = sandbox.run(CANDIDATE_HARNESS, files={"wire.py": WIRE_SRC, "solution.py": program}, stdin=requests,
                        channel=True, limits=sandbox.SandboxLimits(timeout_s=30))
        t = time.thread_time()
        failure = plan.check(Channel(r.channel, plan.calls).outcomes)
        spent = time.thread_time() - t
        worst = max(worst, spent)
        print(f"  check of {tests.splitlines()[-1][:60]!r}: {spent:.2f} s CPU -> "
              f"{failure.exception if failure else 'no failure'}")
    print(f"verifier CPU per sample in the trusted check: worst {worst:.2f} s; cap CHECK_CPU_S "
          f"{code_cases.CHECK_CPU_S:g} s + one bounded operation (<= {code_cases.MAX_UNITS:,} element visits)")


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
    ap.add_argument("--no-cap", action="store_true", help="skip the check-budget measurement")
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
            olds.append(timed(f"old: {BASELINE_REV} (workers={args.cpus})",
                              lambda: old.verify(problems, samples), n))
            news.append(timed(f"new: working tree (workers={args.cpus})", lambda: new.verify(problems, samples), n))
    paths = [v.evidence["path"] for v in new.verify(problems, samples)]
    print(f"new: {paths.count('translated')} translated, {paths.count('test_process')} in a test process")
    test_process = VERIFIERS.build("code_tests", {**options, "translate": False})
    timed(f"new: test-process path only (workers={args.cpus})", lambda: test_process.verify(problems, samples), n)
    old_m, new_m = statistics.median(r for r, _ in olds), statistics.median(r for r, _ in news)
    old_c, new_c = statistics.median(c for _, c in olds), statistics.median(c for _, c in news)
    print(f"new / old throughput (median of {args.repeats}): {new_m / old_m:.2f}x  ({new_m:.1f} vs {old_m:.1f} programs/s)")
    print(f"new / old CPU per program: {new_c / old_c:.2f}x  ({1000 * new_c:.1f} vs {1000 * old_c:.1f} ms); "
          f"on {args.cpus} idle cores that is about {args.cpus / new_c:.0f} vs {args.cpus / old_c:.0f} programs/s")
    if not args.no_cap:
        check_cap()

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
