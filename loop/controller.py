"""The round controller: plain sequential code that reads as the loop.

    freeze held-out -> baseline eval -> for each round:
        problems -> sample -> verify -> analyze -> accept -> train -> evaluate -> plan

Every stage goes through `RunDir.stage`, so each runs once; `resume` replays the
manifest and continues at the first stage not done.
"""
from __future__ import annotations

import logging
from pathlib import Path

from loop import steps, verifier_data
from loop.analysis import analyze, classify, format_round_table, refine_with_judge, verifier_health
from loop.cluster.driver import Cluster
from loop.config import Config
from loop.records import ErrorRecord, Plan, Problem, RoundAnalysis, Row, Sample, Verdict
from loop.run.state import RunDir, RunStateError, read_json, read_jsonl, write_json, write_jsonl
from policies.base import POLICIES
from verifiers.learned import NO, YES

log = logging.getLogger("loop")


class Controller:
    def __init__(self, cfg: Config, run: RunDir, cluster: Cluster, trackers=None):
        self.cfg, self.run, self.cluster = cfg, run, cluster
        self.trackers = trackers  # run.report_to (loop/run/trackers.py): sent each finished round
        cluster.attach(run)  # placements and faults go into the run's manifest
        p = cfg.policies
        self.acceptance = POLICIES.build(p.acceptance.name, p.acceptance.options)
        self.targeting = POLICIES.build(p.targeting.name, p.targeting.options)
        self.stopping = POLICIES.build(p.stopping.name, p.stopping.options)
        self.required = {v.name for v in cfg.verifiers if v.required}
        self.verifier_m: dict = {}  # the learned verifier's training metrics of the round being run
        if cfg.learned_verifier.enabled:
            self.use_verifier(None)

    # ---- the loop ------------------------------------------------------------------
    def run_all(self) -> None:
        heldout = self.freeze_heldout()
        history = [self.evaluate("baseline", heldout, adapter=None, out=self.run.path / "baseline")["accuracy"]]
        plan, adapter, prev, problems = steps.initial_plan(self.cfg), None, None, []
        for r in range(self.cfg.loop.rounds):
            rd = self.run.round_dir(r)
            last = problems  # last round's problems: the plan may ask for variants of its failures
            problems = self.stage(r, "problems", lambda: verifier_data.withhold_answers(
                steps.make_problems(self.cfg, plan, r, last), self.cfg.learned_verifier.answerless),
                rd / "problems.jsonl", Problem)
            by_id = {p.id: p for p in problems} | {p.id: p for p in heldout}
            samples = self.stage(r, "sample", lambda: self.sample(problems, r, adapter), rd / "samples.jsonl", Sample)
            verdicts = self.stage(r, "verify", lambda: self.verify(by_id, samples), rd / "verdicts.jsonl", Verdict)
            rows = self.rows(by_id, samples, verdicts)
            errors = self.stage(r, "analyze", lambda: self.analyze_errors(rows), rd / "errors.jsonl", ErrorRecord)
            rows = self.with_errors(rows, errors)
            accepted = self.stage(r, "accept", lambda: self.accept(rows) + self.accept_answerless(r, rows),
                                  rd / "accepted.jsonl", Sample)
            if self.cfg.learned_verifier.enabled:
                self.verifier_m = self.run.stage(
                    f"round-{r}/verifier", lambda: self.train_verifier(r, rows),
                    lambda m: write_json(rd / "verifier.json", m), lambda: self.load_verifier(r))
                self.use_verifier(self.verifier_m.get("adapter"))
            train_metrics = self.run.stage(
                f"round-{r}/train", lambda: self.train(r, accepted, by_id, adapter),
                lambda m: write_json(rd / "train.json", m), lambda: read_json(rd / "train.json"))
            adapter = train_metrics["adapter"]
            heldout_m = self.evaluate(f"round-{r}/evaluate", heldout, adapter, rd / "heldout")
            history.append(heldout_m["accuracy"])
            analysis = analyze(r, rows, heldout_m["by_category"], heldout_m["accuracy"])
            plan = self.run.stage(
                f"round-{r}/plan", lambda: self.targeting.plan(analysis, plan, self.cfg.total_budget(),
                                                               steps.difficulty_ranges(self.cfg)),
                lambda p: write_json(rd / "plan.json", p), lambda: Plan.model_validate(read_json(rd / "plan.json")))
            self.finish_round(r, rows, analysis, prev, samples, accepted, train_metrics, heldout_m, plan)
            prev = analysis
            stop, why = self.stopping.should_stop(history)
            if stop and r + 1 < self.cfg.loop.rounds:
                log.info("stopping after round %d: %s", r, why)
                self.run.manifest["stopped_early"] = why
                break
        self.run.set_status("completed", final_adapter=adapter)

    # ---- stages ------------------------------------------------------------------------
    def stage(self, r: int, name: str, compute, path: Path, model):
        return self.run.stage(f"round-{r}/{name}", compute, lambda recs: write_jsonl(path, recs),
                              lambda: read_jsonl(path, model), on_skip=lambda k: log.info("resume: %s already done", k))

    def freeze_heldout(self) -> list[Problem]:
        path = self.run.path / "eval" / "problems.jsonl"
        return self.run.stage("setup/heldout", lambda: steps.freeze_heldout(self.cfg),
                              lambda ps: write_jsonl(path, ps), lambda: read_jsonl(path, Problem))

    def sample(self, problems: list[Problem], r: int, adapter: str | None) -> list[Sample]:
        plan = self.current_plan(r)
        samples = self.draw(problems, r, adapter, self.cfg.sampling.n, "sample", f"round {r} sample")
        hinted = steps.rationalized(self.cfg, plan, problems)
        if hinted:
            ids = {p.id for p in hinted}
            samples += self.rationalize(hinted, [x for x in samples if x.problem_id in ids], r, adapter)
        return samples

    def draw(self, problems: list[Problem], r: int, adapter: str | None, n: int, tag: str,
             desc: str) -> list[Sample]:
        """n chains of each problem, one generate call per token budget (the plan may give a category a larger one)."""
        s, plan = self.cfg.sampling, self.current_plan(r)
        samples: list[Sample] = []
        for max_tokens, group in steps.token_groups(problems, plan, s.max_tokens, self.cfg.model.max_model_len).items():
            seed = steps._seed(self.cfg.run.seed, tag, r, *([max_tokens] if max_tokens != s.max_tokens else []))
            outs = self.cluster.generate([[m.model_dump() for m in p.prompt] for p in group], n=n,
                                         temperature=s.temperature, max_tokens=max_tokens, seed=seed,
                                         adapter=self.adapter_ref(adapter), desc=desc)
            samples += steps.to_samples(group, outs, r, adapter)
        return samples

    def rationalize(self, problems: list[Problem], samples: list[Sample], r: int, adapter: str | None) -> list[Sample]:
        """STaR: problems with no passing chain are sampled again with the gold answer as a
        hint. Acceptance later keeps only correct, leak-free ones (generators/rationalize.py)."""
        from generators.rationalize import hinted_prompt

        by_id = {p.id: p for p in problems}
        rows = self.rows(by_id, samples, self.verify(by_id, samples))
        solved = {row.problem.id for row in rows if row.outcome == "pass"}
        failed = [p for p in problems if p.id not in solved and p.reference.answer]
        if not failed:
            return []
        gens = steps.generators_by_family(self.cfg)
        prompts = [[m.model_dump() for m in hinted_prompt(gens[p.family], p)] for p in failed]
        s = self.cfg.sampling
        outs = self.cluster.generate(prompts, n=1, temperature=s.temperature, max_tokens=s.max_tokens,
                                     seed=steps._seed(self.cfg.run.seed, "hint", r),
                                     adapter=self.adapter_ref(adapter), desc=f"round {r} rationalize")
        return steps.to_samples(failed, outs, r, adapter, hinted=True)

    def verify(self, by_id: dict[str, Problem], samples: list[Sample], only: set[str] | None = None) -> list[Verdict]:
        out = self.cluster.verify(by_id, samples, only)
        return [v for s in samples for v in out[s.id]]

    def rows(self, by_id: dict[str, Problem], samples: list[Sample], verdicts: list[Verdict]) -> list[Row]:
        grouped: dict[str, list[Verdict]] = {s.id: [] for s in samples}
        for v in verdicts:
            grouped[v.sample_id].append(v)
        return steps.build_rows(self.cfg, by_id, samples, grouped)

    def analyze_errors(self, rows: list[Row]) -> list[ErrorRecord]:
        records = [e for e in (classify(r, self.required) for r in rows) if e is not None]
        judge = next((v for v in self.cfg.verifiers if v.name == "llm_judge"), None)
        if judge is not None and judge.options.get("classify_errors", True):
            from verifiers.base import VERIFIERS

            j = VERIFIERS.build(judge.name, judge.options)
            j.bind_engine(self.cluster.judge_engine())
            records = refine_with_judge(records, rows, j.classify)
        return records

    @staticmethod
    def with_errors(rows: list[Row], errors: list[ErrorRecord]) -> list[Row]:
        by = {e.sample_id: e for e in errors}
        return [r.model_copy(update={"error": by.get(r.sample.id)}) for r in rows]

    def accept(self, rows: list[Row]) -> list[Sample]:
        return [r.sample for r in self.acceptance.accept(rows)]

    def train(self, r: int, accepted: list[Sample], by_id: dict[str, Problem], adapter: str | None) -> dict:
        """Accepted chains of this round plus `replay_rounds` earlier rounds."""
        rows = [(by_id[s.problem_id], s) for s in accepted]
        for back in range(1, self.cfg.training.replay_rounds + 1):
            old = self.run.round_dir(r - back)
            if r - back >= 0 and (old / "accepted.jsonl").exists():
                probs = {p.id: p for p in read_jsonl(old / "problems.jsonl", Problem)}
                rows += [(probs[s.problem_id], s) for s in read_jsonl(old / "accepted.jsonl", Sample)]
        replay = {k for k, cp in self.current_plan(r).categories.items() if cp.format_replay}
        rows += steps.format_replay([self.run.round_dir(b) for b in range(r - self.cfg.training.replay_rounds)], replay)
        if not rows:
            log.warning("round %d: no accepted chains; keeping the previous adapter", r)
            return {"adapter": adapter, "examples": 0, "skipped": "no accepted chains"}
        examples = steps.training_examples([Row(problem=p, sample=s, verdicts=[], outcome="pass") for p, s in rows])
        out = self.run.round_dir(r) / "adapter"
        # Paths stored in the run are relative to it; the workers get absolute ones.
        init = str(self.run.resolve(adapter)) if adapter and self.cfg.training.mode == "continue" else None
        log.info("round %d: training on %d chains (%s)", r, len(examples), self.cfg.training.mode)
        metrics = self.cluster.train(examples, out.resolve(), init, steps._seed(self.cfg.run.seed, "train", r),
                                     log_path=self.run.round_dir(r) / "train_log.jsonl")
        return {"adapter": self.run.rel(out), **metrics}

    # ---- the learned verifier (verifiers/learned.py, loop/verifier_data.py) -------------------------------
    def train_verifier(self, r: int, rows: list[Row]) -> dict:
        """This round's pass/fail verdicts (plus `replay_rounds` earlier rounds') train the verifier
        adapter, warm-started from the previous round's."""
        lv, rd = self.cfg.learned_verifier, self.run.round_dir(r)
        extra = self.verifier_rows(r, rows)
        current = verifier_data.examples_from_rows(rows + extra, self.cfg.heldout.fraction, lv.max_chain_chars)
        write_jsonl(rd / "verifier_examples.jsonl", current)
        earlier = [verifier_data.read_examples(self.run.round_dir(r - b) / "verifier_examples.jsonl")
                   for b in range(1, lv.replay_rounds + 1) if r - b >= 0]
        prev = self.cluster.verifier_adapter and self.verifier_m.get("adapter")
        try:
            examples, info = verifier_data.training_set(current, earlier, steps._seed(self.cfg.run.seed, "vex", r),
                                                        lv.max_examples)
        except verifier_data.VerifierDataError as e:
            log.warning("round %d: the learned verifier is not trained this round: %s; %s", r, e,
                        "keeping the previous round's" if prev else "it abstains until it is")
            return {"adapter": prev, "skipped": str(e)}
        out = rd / "verifier"
        init = str(self.run.resolve(prev)) if prev else None
        lora = lv.rank(self.cfg.lora)  # a new adapter's; a warm start keeps its own
        kept = verifier_data.adapter_rank(Path(init)) if init else None
        if kept is not None and kept != lora["r"]:
            log.warning("round %d: the learned verifier is warm-started from %s, which has LoRA rank %s; it keeps "
                        "that rank (learned_verifier.lora_r=%s applies to a verifier started anew)", r, prev, kept,
                        lora["r"])
        log.info("round %d: training the learned verifier on %d examples (%d Yes / %d No, %d replayed, %d chains of "
                 "extra problems drawn)%s", r, info["examples"], info["per_class"], info["per_class"], info["replayed"],
                 len(extra), ", warm-started from " + prev if prev else "")
        m = self.cluster.train(examples, out.resolve(), init, steps._seed(self.cfg.run.seed, "verifier", r),
                               overrides={"mode": "continue", "epochs": lv.epochs, "learning_rate": lv.learning_rate,
                                          "lora": lora,
                                          "loss_on_words": [YES, NO],  # the decision token alone
                                          # its prompt holds the whole chain: never cut off its Yes/No
                                          "max_seq_len": max(self.cfg.training.max_seq_len,
                                                             self.cfg.model.max_model_len)},
                               log_path=rd / "verifier_train_log.jsonl")
        return {"adapter": self.run.rel(out), "init": prev, "data": {**info, "extra_chains": len(extra)}, **m}

    def verifier_rows(self, r: int, rows: list[Row]) -> list[Row]:
        """learned_verifier.extra_problems: fresh training problems (never the round's own, never held-out),
        sampled by the round's policy and verified by the required verifiers, for the verifier's examples alone
        (the passing chains of one problem are nearly always one chain, so the verifier's Yes examples grow
        with problems, not samples). Their chains go to verifier_samples.jsonl; the policy never sees them."""
        lv = self.cfg.learned_verifier
        own = [row.sample for row in rows if not row.sample.hinted and not row.sample.gold]
        if not lv.extra_problems or not own:
            return []
        taken = {row.problem.id for row in rows}
        problems = verifier_data.withhold_answers(  # a category without gold answers stays without them
            steps.verifier_problems(self.cfg, self.current_plan(r), r, lv.extra_problems, taken), lv.answerless)
        if not problems:
            return []
        extra = self.draw(problems, r, own[0].adapter, self.cfg.sampling.n, "verifier-sample",
                          f"round {r} verifier problems")
        by_id = {p.id: p for p in problems}
        write_jsonl(self.run.round_dir(r) / "verifier_samples.jsonl", extra)
        return self.rows(by_id, extra, self.verify(by_id, extra, only=self.required))  # the outcome alone

    def load_verifier(self, r: int) -> dict:
        """A finished verifier stage on resume: its adapter must still be there and fit the base."""
        path = self.run.round_dir(r) / "verifier.json"
        try:
            m = read_json(path)
        except (OSError, ValueError) as e:
            raise RunStateError(f"{path} is missing or damaged ({type(e).__name__}); the run's learned verifier "
                                "cannot continue from it: restore it from a copy of the run, or compute it and every "
                                f"stage after it again: python launch.py resume {self.run.path} "
                                f"--redo round-{r}/verifier") from None
        if m.get("adapter") and m.get("adapter") != m.get("init"):
            try:
                verifier_data.check_adapter(self.run.resolve(m["adapter"]), Path(self.cfg.model.resolved_path()))
            except verifier_data.VerifierDataError as e:
                raise RunStateError(f"round {r}'s learned verifier: {e}. Later rounds were scored by it and "
                                    "warm-started from it, so it is not silently retrained: restore "
                                    f"{self.run.round_dir(r) / 'verifier'} from a copy of the run, or compute it "
                                    f"and every stage after it again: python launch.py resume {self.run.path} "
                                    f"--redo round-{r}/verifier") from None
        return m

    def accept_answerless(self, r: int, rows: list[Row]) -> list[Sample]:
        """Chains of categories without gold answers, accepted on the learned verifier's word (or all of
        them, the control); which ones and why go to round-NNN/answerless.json."""
        lv = self.cfg.learned_verifier
        if not lv.answerless:
            return []
        took, info = verifier_data.accept_answerless(rows, lv.answerless, lv.answerless_accept, lv.accept_precision,
                                                      max_fpr=lv.accept_max_fpr)
        write_json(self.run.round_dir(r) / "answerless.json", info)
        log.info("round %d: %d of %d chains without a gold answer accepted (%s%s)", r, len(took), info["candidates"],
                 lv.answerless_accept, f"; {info['why']}" if info.get("why") else "")
        return [row.sample for row in took]

    def use_verifier(self, adapter: str | None) -> None:
        if adapter:
            self.cluster.verifier_adapter = (f"{self.run.path.name}/verifier-{Path(adapter).parent.name}",
                                             str(self.run.resolve(adapter)))
        else:
            self.cluster.verifier_why = ("no verifier adapter yet: the learned verifier is trained from the "
                                         "round's pass/fail verdicts after its verify stage")

    def select(self, heldout: list[Problem], greedy: list[Row], adapter: str | None, out: Path) -> dict:
        """Greedy vs majority vote vs verifier best-of-n on the held-out problems (n sampled chains each)."""
        s, n = self.cfg.sampling, self.cfg.learned_verifier.selection_n
        outs = self.cluster.generate([[m.model_dump() for m in p.prompt] for p in heldout], n=n,
                                     temperature=s.temperature, max_tokens=s.max_tokens,
                                     seed=steps._seed(self.cfg.run.seed, "select"), adapter=self.adapter_ref(adapter),
                                     desc=f"held-out best-of-{n}")
        samples = steps.to_samples(heldout, outs, -1, adapter)
        by_id = {p.id: p for p in heldout}
        rows = self.rows(by_id, samples, self.verify(by_id, samples))
        write_jsonl(out / "selection_samples.jsonl", samples)
        write_jsonl(out / "selection_outcomes.jsonl", [
            {"sample_id": r.sample.id, "outcome": r.outcome,
             "p_yes": next((v.score for v in r.verdicts if v.verifier == verifier_data.LEARNED
                            and v.outcome in ("pass", "fail")), None)} for r in rows])
        return {**verifier_data.selection(greedy, rows), "agreement": verifier_data.agreement(rows),
                "verifier": self.cluster.verifier_adapter[0] if self.cluster.verifier_adapter else None}

    def evaluate(self, key: str, heldout: list[Problem], adapter: str | None, out: Path) -> dict:
        def compute() -> dict:
            s = self.cfg.sampling
            outs = self.cluster.generate([[m.model_dump() for m in p.prompt] for p in heldout], n=1,
                                         temperature=s.eval_temperature, max_tokens=s.max_tokens,
                                         seed=steps._seed(self.cfg.run.seed, "eval"),
                                         adapter=self.adapter_ref(adapter), desc=f"{key} held-out")
            samples = steps.to_samples(heldout, outs, -1, adapter)
            by_id = {p.id: p for p in heldout}
            rows = self.rows(by_id, samples, self.verify(by_id, samples))
            write_jsonl(out / "samples.jsonl", samples)
            write_jsonl(out / "outcomes.jsonl", [{"sample_id": r.sample.id, "category": r.category_key,
                                                  "difficulty": r.problem.difficulty, "outcome": r.outcome}
                                                 for r in rows])
            acc, by_cat = steps.accuracy(rows)
            by_level = steps.accuracy_by_difficulty(rows)
            m = {"accuracy": acc, "by_category": by_cat, "by_category_difficulty": by_level,
                 "adapter": adapter, "n": len(rows)}
            if any(v.name == verifier_data.LEARNED for v in self.cfg.verifiers):
                m["learned_verifier"] = verifier_data.agreement(rows)
            if self.cfg.learned_verifier.selection_n and self.cluster.verifier_adapter:
                m["selection"] = self.select(heldout, rows, adapter, out)
            return m

        return self.run.stage(key, compute, lambda m: write_json(out / "metrics.json", m),
                              lambda: read_json(out / "metrics.json"))

    def adapter_ref(self, adapter: str | None) -> tuple[str, str] | None:
        if adapter is None:
            return None
        return (f"{self.run.path.name}/{Path(adapter).parent.name}", str(self.run.resolve(adapter)))

    def finish_round(self, r: int, rows: list[Row], analysis: RoundAnalysis, prev: RoundAnalysis | None,
                     samples: list[Sample], accepted: list[Sample], train_m: dict, heldout_m: dict, plan: Plan) -> None:
        rd = self.run.round_dir(r)
        secs = self.run.manifest.get("seconds", {})
        metrics = {
            "round": r,
            "heldout": {"accuracy": heldout_m["accuracy"], "by_category": heldout_m["by_category"]},
            "samples": len(samples), "accepted": len(accepted),
            "tokens_sampled": sum(s.num_tokens for s in samples),
            "stage_seconds": {k.split("/", 1)[1]: v for k, v in secs.items() if k.startswith(f"round-{r}/")},
            "adapter": train_m.get("adapter"), "train": train_m,
            "errors": {c: sum(st.errors.get(c, 0) for st in analysis.categories.values())
                       for c in sorted({c for st in analysis.categories.values() for c in st.errors})},
            "budget": {k: cp.budget for k, cp in self.current_plan(r).categories.items()},
            "verifier_health": verifier_health(rows),
        }
        if any(v.name == verifier_data.LEARNED for v in self.cfg.verifiers):
            metrics["verifier_health"]["learned"] = verifier_data.agreement(rows)
        if self.cfg.learned_verifier.enabled:
            metrics["learned_verifier"] = {"train": self.verifier_m, "heldout": heldout_m.get("learned_verifier"),
                                           "selection": heldout_m.get("selection")}
            if (rd / "answerless.json").exists():
                info = read_json(rd / "answerless.json")
                metrics["learned_verifier"]["answerless"] = {k: v for k, v in info.items() if k != "sample_ids"}
        write_json(rd / "analysis.json", analysis)
        write_json(rd / "metrics.json", metrics)
        self.run.manifest["rounds_completed"] = max(self.run.manifest.get("rounds_completed", 0), r + 1)
        self.run.save()
        if self.trackers is not None:
            self.trackers.sync()
        print(f"\n== round {r} ==  held-out {heldout_m['accuracy']:.3f}  samples {len(samples)}  "
              f"accepted {len(accepted)}  tokens {metrics['tokens_sampled']}  "
              f"stages {', '.join(f'{k} {v:.0f}s' for k, v in metrics['stage_seconds'].items())}")
        print(format_round_table(analysis, prev), flush=True)

    def current_plan(self, r: int) -> Plan:
        if r == 0:
            return steps.initial_plan(self.cfg)
        return Plan.model_validate(read_json(self.run.round_dir(r - 1) / "plan.json"))
