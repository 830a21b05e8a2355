"""Adapters travel between the driver and the workers as bytes, through Ray's object store,
so no node needs the run directory (on a real cluster the trainer's and the samplers'
machines do not share a filesystem with the driver)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

# What vLLM and PEFT need to load a LoRA adapter; the tokenizer files are the base model's.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def pack_adapter(path: str | Path) -> dict[str, bytes]:
    p = Path(path)
    missing = [f for f in ADAPTER_FILES if not (p / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{p} is not a PEFT adapter directory: missing {', '.join(missing)}")
    return {f: (p / f).read_bytes() for f in ADAPTER_FILES}


def pack_files(path: str | Path) -> dict[str, bytes]:
    """Every regular file directly in `path` (not its subdirectories)."""
    return {f.name: f.read_bytes() for f in sorted(Path(path).iterdir()) if f.is_file()}


def unpack(files: dict[str, bytes], dest: str | Path) -> Path:
    """Write the files into dest, each atomically (temp name, then rename)."""
    d = Path(dest)
    d.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if "/" in name or name.startswith("."):
            raise ValueError(f"refusing to write {name!r}: not a plain file name")
        fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, d / name)
    return d
