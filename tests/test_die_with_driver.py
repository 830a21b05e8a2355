"""Workers die with their driver: a `kill -9` of the driver runs no shutdown, and the vLLM engine
processes (children of the sampler actor, outside the driver's process group) outlived a group kill.
The sampler and trainer actors watch the driver (loop.cluster.cleanup.die_with_driver) and take
their process tree down with them. Real processes: a driver, a worker watching it, the worker's child."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT

from loop.cluster.cleanup import DRIVER_ENV, _start_time, die_with_driver

WORKER = """
import subprocess, sys, time
sys.path.insert(0, {root!r})
from loop.cluster.cleanup import die_with_driver
assert die_with_driver(poll_s=0.1)
child = subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids, timeout=60.0) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def test_a_worker_and_its_own_session_child_die_when_the_driver_is_killed():
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    env = {**os.environ, DRIVER_ENV: f"{driver.pid}:{_start_time(driver.pid)}"}
    worker = subprocess.Popen([sys.executable, "-c", WORKER.format(root=str(ROOT))], env=env,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(worker.stdout.readline())
    try:
        time.sleep(0.5)
        assert _alive(worker.pid) and _alive(child)  # alive while the driver is
        driver.kill()  # SIGKILL: no cleanup of its own
        driver.wait()
        assert _wait_gone([worker.pid, child]) == []
        assert worker.wait(timeout=10) == -9
    finally:
        for p in (worker.pid, child, driver.pid):
            try:
                os.kill(p, 9)
            except OSError:
                pass


def test_no_watch_without_a_local_driver(monkeypatch):
    monkeypatch.delenv(DRIVER_ENV, raising=False)
    assert die_with_driver() is False  # a worker on a remote node: nothing to watch
