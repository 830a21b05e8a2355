"""Placement on more than one GPU, on a CPU machine: Ray nodes that declare GPUs they do not
have (`ray.init(num_gpus=2)`; two in-process nodes of one GPU each), workers that are tiny
actors created with the options the loop gives its sampler replicas and trainer, and the
GPU ids Ray hands them. No vLLM starts on a fake GPU; the driver's own code (loop/cluster/
driver.py) runs against stand-in worker classes that report where they are and what bytes
reached them. The configs are the shipped ones: configs/qwen3-4b-qlora.yaml (one GPU, sleep),
configs/qwen3-4b-2gpu.yaml (a GPU each) and configs/qwen3-4b-2gpu-replicas.yaml.
"""
from __future__ import annotations

import hashlib
import json
import time

import pytest

from tests.conftest import ROOT

ONE_GPU, TWO_GPU, REPLICAS = "qwen3-4b-qlora", "qwen3-4b-2gpu", "qwen3-4b-2gpu-replicas"


def _cfg(name: str, *overrides: str, state_dir: str = "/tmp/unused-state"):
    from loop.config import load_config

    return load_config(ROOT / "configs" / f"{name}.yaml", [f"run.state_dir={state_dir}", *overrides])


# ---- the plan, from the configs (no Ray) ----------------------------------------------------

def test_shipped_configs_ask_for_the_bundles_they_say():
    from loop.cluster.placement import plan

    one = plan(_cfg(ONE_GPU))
    assert one.bundles == [{"CPU": 2.0, "GPU": 1.0}] and one.members == [["sampler replica 0", "trainer"]]
    two = plan(_cfg(TWO_GPU))
    assert two.bundles == [{"CPU": 1.0, "GPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}]
    assert two.samplers == [0] and two.trainer == 1
    rep = plan(_cfg(REPLICAS))
    assert rep.bundles == [{"CPU": 2.0, "GPU": 1.0}, {"CPU": 1.0, "GPU": 0.5}]
    assert rep.samplers == [0, 1] and rep.trainer == 0
    for name, sharing in ((TWO_GPU, "none"), (REPLICAS, "sleep")):
        c = _cfg(name).cluster
        assert (c.placement.strategy, c.gpu_sharing) == ("PACK", sharing)
    # A trainer that names its own node keeps a bundle of its own, even with a share of a GPU.
    own = plan(_cfg(ONE_GPU, "cluster.trainer_resources.trainer=1"))
    assert own.bundles == [{"CPU": 1.0, "GPU": 0.5}, {"CPU": 1.0, "GPU": 0.5, "trainer": 1.0}]


def test_two_gpu_configs_are_the_one_gpu_config_outside_cluster():
    """The comparison in benchmarks/gpu_h200.py --parts two_gpu measures placement, nothing else."""
    for name in (TWO_GPU, REPLICAS):
        base, other = _cfg(ONE_GPU).model_dump(mode="json"), _cfg(name).model_dump(mode="json")
        assert (base["run"].pop("name"), other["run"].pop("name")) == ("qwen3-4b", name)
        assert base.pop("cluster") != other.pop("cluster")
        assert other == base


def test_more_gpus_than_the_cluster_offers_is_refused_with_what_to_do():
    from loop.cluster.placement import check_fits

    one_node_one_gpu = {"CPU": 16.0, "GPU": 1.0}
    msg = check_fits(_cfg(TWO_GPU), one_node_one_gpu)
    assert len(msg) == 1 and "together need 2 'GPU', the cluster offers 1" in msg[0]
    assert "ray start --num-gpus" in msg[0] and "0.5" in msg[0]
    assert "together need 1.5 'GPU'" in check_fits(_cfg(REPLICAS), one_node_one_gpu)[0]
    assert check_fits(_cfg(ONE_GPU), one_node_one_gpu, [one_node_one_gpu]) == []
    # Without a placement group the same holds while both workers live (gpu_sharing none or sleep) ...
    assert check_fits(_cfg(TWO_GPU, "cluster.placement.strategy=none"), one_node_one_gpu)
    # ... but `release` stops the engine before the trainer starts: they never hold GPUs together.
    assert check_fits(_cfg(TWO_GPU, "cluster.placement.strategy=none", "cluster.gpu_sharing=release"),
                      one_node_one_gpu) == []
    two_nodes = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}]
    total = {"CPU": 16.0, "GPU": 2.0}
    assert check_fits(_cfg(TWO_GPU), total, two_nodes) == []
    assert check_fits(_cfg(REPLICAS), total, two_nodes) == []
    strict = check_fits(_cfg(TWO_GPU, "cluster.placement.strategy=STRICT_PACK"), total, two_nodes)
    assert len(strict) == 1 and "STRICT_PACK puts every worker on one node" in strict[0]
    one_node = [{"CPU": 16.0, "GPU": 2.0}]
    assert check_fits(_cfg(TWO_GPU, "cluster.placement.strategy=STRICT_SPREAD"), total, one_node)[0].startswith(
        "cluster.placement.strategy STRICT_SPREAD puts each of 2 bundles")
    assert check_fits(_cfg(TWO_GPU, "cluster.placement.strategy=STRICT_PACK"), total, one_node) == []
    # A worker's GPUs are on one node: two GPUs in all are not two GPUs on a node.
    wide = check_fits(_cfg(TWO_GPU, "cluster.sampler.num_gpus=2", "cluster.trainer_num_gpus=0"), total, two_nodes)
    assert len(wide) == 1 and wide[0].startswith("placement bundle 0 (sampler replica 0) needs 1 CPU, 2 GPU on one "
                                                 "node and no node offers that")


def test_gpu_counts_and_strategies_are_validated_when_the_config_loads():
    from loop.config import ConfigError

    with pytest.raises(ConfigError, match=r"1.5 GPUs: above 1 a GPU count must be whole"):
        _cfg(TWO_GPU, "cluster.sampler.num_gpus=1.5")
    with pytest.raises(ConfigError, match=r"above 1 a GPU count must be whole"):
        _cfg(TWO_GPU, "cluster.trainer_num_gpus=2.5")
    with pytest.raises(ConfigError, match=r"cluster\.placement\.strategy.*PACK"):
        _cfg(TWO_GPU, "cluster.placement.strategy=pack")


def test_preflight_counts_this_machines_gpus(tmp_path, monkeypatch):
    from loop.preflight import check_gpu_count, visible_gpus

    gpus = tmp_path / "proc" / "driver" / "nvidia" / "gpus"
    for pci in ("0000:19:00.0", "0000:3b:00.0"):
        (gpus / pci).mkdir(parents=True)
    assert visible_gpus(tmp_path / "proc", tmp_path / "dev", env={}) == 2
    assert visible_gpus(tmp_path / "proc", tmp_path / "dev", env={"CUDA_VISIBLE_DEVICES": "1"}) == 1
    assert visible_gpus(tmp_path / "none", tmp_path / "dev", env={}) is None  # no driver: check_devices says so
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    problems: list[str] = []
    check_gpu_count(_cfg(TWO_GPU), problems, gpus=1)
    assert len(problems) == 1 and "together need 2 'GPU', the cluster offers 1" in problems[0]
    assert problems[0].endswith("(this machine has 1 GPU)")
    problems = []
    check_gpu_count(_cfg(TWO_GPU), problems, gpus=2)
    check_gpu_count(_cfg(ONE_GPU), problems, gpus=1)
    assert problems == []


# ---- fake GPUs on a real Ray -----------------------------------------------------------------

class Probe:
    """A worker that only says where Ray put it."""

    def where(self) -> dict:
        from loop.cluster.placement import node_info

        return node_info()


class FakeSampler(Probe):
    """Stands in for SamplerWorker in the driver: its methods and arguments, no engine. Its
    completions say which GPU made them and what adapter bytes reached it, and how."""

    def __init__(self, *args, **kwargs):
        self.calls: list[str] = []

    def where(self) -> dict:
        return {**super().where(), "build_seconds": 0.0}

    def max_num_seqs(self) -> int:
        return 4

    def generate(self, prompts, n, temperature, top_p, max_tokens, seed, adapter, adapter_files=None, stage=""):
        import ray

        got = {"gpu_ids": self.where()["gpu_ids"], "adapter": adapter}
        if adapter_files:
            data = adapter_files[0]
            got["sent_as"] = type(data).__name__
            data = data if isinstance(data, dict) else ray.get(data)
            got["sha256"] = hashlib.sha256(data["adapter_model.safetensors"]).hexdigest()
        text = json.dumps(got)
        return [[{"text": text, "num_tokens": 1, "finish_reason": "stop"}] * n for _ in prompts]

    def sleep(self) -> dict:
        self.calls.append("sleep")
        return {"seconds": 0.0}

    def wake_up(self) -> dict:
        self.calls.append("wake_up")
        return {"seconds": 0.0}

    def history(self) -> list[str]:
        return self.calls


class FakeTrainer(Probe):
    """Stands in for TrainerActor: returns an adapter whose weights name the GPU it ran on."""

    def __init__(self, *args, **kwargs):
        pass

    def train_shipped(self, examples, init_files, seed, overrides=None, *rest, **more):
        gpus = self.where()["gpu_ids"]
        files = {"adapter_config.json": b'{"r": 16}',
                 "adapter_model.safetensors": f"weights trained on GPU {gpus} from {len(examples)} examples".encode()}
        return {"examples": len(examples), "gpu_ids": gpus}, files


@pytest.fixture(scope="module")
def rays():
    """use("two_gpus") -> ray on one node with 2 fake GPUs; use("two_nodes") -> two nodes of one
    fake GPU each (ray.cluster_utils). One at a time; switching stops the other."""
    import ray
    from ray.cluster_utils import Cluster

    env = {"env_vars": {"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "RAY_memory_monitor_refresh_ms": "0"}}
    now: dict = {"kind": None, "nodes": None}

    def stop() -> None:
        if ray.is_initialized():
            ray.shutdown()
        if now["nodes"] is not None:
            now["nodes"].shutdown()
        now.update(kind=None, nodes=None)

    def use(kind: str):
        if now["kind"] == kind:
            return ray
        stop()
        if kind == "two_gpus":
            ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False,
                     runtime_env=env)
        else:
            nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 1,
                                                                  "include_dashboard": False})
            nodes.add_node(num_cpus=2, num_gpus=1)
            now["nodes"] = nodes
            ray.init(address=nodes.address, log_to_driver=False, runtime_env=env)
            nodes.wait_for_nodes()
        now["kind"] = kind
        return ray

    if ray.is_initialized():  # left over by another test in this process: ours declares GPUs
        ray.shutdown()
    yield use
    stop()


def _placed(ray, cfg, replicas: int = 1):
    """The Placement of `cfg`, its sampler replicas' and trainer's node_info (lightweight actors
    created with the loop's options), and the actors."""
    from loop.cluster.placement import Placement

    p = Placement(ray, cfg)
    Actor = ray.remote(Probe)
    samplers = [Actor.options(**p.sampler_options(i, range(i))).remote() for i in range(replicas)]
    trainer = Actor.options(**p.trainer_options()).remote()
    where = ray.get([a.where.remote() for a in samplers + [trainer]], timeout=60)
    return p, where[:-1], where[-1], samplers + [trainer]


def _release(ray, p, actors) -> None:
    for a in actors:
        ray.kill(a)
    p.remove()


def test_sampler_and_trainer_get_a_gpu_each(rays):
    ray = rays("two_gpus")
    p, (sampler,), trainer, actors = _placed(ray, _cfg(TWO_GPU))
    try:
        assert p.group is not None
        assert len(sampler["gpu_ids"]) == 1 and len(trainer["gpu_ids"]) == 1
        assert sampler["gpu_ids"] != trainer["gpu_ids"]
        assert not p.shares_trainer_gpu(0)  # so the sampler is never put to sleep for training
    finally:
        _release(ray, p, actors)


def test_one_gpu_config_keeps_sampler_and_trainer_on_one_gpu(rays):
    """The shipped one-GPU config (no placement group, as before) and the same with PACK."""
    ray = rays("two_gpus")
    for over in ((), ("cluster.placement.strategy=PACK",)):
        p, (sampler,), trainer, actors = _placed(ray, _cfg(ONE_GPU, *over))
        try:
            assert (p.group is None) == (not over)
            assert len(sampler["gpu_ids"]) == 1 and sampler["gpu_ids"] == trainer["gpu_ids"], over
            assert p.shares_trainer_gpu(0)
        finally:
            _release(ray, p, actors)


def test_two_replicas_take_a_gpu_each_and_the_trainer_shares_replica_0s(rays):
    ray = rays("two_gpus")
    p, samplers, trainer, actors = _placed(ray, _cfg(REPLICAS), replicas=2)
    try:
        assert samplers[0]["gpu_ids"] == trainer["gpu_ids"] != samplers[1]["gpu_ids"]
        assert [p.shares_trainer_gpu(i) for i in (0, 1)] == [True, False]
        # Replica 1 dies; its replacement (index 2) takes the bundle, and so the GPU, it left.
        ray.kill(actors[1])
        again = ray.remote(Probe).options(**p.sampler_options(2, [0])).remote()
        actors.append(again)
        assert ray.get(again.where.remote(), timeout=60)["gpu_ids"] == samplers[1]["gpu_ids"]
        assert p.slots == {0: 0, 1: 1, 2: 1} and not p.shares_trainer_gpu(2)
    finally:
        _release(ray, p, actors)


def test_the_driver_places_hands_off_adapters_and_sleeps_only_the_trainers_gpu(rays, monkeypatch, tmp_path):
    """loop.cluster.driver.Cluster on the replicas config: replicas on both GPUs, the trainer's
    adapter back as bytes, then to every replica through the object store (an ObjectRef each
    replica fetches), and only the replica on the trainer's GPU asleep while it trains."""
    import loop.cluster.sampler
    import loop.cluster.trainer
    from loop.cluster.driver import Cluster

    ray = rays("two_gpus")
    monkeypatch.setattr(loop.cluster.sampler, "SamplerWorker", FakeSampler)
    monkeypatch.setattr(loop.cluster.trainer, "TrainerActor", FakeTrainer)
    cluster = Cluster(_cfg(REPLICAS, state_dir=str(tmp_path / "state")))
    try:
        prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(16)]
        base = cluster.generate(prompts, n=1, temperature=0.0, max_tokens=4, seed=0, adapter=None, desc="base")
        gpus = {tuple(json.loads(o[0]["text"])["gpu_ids"]) for o in base}
        assert len(gpus) == 2 and cluster.engine_builds == 2  # both replicas sampled, one GPU each

        out = tmp_path / "adapter"
        metrics = cluster.train([{"prompt": "p", "completion": "c"}] * 3, out, None, seed=0)
        trainer_gpu = metrics["gpu_ids"]
        weights = (out / "adapter_model.safetensors").read_bytes()
        assert weights.startswith(f"weights trained on GPU {trainer_gpu}".encode())
        history = {tuple(ray.get(r.handle.where.remote())["gpu_ids"]): ray.get(r.handle.history.remote())
                   for r in cluster.pool.replicas}
        assert history == {tuple(trainer_gpu): ["sleep", "wake_up"],
                           next(g for g in gpus if list(g) != trainer_gpu): []}

        tuned = cluster.generate(prompts, n=2, temperature=0.7, max_tokens=4, seed=1,
                                 adapter=("round-0", str(out)), desc="tuned")
        got = [json.loads(c["text"]) for o in tuned for c in o]
        assert {tuple(g["gpu_ids"]) for g in got} == gpus
        assert {g["sent_as"] for g in got} == {"ObjectRef"}
        assert {g["sha256"] for g in got} == {hashlib.sha256(weights).hexdigest()}
        assert cluster.engine_builds == 2  # no engine started again
    finally:
        for s in cluster.samplers:
            ray.kill(s)
        if cluster.trainer is not None:
            ray.kill(cluster.trainer)
        cluster.placement.remove()


def test_the_driver_refuses_more_gpus_than_ray_has_before_starting_anything(rays):
    from loop.cluster.driver import Cluster
    from loop.config import ConfigError

    ray = rays("two_gpus")
    with pytest.raises(ConfigError, match=r"(?s)cannot place this run's workers.*cluster\.sampler \(2 replicas\) and "
                                          r"the trainer together need 3 'GPU', the cluster offers 2"):
        Cluster(_cfg(TWO_GPU, "cluster.sampler.num_actors=2"))
    # no placement group was left holding any (earlier tests' removed groups give theirs back
    # asynchronously: wait for them, a group this run left would never give its GPUs back)
    deadline = time.time() + 30
    while ray.available_resources().get("GPU") != 2 and time.time() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("GPU") == 2


def test_a_gpu_each_on_two_nodes_of_one_gpu(rays):
    """The same configs on two nodes with one GPU each: PACK cannot fit one node, so the
    bundles go one a node."""
    ray = rays("two_nodes")
    p, (sampler,), trainer, actors = _placed(ray, _cfg(TWO_GPU))
    try:
        assert sampler["node_id"] != trainer["node_id"]
        assert sampler["gpu_ids"] == ["0"] and trainer["gpu_ids"] == ["0"]
    finally:
        _release(ray, p, actors)
    p, samplers, trainer, actors = _placed(ray, _cfg(REPLICAS), replicas=2)
    try:
        assert samplers[0]["node_id"] == trainer["node_id"] != samplers[1]["node_id"]
        assert [p.shares_trainer_gpu(i) for i in (0, 1)] == [True, False]
    finally:
        _release(ray, p, actors)


def test_a_placement_group_that_cannot_be_placed_stops_with_what_it_waits_for(rays):
    from loop.cluster.placement import Placement
    from loop.config import ConfigError

    ray = rays("two_nodes")
    cfg = _cfg(TWO_GPU, "cluster.placement.strategy=STRICT_PACK", "cluster.placement.timeout_s=2")
    with pytest.raises(ConfigError, match=r"was not placed within 2 s \(cluster\.placement\.timeout_s\); Ray has "
                                          r"(2 GPU, 4 CPU|4 CPU, 2 GPU) free"):
        Placement(ray, cfg)
