"""`launch.py report`: the per-run summary (`summary.py`) and its plots (`plots.py`, matplotlib)."""
