"""Logging setup: our logs at INFO, third-party chatter (vLLM, Ray, transformers) at WARNING.

A run also logs to `<run>/run.log` (everything, DEBUG included), and an unexpected
exception's full traceback goes there, so the user sees one line and a path, never a
traceback on the terminal.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
import traceback
import warnings
from pathlib import Path

RUN_LOG = "run.log"
_FMT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"
_run_log: Path | None = None
_handler: logging.Handler | None = None


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=_FMT, datefmt="%H:%M:%S")
    for noisy in ("vllm", "ray", "transformers", "datasets", "httpx", "filelock", "urllib3", "torch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)


def attach_run_log(run_dir: Path) -> Path:
    """Also write the log to run_dir/run.log (appending: a resume continues the same file)."""
    global _run_log, _handler
    path = Path(run_dir) / RUN_LOG
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler.close()
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
