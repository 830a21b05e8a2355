"""Sampler replicas and the chunks of one generate call, surviving replicas that die.

Chunks go from a queue to whichever live replica has room (`depth` calls in flight each,
so an engine never waits for the driver). When a replica dies (its process killed, its
node lost, OOM), every chunk it held goes back to the front of the queue for the others,
and a replacement is started (up to `max_replacements` over the run). Each chunk's result
is kept exactly once, by chunk index, so no prompt is sampled twice into the result and
none is missing. An error raised *inside* a healthy replica (a bad request) is not a death:
it fails the call, as before.

An engine start that does not finish within `start_timeout` seconds (a stall: it has happened
to vLLM on a 4B model, with nothing in the log) counts as a death: the replica is killed and a
replacement started (same budget), so a stall costs one start instead of the run. While an
engine starts, the log says every minute how long it has taken so far.
"""
from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loop.run.state import StageFailed

log = logging.getLogger(__name__)


@dataclass
class Replica:
    index: int
    handle: Any
    ready_ref: Any = None  # set while the engine is being built
    info: dict = field(default_factory=dict)  # node_id, pid, ... once ready
    inflight: dict = field(default_factory=dict)  # ObjectRef -> chunk index
    spawned: float = field(default_factory=time.monotonic)


class EngineStartStalled(RuntimeError):
    pass


PROGRESS_EVERY_S = 60.0


class NoSamplerLeft(RuntimeError):
    pass


class EngineStartFailed(StageFailed):
    """A sampler's engine could not be built; str() names the engine's own error and what to do."""


class SamplerPool:
    def __init__(self, ray: Any, make: Callable[[int], Any], size: int, max_replacements: int,
                 record: Callable[[str, dict], None], depth: int = 2, start_timeout: float | None = None,
                 start_retry_s: float = 10.0):
        self.ray, self.make, self.size, self.depth = ray, make, size, depth
        self.start_timeout = start_timeout
        self.start_retry_s = start_retry_s  # pause before another start after a transient start failure
        self.start_retries_left = 1  # one: a GPU that stays full fails again, and the run should say so soon
        self.last_death = ""
        self.replacements_left = max_replacements
        self.record = record
        self.replicas: list[Replica] = []
        self.next_index = 0
        self.ever_ready = False
        self.chunk_nodes: list[str | None] = []

    # ---- lifecycle ---------------------------------------------------------------------
    def _spawn(self) -> Replica:
        i = self.next_index
        self.next_index += 1
        h = self.make(i)
        rep = Replica(i, h, ready_ref=h.where.remote())
        self.replicas.append(rep)
        return rep

    def start(self) -> list[dict]:
        """Start `size` replicas if there are none; wait until they are all built."""
        if not self.replicas:
            from loop.run.logs import forget_worker_errors

            forget_worker_errors()  # a failed build below is explained by its own lines, not older ones
            for _ in range(self.size):
                self._spawn()
        while starting := [r for r in self.replicas if r.ready_ref is not None]:
            rep = starting[0]
            ready, _ = self.ray.wait([rep.ready_ref], timeout=self._wait_s(starting))
            if not ready:
                self._check_starts(starting, deque())
                continue
            try:
                self._ready(rep, self.ray.get(rep.ready_ref))
            except self.ray.exceptions.RayActorError as e:
                if getattr(e, "actor_init_failed", False) and not self.ever_ready:
                    # the engine cannot be built (its __init__ raised): not a fault to ride out; the cause is a
                    # line of the engine's own output, which reaches the driver a moment after the error
                    from loop.cluster.engine_errors import cause, error_lines, explain_cause, transient
                    from loop.run.logs import forget_worker_errors, recent_worker_errors

                    found = recent_worker_errors(0 if error_lines(str(e)) else 3.0,
                                                 lambda lines: any(error_lines(x) for x in lines))
                    why = cause(e, found)
                    if not (transient(why) and self.replacements_left > 0 and self.start_retries_left > 0):
                        raise EngineStartFailed(explain_cause(why)) from e
                    self._retry_start(rep, why)
                    forget_worker_errors()
                    continue
                self._died(rep, e, deque())
        if not self.replicas:
            raise NoSamplerLeft(f"no sampler replica is left and no replacement may start (last: {self.last_death}); "
                                "see the run's `faults` in manifest.json. Resume the run when the cluster is healthy")
        return [r.info for r in self.replicas]

    def _drop(self, rep: Replica) -> None:
        """Out of the pool, and its actor killed (if it is not dead already)."""
        self.replicas.remove(rep)
        try:
            self.ray.kill(rep.handle)
        except Exception:  # noqa: BLE001 - it is dead already
            pass

    def _retry_start(self, rep: Replica, why: str) -> None:
        """An engine that could not start for a cause another process makes for a moment (engines starting side
        by side on one GPU): another start, after a pause with jitter so side-by-side starts drift apart; it
        counts as a replacement (cluster.sampler.max_replacements)."""
        self._drop(rep)
        self.replacements_left -= 1
        self.start_retries_left -= 1
        pause = self.start_retry_s * (1 + random.random())
        self.record("start_retry", {"replica": rep.index, "error": why[:300], "pause_s": round(pause, 1)})
        log.warning("sampler replica %d could not start (%s): the GPU's memory may have been taken for a moment "
                    "(another engine starting beside it); starting it again in %.0f s (%d replacement(s) left)",
                    rep.index, why[:200], pause, self.replacements_left)
        time.sleep(pause)
        self._spawn()

    def _wait_s(self, starting: list[Replica]) -> float:
        """How long to wait for a start before the next progress line or deadline."""
        wait = PROGRESS_EVERY_S
        if self.start_timeout is not None:
            now = time.monotonic()
            wait = min([wait] + [r.spawned + self.start_timeout - now for r in starting])
        return max(wait, 0.01)

    def _check_starts(self, starting: list[Replica], queue: deque) -> None:
        """A progress line for each engine still starting; a stalled one is killed (and replaced)."""
        now = time.monotonic()
        for rep in starting:
            took = now - rep.spawned
            if self.start_timeout is not None and took >= self.start_timeout:
                self._died(rep, EngineStartStalled(
                    f"its engine did not finish starting within {self.start_timeout:.0f} s (cluster.sampler."
                    "start_timeout_s; raise it if the model needs longer to start)"), queue)
            else:
                log.info("sampler replica %d: engine still starting after %.0f s%s", rep.index, took,
                         f" (gives up at {self.start_timeout:.0f} s)" if self.start_timeout is not None else "")

    def _ready(self, rep: Replica, info: dict) -> None:
        rep.ready_ref, rep.info = None, info
        self.ever_ready = True
        self.record("started", {"replica": rep.index, **info})

    def handles(self) -> list[Any]:
        return [r.handle for r in self.replicas]

    def clear(self) -> None:
        self.replicas = []

    # ---- one generate call -----------------------------------------------------------------
    def run(self, n_chunks: int, submit: Callable[[Any, int], Any], on_chunk: Callable[[int], None]) -> list:
        """results[i] = the value of submit(handle, i) on some replica, each i exactly once.
        Which replica (and node) made each chunk: `self.chunk_replicas`, `self.chunk_nodes`."""
        results: list = [None] * n_chunks
        have = [False] * n_chunks
        self.chunk_nodes = [None] * n_chunks
        self.chunk_replicas: list[int | None] = [None] * n_chunks
        queue = deque(range(n_chunks))
        while not all(have):
            for level in range(self.depth):  # breadth first: every replica gets a chunk before any gets two
                for rep in self.replicas:
                    if rep.ready_ref is None and queue and len(rep.inflight) <= level:
                        c = queue.popleft()
                        rep.inflight[submit(rep.handle, c)] = c
            waiting = {ref: rep for rep in self.replicas for ref in rep.inflight}
            starting = {rep.ready_ref: rep for rep in self.replicas if rep.ready_ref is not None}
            if not waiting and not starting:
                raise NoSamplerLeft(f"no sampler replica is left and no replacement may start "
                                    f"({n_chunks - sum(have)} of {n_chunks} chunks not done); see the run's "
                                    "`faults` in manifest.json. Resume the run when the cluster is healthy")
            done, _ = self.ray.wait(list(waiting) + list(starting), num_returns=1,
                                    timeout=self._wait_s(list(starting.values())) if starting else None)
            if not done:
                self._check_starts(list(starting.values()), queue)
                continue
            ref = done[0]
            if ref in starting:
                rep = starting[ref]
                try:
                    self._ready(rep, self.ray.get(ref))
                except self.ray.exceptions.RayActorError as e:
                    self._died(rep, e, queue)
                continue
            rep = waiting[ref]
            c = rep.inflight.pop(ref)
            try:
                out = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as e:
                rep.inflight[ref] = c  # requeued with the rest of its chunks
                self._died(rep, e, queue)
                continue
            assert not have[c], f"chunk {c} came back twice"
            results[c], have[c] = out, True
            self.chunk_nodes[c], self.chunk_replicas[c] = rep.info.get("node_id"), rep.index
            on_chunk(c)
        return results

    def _died(self, rep: Replica, error: Exception, queue: deque) -> None:
        lost = sorted(rep.inflight.values())
        for c in reversed(lost):
            queue.appendleft(c)
        self._drop(rep)
        # A replica whose __init__ raised would fail the same way again; one killed (OOM killer,
        # SIGKILL, its node lost) is worth replacing.
        replace = self.replacements_left > 0 and not getattr(error, "actor_init_failed", False)
        if replace:
            self.replacements_left -= 1
        what = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        self.last_death = f"replica {rep.index}: {type(error).__name__}: {what}"
        self.record("died", {"replica": rep.index, "node_id": rep.info.get("node_id"), "pid": rep.info.get("pid"),
                             "error": f"{type(error).__name__}: {what}", "chunks_requeued": lost,
                             "replacement": replace})
        log.warning("sampler replica %d died (%s: %s); %d chunk(s) go back to the queue%s", rep.index,
                    type(error).__name__, what, len(lost),
                    "; starting a replacement" if replace else "; no replacements left")
        if replace:
            self._spawn()
