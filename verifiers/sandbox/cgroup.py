"""One memory and process budget for a whole sandbox run: a cgroup (v2, or v1 memory + pids).

The verifier creates `<its own cgroup>/code-sandbox/<owner pid>.<owner start>.<n>` before a
run; the launcher joins it before forking, so every process of the run is charged to it.
The name records the owning verifier process, so a verifier that starts later removes the
cgroups of owners that died (`sweep_stale`). Where no cgroup can be made (not root, a
container whose cgroup tree is read-only, v2 without delegation) `create` returns None
with the reason, and the run is bounded per process only (RLIMIT_AS x RLIMIT_NPROC).
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
GROUP = "code-sandbox"
_counter = itertools.count()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (tells a reused pid from the original)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def owner_alive(pid: int, start: int) -> bool:
    return start_time(pid) == start


@lru_cache(maxsize=1)
def bases() -> tuple[dict[str, Path], str]:
    """({controller: parent dir of run cgroups}, note). Empty dict with the reason if unusable."""
    if os.geteuid() != 0:
        return {}, "none: not root"
    try:
        own = {}
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                own[c] = path.lstrip("/")
        if (ROOT / "cgroup.controllers").exists():  # v2, unified
            parent = ROOT / own.get("", "")
            have = (parent / "cgroup.controllers").read_text().split()
            if not {"memory", "pids"} <= set(have):
                return {}, f"none: cgroup v2 at {parent} does not delegate memory and pids"
            (parent / "cgroup.subtree_control").write_text("+memory +pids")
            base = parent / GROUP
            base.mkdir(exist_ok=True)
            (base / "cgroup.subtree_control").write_text("+memory +pids")
            return {"v2": base}, "v2"
        out = {}
        for c in ("memory", "pids"):
            if not (ROOT / c / "cgroup.procs").exists():
                return {}, f"none: cgroup v1 has no {c} controller mounted"
            base = ROOT / c / own.get(c, "") / GROUP
            base.mkdir(exist_ok=True)
            out[c] = base
        return out, "v1"
    except OSError as e:
        return {}, f"none: {e}"


@dataclass
class RunCgroup:
    dirs: dict[str, Path]
    version: str

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def pids(self) -> list[int]:
        out = set()
        for f in self.procs_files:
            try:
                out.update(int(x) for x in Path(f).read_text().split())
            except (OSError, ValueError):
                pass
        return sorted(out)

    def oom_kills(self) -> int:
        try:
            if self.version == "v2":
                text = (self.dirs["v2"] / "memory.events").read_text()
            else:
                text = (self.dirs["memory"] / "memory.oom_control").read_text()
            return next((int(v) for k, v in (ln.split() for ln in text.splitlines()) if k == "oom_kill"), 0)
        except (OSError, ValueError, KeyError):
            return 0

    def kill(self, patience_s: float = 10.0) -> bool:
        """SIGKILL every process in the group until it is empty: the task limit bounds a
        fork bomb, and killed processes leave the group once they have exited. True if empty."""
        if self.version == "v2":
            try:
                (self.dirs["v2"] / "cgroup.kill").write_text("1")
            except OSError:
                pass
        deadline, pause = time.monotonic() + patience_s, 0.0005
        while True:
            victims = self.pids()
            if not victims:
                return True
            if time.monotonic() > deadline:
                log.warning("sandbox: processes %s of %s still there after %.0f s", victims, self.dirs, patience_s)
                return False
            for p in victims:
                try:
                    os.kill(p, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(pause)
            pause = min(pause * 2, 0.02)

    def remove(self) -> bool:
        ok = True
        for d in self.dirs.values():
            for _ in range(100):  # the last killed processes take a moment to leave
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.002)
            else:
                log.warning("sandbox: could not remove cgroup %s", d)
                ok = False
        return ok


def create(memory_bytes: int, max_procs: int) -> tuple[RunCgroup | None, str]:
    """A fresh cgroup with the run's budget, or (None, why not)."""
    found, note = bases()
    if not found:
        return None, note
    me = os.getpid()
    name = f"{me}.{start_time(me)}.{next(_counter)}"
    dirs = {}
    try:
        for key, base in found.items():
            d = base / name
            d.mkdir()
            dirs[key] = d
        if note == "v2":
            d = dirs["v2"]
            (d / "memory.max").write_text(str(memory_bytes))
            try:
                (d / "memory.swap.max").write_text("0")
            except OSError:
                pass
            (d / "pids.max").write_text(str(max_procs))
        else:
            (dirs["memory"] / "memory.limit_in_bytes").write_text(str(memory_bytes))
            try:  # no swapping around the limit where swap accounting exists
                (dirs["memory"] / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
            except OSError:
                pass
            (dirs["pids"] / "pids.max").write_text(str(max_procs))
    except OSError as e:
        RunCgroup(dirs, note).remove()
        return None, f"none: {e}"
    return RunCgroup(dirs, note), f"{note}: memory {memory_bytes >> 20} MiB, {max_procs} tasks for the whole run"


def sweep_stale() -> int:
    """Kill and remove run cgroups whose owning verifier process is gone; returns how many."""
    found, note = bases()
    removed = 0
    names: set[str] = set()
    for base in found.values():
        try:
            names.update(p.name for p in base.iterdir() if p.is_dir())
        except OSError:
            continue
    for name in names:
        try:
            pid, start, _ = name.split(".")
            if owner_alive(int(pid), int(start)):
                continue
        except ValueError:
            continue
        cg = RunCgroup({k: b / name for k, b in found.items() if (b / name).is_dir()}, note)
        cg.kill()
        removed += cg.remove()
    return removed
