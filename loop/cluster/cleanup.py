"""What a process tree leaves behind, so shutdown (or the next start) can remove it (Linux; elsewhere a no-op).

Ray agents orphaned by a killed run: Ray's raylet starts a dashboard agent and a runtime-env
agent per node. When the driver is killed with SIGKILL, the raylet and GCS go with it, but the two
agents see their raylet die, try to report it to the GCS that is gone, and hang there for good
(seen with Ray 2.x here: ~210 MiB of resident memory left per `kill -9`). An agent is only ever
a child of its raylet, so one whose parent is no longer a raylet serves nothing:
`orphaned_ray_agents` finds those (same user only) and `sweep_orphaned_ray_agents` kills them.

vLLM's engine talks to its workers through POSIX shared memory (`/dev/shm/psm_*`). Its own
shutdown unlinks most segments, but a worker stopped mid-shutdown leaves its own behind
(160-240 MiB apparent size each). The sampler records the segments its engine's process
tree maps before closing it, and unlinks whatever is still there afterwards: names are
random per engine, so nothing of another process is touched. A driver killed with SIGKILL
closes nothing, so the names are also written down when the engines start
(`<state_dir>/.engine-shm/<driver pid>.json`, `record_segments`) and the next start unlinks
those of a dead driver that no live process maps (`sweep_recorded_segments`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

SHM = Path("/dev/shm")


def process_tree(pid: int) -> set[int]:
    """pid and all its descendants (from /proc)."""
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo += kids.get(p, [])
    return out


def shm_segments(pids: set[int]) -> set[str]:
    """Names of the /dev/shm/psm_* segments these processes map."""
    names: set[str] = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            if "/dev/shm/psm_" in line:
                names.add(line.split("/dev/shm/", 1)[1].split()[0])
    return names


def unlink_segments(names: set[str]) -> list[str]:
    """Remove the segments that are still there; returns their names."""
    removed = []
    for name in names:
        if "/" in name or not name.startswith("psm_"):
            continue
        try:
            (SHM / name).unlink()
            removed.append(name)
        except FileNotFoundError:
            pass
        except OSError:
            continue
    return removed


def reap(pids: set[int], timeout: float = 15.0) -> list[int]:
    """Wait up to `timeout` s for these processes to exit, then SIGKILL the ones left (an
    engine worker orphaned by its parent's shutdown can linger); returns the killed pids."""
    import time

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    deadline = time.time() + timeout
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    return kill([p for p in pids if alive(p)])


def kill(pids) -> list[int]:
    """SIGKILL each; returns the pids that were signalled."""
    import signal

    killed = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except OSError:
            pass
    return killed


RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def orphaned_ray_agents() -> list[int]:
    """Ray agent processes of this user whose parent is not a raylet (their run was killed)."""
    uid = os.getuid()
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        pid = int(stat.parent.name)
        cmd = _cmdline(pid)
        if not cmd.startswith(RAY_AGENTS):
            continue
        try:
            if stat.parent.stat().st_uid != uid:
                continue
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if "raylet" not in _cmdline(ppid):
            out.append(pid)
    return out


def sweep_orphaned_ray_agents() -> list[int]:
    """Kill the orphaned Ray agents; returns their pids."""
    return kill(orphaned_ray_agents())


def mapped_segments() -> set[str]:
    """/dev/shm/psm_* names that some live process maps now."""
    return shm_segments({int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()})


def record_segments(directory: Path, names) -> None:
    """Add `names` to this driver's record (written whole, atomically)."""
    from loop.run.state import atomic_write_text

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{os.getpid()}.json"
    try:
        old = set(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        old = set()
    atomic_write_text(path, json.dumps(sorted(old | set(names))))


def forget_segments(directory: Path) -> None:
    """This driver closed its engines itself: nothing of its record is left to sweep."""
    (directory / f"{os.getpid()}.json").unlink(missing_ok=True)


def sweep_recorded_segments(directory: Path) -> list[str]:
    """Unlink the recorded segments of drivers that are gone and that no live process maps;
    returns their names. A live driver's record is left alone."""
    from loop.run.state import pid_alive

    removed: list[str] = []
    if not directory.is_dir():
        return removed
    live = None
    for path in directory.glob("*.json"):
        if not path.stem.isdigit() or pid_alive(int(path.stem)):
            continue
        try:
            names = {n for n in json.loads(path.read_text()) if isinstance(n, str)}
        except (OSError, ValueError, TypeError):
            names = set()
        live = mapped_segments() if live is None else live
        removed += unlink_segments(names - live)
        path.unlink(missing_ok=True)
    return removed


# ---- workers die with their driver ----------------------------------------------------------
DRIVER_ENV = "LOOP_DRIVER"  # "<pid>:<start time>" of the driver, set for workers on its machine


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def driver_stamp() -> str:
    """This process as a driver its workers can watch (the start time guards against pid reuse)."""
    return f"{os.getpid()}:{_start_time(os.getpid()) or ''}"


_watching = False


def die_with_driver(poll_s: float = 0.5) -> bool:
    """In a worker on the driver's machine (every Ray worker, through runtime_env's
    worker_process_setup_hook; the sampler and trainer actors call it too): a daemon thread that,
    once the driver is gone (killed -9, so no shutdown ran), kills this process's descendants (the
    vLLM engine core and its helpers, which leave the process group and outlived a group kill) and
    then this process. Returns whether a watch was started (not on a remote node, nor off Linux)."""
    import signal
    import threading
    import time

    global _watching
    pid_s, _, start = os.environ.get(DRIVER_ENV, "").partition(":")
    if not pid_s.isdigit() or not Path("/proc").is_dir():
        return False
    if _watching:  # already (Ray's worker setup hook, then the actor's own call)
        return True
    _watching = True
    pid = int(pid_s)

    def gone() -> bool:
        now = _start_time(pid)
        return now is None or (bool(start) and now != start)

    def watch() -> None:
        while not gone():
            time.sleep(poll_s)
        me = os.getpid()
        kill(sorted(process_tree(me) - {me}))
        os.kill(me, signal.SIGKILL)

    if gone():
        watch()
    threading.Thread(target=watch, name="die-with-driver", daemon=True).start()
    return True
