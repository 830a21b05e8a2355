"""Run untrusted Python in a sandbox and report what happened, never raising.

Each run gets a fresh temporary directory (removed after), a new session, a minimal
environment and `python -I -S -B`. Isolation is applied in the child by
`sandbox_launch.py` before exec; `SandboxResult.isolation` says what a run actually got.

As root (the project's workers): a random unused uid per run (so RLIMIT_NPROC is per run,
the verifier cannot be signalled or its /proc read, the repo is not writable, and every
process of the run can be found by uid), no_new_privs, rlimits (CPU, address space, file
size, processes, open files, no core), new network and mount namespaces (no network; /tmp,
/var/tmp, /dev/shm, /run/lock are one private size-limited tmpfs), a wall-clock timeout,
an output cap, and a final SIGKILL sweep of the group and the uid. As a normal user the
namespaces come from a user namespace when allowed, the program keeps the caller's uid
(NPROC is per user; the parent can be signalled) and the sweep is by session.
docs/plugins.md ("Code problems and the sandbox") has the full table.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import select
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from verifiers.sandbox_procs import exited, kill_all, leftover_processes  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).with_name("sandbox_launch.py")
Status = Literal["ok", "failed", "timeout", "memory", "output_limit", "killed", "sandbox_error"]
GRACE_S = 0.2      # after the program exits, how long a straggler may hold its pipes open
UID_BASE = 0x70000000  # per-run uids are drawn above this; no account owns them


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 5.0          # wall clock, startup included
    memory_mb: int = 512            # address space per process
    max_output_bytes: int = 1 << 20  # stdout + stderr
    disk_mb: int = 64               # private tmpfs size
    max_file_mb: int = 16
    max_procs: int = 32             # processes + threads of the run's uid
    max_open_files: int = 64
    tail_bytes: int = 4096          # how much of stdout / stderr is kept (the end)
    network: bool = False           # True leaves the network namespace alone


@dataclass
class SandboxResult:
    status: Status
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""                # tail
    stderr: str = ""                # tail
    duration_s: float = 0.0
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    isolation: dict = field(default_factory=dict)
    error: str = ""                 # for sandbox_error: what broke

    def to_dict(self) -> dict:
        return asdict(self)


class _Tail:
    def __init__(self, keep: int):
        self.keep, self.total, self.buf = keep, 0, bytearray()

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.buf += chunk
        if len(self.buf) > self.keep:
            del self.buf[: len(self.buf) - self.keep]

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace")


def _world_usable(path: str) -> bool:
    """Can a uid with no groups and no ownership traverse to and execute `path`?"""
    p = Path(os.path.realpath(path))
    try:
        if not p.stat().st_mode & stat.S_IXOTH:
            return False
        return all(d.stat().st_mode & stat.S_IXOTH for d in p.parents)
    except OSError:
        return False


@lru_cache(maxsize=None)
def interpreter(unprivileged: bool) -> str:
    """The Python the program runs under: ours, or a system one an unprivileged uid can reach."""
    if not unprivileged:
        return sys.executable
    for cand in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3")):
        # The prefix holds the stdlib (and libpython); it must be reachable too.
        if cand and _world_usable(cand) and _world_usable(str(Path(os.path.realpath(cand)).parent.parent)):
            return os.path.realpath(cand)
    raise OSError("no Python interpreter is usable by an unprivileged uid (ours is under a private "
                  "directory); install a system python3 or pass python=... to sandbox.run")


def run(source: str, *, files: dict[str, str] | None = None, stdin: bytes = b"",
        limits: SandboxLimits = SandboxLimits(), python: str | None = None,
        tmp_root: str | None = None) -> SandboxResult:
    """Run `source` as main.py next to `files` (flat names). Never raises for the program's
    behaviour; a failure of the sandbox itself is status `sandbox_error`."""
    start = time.monotonic()
    uid = UID_BASE + secrets.randbelow(1 << 24) if os.geteuid() == 0 else None
    try:
        python = python or interpreter(uid is not None)
        workdir = tempfile.mkdtemp(prefix="sandbox-", dir=tmp_root)
    except OSError as e:
        return SandboxResult("sandbox_error", error=f"cannot prepare the sandbox: {e}",
                             duration_s=time.monotonic() - start)
    try:
        return _run_in(workdir, {"main.py": source, **(files or {})}, stdin, limits, python, uid, start)
    except Exception as e:  # noqa: BLE001 - a bug or OS failure here is the sandbox's, not the program's
        log.exception("sandbox failed")
        return SandboxResult("sandbox_error", error=f"sandbox failed: {type(e).__name__}: {e}",
                             duration_s=time.monotonic() - start)
    finally:
        shutil.rmtree(workdir, onerror=_force_remove)


def _force_remove(func, path, _exc) -> None:
    try:  # a program may leave directories without permissions
        os.chmod(os.path.dirname(path), 0o700)
        os.chmod(path, 0o700)
        func(path)
    except OSError as e:
        log.warning("could not remove %s from a sandbox directory: %s", path, e)


def _run_in(workdir: str, files: dict[str, str], stdin: bytes, limits: SandboxLimits,
            python: str, uid: int | None, start: float) -> SandboxResult:
    def broken(msg: str, **kw) -> SandboxResult:
        return SandboxResult("sandbox_error", error=msg, duration_s=time.monotonic() - start, **kw)

    try:
        for name, text in files.items():
            if "/" in name or name.startswith("."):
                return broken(f"file name {name!r} must be a plain name without '/' or leading '.'")
            Path(workdir, name).write_text(text, encoding="utf-8")
            os.chmod(Path(workdir, name), 0o644)  # readable by the sandbox uid whatever our umask
        if uid is not None:
            os.chown(workdir, uid, uid)
        stdin_file = tempfile.TemporaryFile()
        stdin_file.write(stdin)
        stdin_file.seek(0)
    except OSError as e:
        return broken(f"cannot write the sandbox files: {e}")
    cpu = max(1, int(limits.timeout_s + 0.999))
    mb = 1 << 20
    status_r, status_w = os.pipe()
    cfg = {
        "dir": workdir, "files": sorted(files), "main": "main.py", "python": python, "uid": uid,
        "status_fd": status_w, "network": limits.network, "private_tmp": True, "disk_mb": limits.disk_mb,
        "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
        "rlimits": {
            "RLIMIT_CPU": (cpu, cpu + 1), "RLIMIT_AS": (limits.memory_mb * mb,) * 2,
            "RLIMIT_FSIZE": (limits.max_file_mb * mb,) * 2, "RLIMIT_NPROC": (limits.max_procs,) * 2,
            "RLIMIT_NOFILE": (limits.max_open_files,) * 2, "RLIMIT_CORE": (0, 0),
        },
    }
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", str(LAUNCHER), json.dumps(cfg)], stdin=stdin_file,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir, env=cfg["env"],
            start_new_session=True, pass_fds=(status_w,))
    except OSError as e:
        os.close(status_r)
        return broken(f"cannot start the sandbox launcher: {e}")
    finally:
        os.close(status_w)
        stdin_file.close()
    try:
        return _supervise(proc, status_r, limits, uid, start)
    except BaseException:
        kill_all(proc.pid, uid)
        proc.wait()
        raise
    finally:
        os.close(status_r)
        proc.stdout.close()
        proc.stderr.close()


def _read_status(fd: int, deadline: float) -> str:
    """The launcher's last status line; '' if it died or hung without one."""
    data = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    lines = data.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def _supervise(proc: subprocess.Popen, status_r: int, limits: SandboxLimits, uid: int | None,
               start: float) -> SandboxResult:
    deadline = start + limits.timeout_s
    status = _read_status(status_r, deadline)
    if not status.startswith("OK "):
        kill_all(proc.pid, uid)
        try:
            _, err = proc.communicate(timeout=1)
        except subprocess.TimeoutExpired:
            err = b""
        msg = status[4:] if status.startswith("ERR ") else "the launcher exited without reporting"
        return SandboxResult("sandbox_error", error=f"sandbox setup failed: {msg}",
                             stderr=err.decode(errors="replace")[-limits.tail_bytes:],
                             duration_s=time.monotonic() - start)
    isolation = json.loads(status[3:])
    out, err = _Tail(limits.tail_bytes), _Tail(limits.tail_bytes)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    try:  # readable once the program exits; it stays unreaped (its pid reserved) until wait()
        pidfd = os.pidfd_open(proc.pid)
        sel.register(pidfd, selectors.EVENT_READ, None)
    except (AttributeError, OSError):  # kernel < 5.3: poll with waitid instead
        pidfd = None
    reason, exited_at = None, None
    try:
        while True:
            now = time.monotonic()
            if exited_at is not None and (len(sel.get_map()) == 0 or now - exited_at >= GRACE_S):
                break
            if now >= deadline:
                reason = "timeout" if exited_at is None else None  # else: a straggler held the pipes
                break
            wait = min(deadline - now, GRACE_S if exited_at is not None else 1.0,
                       1.0 if pidfd is not None else 0.01)
            if pidfd is None and exited_at is None and exited(proc.pid):
                exited_at = now
            for key, _ in sel.select(wait):
                if key.data is None:
                    sel.unregister(pidfd)
                    exited_at = time.monotonic()
                    continue
                chunk = os.read(key.fd, 65536)
                if chunk:
                    key.data.add(chunk)
                else:
                    sel.unregister(key.fileobj)
            if out.total + err.total > limits.max_output_bytes:
                reason = "output_limit"
                break
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
    kill_all(proc.pid, uid)
    rc = proc.wait()
    exit_code, sig = (rc, None) if rc >= 0 else (None, -rc)
    if reason:
        status_ = reason
        exit_code, sig = None, signal.SIGKILL
    elif sig is not None:
        status_ = {signal.SIGXCPU: "timeout", signal.SIGXFSZ: "output_limit"}.get(sig, "killed")
    elif rc != 0:
        last = err.text().strip().splitlines()[-1:] or [""]
        status_ = "memory" if last[0].startswith("MemoryError") else "failed"
    else:
        status_ = "ok"
    return SandboxResult(status_, exit_code=exit_code, signal=int(sig) if sig else None,
                         stdout=out.text(), stderr=err.text(), duration_s=time.monotonic() - start,
                         stdout_bytes=out.total, stderr_bytes=err.total, isolation=isolation)
