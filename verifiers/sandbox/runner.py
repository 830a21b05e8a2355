"""Run untrusted Python in a sandbox and report what happened, never raising.

Each run gets a fresh work directory (removed after, and by the next verifier if this one
dies), a minimal environment and `python -I -S -B`. Isolation is applied by
`launcher.py` before exec; `SandboxResult.isolation` says what a run actually got.

As root (the project's workers): a random unused uid per run (it cannot signal, trace or
read the verifier; every process of the run can be found by uid), new pid, ipc, uts,
network and mount namespaces, a minimal filesystem view (a tmpfs root holding only /usr
and the Python runtime read-only, a private /proc, /tmp, /dev/shm and the program's
/work), one memory and task budget for the whole run (a cgroup), rlimits, no_new_privs,
a seccomp filter (no ptrace, mounts, new namespaces, bpf, keyrings, ...), a wall-clock
timeout, an output cap, and a final kill of the cgroup, the namespace and the uid. Without
root the namespaces come from a user namespace when the kernel allows it.
docs/plugins.md ("Code problems and the sandbox") has the full table and what each
fallback loses.

A program can get extra channels: `channel=True` captures what it writes to fd 3 into
`SandboxResult.channel` (capped, never a tail), and `fds={n: host_fd}` hands it host fds
(pipes to another sandboxed process) as fd n.
"""
from __future__ import annotations

import json
import logging
import marshal
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
import threading
import time
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

from verifiers.sandbox import cgroup as sandbox_cgroup
from verifiers.sandbox import pyast
from verifiers.sandbox.procs import exited, kill_all, leftover_processes  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).with_name("launcher.py")
Status = Literal["ok", "failed", "timeout", "memory", "output_limit", "killed", "sandbox_error"]
GRACE_S = 0.2      # after the program exits, how long a straggler may hold its pipes open
SETUP_S = 10.0     # the sandbox's own setup (namespaces, mounts) may take this long on a loaded machine
UID_BASE = 0x70000000  # per-run uids are drawn above this; no account owns them
UID_SPAN = 1 << 24
CHANNEL_FD = 3     # with channel=True the program's fd 3 is a pipe the verifier reads
OWNER_FILE = ".owner.json"  # in each work directory: which verifier process made it


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 5.0          # wall clock from the program's exec (interpreter start included)
    memory_mb: int = 512            # the whole run (cgroup); also the address space of each process
    max_output_bytes: int = 1 << 20  # stdout + stderr
    max_channel_bytes: int = 4 << 20  # fd 3 (channel=True)
    disk_mb: int = 64               # private tmpfs size
    max_file_mb: int = 16
    max_procs: int = 32             # processes + threads of the run
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
    channel: bytes = b""            # what the program wrote to fd 3 (channel=True), up to the cap

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


class _Head(_Tail):
    """Keeps the beginning (the channel is parsed from its start)."""

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if len(self.buf) < self.keep:
            self.buf += chunk[: self.keep - len(self.buf)]


def _world_usable(path: str) -> bool:
    """Can a uid with no groups and no ownership traverse to and execute `path`?"""
    p = Path(os.path.realpath(path))
    try:
        if not p.stat().st_mode & stat.S_IXOTH:
            return False
        return all(d.stat().st_mode & stat.S_IXOTH for d in p.parents)
    except OSError:
        return False


@cache
def interpreter(unprivileged: bool) -> str:
    """A Python an unprivileged uid can run from the host's filesystem (used when the
    minimal root cannot be built; inside it our own interpreter is always reachable)."""
    if not unprivileged:
        return sys.executable
    for cand in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3")):
        # The prefix holds the stdlib (and libpython); it must be reachable too.
        if cand and _world_usable(cand) and _world_usable(str(Path(os.path.realpath(cand)).parent.parent)):
            return os.path.realpath(cand)
    raise OSError("no Python interpreter is usable by an unprivileged uid (ours is under a private "
                  "directory); install a system python3 or pass python=... to sandbox.run")


def _own_runtime() -> tuple[str, str, list[str]]:
    """(interpreter, its prefix, directories to mask) for the minimal root."""
    exe = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return exe, prefix, [f"{prefix}/lib/{ver}/site-packages", f"{prefix}/lib/{ver}/dist-packages"]


@cache
def runtime_lib_dirs() -> list[str]:
    """The directories under /usr that hold the shared libraries of our interpreter and its
    extension modules (ldd's view), the minimal root shows these instead of all of /usr. [] (all of
    /usr) where the interpreter lives under /usr itself or ldd cannot tell."""
    exe, prefix, _ = _own_runtime()
    if prefix == "/usr" or prefix.startswith("/usr/"):
        return []
    dynload = Path(prefix, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "lib-dynload")
    try:
        out = subprocess.run(["ldd", exe, *map(str, sorted(dynload.glob("*.so")))], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    dirs = set()
    for line in out.splitlines():
        path = line.split("=>")[-1].strip().split(" (")[0].strip()
        if path.startswith("/"):
            for p in (path, os.path.realpath(path)):
                d = os.path.realpath(os.path.dirname(p))
                if d.startswith("/usr/"):
                    dirs.add(d)
                elif not d.startswith(prefix + "/"):
                    return []  # a library outside /usr and the prefix: keep the old, wider view
    kept = sorted(d for d in dirs if not any(d.startswith(o + "/") for o in dirs))
    return kept if any(Path(d, "libc.so.6").exists() for d in kept) else []


# ------------------------------------------------------------------ leftovers of dead verifiers

_swept: set[str] = set()
_sweep_lock = threading.Lock()


def cleanup_stale(tmp_root: str | None = None) -> dict:
    """Remove what verifiers that died mid-run left behind: work directories and cgroups of
    owners that no longer exist, and processes of their run uids. Runs once per process
    and root on the first `run`; safe while other verifiers are running (only dead owners'
    leftovers are touched)."""
    root = tmp_root or tempfile.gettempdir()
    removed = {"dirs": 0, "processes": 0, "cgroups": 0}
    try:
        entries = [e for e in os.scandir(root) if e.name.startswith("sandbox-") and e.is_dir(follow_symlinks=False)]
    except OSError:
        entries = []
    for e in entries:
        try:
            owner = json.loads(Path(e.path, OWNER_FILE).read_text())
            if sandbox_cgroup.owner_alive(owner["pid"], owner["start"]):
                continue
        except (OSError, ValueError, KeyError, TypeError):
            try:  # a directory being set up right now has no record yet; an old one is debris
                if time.time() - e.stat(follow_symlinks=False).st_mtime < 60:
                    continue
            except OSError:
                continue
            owner = {}
        uid = owner.get("uid")
        if isinstance(uid, int) and UID_BASE <= uid < UID_BASE + UID_SPAN:
            removed["processes"] += len(leftover_processes(uid=uid))
            kill_all(None, uid)
        shutil.rmtree(e.path, onerror=_force_remove)
        removed["dirs"] += 1
    removed["cgroups"] = sandbox_cgroup.sweep_stale()
    if any(removed.values()):
        log.warning("sandbox: removed leftovers of dead verifiers under %s: %s", root, removed)
    return removed


def _sweep_once(tmp_root: str | None) -> None:
    key = tmp_root or tempfile.gettempdir()
    with _sweep_lock:
        if key in _swept:
            return
        _swept.add(key)
    try:
        cleanup_stale(tmp_root)
    except Exception:  # noqa: BLE001 - debris of others must not stop this run
        log.exception("sandbox: cleaning up after dead verifiers failed")


# ------------------------------------------------------------------ running a program

def run(source: str, *, files: dict[str, str] | None = None, stdin: bytes | int = b"",
        limits: SandboxLimits = SandboxLimits(), python: str | None = None,
        tmp_root: str | None = None, channel: bool = False, fds: dict[int, int] | None = None,
        minimal_root: bool = True) -> SandboxResult:
    """Run `source` as main.py next to `files` (flat names). `stdin` is bytes or an fd.
    The fds in `fds` and an fd `stdin` belong to the run: they are closed here as soon as
    the launcher holds them, so the far end of a pipe sees EOF when the program exits.
    Never raises for the program's behaviour; a failure of the sandbox itself is status
    `sandbox_error`."""
    start = time.monotonic()
    uid = UID_BASE + secrets.randbelow(UID_SPAN) if os.geteuid() == 0 else None
    owned = [*(fds or {}).values(), *([stdin] if isinstance(stdin, int) else [])]  # closed once launched
    try:
        _sweep_once(tmp_root)
        return _prepare_and_run(source, files, stdin, limits, python, tmp_root, channel, dict(fds or {}),
                                minimal_root, uid, start, owned)
    finally:
        _close(owned)


def _close(fds: list[int]) -> None:
    while fds:
        try:
            os.close(fds.pop())
        except OSError:
            pass


def _prepare_and_run(source, files, stdin, limits, python, tmp_root, channel, fds, minimal_root, uid, start,
                     owned) -> SandboxResult:
    try:  # needed only where the minimal root cannot be built; the launcher says so then
        host_python = python or interpreter(uid is not None)
    except OSError as e:
        host_python = f"!{e}"
    try:
        workdir = tempfile.mkdtemp(prefix="sandbox-", dir=tmp_root)
    except OSError as e:
        return SandboxResult("sandbox_error", error=f"cannot prepare the sandbox: {e}",
                             duration_s=time.monotonic() - start)
    cgroup = None
    try:
        me = os.getpid()
        cgroup, note = sandbox_cgroup.create(limits.memory_mb << 20, limits.max_procs)
        Path(workdir, OWNER_FILE).write_text(json.dumps({
            "pid": me, "start": sandbox_cgroup.start_time(me), "uid": uid,
            "cgroup": [str(d) for d in cgroup.dirs.values()] if cgroup else []}))
        return _run_in(workdir, {"main.py": source, **(files or {})}, stdin, limits, host_python,
                       python is None and minimal_root, uid, start, channel, fds, cgroup, note, owned)
    except Exception as e:  # noqa: BLE001 - a bug or OS failure here is the sandbox's, not the program's
        log.exception("sandbox failed")
        return SandboxResult("sandbox_error", error=f"sandbox failed: {type(e).__name__}: {e}",
                             duration_s=time.monotonic() - start)
    finally:
        if cgroup is not None:
            cgroup.kill()
            cgroup.remove()
        shutil.rmtree(workdir, onerror=_force_remove)


def _force_remove(func, path, _exc) -> None:
    try:  # a program may leave directories without permissions
        os.chmod(os.path.dirname(path), 0o700)
        os.chmod(path, 0o700)
        func(path)
    except OSError as e:
        log.warning("could not remove %s from a sandbox directory: %s", path, e)


def _run_in(workdir: str, files: dict[str, str], stdin: bytes | int, limits: SandboxLimits,
            host_python: str, minimal_root: bool, uid: int | None, start: float, channel: bool,
            fds: dict[int, int], cgroup, cgroup_note: str, owned: list[int]) -> SandboxResult:
    def broken(msg: str, **kw) -> SandboxResult:
        return SandboxResult("sandbox_error", error=msg, duration_s=time.monotonic() - start, **kw)

    try:
        for name, text in files.items():
            if "/" in name or name.startswith(".") or name in ("", "."):
                return broken(f"file name {name!r} must be a plain name without '/' or leading '.'")
            Path(workdir, name).write_text(text, encoding="utf-8")
            os.chmod(Path(workdir, name), 0o644)  # readable by the sandbox uid whatever our umask
        if uid is not None:
            os.chown(workdir, uid, uid)
        if isinstance(stdin, int):
            stdin_file = None
        else:
            stdin_file = tempfile.TemporaryFile()
            stdin_file.write(stdin)
            stdin_file.seek(0)
    except OSError as e:
        return broken(f"cannot write the sandbox files: {e}")
    cpu = max(1, int(limits.timeout_s + 0.999))
    mb = 1 << 20
    own_python, prefix, mask = _own_runtime()
    status_r, status_w = os.pipe()
    chan_r = chan_w = None
    if channel:
        chan_r, chan_w = os.pipe()
        fds[CHANNEL_FD] = chan_w
        owned.append(chan_w)
    cfg = {
        "dir": workdir, "files": sorted(files), "main": "main.py", "uid": uid, "parent": os.getpid(),
        "python": own_python if minimal_root else host_python, "host_python": host_python,
        "prefix": prefix, "mask": mask, "minimal_root": minimal_root, "lib_dirs": runtime_lib_dirs(),
        "status_fd": status_w, "network": limits.network, "disk_mb": limits.disk_mb,
        "fds": {str(k): v for k, v in fds.items()},
        "cgroup_procs": cgroup.procs_files if cgroup else [], "cgroup_note": cgroup_note,
        "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
        "rlimits": {
            "RLIMIT_CPU": (cpu, cpu + 1), "RLIMIT_AS": (limits.memory_mb * mb,) * 2,
            "RLIMIT_FSIZE": (limits.max_file_mb * mb,) * 2, "RLIMIT_NPROC": (limits.max_procs,) * 2,
            "RLIMIT_NOFILE": (limits.max_open_files,) * 2, "RLIMIT_CORE": (0, 0),
        },
    }
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", str(LAUNCHER), marshal.dumps(cfg).hex()],
            stdin=stdin if stdin_file is None else stdin_file,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir, env=cfg["env"],
            start_new_session=True, pass_fds=(status_w, *fds.values()))
    except OSError as e:
        os.close(status_r)
        if chan_r is not None:
            os.close(chan_r)
        return broken(f"cannot start the sandbox launcher: {e}")
    finally:
        os.close(status_w)
        _close(owned)  # the launcher holds them now; EOF must reach the other end when it exits
        if stdin_file is not None:
            stdin_file.close()
    try:
        return _supervise(proc, status_r, chan_r, limits, uid, start, cgroup)
    except BaseException:
        _kill_run(proc, uid, cgroup)
        proc.wait()
        raise
    finally:
        os.close(status_r)
        if chan_r is not None:
            os.close(chan_r)
        proc.stdout.close()
        proc.stderr.close()


def _kill_run(proc: subprocess.Popen, uid: int | None, cgroup) -> None:
    """Everything of the run dies: the launcher (init and its namespace follow it), the
    cgroup, and as a last resort every process of the run's uid."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if cgroup is not None:
        cgroup.kill()
    else:
        kill_all(proc.pid, uid)


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


def _supervise(proc: subprocess.Popen, status_r: int, chan_r: int | None, limits: SandboxLimits,
               uid: int | None, start: float, cgroup) -> SandboxResult:
    status = _read_status(status_r, start + max(SETUP_S, limits.timeout_s))
    deadline = time.monotonic() + limits.timeout_s
    if not status.startswith("OK "):
        _kill_run(proc, uid, cgroup)
        try:
            _, err = proc.communicate(timeout=1)
        except subprocess.TimeoutExpired:
            err = b""
        msg = status[4:] if status.startswith("ERR ") else "the launcher exited without reporting"
        return SandboxResult("sandbox_error", error=f"sandbox setup failed: {msg}",
                             stderr=err.decode(errors="replace")[-limits.tail_bytes:],
                             duration_s=time.monotonic() - start)
    isolation = pyast.literal_eval(status[3:])
    out, err = _Tail(limits.tail_bytes), _Tail(limits.tail_bytes)
    chan = _Head(limits.max_channel_bytes + 1)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    if chan_r is not None:
        sel.register(chan_r, selectors.EVENT_READ, chan)
    try:  # readable once the launcher exits; it stays unreaped (its pid reserved) until wait()
        pidfd = os.pidfd_open(proc.pid)
        sel.register(pidfd, selectors.EVENT_READ, None)
    except (AttributeError, OSError):  # kernel < 5.3: poll with waitid instead
        pidfd = None
    reason, exited_at = None, None
    try:
        while True:
            now = time.monotonic()
            streams = len(sel.get_map()) - (1 if pidfd is not None and exited_at is None else 0)
            if exited_at is not None and (streams == 0 or now - exited_at >= GRACE_S):
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
            if out.total + err.total > limits.max_output_bytes or chan.total > limits.max_channel_bytes:
                reason = "output_limit"
                break
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
    _kill_run(proc, uid, cgroup)
    rc = proc.wait()
    oom = cgroup.oom_kills() if cgroup is not None else 0
    if oom:
        isolation["oom_kills"] = oom
    exit_code, sig = (rc, None) if rc >= 0 else (None, -rc)
    if reason:
        status_ = reason
        exit_code, sig = None, signal.SIGKILL
    elif sig is not None:
        status_ = {signal.SIGXCPU: "timeout", signal.SIGXFSZ: "output_limit"}.get(sig, "killed")
        if sig == signal.SIGKILL and oom:
            status_ = "memory"
    elif rc != 0:
        last = err.text().strip().splitlines()[-1:] or [""]
        status_ = "memory" if last[0].startswith("MemoryError") or oom else "failed"
    else:
        status_ = "ok"
    return SandboxResult(status_, exit_code=exit_code, signal=int(sig) if sig else None,
                         stdout=out.text(), stderr=err.text(), duration_s=time.monotonic() - start,
                         stdout_bytes=out.total, stderr_bytes=err.total, isolation=isolation,
                         channel=bytes(chan.buf[: limits.max_channel_bytes]))
