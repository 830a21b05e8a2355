"""Sampler replicas and the chunks of one generate call, surviving replicas that die.

Chunks go from a queue to whichever live replica has room (`depth` calls in flight each,
so an engine never waits for the driver). When a replica dies (its process killed, its
node lost, OOM), every chunk it held goes back to the front of the queue for the others,
and a replacement is started (up to `max_replacements` over the run). Each chunk's result
is kept exactly once, by chunk index, so no prompt is sampled twice into the result and
none is missing. An error raised *inside* a healthy replica (a bad request) is not a death:
it fails the call, as before.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass
class Replica:
    index: int
    handle: Any
    ready_ref: Any = None  # set while the engine is being built
    info: dict = field(default_factory=dict)  # node_id, pid, ... once ready
    inflight: dict = field(default_factory=dict)  # ObjectRef -> chunk index


class NoSamplerLeft(RuntimeError):
    pass


class SamplerPool:
    def __init__(self, ray: Any, make: Callable[[int], Any], size: int, max_replacements: int,
                 record: Callable[[str, dict], None], depth: int = 2):
        self.ray, self.make, self.size, self.depth = ray, make, size, depth
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
            for _ in range(self.size):
                self._spawn()
        while starting := [r for r in self.replicas if r.ready_ref is not None]:
            rep = starting[0]
            try:
                self._ready(rep, self.ray.get(rep.ready_ref))
            except self.ray.exceptions.RayActorError as e:
                if getattr(e, "actor_init_failed", False) and not self.ever_ready:
                    raise  # the engine cannot be built (its __init__ raised): not a fault to ride out
                self._died(rep, e, deque())
        if not self.replicas:
            raise NoSamplerLeft("no sampler replica is left and no replacement may start; see the run's `faults` "
                                "in manifest.json. Resume the run when the cluster is healthy")
        return [r.info for r in self.replicas]

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
            (ref,), _ = self.ray.wait(list(waiting) + list(starting), num_returns=1)
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
        self.replicas.remove(rep)
        try:
            self.ray.kill(rep.handle)
        except Exception:  # noqa: BLE001 - it is dead already
            pass
        # A replica whose __init__ raised would fail the same way again; one killed (OOM killer,
        # SIGKILL, its node lost) is worth replacing.
        replace = self.replacements_left > 0 and not getattr(error, "actor_init_failed", False)
        if replace:
            self.replacements_left -= 1
        what = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        self.record("died", {"replica": rep.index, "node_id": rep.info.get("node_id"), "pid": rep.info.get("pid"),
                             "error": f"{type(error).__name__}: {what}", "chunks_requeued": lost,
                             "replacement": replace})
        log.warning("sampler replica %d died (%s); %d chunk(s) go back to the queue%s", rep.index,
                    type(error).__name__, len(lost),
                    "; starting a replacement" if replace else "; no replacements left")
        if replace:
            self._spawn()
