"""Where the workers go, from the `cluster:` config, and where they went.

Samplers, the trainer and verification tasks ask Ray for CPUs, GPUs and the custom
resources the config names; a node offers custom resources when it is started with
`ray start --resources '{"sampler": 1}'`. A local Ray offers every custom resource the
config asks for, so a config written for a cluster also runs on one machine.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from loop.config import Config


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


def check_fits(cfg: Config, total: dict[str, float]) -> list[str]:
    """Why the workers of `cfg` can never be placed on a cluster offering `total` resources
    (Ray would wait for them forever), one line each; [] if they can."""
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
    return problems


def node_info() -> dict[str, Any]:
    """Inside a Ray worker: its node, host, pid, and where its `loop` code came from."""
    import ray

    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(), "host": socket.gethostname(),
            "pid": os.getpid(), "code": str(Path(__file__).resolve().parents[2])}
