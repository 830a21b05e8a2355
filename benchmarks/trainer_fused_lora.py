"""The loop's trainer with and without the one-addmm LoRA forward (loop/kernels/fused_lora.py), on this
machine, same process, same chains, alternating: real tokens/s and the ratio per pair.

    python benchmarks/trainer_fused_lora.py [--chains 256] [--repeats 2] [--out benchmarks/results/trainer_fused_lora.json]

On the CPU this is the embedded tiny model with configs/default.yaml's training settings (QLoRA
NF4 on the CPU, the LoRA in bf16 as TRL keeps it, no autocast). The H200 numbers for the 4B shape
come from benchmarks/gpu_h200.py (rung `fused_lora`).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chains", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import generators  # noqa: F401
    from generators.base import GENERATORS
    from loop.cluster.trainer import TrainerWorker
    from loop.config import TINY_MODEL, load_config

    cfg = load_config(ROOT / "configs" / "default.yaml", [])
    problems = GENERATORS.build("arithmetic", {}).generate("add", 3, a.chains, seed=3)
    examples = [{"prompt": [m.model_dump() for m in p.prompt],
                 "completion": [{"role": "assistant", "content": p.reference.chain}]} for p in problems]
    quant, lora = cfg.quantization.model_dump(), cfg.lora.model_dump()
    runs: dict[str, list[float]] = {"fused": [], "peft": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.repeats):
            for name in ("fused", "peft"):
                tr = {**cfg.training.model_dump(), "epochs": 1, "fused_lora": name == "fused"}
                m = TrainerWorker(str(TINY_MODEL), quant, lora, tr).train(examples, f"{tmp}/{name}", None, seed=0)
                runs[name].append(m["tokens_per_s"])
                print(f"{name}: {m['tokens_per_s']:,.0f} tokens/s (LoRA calls {m['lora_calls']})", flush=True)
    ratios = [f / p for f, p in zip(runs["fused"], runs["peft"])]
    res = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "chains": a.chains,
           "tokens_per_s": runs, "fused_over_peft": ratios,
           "mean_ratio": statistics.mean(ratios), "sd_ratio": statistics.stdev(ratios) if len(ratios) > 1 else None}
    print(json.dumps(res, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
