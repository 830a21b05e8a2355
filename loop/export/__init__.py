"""The RL bundle: `launch.py export` writes it (`make.py`), RL code reads it (`bundle.py`).

Public, because written bundles import it: `from loop.export import load_bundle`.
"""
from loop.export.bundle import Bundle, load_bundle, load_problems, reward_funcs, reward_verifiers  # noqa: F401
from loop.export.make import export_run  # noqa: F401
