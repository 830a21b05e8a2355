"""Fault injection, for tests only: inert unless LOOP_FAULT_DIR is set.

A test that must kill a worker *in the middle* of its work needs the worker to stand still
at a known point. With

    LOOP_FAULT_DIR=/some/dir  LOOP_FAULT_PAUSE="sampler=round-0/sample,verify=round-0/verify,trainer"

the first worker of each listed role that reaches its pause point (optionally only during
the named stage) writes `<dir>/<role>.paused` (its pid and node) and waits until the test
kills it, or until `<dir>/<role>.release` appears. Only the first one pauses (an O_EXCL
claim file), so the retry or the replacement runs through. The pause points:

- sampler: a chunk is generated but not yet returned (loop/cluster/sampler.py);
- verify: inside a verification task, before its verdicts return (loop/cluster/driver.py);
- trainer: after the first optimizer step (a TrainerCallback, loop/cluster/trainer.py).

The driver forwards LOOP_FAULT_* from its environment to the workers (loop/cluster/driver.py).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

DIR_ENV, PAUSE_ENV = "LOOP_FAULT_DIR", "LOOP_FAULT_PAUSE"
MAX_PAUSE_S = 600.0  # a test that forgot its worker must not hang CI forever


def forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("LOOP_FAULT_")}


def _wanted(role: str, stage: str) -> bool:
    for item in os.environ.get(PAUSE_ENV, "").split(","):
        r, _, s = item.strip().partition("=")
        if r == role and (not s or s == stage):
            return True
    return False


def pause_point(role: str, stage: str = "") -> None:
    d = os.environ.get(DIR_ENV)
    if not d or not _wanted(role, stage):
        return
    root = Path(d)
    try:
        fd = os.open(root / f"{role}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    info = {"pid": os.getpid(), "stage": stage, "node": _node_id()}
    tmp = root / f".{role}.paused.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, root / f"{role}.paused")
    deadline = time.time() + MAX_PAUSE_S
    while not (root / f"{role}.release").exists() and time.time() < deadline:
        time.sleep(0.1)


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray there is no node
        return None


def trainer_callbacks() -> list:
    """[] unless the trainer is to pause; then a callback that pauses after step 1."""
    if not os.environ.get(DIR_ENV) or not _wanted("trainer", ""):
        return []
    from transformers import TrainerCallback

    class _PauseAfterFirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                pause_point("trainer")

    return [_PauseAfterFirstStep()]
