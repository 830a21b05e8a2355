"""Several real Ray nodes on one machine, started the way a user starts a cluster:
`ray start --head` and `ray start --address=...`, each node with its own logical CPUs and
custom resources. Each node is a `ray start --block` process in its own session, so stopping
the cluster kills exactly its processes (never `ray stop`, which would take down every Ray
instance on the machine, other people's included). Its temp dir is private, so no other
`ray.init()` on the machine finds it through /tmp/ray/ray_current_cluster. Ray 2.60 turns
token authentication on for `ray start` clusters; this one has its own token, which every
node and every driver of it is given (`env()`), as on a real cluster.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRayCluster:
    def __init__(self, root: Path, object_store_bytes: int = 100 * 2**20):
        self.root = Path(root)
        self.temp_dir = str(self.root / "ray")
        self.store = object_store_bytes
        self.procs: list[subprocess.Popen] = []
        self.address: str | None = None
        self.cwd = self.root / "node-cwd"  # nodes do not run from the repository
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.token = self.root / "auth_token"
        self.token.write_text(secrets.token_hex(32))

    def env(self) -> dict[str, str]:
        """The environment of a node or of a driver that joins this cluster."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
        env.update(RAY_USAGE_STATS_ENABLED="0", VLLM_CPU_KVCACHE_SPACE="1", RAY_AUTH_MODE="token",
                   RAY_AUTH_TOKEN_PATH=str(self.token),
                   # Ray's memory monitor counts the whole machine: on a shared CI box it kills
                   # this cluster's workers for memory other processes use. The tests kill
                   # workers on purpose; the kernel's OOM killer still guards the machine.
                   RAY_memory_monitor_refresh_ms="0")
        return env

    def _start(self, args: list[str], name: str) -> None:
        ports = ["--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                 "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
                 "--min-worker-port", "0", "--max-worker-port", "0"]
        log_path = self.root / f"{name}.log"
        log = open(log_path, "w")
        # All nodes share one temp dir (one session directory, as `ray start` on one machine
        # does); seen: a worker process start that failed once on a runtime_env `cd` race
        # between the nodes' agents, which Ray retried.
        p = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", "--temp-dir", self.temp_dir,
                              "--object-store-memory", str(self.store), *ports, *args],
                             cwd=self.cwd, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs.append(p)
        # One node at a time: several raylets starting at once on two cores time out.
        deadline = time.time() + 120
        while "Ray runtime started" not in log_path.read_text():
            if p.poll() is not None or time.time() > deadline:
                tail = "\n".join(log_path.read_text().splitlines()[-15:])
                raise RuntimeError(f"Ray node {name} did not start (exit code {p.poll()}); {log_path} ends:\n{tail}")
            time.sleep(0.5)

    def add_head(self, num_cpus: int, resources: dict[str, float]) -> str:
        for attempt in range(2):  # a free port can be taken by another Ray on the machine before ours binds it
            port = free_port()
            try:
                self._start(["--head", "--port", str(port), "--include-dashboard", "false",
                             "--ray-client-server-port", str(free_port()),
                             "--num-cpus", str(num_cpus), "--resources", json.dumps(resources)], "head")
                break
            except RuntimeError:
                self.stop()
                if attempt:
                    raise
        self.address = f"127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:  # workers that come before the head's GCS fail to join
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.procs[-1].poll() is not None:
                    raise RuntimeError(f"the Ray head exited; see {self.root}/head.log") from None
                time.sleep(0.5)
        self._wait_nodes(1, 120)
        return self.address

    def add_node(self, num_cpus: int, resources: dict[str, float]) -> None:
        assert self.address, "start the head first"
        n = len(self.procs)
        # One log monitor per machine (the head's): they all read the same session directory.
        self._start(["--address", self.address, "--include-log-monitor", "false", "--num-cpus", str(num_cpus),
                     "--resources", json.dumps(resources)], f"node{n}")

    def wait(self, timeout: float = 180) -> None:
        """Until every node started is alive in the cluster."""
        self._wait_nodes(len(self.procs), timeout)

    def nodes(self) -> list[dict]:
        """Alive nodes as [{NodeID, Resources}], read by a separate short-lived driver."""
        code = ("import json, ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
                "print(json.dumps([{'NodeID': n['NodeID'], 'Resources': n['Resources']} for n in ray.nodes() "
                "if n['Alive']]))" % self.address)
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=self.env(),
                           cwd=self.cwd, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"could not list the nodes: {p.stderr[-2000:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])

    def _wait_nodes(self, n: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a Ray node exited ({p.returncode}); see {self.root}/*.log")
            try:
                if len(self.nodes()) >= n:
                    return
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            time.sleep(1)
        raise TimeoutError(f"{n} Ray nodes did not come up in {timeout}s; see {self.root}/*.log")

    def stop(self) -> None:
        """SIGTERM lets each `ray start --block` stop its node's processes; SIGKILL of the
        session is the backstop."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs = []
