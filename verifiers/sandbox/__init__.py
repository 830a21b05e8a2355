"""The sandbox: runs untrusted code in its own namespaces, with seccomp, rlimits and a cgroup.

No verifier author needs to read what is in here; they call `verifiers.sandbox.run(...)` (or
`from verifiers import sandbox; sandbox.run(...)`, as docs/plugins.md shows) and read the
`SandboxResult` it returns. The machinery, one file each:

- `runner.py`: `run`, `SandboxLimits`, `SandboxResult`, the leftover sweep (the public face)
- `launcher.py`: the script that starts inside the sandbox, applies the limits and execs the program
- `cgroup.py`, `procs.py`: cgroup v2 memory/pids limits; finding and killing a run's processes
- `harness_candidate.py`, `harness_tests.py`: the two programs the `code_tests` verifier runs in it
- `wire.py`: the type-tagged JSON that values cross the boundary as; `pyast.py`: one lock around `ast`

`runner` is not called `run` so that the module never shadows the `run` function re-exported here.
"""
from verifiers.sandbox.runner import (  # noqa: F401  (the public names)
    SandboxLimits,
    SandboxResult,
    cleanup_stale,
    leftover_processes,
    run,
)
