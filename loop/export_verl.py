"""Shim for RL bundles written before the layout step: their `reward_verl.py` says
`from loop.export_verl import bundle_scorer`. New bundles import `loop.export.verl`. Drop this
file when bundles older than 2026-12 no longer matter."""
from loop.export.verl import bundle_scorer  # noqa: F401
