"""The loop on a real three-node Ray cluster, joined the way a user joins one, surviving
dead workers and a dead driver.

Three nodes started with `ray start` (tests/ray_nodes.py), each with its own logical CPUs
and custom resources: two offer `sampler`, one `trainer`. The driver is `launch.py run`
with `cluster.address` set; the code reaches the workers through Ray's runtime_env (the
nodes run from another directory and have no PYTHONPATH to the checkout). One run, with
the fault hook (loop/run/faults.py) holding a worker still at a known point so the test can
SIGKILL it there:

- a sampler replica, after generating its chunk of round-0/sample but before returning it;
- a verification task's worker process, in round-0/verify;
- the trainer actor, after its first optimizer step;
- then the driver itself, during round-0/evaluate; `resume` reconnects and finishes.

Each test below checks one of these from the run's files and manifest.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, TINY_RUN
from tests.ray_nodes import LocalRayCluster

pytestmark = pytest.mark.integration
PY = sys.executable
ROLES = ("sampler", "verify", "trainer")


@pytest.fixture(scope="module")
def ray_cluster():
    # A short private path: Ray's socket paths under its temp dir must stay below 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="loopray-"))
    c = LocalRayCluster(root)
    try:
        c.add_head(2, {"sampler": 1})
        c.add_node(2, {"sampler": 1})
        c.add_node(2, {"trainer": 1})
        c.wait()
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def _manifest(d: Path) -> dict:
    try:
        return json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def _jsonl(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def faulted_run(ray_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multinode")
    cfg = copy.deepcopy(TINY_RUN)
    cfg["run"]["state_dir"] = str(tmp / "state")
    cfg["loop"]["rounds"] = 1
    cfg["cluster"] = {"address": ray_cluster.address, "verify_batch": 16,
                      "sampler": {"num_actors": 2, "resources": {"sampler": 1}},
                      "trainer_resources": {"trainer": 1}}
    cfg_path = tmp / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    faults = tmp / "faults"
    faults.mkdir()
    env = {**ray_cluster.env(), "LOOP_FAULT_DIR": str(faults),
           "LOOP_FAULT_PAUSE": "sampler=round-0/sample,verify=round-0/verify,trainer"}
    log1 = tmp / "run.out"
    t0 = time.time()
    with open(log1, "w") as out:
        proc = subprocess.Popen([PY, "launch.py", "run", "-c", str(cfg_path)], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    killed: dict[str, dict] = {}
    run_dir, killed_manifest = None, None
    try:
        deadline = time.time() + 1200  # generous: a loaded 2-core box builds a vLLM engine in minutes
        while proc.poll() is None and time.time() < deadline:
            for role in ROLES:
                p = faults / f"{role}.paused"
                if role not in killed and p.exists():
                    info = json.loads(p.read_text())
                    os.kill(info["pid"], signal.SIGKILL)  # the worker's process, on its node
                    killed[role] = {**info, "at": time.time() - t0}
            runs = list((tmp / "state" / "runs").glob("*/manifest.json"))
            if runs:
                run_dir = runs[0].parent
                m = _manifest(run_dir)
                if m.get("cursor") == "round-0/evaluate (in progress)" and len(killed) == len(ROLES):
                    os.kill(proc.pid, signal.SIGKILL)  # the driver: the cluster lives on
                    proc.wait()
                    killed_manifest = _manifest(run_dir)
                    break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert killed_manifest is not None, (f"the run did not reach round-0/evaluate with every fault injected "
                                         f"(killed: {sorted(killed)}); driver output:\n{log1.read_text()[-5000:]}")
    env2 = {k: v for k, v in env.items() if not k.startswith("LOOP_FAULT_")}
    # One replica is enough to finish (and `cluster.*` may change on resume): one engine build less.
    p = subprocess.run([PY, "launch.py", "resume", str(run_dir), "--set", "cluster.sampler.num_actors=1"], cwd=ROOT,
                       env=env2, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"resume failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return {"dir": run_dir, "killed": killed, "killed_manifest": killed_manifest, "log": log1.read_text(),
            "resume_log": p.stdout + p.stderr, "nodes": ray_cluster.nodes(), "seconds": time.time() - t0}


def _nodes_with(nodes: list[dict], resource: str) -> set[str]:
    return {n["NodeID"] for n in nodes if n["Resources"].get(resource)}


def test_work_ran_on_several_nodes(faulted_run):
    d, nodes = faulted_run["dir"], faulted_run["nodes"]
    m = _manifest(d)
    assert m["status"] == "completed" and m["rounds_completed"] == 1
    samplers, trainers = _nodes_with(nodes, "sampler"), _nodes_with(nodes, "trainer")
    assert len(samplers) == 2 and len(trainers) == 1 and not samplers & trainers
    workers = m["workers"]
    # The two sampler replicas (of both drivers) sit on the two sampler nodes; the trainer on the third.
    assert {w["node_id"] for w in workers if w["role"] == "sampler" and w["replica"] in (0, 1)} == samplers
    assert {w["node_id"] for w in workers if w["role"] == "trainer"} == trainers
    # Every worker ran the code Ray shipped with the job, not this checkout.
    codes = {w["code"] for w in workers}
    assert all(Path(c).resolve() != ROOT.resolve() and "runtime_resources" in c for c in codes), codes
    placement = m["placement"]
    assert set(placement["baseline"]["sampler"]) == samplers, "both samplers share the held-out prompts"
    assert sum(placement["baseline"]["sampler"].values()) == 16
    verify_nodes = set(placement["round-0/verify"]["verify"])
    assert len(verify_nodes) >= 2, f"verification tasks should spread over the nodes: {placement['round-0/verify']}"
    assert set(placement["round-0/train"]["trainer"]) == trainers


def test_sampler_killed_mid_sampling_nothing_lost(faulted_run):
    d, killed = faulted_run["dir"], faulted_run["killed"]
    m = _manifest(d)
    died = [f for f in m["faults"] if f["role"] == "sampler"]
    assert len(died) == 1 and died[0]["stage"] == "round-0/sample" and died[0]["pid"] == killed["sampler"]["pid"]
    assert died[0]["chunks_requeued"] and died[0]["replacement"] is True
    assert "ActorDiedError" in died[0]["error"] or "RayActorError" in died[0]["error"]
    # A replacement replica was started, on a sampler node, after the death.
    started = [w for w in m["workers"] if w["role"] == "sampler"]
    assert len(started) >= 3 and started[2]["node_id"] in _nodes_with(faulted_run["nodes"], "sampler")
    # The round's samples: every problem exactly n times, no (problem, index) twice.
    problems = {p["id"] for p in _jsonl(d / "round-000" / "problems.jsonl")}
    samples = [s for s in _jsonl(d / "round-000" / "samples.jsonl") if not s["hinted"]]
    keys = Counter((s["problem_id"], s["index"]) for s in samples)
    assert max(keys.values()) == 1, "a prompt was sampled twice into the round's file"
    per_problem = Counter(s["problem_id"] for s in samples)
    assert set(per_problem) == problems and set(per_problem.values()) == {TINY_RUN["sampling"]["n"]}
    assert sum(m["placement"]["round-0/sample"]["sampler"].values()) == len(problems)


def test_verify_worker_killed_task_retried(faulted_run):
    d, killed = faulted_run["dir"], faulted_run["killed"]
    assert killed["verify"]["stage"] == "round-0/verify"
    samples = _jsonl(d / "round-000" / "samples.jsonl")
    verdicts = _jsonl(d / "round-000" / "verdicts.jsonl")
    names = [v["name"] for v in TINY_RUN["verifiers"]]
    per = Counter((v["sample_id"], v["verifier"]) for v in verdicts)
    assert set(per) == {(s["id"], n) for s in samples for n in names} and set(per.values()) == {1}
    failed = [v for v in verdicts if v["outcome"] == "error"]
    assert not failed, f"the killed task's batch must be retried, not turned into errors: {failed[:2]}"
    placed = faulted_run["killed_manifest"]["placement"]["round-0/verify"]["verify"]
    assert sum(placed.values()) == len(samples) * len(names), "each batch counted once, the retried one included"


def test_trainer_killed_mid_training_retried(faulted_run):
    d, killed = faulted_run["dir"], faulted_run["killed"]
    m = _manifest(d)
    died = [f for f in m["faults"] if f["role"] == "trainer"]
    assert len(died) == 1 and died[0]["stage"] == "round-0/train" and died[0]["pid"] == killed["trainer"]["pid"]
    assert died[0]["retry"] is True and died[0]["attempt"] == 1
    trainers = [w for w in m["workers"] if w["role"] == "trainer"]
    assert [w["attempt"] for w in trainers] == [1, 2] and trainers[0]["pid"] != trainers[1]["pid"]
    train = json.loads((d / "round-000" / "train.json").read_text())
    assert train["steps"] >= 1 and train["examples"] > 0
    adapter = d / "round-000" / "adapter"
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0 and (adapter / "adapter_config.json").exists()
    assert not list(adapter.glob(".*.tmp")), "no half-written files"


def test_driver_killed_resume_reconnects(faulted_run):
    d = faulted_run["dir"]
    before, after = faulted_run["killed_manifest"], _manifest(d)
    assert "round-0/train" in before["done"] and "round-0/evaluate" not in before["done"]
    assert after["status"] == "completed" and "round-0/plan" in after["done"]
    stages = [h["stage"] for h in after["history"]]
    assert len(stages) == len(set(stages)), f"a stage ran twice: {stages}"
    first = {h["stage"] for h in after["history"] if h["attempt"] == 1}
    assert {"baseline", "round-0/sample", "round-0/verify", "round-0/train"} <= first
    assert {h["stage"] for h in after["history"] if h["attempt"] == 2} == {"round-0/evaluate", "round-0/plan"}
    # The resumed driver placed its sampler on the same cluster again, and the held-out set once.
    samplers = _nodes_with(faulted_run["nodes"], "sampler")
    evaluate = after["placement"]["round-0/evaluate"]["sampler"]
    assert set(evaluate) <= samplers and sum(evaluate.values()) == 16
    resumed = [w for w in after["workers"] if w["role"] == "sampler" and w["stage"] == "round-0/evaluate"]
    assert resumed and {w["node_id"] for w in resumed} <= samplers
    assert "resuming" in faulted_run["resume_log"]
