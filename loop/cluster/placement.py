"""Where the workers go, from the `cluster:` config, and where they went.

Samplers, the trainer and verification tasks ask Ray for CPUs, GPUs and the custom
resources the config names; a node offers custom resources when it is started with
`ray start --resources '{"sampler": 1}'`. A local Ray offers every custom resource the
config asks for, so a config written for a cluster also runs on one machine.

With `cluster.placement.strategy` other than `none`, the sampler replicas and the trainer go
into one Ray placement group (as OpenRLHF and verl place theirs): every worker's share is
reserved at once, before any engine starts, and the strategy says how the bundles spread over
the nodes. One bundle per sampler replica; the trainer joins replica 0's bundle when both ask
for a share of one GPU and the shares fit it (sampler 0.5 + trainer 0.5: one bundle of one GPU,
so they get the same device and take turns under `gpu_sharing: sleep`), else it has its own.
Ray gives a bundle of whole GPUs devices of its own, so the trainer and a replica in different
bundles never share a GPU: with a GPU each, the same config runs on one node with two GPUs and
on two nodes with one each (PACK puts the bundles on one node when they fit there).
"""
from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loop.config import Config, ConfigError


@dataclass(frozen=True)
class Plan:
    """The placement group a config asks for: its bundles (Ray resource dicts, in order), who is
    in each, the bundle of each sampler slot (a replica and its replacements) and the trainer's."""
    bundles: list[dict[str, float]]
    members: list[list[str]]
    samplers: list[int]
    trainer: int


def _ask(cpus: float, gpus: float, resources: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in {"CPU": cpus, "GPU": gpus, **resources}.items() if v}


def plan(cfg: Config) -> Plan:
    c, s = cfg.cluster, cfg.cluster.sampler
    bundles = [_ask(s.num_cpus, s.num_gpus, s.resources) for _ in range(s.num_actors)]
    members = [[f"sampler replica {i}"] for i in range(s.num_actors)]
    trainer = _ask(1, c.trainer_num_gpus, c.trainer_resources)
    # A trainer that names its own node (trainer_resources) keeps its own bundle.
    if 0 < s.num_gpus < 1 and 0 < c.trainer_num_gpus < 1 and s.num_gpus + c.trainer_num_gpus <= 1 + 1e-9 \
            and not c.trainer_resources:
        for k, v in trainer.items():
            bundles[0][k] = round(bundles[0].get(k, 0) + v, 4)
        members[0].append("trainer")
        return Plan(bundles, members, list(range(s.num_actors)), 0)
    return Plan(bundles + [trainer], members + [["trainer"]], list(range(s.num_actors)), s.num_actors)


def sampler_options(cfg: Config) -> dict[str, Any]:
    s = cfg.cluster.sampler
    return {"num_cpus": s.num_cpus, "num_gpus": s.num_gpus, "resources": dict(s.resources), "max_restarts": 0}


def trainer_options(cfg: Config) -> dict[str, Any]:
    c = cfg.cluster
    return {"num_cpus": 1, "num_gpus": c.trainer_num_gpus, "resources": dict(c.trainer_resources), "max_restarts": 0}


def verify_options(cfg: Config) -> dict[str, Any]:
    c = cfg.cluster
    opts: dict[str, Any] = {"num_cpus": 1, "max_retries": c.verify_retries, "retry_exceptions": False}
    if c.verify_spread:
        opts["scheduling_strategy"] = "SPREAD"
    return opts


def local_resources(cfg: Config) -> dict[str, float]:
    """The custom resources a local Ray must offer so that every worker of `cfg` fits."""
    c = cfg.cluster
    need: dict[str, float] = {}
    for k, v in c.sampler.resources.items():
        need[k] = need.get(k, 0) + v * (c.sampler.num_actors + 1)  # +1: room for a replacement
    for k, v in c.trainer_resources.items():
        need[k] = need.get(k, 0) + v
    return need


def _shown(res: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in res.items()) or "nothing"


def _worker_resources(res: dict[str, float]) -> dict[str, float]:
    """CPUs, GPUs and custom resources: what workers ask for (not Ray's memory or node:* entries)."""
    return {k: v for k, v in res.items() if ":" not in k and k not in ("memory", "object_store_memory")}


def _fits(ask: dict[str, float], offer: dict[str, float]) -> bool:
    return all(offer.get(k, 0) >= v - 1e-9 for k, v in ask.items())


def check_fits(cfg: Config, total: dict[str, float], nodes: list[dict[str, float]] | None = None) -> list[str]:
    """Why the workers of `cfg` can never be placed on a cluster offering `total` resources
    (and, given, these nodes' resources), so Ray would wait for them forever; one line each,
    [] if they can."""
    c = cfg.cluster
    s = c.sampler
    asks = [(f"cluster.sampler ({s.num_actors} replicas)", s.num_actors,
             {"CPU": s.num_cpus, "GPU": s.num_gpus, **s.resources}),
            ("cluster.trainer_*", 1, {"CPU": 1, "GPU": c.trainer_num_gpus, **c.trainer_resources})]
    problems = []
    for who, count, res in asks:
        for k, v in res.items():
            if v and total.get(k, 0) < v * count:
                problems.append(f"{who}: needs {v * count:g} {k!r} in all, the cluster offers {total.get(k, 0):g}; "
                                f"start nodes with `ray start --resources '{{\"{k}\": N}}'` (GPUs: --num-gpus) "
                                "or change the config")
    if problems:
        return problems
    p, strategy = plan(cfg), c.placement.strategy
    if strategy != "none" or c.gpu_sharing != "release":  # "release" stops the samplers before the trainer starts
        need: dict[str, float] = {}
        for b in p.bundles:
            for k, v in b.items():
                need[k] = need.get(k, 0) + v
        why = (f"the placement group (cluster.placement.strategy {strategy}) reserves them all at once"
               if strategy != "none" else f"with gpu_sharing {c.gpu_sharing!r} the samplers keep theirs while the "
                                          "trainer runs")
        for k, v in need.items():
            if total.get(k, 0) < v - 1e-9:
                fix = ("give Ray more GPUs (`ray start --num-gpus`, or a machine with more), or ask for fewer (on "
                       "one GPU: one sampler replica, cluster.sampler.num_gpus and cluster.trainer_num_gpus 0.5 "
                       "each, gpu_sharing: sleep)"
                       if k == "GPU" else f"start nodes with more {k!r} or lower what the config asks for")
                problems.append(f"cluster.sampler ({s.num_actors} replicas) and the trainer together need {v:g} {k!r}, "
                                f"the cluster offers {total.get(k, 0):g}: {why}; {fix}")
    if nodes is not None and not problems:
        problems += _node_problems(cfg, p, nodes)
    return problems


def _node_problems(cfg: Config, p: Plan, nodes: list[dict[str, float]]) -> list[str]:
    """What cannot go on any single node: a bundle (or, without a placement group, one worker)
    is never split over nodes; STRICT_PACK puts every bundle on one node, STRICT_SPREAD each
    on a node of its own."""
    strategy = cfg.cluster.placement.strategy
    if strategy == "none":
        units = [("a sampler replica", _ask(cfg.cluster.sampler.num_cpus, cfg.cluster.sampler.num_gpus,
                                            cfg.cluster.sampler.resources)),
                 ("the trainer", _ask(1, cfg.cluster.trainer_num_gpus, cfg.cluster.trainer_resources))]
    else:
        units = [(f"placement bundle {i} ({' + '.join(m)})", b) for i, (b, m) in enumerate(zip(p.bundles, p.members))]
    offered = "; ".join(f"node {i}: {_shown(_worker_resources(n))}" for i, n in enumerate(nodes))
    problems = [f"{who} needs {_shown(ask)} on one node and no node offers that ({offered}); a worker's GPUs are on "
                "one node: lower its share or start a node with more (`ray start --num-gpus`)"
                for who, ask in units if not any(_fits(ask, n) for n in nodes)]
    if problems:
        return problems
    if strategy == "STRICT_PACK":
        need: dict[str, float] = {}
        for b in p.bundles:
            for k, v in b.items():
                need[k] = need.get(k, 0) + v
        if not any(_fits(need, n) for n in nodes):
            problems.append(f"cluster.placement.strategy STRICT_PACK puts every worker on one node, {_shown(need)}, "
                            f"and no node offers that ({offered}); use PACK (one node when it fits, else more)")
    elif strategy == "STRICT_SPREAD" and not _matching(p.bundles, nodes):
        problems.append(f"cluster.placement.strategy STRICT_SPREAD puts each of {len(p.bundles)} bundles "
                        f"({'; '.join(' + '.join(m) for m in p.members)}) on a node of its own and the cluster has no "
                        f"such nodes ({offered}); use SPREAD or PACK, or start more nodes")
    return problems


def _matching(bundles: list[dict[str, float]], nodes: list[dict[str, float]]) -> bool:
    """Whether each bundle can have a node of its own that fits it (bipartite matching)."""
    owner: dict[int, int] = {}

    def place(b: int, seen: set[int]) -> bool:
        for n, offer in enumerate(nodes):
            if n not in seen and _fits(bundles[b], offer):
                seen.add(n)
                if n not in owner or place(owner[n], seen):
                    owner[n] = b
                    return True
        return False

    return all(place(b, set()) for b in range(len(bundles)))


class Placement:
    """The run's workers on the cluster: Ray options for each sampler replica and the trainer.
    With a placement strategy it holds the placement group, made (and waited for) here."""

    def __init__(self, ray: Any, cfg: Config):
        self.ray, self.cfg = ray, cfg
        self.plan = plan(cfg)
        self.group: Any = None
        self.slots: dict[int, int] = {}  # sampler replica index -> its slot (bundle) while it lives
        pc = cfg.cluster.placement
        if pc.strategy == "none":
            return
        from ray.util.placement_group import placement_group, remove_placement_group

        group = placement_group(self.plan.bundles, strategy=pc.strategy)
        if not group.wait(pc.timeout_s):
            remove_placement_group(group)
            free = _worker_resources(ray.available_resources())
            asked = "; ".join(f"{_shown(b)} for {' + '.join(m)}" for b, m in zip(self.plan.bundles, self.plan.members))
            raise ConfigError(
                f"the placement group for this run's workers ({asked}, strategy {pc.strategy}) was not placed "
                f"within {pc.timeout_s:g} s (cluster.placement.timeout_s); "
                f"Ray has {_shown(free)} free. Another job may hold the rest (`ray status`), or nodes are still "
                "joining: free them, or raise cluster.placement.timeout_s")
        self.group = group

    def _in_group(self, bundle: int) -> dict[str, Any]:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        strategy = PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=bundle)
        return {"scheduling_strategy": strategy}

    def sampler_options(self, replica: int, live: Iterable[int]) -> dict[str, Any]:
        """Options of replica `replica`; `live`: the replicas alive now (a replacement takes the
        slot a dead replica left)."""
        opts = sampler_options(self.cfg)
        if self.group is None:
            return opts
        used = {self.slots[r] for r in live if r in self.slots}
        free = [i for i in range(len(self.plan.samplers)) if i not in used]
        if not free:
            raise RuntimeError(f"sampler replica {replica}: every sampler bundle of the placement group is taken "
                               f"(replicas {sorted(live)})")
        self.slots[replica] = free[0]
        return {**opts, **self._in_group(self.plan.samplers[free[0]])}

    def trainer_options(self) -> dict[str, Any]:
        opts = trainer_options(self.cfg)
        return opts if self.group is None else {**opts, **self._in_group(self.plan.trainer)}

    def shares_trainer_gpu(self, replica: int) -> bool:
        """Whether replica `replica` may be on the trainer's GPU (it must sleep while the trainer
        runs). Only a placement group knows it is not: a bundle of whole GPUs has devices of its own."""
        if self.group is None or replica not in self.slots:
            return True
        mine, theirs = self.plan.samplers[self.slots[replica]], self.plan.trainer
        if mine == theirs:
            return True
        gpus = (self.plan.bundles[mine].get("GPU", 0), self.plan.bundles[theirs].get("GPU", 0))
        return not (min(gpus) > 0 and max(gpus) >= 1)

    def remove(self) -> None:
        if self.group is not None:
            from ray.util.placement_group import remove_placement_group

            try:
                remove_placement_group(self.group)
            except Exception:  # noqa: BLE001 - Ray already gone: the group went with it
                pass
            self.group = None


def node_info() -> dict[str, Any]:
    """Inside a Ray worker: its node, host, pid, the GPUs Ray gave it, and where its `loop`
    code came from."""
    import ray

    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(), "host": socket.gethostname(),
            "pid": os.getpid(), "gpu_ids": [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])],
            "code": str(Path(__file__).resolve().parents[2])}
