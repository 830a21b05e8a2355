"""Finding and killing what a sandbox run left behind, by uid or by session, via /proc."""
from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)


def exited(pid: int) -> bool:
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def procs():
    """(pid, real uid, session, pgrp) of every live (non-zombie) process."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if fields[0] == b"Z":
                continue
            with open(f"/proc/{name}/status", "rb") as f:
                uid_line = next(line for line in f if line.startswith(b"Uid:"))
            yield int(name), int(uid_line.split()[1]), int(fields[3]), int(fields[2])
        except (OSError, StopIteration, IndexError, ValueError):
            continue  # gone while we looked


def kill_all(pid: int | None, uid: int | None) -> None:
    """SIGKILL the process group and every process of the run's uid (or session)."""
    if pid is not None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for _ in range(200):  # a fork bomb keeps forking between sweeps; it converges fast under NPROC
        victims = [p for p, u, sid, pgrp in procs()
                   if (u == uid if uid is not None else (sid == pid or pgrp == pid))]
        if not victims:
            return
        for p in victims:
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    log.warning("sandbox: processes of run %s survived 200 kill sweeps", uid or pid)


def leftover_processes(uid: int | None = None, session: int | None = None) -> list[int]:
    """Live processes of a finished run (for tests and health checks): should be []."""
    return [p for p, u, sid, _ in procs() if (uid is not None and u == uid) or sid == session]
