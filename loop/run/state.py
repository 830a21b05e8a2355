"""A run is a directory. Every write is atomic (temp file + fsync + rename) and the
manifest is written after the files it points to, so a `kill -9` at any instant leaves
either the old or the new version of each file, and `resume` trusts only the manifest.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

# A round's stages in order; `verifier` (the learned verifier's training) only with learned_verifier.enabled.
STAGES = ("problems", "sample", "verify", "analyze", "accept", "verifier", "train", "evaluate", "plan")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DamagedFile(path, f"not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DamagedFile(path, "empty" if not e.doc.strip() else f"not valid JSON ({e.msg} at line {e.lineno}, "
                          f"column {e.colno})") from None


def write_jsonl(path: Path, records: Iterable[BaseModel | dict]) -> None:
    lines = [r.model_dump_json() if isinstance(r, BaseModel) else json.dumps(r, ensure_ascii=False) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_jsonl(path: Path, model: type[M]) -> list[M]:
    out = []
    with path.open("rb") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(model.model_validate_json(line))
                except ValueError as e:
                    torn = not line.endswith(b"\n")
                    first = str(e).splitlines()[1 if len(str(e).splitlines()) > 1 else 0][:120]
                    raise DamagedFile(path, f"line {i} is {'torn (cut off mid-record)' if torn else 'corrupt'} "
                                            f"({first})") from None
    return out


class DamagedFile(ValueError):
    """A file of a run does not read (torn, corrupt, empty); str() names it and the way out.
    A ValueError, so code that tolerated bad values before still does."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = Path(path), what
        super().__init__(f"{path} is damaged: {what} (a crash, a full disk or a hand edit). Restore it from a copy; "
                         "if it belongs to a finished stage of a run, `python launch.py resume RUN --redo STAGE` "
                         "computes that stage and the ones after it again (`python launch.py report RUN` names "
                         "the stage)")


class StopAfter(Exception):
    """Raised after the stage named by `--stop-after` completed; the run can be resumed."""


class RunStateError(Exception):
    """The run directory cannot be used as it is (damaged manifest, held lock, ...);
    str() says what is wrong and how to get out of it."""


class StageFailed(Exception):
    """A stage could not produce trustworthy output (e.g. a required verifier kept erroring);
    str() names the cause. Finished stages are kept; `resume` retries this one."""


class Interrupted(KeyboardInterrupt):
    """A terminating signal (SIGINT, SIGTERM, SIGHUP) arrived; raised like Ctrl-C's KeyboardInterrupt
    (a subclass, because Ray's blocking calls pass only KeyboardInterrupt on) so every
    `finally` runs and the run is marked `interrupted`."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        _received.append(signum)


_received: list[int] = []
# A raise from a signal handler can be swallowed where it lands (a `__del__`, a callback from
# Ray's C++ core): the signal stays here until the run's top level has seen its Interrupted,
# and `check_interrupted()` (stage boundaries, progress updates) raises it again.
_unseen: list[int] = []
_deferred: list[int] = []
_defer_depth = 0
TERMINATING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def received_signal() -> str:
    """The name of the last terminating signal this process got ('SIGINT' if none did)."""
    return signal.Signals(_received[-1]).name if _received else "SIGINT"


def exit_code() -> int:
    """The shell's convention for a process ended by the last signal received: 128 + signum."""
    return 128 + (_received[-1] if _received else signal.SIGINT)


def interrupt_seen() -> None:
    """The top level caught the Interrupted: nothing is pending any more."""
    _unseen.clear()


def check_interrupted() -> None:
    """Raise Interrupted if a signal arrived whose raise was lost on the way (see `_unseen`)."""
    if _unseen and not _defer_depth:
        raise Interrupted(_unseen[-1])


def _handler(signum, _frame):
    if _defer_depth:
        _deferred.append(signum)
        if len(_deferred) >= 3:  # asked three times: stop now, whatever is half done
            os.write(2, f"\n{signal.Signals(signum).name} three times: exiting at once\n".encode())
            os._exit(128 + signum)
        return
    _unseen.append(signum)
    raise Interrupted(signum)


def _unraisable(info) -> None:
    """An Interrupted swallowed where it landed (a `__del__`, a callback) is kept in `_unseen` and
    raised again at the next checkpoint: no "Exception ignored" traceback for it."""
    if isinstance(info.exc_value, Interrupted):
        return
    _default_unraisable(info)


_default_unraisable = sys.unraisablehook


def install_signal_handlers() -> None:
    """Ctrl-C, SIGTERM and SIGHUP raise Interrupted (deferred inside `deferred_signals()`)."""
    sys.unraisablehook = _unraisable
    for sig in TERMINATING:
        try:
            signal.signal(sig, _handler)
        except (ValueError, OSError):  # not the main thread
            pass


@contextmanager
def deferred_signals(reraise: bool = True) -> Iterator[None]:
    """A terminating signal that arrives inside is held until the block ends and then raised
    (`reraise`) or dropped (cleanup that is already ending the process). For code that must not
    be cut in the middle: `ray.init` (a KeyboardInterrupt inside its CoreWorker constructor
    leaves a half-built worker that crashes the interpreter at exit with SIGSEGV) and shutdown.
    Ray's own SIGTERM handlers (they sys.exit from wherever the signal lands) are not
    installed meanwhile; ours stay. A third signal inside exits at once."""
    global _defer_depth
    utils = sys.modules.get("ray._private.utils")
    if _defer_depth == 0:
        _deferred.clear()
        install_signal_handlers()
    keep = getattr(utils, "set_sigterm_handler", None)
    if keep is not None:
        utils.set_sigterm_handler = lambda _handler: None
    _defer_depth += 1
    try:
        yield
    finally:
        _defer_depth -= 1
        if keep is not None:
            utils.set_sigterm_handler = keep
        if _defer_depth == 0:
            install_signal_handlers()
    if _deferred and _defer_depth == 0 and reraise:
        signum = _deferred[-1]
        _deferred.clear()
        _unseen.append(signum)
        raise Interrupted(signum)


LOCK = ".lock"
MANIFEST_KEYS = {"run_id": str, "status": str, "rounds_completed": int, "done": list}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """One writer per run: `<run>/.lock` holds an flock for the life of the process and says
    who holds it (pid, host). A lock whose holder is gone is taken over."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None

    def holder(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def acquire(self, command: str) -> None:
        for _ in range(10):
            fd = self._lock_once()
            # A holder that released (unlinked) between our open and flock leaves us holding
            # an orphan inode; only the file still at the path counts.
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        else:
            raise RunStateError(f"could not take the lock {self.path}: it keeps changing; is another process "
                                "starting this run at the same moment?")
        old = self.holder()
        if old.get("pid") and old.get("pid") != os.getpid():
            logging.getLogger("loop").info("taking over the stale lock of pid %s on %s (that process is gone)",
                                           old.get("pid"), old.get("host"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                                  "since": time.time()}).encode(), 0)
        self.fd = fd

    def _lock_once(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunStateError(f"cannot create the lock file {self.path} ({e.strerror}); the run directory must "
                                "be writable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self.holder()
            gone = h.get("host") == socket.gethostname() and isinstance(h.get("pid"), int) and not pid_alive(h["pid"])
            since = h.get("since")
            at = time.strftime("%H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
            who = f"pid {h.get('pid', '?')} on host {h.get('host', '?')} ({h.get('command', '?')}, since {at})"
            extra = (" That process is gone, but a child of it still holds the lock; stop it first."
                     if gone else " Wait for it to finish or stop it (kill that pid), then try again.")
            raise RunStateError(f"run {self.path.parent} is in use by {who}; one process at a time may write a "
                                f"run.{extra}") from None
        except OSError:
            # No flock on this filesystem: fall back to the recorded pid.
            h = self.holder()
            if h.get("host") == socket.gethostname() and isinstance(h.get("pid"), int) \
                    and h["pid"] != os.getpid() and pid_alive(h["pid"]):
                os.close(fd)
                raise RunStateError(f"run {self.path.parent} is in use by pid {h['pid']} on host {h['host']}; "
                                    "wait for it to finish or stop it, then try again") from None
        return fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None

    def is_held(self) -> bool:
        """True if another live process holds the lock (for `report` and stale detection)."""
        if self.fd is not None:
            return True
        if not self.path.exists():
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        except OSError:
            h = self.holder()
            return isinstance(h.get("pid"), int) and pid_alive(h["pid"])
        finally:
            os.close(fd)


# Called when a stage's compute returns (loop/run/progress.py shows the progress lines it held back).
STAGE_END: list[Callable[[], None]] = []


class RunDir:
    """The run directory and its manifest (status, rounds completed, stage cursor).

    Paths stored in the manifest and in the run's files are relative to the run directory
    (`run.rel(path)`); `run.resolve(stored)` turns one back into a usable path, also for
    runs written before that rule (absolute or relative to the old working directory).
    """

    def __init__(self, path: Path, stop_after: str | None = None):
        self.path = Path(path)
        self.stop_after = stop_after
        self.manifest_path = self.path / "manifest.json"
        self.lock = RunLock(self.path)
        self.manifest: dict[str, Any] = self._read_manifest() if self.manifest_path.exists() else {}

    def _read_manifest(self) -> dict[str, Any]:
        bak = self.manifest_path.with_name("manifest.json.bak")
        try:
            data = read_json(self.manifest_path)
            problem = None if isinstance(data, dict) else f"it holds a JSON {type(data).__name__}, not an object"
            if problem is None:
                bad = [k for k, t in MANIFEST_KEYS.items() if not isinstance(data.get(k), t)]
                problem = f"fields missing or of the wrong type: {', '.join(bad)}" if bad else None
        except UnicodeDecodeError:
            problem = "it is not UTF-8 text"
        except ValueError as e:
            problem = "it is empty" if not self.manifest_path.read_bytes().strip() else f"it is not valid JSON ({e})"
        except OSError as e:
            raise RunStateError(f"cannot read {self.manifest_path}: {e.strerror}") from None
        if problem is None:
            return data
        how = (f"The previous version is kept in {bak}: check it and restore it with\n"
               f"  cp {bak} {self.manifest_path}\n"
               "then run the command again (stages finished after that version are redone)."
               if bak.exists() else
               "There is no manifest.json.bak to restore; the finished files are still in the run "
               "directory, but the run cannot be resumed safely: start a new run.")
        raise RunStateError(f"{self.manifest_path} is damaged: {problem} (truncated by a full disk or a crash "
                            f"while writing?). {how}")

    @classmethod
    def create(cls, root: Path, name: str) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        runs = Path(root) / "runs"
        try:
            runs.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunStateError(f"run.state_dir: cannot create {runs} ({e.strerror}); set run.state_dir to a "
                                "writable directory") from None
        for n in range(1, 1000):
            path = runs / (f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise RunStateError(f"run.state_dir: cannot create {path} ({e.strerror}); set run.state_dir to "
                                    "a writable directory") from None
        run = cls(path)
        run.manifest = {"run_id": path.name, "status": "running", "rounds_completed": 0,
                        "cursor": None, "done": [], "created": time.time(), "attempts": 1}
        run.save()
        return run

    # ---- one writer ------------------------------------------------------------------
    def acquire(self, command: str) -> None:
        """Take the run's lock (refused while another live process holds it) and mark
        SIGTERM/SIGHUP as interruptions."""
        self.lock.acquire(command)
        install_signal_handlers()

    def release(self) -> None:
        self.lock.release()

    def is_stale_running(self) -> bool:
        """The manifest says `running` but no live process holds the run."""
        return self.manifest.get("status") == "running" and not self.lock.is_held()

    # ---- paths -----------------------------------------------------------------------
    def rel(self, path: str | Path | None) -> str | None:
        """A path inside the run as stored in files: relative to the run directory."""
        if path is None:
            return None
        p = Path(path)
        try:
            return p.resolve().relative_to(self.path.resolve()).as_posix()
        except ValueError:
            return str(p)

    def resolve(self, stored: str | Path | None) -> Path | None:
        """An absolute path for a path stored in the run (relative to the run directory, or,
        in runs written by older versions, absolute / relative to the then working directory)."""
        if stored is None:
            return None
        p = Path(stored)
        if not p.is_absolute():
            inside = self.path / p
            if inside.exists() or not p.exists():
                if not inside.exists() and self.path.name in p.parts:
                    i = len(p.parts) - 1 - p.parts[::-1].index(self.path.name)
                    inside = self.path.joinpath(*p.parts[i + 1:])
                return inside.resolve()
            return p.resolve()
        if not p.exists() and self.path.name in p.parts:
            i = len(p.parts) - 1 - p.parts[::-1].index(self.path.name)
            return self.path.resolve().joinpath(*p.parts[i + 1:])
        return p

    def config_raw(self) -> dict[str, Any]:
        """The run's config.yaml as a dict, with a clear error when it is missing or broken."""
        import yaml

        path = self.path / "config.yaml"
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunStateError(f"{path} is missing; the run cannot be resumed or exported without the config it "
                                "ran with (restore it from a copy, or start a new run)") from None
        except (UnicodeDecodeError, yaml.YAMLError) as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise RunStateError(f"{path} is damaged{where} ({str(e).splitlines()[0]}); it must be the config "
                                "the run was made with: restore it from a copy, or start a new run") from None
        if not isinstance(raw, dict):
            raise RunStateError(f"{path} is damaged: expected a mapping of config sections, got "
                                f"{type(raw).__name__}; restore it from a copy, or start a new run")
        return raw

    def save(self) -> None:
        self.manifest["updated"] = time.time()
        # Keep the previous manifest as manifest.json.bak: a hard link to the old file, so
        # the atomic replace below leaves it intact (a way out if the new one is damaged).
        if self.manifest_path.exists():
            bak = self.manifest_path.with_name("manifest.json.bak")
            tmp = self.manifest_path.with_name(f".manifest.json.bak.{os.getpid()}.tmp")
            try:
                tmp.unlink(missing_ok=True)
                os.link(self.manifest_path, tmp)
                os.replace(tmp, bak)
            except OSError:
                tmp.unlink(missing_ok=True)
                atomic_write_text(bak, self.manifest_path.read_text(encoding="utf-8", errors="replace"))
        write_json(self.manifest_path, self.manifest)

    def round_dir(self, r: int) -> Path:
        return self.path / f"round-{r:03d}"

    def is_done(self, key: str) -> bool:
        return key in self.manifest["done"]

    def mark_done(self, key: str) -> None:
        if key not in self.manifest["done"]:
            self.manifest["done"].append(key)
        self.manifest["cursor"] = key
        self.save()

    def stage(self, key: str, compute: Callable[[], T], save: Callable[[T], None], load: Callable[[], T],
              on_skip: Callable[[str], None] | None = None) -> T:
        """Run a stage once: if the manifest says it is done, load its outputs instead."""
        check_interrupted()
        if self.is_done(key):
            if on_skip:
                on_skip(key)
            return load()
        self.manifest["cursor"] = f"{key} (in progress)"
        self.save()
        t0 = time.time()
        result = compute()
        for hook in STAGE_END:
            hook()
        save(result)
        self.manifest.setdefault("seconds", {})[key] = round(time.time() - t0, 3)
        # One entry per completed execution: a stage that ran twice would show up twice.
        self.manifest.setdefault("history", []).append({"stage": key, "attempt": self.manifest.get("attempts", 1)})
        self.mark_done(key)
        check_interrupted()  # a signal whose raise was lost inside the stage: stop after it
        if key == self.stop_after:
            raise StopAfter(key)
        return result

    def set_status(self, status: str, **extra: Any) -> None:
        self.manifest["status"] = status
        self.manifest.update(extra)
        self.save()


def find_run(root: Path, run: str) -> RunDir:
    """A run by path, by id under state/runs, or 'latest'."""
    p = Path(run)
    if not p.exists():
        runs = Path(root) / "runs"
        if run == "latest":
            cands = sorted((d for d in runs.glob("*") if (d / "manifest.json").exists()),
                           key=lambda d: d.stat().st_mtime) if runs.exists() else []
            if not cands:
                raise FileNotFoundError(f"no runs under {runs}; start one with `launch.py run`")
            p = cands[-1]
        else:
            p = runs / run
    if not (p / "manifest.json").exists():
        raise FileNotFoundError(f"{p} is not a run directory (no manifest.json); "
                                f"runs live under {Path(root) / 'runs'}")
    return RunDir(p)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists -> {"a.b.0": value} (a config's fields by their dotted names)."""
    out: dict[str, Any] = {}
    for k, v in (d.items() if isinstance(d, dict) else enumerate(d)):
        key = f"{prefix}{k}"
        if isinstance(v, (dict, list)) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
