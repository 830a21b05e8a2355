"""Surviving dead workers, on a real local Ray: the sampler pool with replicas that are
SIGKILLed mid-chunk (a tiny stand-in actor instead of a vLLM engine, so this runs in
seconds; the real engines are killed in tests/test_cluster_multinode.py), the fault hook,
adapter shipping, placement checks and resuming on another cluster."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT


class EchoReplica:
    """Stands in for SamplerWorker: the same `where` and a chunk method with its pause point."""

    def where(self) -> dict:
        from loop.cluster.placement import node_info

        return {**node_info(), "build_seconds": 0.0}

    def work(self, chunk: int, stage: str) -> list:
        from loop.run.faults import pause_point

        if chunk < 0:
            raise ValueError("a bad request, not a dead replica")
        out = [f"chunk{chunk}-item{k}" for k in range(3)]
        pause_point("sampler", stage)
        return out


class BrokenReplica(EchoReplica):
    def __init__(self):
        raise RuntimeError("no engine here")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    import ray

    d = tmp_path_factory.mktemp("faults")
    if ray.is_initialized():  # left over by another test in this process: ours needs its own env
        ray.shutdown()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "LOOP_FAULT_DIR": str(d),
                                       "LOOP_FAULT_PAUSE": "sampler=round-0/sample"}})
    yield ray, d
    ray.shutdown()


def _kill_when_paused(d: Path, role: str, killed: list, timeout: float = 60) -> threading.Thread:
    def run():
        deadline = time.time() + timeout
        while time.time() < deadline:
            p = d / f"{role}.paused"
            if p.exists():
                info = json.loads(p.read_text())
                os.kill(info["pid"], signal.SIGKILL)
                killed.append(info)
                return
            time.sleep(0.05)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _pool(ray, size: int, replacements: int, events: list):
    from loop.cluster.sampler_pool import SamplerPool

    Actor = ray.remote(num_cpus=0.5, max_restarts=0)(EchoReplica)
    return SamplerPool(ray, lambda i: Actor.remote(), size, replacements,
                       lambda kind, info: events.append((kind, info)))


def test_killed_replica_chunks_go_to_the_others_each_exactly_once(local_ray):
    ray, d = local_ray
    for f in d.iterdir():
        f.unlink()
    events, killed, seen = [], [], []
    pool = _pool(ray, 2, 1, events)
    pool.start()
    t = _kill_when_paused(d, "sampler", killed)
    results = pool.run(7, lambda h, c: h.work.remote(c, "round-0/sample"), seen.append)
    t.join()
    assert killed, "the fault hook never paused a replica"
    assert results == [[f"chunk{c}-item{k}" for k in range(3)] for c in range(7)]
    assert sorted(seen) == list(range(7)), "each chunk is delivered exactly once"
    died = [i for k, i in events if k == "died"]
    assert len(died) == 1 and died[0]["pid"] == killed[0]["pid"] and died[0]["chunks_requeued"]
    assert died[0]["replacement"] is True and "ActorDiedError" in died[0]["error"]
    started = [i for k, i in events if k == "started"]
    assert len(started) >= 2 and all(i["node_id"] for i in started)
    # The replacement joins the pool (now or at the next start) and the pool is whole again.
    pool.start()
    assert len(pool.handles()) == 2 and killed[0]["pid"] not in {r.info["pid"] for r in pool.replicas}


def test_every_replica_gets_a_chunk_before_any_gets_two(local_ray):
    ray, _ = local_ray
    pool = _pool(ray, 2, 0, [])
    pool.start()
    pool.run(2, lambda h, c: h.work.remote(c, "baseline"), lambda c: None)
    assert sorted(pool.chunk_replicas) == [0, 1]


def test_no_replica_left_is_a_clear_error(local_ray):
    from loop.cluster.sampler_pool import NoSamplerLeft

    ray, d = local_ray
    for f in d.iterdir():
        f.unlink()
    events, killed = [], []
    pool = _pool(ray, 1, 0, events)
    pool.start()
    t = _kill_when_paused(d, "sampler", killed)
    with pytest.raises(NoSamplerLeft, match="no sampler replica is left"):
        pool.run(3, lambda h, c: h.work.remote(c, "round-0/sample"), lambda c: None)
    t.join()
    assert [i["replacement"] for k, i in events if k == "died"] == [False]


def test_a_replica_whose_init_raises_is_not_replaced(local_ray):
    from loop.cluster.sampler_pool import EngineStartFailed, SamplerPool
    from loop.run.state import StageFailed

    ray, _ = local_ray
    events = []
    Actor = ray.remote(num_cpus=0.5, max_restarts=0)(BrokenReplica)
    pool = SamplerPool(ray, lambda i: Actor.remote(), 1, 3, lambda kind, info: events.append((kind, info)))
    with pytest.raises(EngineStartFailed, match="could not be built: RuntimeError: no engine here") as err:
        pool.start()
    assert isinstance(err.value, StageFailed)  # launch.py: one "error:" line, exit 1, resume after the fix
    assert isinstance(err.value.__cause__, ray.exceptions.RayActorError)
    assert not events, "a broken build is reported, not retried"


def _made(marker: str) -> int:
    """How many replicas were made before this one (each leaves a file in the `marker` directory)."""
    d = Path(marker)
    d.mkdir(exist_ok=True)
    n = len(list(d.iterdir()))
    (d / str(n)).touch()
    return n


class FullGpuReplica(EchoReplica):
    """Its first `fail` builds raise what vLLM raised when engines started side by side on one GPU."""

    def __init__(self, marker: str, fail: int = 1):
        n = _made(marker)
        if n < fail:
            raise ValueError("No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
                             "when initializing the engine")


def test_an_engine_start_the_gpu_memory_race_broke_is_tried_once_more(local_ray, tmp_path):
    from loop.cluster.sampler_pool import SamplerPool

    ray, _ = local_ray
    events = []
    Actor = ray.remote(num_cpus=0.5, max_restarts=0)(FullGpuReplica)
    pool = SamplerPool(ray, lambda i: Actor.remote(str(tmp_path / "made")), 1, 3,
                       lambda kind, info: events.append((kind, info)), start_retry_s=0.1)
    pool.start()
    assert [k for k, _ in events] == ["start_retry", "started"] and len(pool.handles()) == 1
    assert "No available memory for the cache blocks" in events[0][1]["error"]
    assert pool.replacements_left == 2  # it counted as a replacement


def test_a_gpu_that_stays_full_stops_the_run_after_one_more_start(local_ray, tmp_path):
    from loop.cluster.sampler_pool import EngineStartFailed, SamplerPool

    ray, _ = local_ray
    events = []
    Actor = ray.remote(num_cpus=0.5, max_restarts=0)(FullGpuReplica)
    pool = SamplerPool(ray, lambda i: Actor.remote(str(tmp_path / "made"), fail=99), 1, 3,
                       lambda kind, info: events.append((kind, info)), start_retry_s=0.1)
    with pytest.raises(EngineStartFailed, match="No available memory.*cluster.sampler.gpu_memory_utilization"):
        pool.start()
    assert [k for k, _ in events] == ["start_retry"]  # one more start, not max_replacements of them


def test_an_error_inside_a_live_replica_is_not_a_death(local_ray):
    ray, _ = local_ray
    events = []
    pool = _pool(ray, 1, 3, events)
    pool.start()
    with pytest.raises(ray.exceptions.RayTaskError, match="a bad request"):
        pool.run(2, lambda h, c: h.work.remote(-1, "other"), lambda c: None)
    assert not [k for k, _ in events if k == "died"]


def test_the_pause_only_happens_in_the_named_stage(local_ray):
    ray, d = local_ray
    for f in d.iterdir():
        f.unlink()
    pool = _pool(ray, 1, 0, [])
    pool.start()
    assert pool.run(2, lambda h, c: h.work.remote(c, "baseline"), lambda c: None)[1][0] == "chunk1-item0"
    assert not (d / "sampler.paused").exists()


# ---- pieces without Ray ---------------------------------------------------------------

def test_fault_hook_is_inert_by_default(monkeypatch, tmp_path):
    from loop.run import faults

    monkeypatch.delenv(faults.DIR_ENV, raising=False)
    monkeypatch.setenv(faults.PAUSE_ENV, "sampler,trainer")
    t0 = time.time()
    faults.pause_point("sampler", "round-0/sample")
    assert faults.trainer_callbacks() == [] and time.time() - t0 < 1
    monkeypatch.setenv(faults.DIR_ENV, str(tmp_path))
    monkeypatch.setenv(faults.PAUSE_ENV, "verify=round-1/verify")
    faults.pause_point("verify", "round-0/verify")  # another stage: no pause
    assert not list(tmp_path.iterdir())
    (tmp_path / "verify.release").touch()
    faults.pause_point("verify", "round-1/verify")  # released at once
    assert json.loads((tmp_path / "verify.paused").read_text())["pid"] == os.getpid()


def test_adapter_shipping_roundtrip(tmp_path):
    from loop.cluster.shipping import pack_adapter, pack_files, unpack

    src = tmp_path / "a"
    src.mkdir()
    (src / "adapter_config.json").write_text("{}")
    (src / "adapter_model.safetensors").write_bytes(b"\x00\x01" * 100)
    (src / "README.md").write_text("x")
    (src / "_trainer").mkdir()
    assert set(pack_adapter(src)) == {"adapter_config.json", "adapter_model.safetensors"}
    assert set(pack_files(src)) == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    out = unpack(pack_files(src), tmp_path / "b")
    assert (out / "adapter_model.safetensors").read_bytes() == b"\x00\x01" * 100
    with pytest.raises(ValueError, match="not a plain file name"):
        unpack({"../evil": b""}, tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="missing adapter_model.safetensors"):
        (src / "adapter_model.safetensors").unlink()
        pack_adapter(src)


def _cfg(tiny_run_config, tmp_path, **cluster):
    from loop.config import load_config

    return load_config(None, raw=tiny_run_config(tmp_path, cluster=cluster))


def test_placement_that_cannot_fit_is_named(tiny_run_config, tmp_path):
    from loop.cluster.placement import check_fits, local_resources, sampler_options, verify_options

    cfg = _cfg(tiny_run_config, tmp_path, sampler={"num_actors": 2, "resources": {"sampler": 1}},
               trainer_resources={"trainer": 1}, trainer_num_gpus=1)
    problems = check_fits(cfg, {"CPU": 8, "sampler": 1})
    assert len(problems) == 3, problems
    assert "needs 2 'sampler' in all, the cluster offers 1" in problems[0]
    assert any("'GPU'" in p for p in problems) and any("'trainer'" in p for p in problems)
    assert not check_fits(cfg, {"CPU": 8, "GPU": 1, "sampler": 2, "trainer": 1})
    assert local_resources(cfg) == {"sampler": 3, "trainer": 1}
    assert sampler_options(cfg)["resources"] == {"sampler": 1}
    assert verify_options(cfg)["scheduling_strategy"] == "SPREAD" and verify_options(cfg)["max_retries"] == 3
    # A single machine with the defaults needs nothing custom.
    plain = _cfg(tiny_run_config, tmp_path)
    assert local_resources(plain) == {} and not check_fits(plain, {"CPU": 2})


def test_resume_may_move_the_run_to_another_cluster(tiny_run_config, tmp_path):
    from loop.runner import config_diff

    old = _cfg(tiny_run_config, tmp_path, address="10.0.0.5:6379", sampler={"num_actors": 2})
    new = _cfg(tiny_run_config, tmp_path, sampler={"num_actors": 1})
    assert config_diff(old, new) == []
    changed = old.model_copy(update={"sampling": old.sampling.model_copy(update={"n": 3})})
    assert config_diff(old, changed) == ["sampling.n: 4 -> 3"]


def test_the_job_ships_only_what_workers_import(tmp_path):
    """What `cluster.address` uploads (Ray's own packaging, with our excludes): the code and
    the builtin model, not the checkout's environments, run state or build outputs."""
    import zipfile

    from ray._private.runtime_env.packaging import create_package

    from loop.cluster.driver import ship_excludes

    out = tmp_path / "pkg.zip"
    create_package(str(ROOT), out, include_gitignore=False, excludes=ship_excludes())
    names = zipfile.ZipFile(out).namelist()
    assert {n.split("/")[0] for n in names} <= {"loop", "generators", "verifiers", "policies", "configs",
                                                 "launch.py", "pyproject.toml"}
    assert "loop/cluster/driver.py" in names and any(n.startswith("loop/assets/tiny-qwen3/") for n in names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert out.stat().st_size < 50 * 2**20


class StallingReplica(EchoReplica):
    """The `stall_at`-th replica made (0 = the first) never finishes starting (its `where` blocks)."""

    def __init__(self, marker: str, stall_at: int = 0):
        n = _made(marker)
        self.stall = n == stall_at

    def where(self) -> dict:
        if self.stall:
            time.sleep(3600)
        return super().where()


def test_a_stalled_engine_start_is_replaced(local_ray, tmp_path):
    from loop.cluster.sampler_pool import SamplerPool

    ray, _ = local_ray
    events = []
    Actor = ray.remote(num_cpus=0.5, max_restarts=0)(StallingReplica)
    marker = str(tmp_path / "made")
    # 10 s: the stalled start waits that long; a normal one (a Ray worker process) must start within it
    pool = SamplerPool(ray, lambda i: Actor.remote(marker), 1, 1, lambda kind, info: events.append((kind, info)),
                       start_timeout=10)
    pool.start()
    died = [i for k, i in events if k == "died"]
    assert len(died) == 1 and died[0]["replacement"] is True
    assert "EngineStartStalled" in died[0]["error"] and "within 10 s" in died[0]["error"]
    assert [k for k, _ in events] == ["died", "started"] and len(pool.handles()) == 1
    assert pool.run(2, lambda h, c: h.work.remote(c, "baseline"), lambda c: None)[1] == [
        f"chunk1-item{k}" for k in range(3)]


def test_a_stall_with_no_replacement_left_names_the_setting(local_ray, tmp_path):
    from loop.cluster.sampler_pool import NoSamplerLeft, SamplerPool

    ray, _ = local_ray
    Actor = ray.remote(num_cpus=0.5, max_restarts=0)(StallingReplica)
    pool = SamplerPool(ray, lambda i: Actor.remote(str(tmp_path / "made")), 1, 0, lambda kind, info: None,
                       start_timeout=2)
    with pytest.raises(NoSamplerLeft, match=r"did not finish starting within 2 s \(cluster.sampler.start_timeout_s"):
        pool.start()


def test_a_replacement_that_stalls_mid_stage_is_replaced_again(local_ray, tmp_path):
    """Replica 0 is killed mid-chunk; its replacement's engine stalls and is given up after the
    timeout; the next replacement finishes the chunks, each delivered once."""
    from loop.cluster.sampler_pool import SamplerPool

    ray, d = local_ray
    for f in d.iterdir():
        f.unlink()
    events, killed, seen = [], [], []
    Actor = ray.remote(num_cpus=0.5, max_restarts=0)(StallingReplica)
    pool = SamplerPool(ray, lambda i: Actor.remote(str(tmp_path / "made"), 1), 1, 2,
                       lambda kind, info: events.append((kind, info)), start_timeout=10)
    pool.start()
    t = _kill_when_paused(d, "sampler", killed)
    results = pool.run(3, lambda h, c: h.work.remote(c, "round-0/sample"), seen.append)
    t.join()
    assert killed and sorted(seen) == [0, 1, 2] and results[2] == [f"chunk2-item{k}" for k in range(3)]
    died = [i["error"] for k, i in events if k == "died"]
    assert len(died) == 2 and "ActorDiedError" in died[0] and "EngineStartStalled" in died[1]
