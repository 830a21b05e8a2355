"""Logging setup: the console shows the loop (its stages' progress, round summaries, warnings, errors);
the run's files hold everything.

- `<run>/run.log`: the loop's log with DEBUG, third-party INFO and up (Ray's driver notices), every line
  the workers print (Ray actors, vLLM engines, TRL), and an unexpected exception's full traceback, so the
  user sees one line and a path, never a traceback on the terminal;
- `<run>/logs/<worker>-<pid>.log`: each worker's own output (route_worker_output takes it from Ray's
  log stream, which would otherwise print it on the driver's console);
- `-v` (verbose): the full stream on the console as well, DEBUG included.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

RUN_LOG = "run.log"
WORKER_LOGS = "logs"  # <run>/logs/: one file per worker process
WORKERS = "workers"  # the logger of the workers' lines (run.log only; Ray prints them itself under -v)
_FMT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"
_run_log: Path | None = None
_handler: logging.Handler | None = None
_console: logging.Handler | None = None
_verbose = False
_files: dict[str, list] = {}  # process -> [open file, its path, the name it is under]
_files_lock = threading.Lock()
_RECENT_ERRORS: deque[str] = deque(maxlen=64)  # the workers' last exception lines


OURS = ("loop", "launch", "__main__", "root")  # loggers whose warnings are the user's business


class _ConsoleFilter(logging.Filter):
    """Off the console (they stay in run.log): the workers' lines, and unless verbose, the libraries' own
    notices below ERROR in this process (Ray's "Started a local Ray instance" and token authentication,
    bitsandbytes' missing CPU kernels, Python warnings)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == WORKERS:
            return False
        if not _verbose and record.levelno < logging.ERROR and record.name.split(".")[0] not in OURS:
            return False
        return True


def setup_logging(verbose: bool = False) -> None:
    global _console, _verbose
    _verbose = verbose
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("loop").setLevel(logging.DEBUG)  # run.log keeps the loop's DEBUG; the console shows INFO
    if _console is not None:
        root.removeHandler(_console)
    _console = logging.StreamHandler()
    _console.setLevel(logging.DEBUG if verbose else logging.INFO)
    _console.setFormatter(logging.Formatter(_FMT, datefmt="%H:%M:%S"))
    _console.addFilter(_ConsoleFilter())
    root.addHandler(_console)
    logging.captureWarnings(True)  # warnings.warn in this process: the "py.warnings" logger (run.log)
    for noisy in ("vllm", "transformers", "datasets", "httpx", "filelock", "urllib3", "torch", "wandb", "mlflow",
                  "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_ray()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)


def quiet_ray() -> None:
    """Ray gives its "ray" logger a console handler of its own at import; its records go through ours
    instead (run.log, and the console as _ConsoleFilter says). Called again after `import ray`."""
    import sys

    if "ray" not in sys.modules or _console is None:  # not set up by setup_logging: Ray's own ways stand
        return
    ray_log = logging.getLogger("ray")
    for h in list(ray_log.handlers):
        if type(h).__name__ == "PlainRayHandler":
            ray_log.removeHandler(h)
    ray_log.propagate = True
    ray_log.setLevel(logging.INFO)


def verbose() -> bool:
    return _verbose


def route_worker_output() -> bool:
    """Take the workers' stdout/stderr, which Ray streams to the driver, off the console (unless verbose):
    each line goes to run.log and to <run>/logs/<worker>-<pid>.log. Lines of the raylet (a worker killed
    for memory, ...) also stay on the console as warnings. Call after ray.init; False where this Ray has
    no such stream (the output then stays as Ray prints it), when setup_logging was not called, or when no
    run log is attached (`eval`: no run directory to keep it in)."""
    if _console is None or _run_log is None:
        return False
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as streams
    except ImportError:
        return False
    if not _verbose:
        streams.remove_handler("ray_print_logs")  # Ray's printer of the workers' lines (ray.init(log_to_driver))
    streams.remove_handler("loop_worker_logs")
    streams.add_handler("loop_worker_logs", _worker_lines)
    return True


def _worker_lines(data: dict[str, Any]) -> None:
    pid, lines = data.get("pid"), data.get("lines") or []
    if pid in ("raylet", "autoscaler"):
        # Ray's notices about the node (a worker killed for memory, resources that cannot be had): on the
        # console too, as Ray's printer shows them. Of the autoscaler's log only its event summaries: its
        # every-5-seconds status lines were 87% of a 3-round run.log; they are all in logs/autoscaler.log
        notices = _autoscaler_events(lines) if pid == "autoscaler" else lines
        for line in notices:
            logging.getLogger(WORKERS).info("(%s) %s", pid, line)
            logging.getLogger("loop.ray").warning("%s: %s", pid, line)
        if pid == "autoscaler":
            _append("autoscaler", "autoscaler", lines, named="autoscaler.log")
        return
    if not lines:
        return
    _RECENT_ERRORS.extend(line for line in lines if "Error: " in line or "Exception: " in line)
    name = data.get("actor_name") or data.get("task_name") or "worker"
    where = "" if data.get("ip") in (None, data.get("localhost")) else f"{data['ip']}-"
    out = logging.getLogger(WORKERS)
    for line in lines:
        out.info("(%s pid=%s) %s", name, pid, line)
    _append(f"{where}{pid}", name, lines)


def recent_worker_errors(wait_s: float = 0.0, want: Callable[[list[str]], bool] = bool) -> list[str]:
    """The last exception lines the workers printed (an engine's root cause is one). Ray streams their output
    a moment behind: with `wait_s`, wait up to that long until `want(lines)` holds."""
    end = time.monotonic() + wait_s
    while time.monotonic() < end and not want(list(_RECENT_ERRORS)):
        time.sleep(0.1)
    return list(_RECENT_ERRORS)


def forget_worker_errors() -> None:
    _RECENT_ERRORS.clear()


def _append(proc: str, name: str, lines: list[str], named: str | None = None) -> None:
    """The lines of one process to <run>/logs/<name>-<proc>.log (or `named`), one file per process, named by
    what it runs once Ray says (an actor's first lines may come before its name)."""
    if _run_log is None:
        return
    with _files_lock:
        entry = _files.get(proc)
        try:
            if entry is None:
                (_run_log.parent / WORKER_LOGS).mkdir(exist_ok=True)
                path = _run_log.parent / WORKER_LOGS / (named or _file_name(name, proc))
                entry = _files[proc] = [open(path, "a", encoding="utf-8"), path, name]
            elif entry[2] == "worker" and name != "worker":
                renamed = entry[1].with_name(_file_name(name, proc))
                os.rename(entry[1], renamed)
                entry[1:] = [renamed, name]
        except OSError:
            return
        entry[0].write("".join(line + "\n" for line in lines))
        entry[0].flush()


def _file_name(name: str, proc: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{name}-{proc}") + ".log"


def _autoscaler_events(lines: list[str]) -> list[str]:
    try:
        from ray._private.worker import filter_autoscaler_events

        return [x for x in filter_autoscaler_events(lines) if not x.startswith("Tip: use `ray status`")]
    except Exception:  # noqa: BLE001 - Ray's private filter (it asks the GCS which autoscaler runs): run.log has all
        return []


def _close_worker_files() -> None:
    with _files_lock:
        for entry in _files.values():
            entry[0].close()
        _files.clear()


def attach_run_log(run_dir: Path) -> Path:
    """Also write the log to run_dir/run.log (appending: a resume continues the same file)."""
    global _run_log, _handler
    path = Path(run_dir) / RUN_LOG
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler.close()
    _close_worker_files()
    _handler = logging.FileHandler(path, encoding="utf-8")
    _handler.setFormatter(logging.Formatter(_FMT, datefmt="%Y-%m-%d %H:%M:%S"))
    logging.getLogger().addHandler(_handler)
    _run_log = path
    return path


def detach_run_log() -> None:
    global _run_log, _handler
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler.close()
    _close_worker_files()
    _run_log, _handler = None, None


def run_log() -> Path | None:
    return _run_log


def write_traceback(exc: BaseException, fallback_dir: str | Path = "state") -> Path:
    """Append exc's full traceback to the run log, or to a crash log when there is no run
    yet; returns the file's path."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    candidates: list[Path] = []
    if _run_log is not None:
        candidates.append(_run_log)
    candidates.append(Path(fallback_dir) / "logs" / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
    candidates.append(Path(tempfile.gettempdir()) / f"loop-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
    for path in candidates:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"{stamp} unexpected error, full traceback:\n{text}\n")
            return path
        except OSError:
            continue
    raise RuntimeError("could not write the traceback anywhere") from exc


def worker_logging() -> None:
    """In a Ray worker (sampler, trainer): the loop's INFO lines to stderr, which Ray streams to the driver
    (then to run.log and <run>/logs/, see route_worker_output). Without it a worker's logger drops INFO (the
    root logger's WARNING), so lines such as the sampler's per-call engine memory were never seen."""
    try:
        import ray

        if ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
            return  # the driver, or a test calling the worker class in-process: its own logging stands
    except Exception:  # noqa: BLE001 - no Ray, or not in one
        return
    logger = logging.getLogger("loop")
    if any(getattr(h, "_loop_worker", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    handler._loop_worker = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.propagate = False  # no second copy through a root handler Ray or a library may have set
