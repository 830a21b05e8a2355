"""The RL prompt pool of an export: train-split problems whose pass rate under the exported
adapter is strictly between 0 and 1 (the ones a GRPO-style group has signal on), each with
that pass rate, plus a validation split of held-out problems.

Pass rates come from one of two sources, and the bundle says which:
  samples   the loop's own samples of rounds that sampled with this adapter (free, but only
            for the problems of those rounds);
  measured  every train problem sampled again now, with the run's sampler (vLLM) and
            verifiers, `n` completions each at the run's sampling temperature.
A sample whose required verifiers broke (`error`) or all abstained counts neither way.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from loop.config import Config
from loop.export.choice import ExportError, resolve_in_run
from loop.records import Problem, Sample, Verdict, split_of
from loop.run.state import RunDir, read_jsonl
from loop.taxonomy import combine

log = logging.getLogger("loop")


@dataclass
class PassRates:
    source: str                           # "samples" | "measured"
    detail: str                           # which rounds / how many completions, temperature
    counts: dict[str, Counter]            # problem id -> Counter(pass=, fail=, error=, abstain=)

    def rate(self, pid: str) -> float | None:
        c = self.counts[pid]
        judged = c["pass"] + c["fail"]
        return c["pass"] / judged if judged else None


def train_problems(run: RunDir, cfg: Config) -> dict[str, Problem]:
    """Every round's train problems, once each; anything on the held-out side is dropped."""
    heldout = {p.id for p in heldout_problems(run)}
    out: dict[str, Problem] = {}
    for rd in sorted(run.path.glob("round-[0-9]*")):
        if (rd / "problems.jsonl").exists():
            for p in read_jsonl(rd / "problems.jsonl", Problem):
                if p.id in heldout or split_of(p.id, cfg.heldout.fraction) != "train":
                    log.warning("export: problem %s of %s is on the held-out side; left out of the RL pool",
                                p.id, rd.name)
                    continue
                out.setdefault(p.id, p)
    return out


def heldout_problems(run: RunDir) -> list[Problem]:
    path = run.path / "eval" / "problems.jsonl"
    return read_jsonl(path, Problem) if path.exists() else []


def _tally(cfg: Config, samples: list[Sample], verdicts: list[Verdict]) -> dict[str, Counter]:
    required = {v.name for v in cfg.verifiers if v.required}
    by_sample: dict[str, list[Verdict]] = {s.id: [] for s in samples}
    for v in verdicts:
        if v.sample_id in by_sample:
            by_sample[v.sample_id].append(v)
    counts: dict[str, Counter] = {}
    for s in samples:
        counts.setdefault(s.problem_id, Counter())[combine(by_sample[s.id], required)] += 1
    return counts


def rates_from_samples(run: RunDir, cfg: Config, adapter: Path, problems: dict[str, Problem]) -> PassRates | None:
    """Pass rates from the rounds that sampled with `adapter` (not the STaR-hinted resamples)."""
    target = adapter.resolve()
    samples, verdicts, rounds = [], [], []
    for rd in sorted(run.path.glob("round-[0-9]*")):
        if not ((rd / "samples.jsonl").exists() and (rd / "verdicts.jsonl").exists()):
            continue
        mine = [s for s in read_jsonl(rd / "samples.jsonl", Sample)
                if s.adapter and not s.hinted and s.problem_id in problems
                and resolve_in_run(run, s.adapter).resolve() == target]
        if mine:
            rounds.append(rd.name)
            samples += mine
            verdicts += read_jsonl(rd / "verdicts.jsonl", Verdict)
    if not samples:
        return None
    counts = _tally(cfg, samples, verdicts)
    per = Counter(s.problem_id for s in samples)
    detail = (f"the loop's own samples of {', '.join(rounds)} ({len(counts)} of {len(problems)} train problems, "
              f"{_span(per.values())} completions each at temperature {cfg.sampling.temperature}); "
              f"train problems of other rounds were not sampled by this adapter and are not in the pool")
    return PassRates("samples", detail, counts)


def _span(xs) -> str:
    lo, hi = min(xs), max(xs)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def measure_rates(cfg: Config, adapter: Path, problems: dict[str, Problem], n: int) -> PassRates:
    """Sample every problem `n` times with the adapter through the run's sampler and verifiers."""
    from loop.cluster.driver import Cluster
    from loop.steps import _seed, to_samples

    plist = list(problems.values())
    s = cfg.sampling
    cluster = Cluster(cfg)
    try:
        outs = cluster.generate([[m.model_dump() for m in p.prompt] for p in plist], n=n, temperature=s.temperature,
                                max_tokens=s.max_tokens, seed=_seed(cfg.run.seed, "export"),
                                adapter=(f"export/{adapter.parent.name}", str(adapter)), desc="export pass rates")
        samples = to_samples(plist, outs, -1, str(adapter))
        by_sample = cluster.verify(problems, samples)
    finally:
        cluster.shutdown()
    verdicts = [v for vs in by_sample.values() for v in vs]
    detail = (f"measured at export: {n} completions per train problem ({len(plist)} problems) with vLLM, "
              f"temperature {s.temperature}, top_p {s.top_p}, at most {s.max_tokens} new tokens, judged by the "
              f"run's verifiers")
    return PassRates("measured", detail, _tally(cfg, samples, verdicts))


def pass_rates(run: RunDir, cfg: Config, adapter: Path, problems: dict[str, Problem],
               how: Literal["auto", "measure", "samples"], n: int | None) -> PassRates:
    if how in ("auto", "samples"):
        got = rates_from_samples(run, cfg, adapter, problems)
        if got is not None:
            return got
        if how == "samples":
            raise ExportError(
                f"--pass-rates samples: no round of run {run.path.name} sampled with the adapter {adapter} (the "
                f"adapter of the last round never samples); use --pass-rates measure to sample the train problems "
                f"with it now")
        log.info("export: no round sampled with %s; measuring pass rates with the sampler", adapter)
    return measure_rates(cfg, adapter, problems, n or cfg.sampling.n)


def pool_rows(problems: dict[str, Problem], rates: PassRates) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows of the RL pool (0 < pass rate < 1) and a tally of why the others were left out."""
    rows, why = [], Counter()
    for pid, p in problems.items():
        if pid not in rates.counts:
            why["not sampled by this adapter"] += 1
            continue
        r = rates.rate(pid)
        if r is None:
            why["no judged sample (verifier error or abstain)"] += 1
        elif r == 0.0:
            why["pass rate 0 (never solved)"] += 1
        elif r == 1.0:
            why["pass rate 1 (always solved)"] += 1
        else:
            c = rates.counts[pid]
            rows.append(problem_row(p, "train", pass_rate=r, passed=c["pass"], judged=c["pass"] + c["fail"]))
    return rows, dict(why)


def problem_row(p: Problem, split: str, pass_rate: float | None = None, passed: int | None = None,
                judged: int | None = None) -> dict[str, Any]:
    """One dataset row: flat, same-typed columns so `datasets` loads any family; the whole
    problem rides along as JSON for the reward functions."""
    return {"problem_id": p.id, "prompt": [m.model_dump() for m in p.prompt], "answer": p.reference.answer,
            "family": p.family, "category": p.category, "difficulty": p.difficulty, "split": split,
            "pass_rate": pass_rate, "pass_count": passed, "judged": judged, "problem": p.model_dump_json()}
