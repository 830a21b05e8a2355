"""The trainer's per-step record: a transformers `TrainerCallback` that keeps every log event of TRL's
SFTTrainer (step, loss, learning rate, grad norm, tokens seen, epoch) and, on CUDA, the memory torch holds
and the GPU's utilisation and memory sampled while the stage runs (NVML, else nvidia-smi).

The rows travel back with the adapter and become `round-NNN/train_log.jsonl` (the driver writes it), so
a trainer on another node needs no access to the run directory.
"""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from typing import Any

from transformers import TrainerCallback

# What each row keeps of TRL's log event, under the row's own name.
FIELDS = {"loss": "loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm", "num_tokens": "tokens",
          "mean_token_accuracy": "token_accuracy", "entropy": "entropy"}


def _number(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f else None  # NaN (a skipped grad norm) is no number to plot


class StepLog(TrainerCallback):
    """rows: one dict per logged step (logging_steps=1: every optimizer step)."""

    def __init__(self, cuda: bool):
        self.cuda, self.rows, self.t0 = cuda, [], time.time()
        self.gpu = GpuSampler() if cuda else None

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = time.time()
        if self.gpu is not None:
            self.gpu.start()

    def on_train_end(self, args, state, control, **kwargs):
        if self.gpu is not None:
            self.gpu.stop()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:  # the closing summary (train_runtime, train_loss, ...): not a step
            return
        row: dict[str, Any] = {"step": state.global_step, "epoch": round(float(state.epoch or 0), 4),
                               "seconds": round(time.time() - self.t0, 3)}
        for key, name in FIELDS.items():
            if key in logs:
                row[name] = _number(logs[key])
        if self.cuda:
            import torch

            row["cuda_allocated_gib"] = round(torch.cuda.memory_allocated() / 2**30, 4)
            row["cuda_reserved_gib"] = round(torch.cuda.memory_reserved() / 2**30, 4)
            row["cuda_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 4)
            if self.gpu is not None:
                row.update(self.gpu.take())
        self.rows.append(row)


class GpuSampler:
    """Samples the device's utilisation (%) and used memory (GiB) every `every_s` on a thread; take()
    gives the mean utilisation and the most memory used since the last take(). Nothing when neither NVML
    (nvidia-ml-py) nor nvidia-smi answers."""

    def __init__(self, every_s: float = 0.5):
        self.every_s, self.util, self.mem = every_s, [], []
        self._stop, self._thread = threading.Event(), None
        self._lock = threading.Lock()
        self.read = self._reader()

    def _reader(self):
        from loop.cluster.gpu_memory import device_id, nvml_device

        dev = device_id()
        try:
            pynvml, h = nvml_device()

            def nvml() -> tuple[float, float]:
                return (float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
                        pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**30)
            nvml()
            return nvml
        except Exception:  # noqa: BLE001 - no NVML binding or no driver through it: try nvidia-smi
            pass
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return None

        def nvidia_smi() -> tuple[float, float]:
            out = subprocess.run([smi, "-i", dev, "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
            util, mib = (float(x) for x in out.stdout.strip().splitlines()[0].split(","))
            return util, mib / 1024
        try:
            nvidia_smi()
            return nvidia_smi
        except Exception:  # noqa: BLE001 - nvidia-smi there but not answering for this device
            return None

    def start(self) -> None:
        if self.read is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                util, mem = self.read()
            except Exception:  # noqa: BLE001 - one failed reading is skipped, not fatal to training
                continue
            with self._lock:
                self.util.append(util)
                self.mem.append(mem)

    def take(self) -> dict[str, float]:
        if self.read is None:
            return {}
        with self._lock:
            util, mem, self.util, self.mem = self.util, self.mem, [], []
        if not util:  # a step shorter than the sampling period: read once now
            try:
                u, m = self.read()
            except Exception:  # noqa: BLE001
                return {}
            util, mem = [u], [m]
        return {"gpu_util": round(sum(util) / len(util), 1), "gpu_mem_used_gib": round(max(mem), 4)}

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
