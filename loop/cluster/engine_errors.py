"""Why a sampler's vLLM engine could not be built, in one line the user can act on.

vLLM builds its engine in a child process (EngineCore); when that fails the actor's own exception says
only "Engine core initialization failed. See root cause above." The root cause is a line of the engine's
output, which Ray streams to the driver (loop/run/logs.py keeps the last error lines it saw). This module
picks the cause out of those lines and the exception, and adds what to do for the causes users meet.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

ERROR_LINE = re.compile(r"\b([A-Z]\w*(?:Error|Exception)): (.+)")
# Lines that only say that something below failed: never the cause.
WRAPPERS = ("Engine core initialization failed", "The actor died", "ActorDiedError", "RayActorError",
            "RayTaskError", "Traceback")
HINTS = [
    (("No available memory for the cache blocks", "Free memory on device", "CUDA out of memory",
      "out of memory"),
     "the GPU had too little free memory when vLLM sized its cache (another process on the GPU, or another engine "
     "starting beside it): free the GPU, or give vLLM a larger share (cluster.sampler.gpu_memory_utilization, or "
     "cluster.gpu_memory_budget_gib), then `python launch.py resume`"),
    (("VLLM_CPU_KVCACHE_SPACE", "KV cache", "max_model_len"),
     "the KV cache cannot hold one sequence of model.max_model_len tokens: raise cluster.sampler.kv_cache_gib (CPU) "
     "or the GPU share, or lower model.max_model_len, then `python launch.py resume`"),
]


def error_lines(text: str) -> list[str]:
    """`Type: message` for every exception line in `text` that is not a wrapper, in order."""
    out = []
    for line in text.splitlines():
        m = ERROR_LINE.search(line)
        if m and not any(w in line for w in WRAPPERS):
            out.append(f"{m.group(1)}: {m.group(2).strip()}")
    return out


# Causes another process can produce for a moment: engines starting side by side on one GPU each see the
# others' memory appear while vLLM profiles its own (seen on an H100, 2026-12-07: 11 of 48 starts). Worth one
# more start after a pause; a GPU that stays full fails the same way again and then stops the run.
TRANSIENT = ("No available memory for the cache blocks", "Free memory on device", "CUDA out of memory")


def cause(exc: BaseException, worker_errors: Iterable[str] = ()) -> str:
    """The engine's own error: the last one its output or the exception names (else the exception's first line)."""
    causes = [*error_lines(str(exc)), *[c for w in worker_errors for c in error_lines(w)]]
    return causes[-1] if causes else (str(exc).splitlines() or [type(exc).__name__])[0]


def transient(why: str) -> bool:
    return any(k in why for k in TRANSIENT)


def explain(exc: BaseException, worker_errors: Iterable[str] = ()) -> str:
    """One line: the engine's own error (`cause`) and a hint."""
    return explain_cause(cause(exc, worker_errors))


def explain_cause(why: str) -> str:
    hint = next((h for keys, h in HINTS if any(k in why for k in keys)),
                "see the engine's own output in the run's run.log and logs/ (the worker files), fix the cause, then "
                "`python launch.py resume`")
    return f"the sampler's vLLM engine could not be built: {why[:400]}. What to do: {hint}"
