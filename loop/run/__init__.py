"""A run is a directory: its state and manifest, the base model's record, logs, progress, and faults.

Ground floor: imports nothing else from `loop` but `records` and `registry`.
"""
