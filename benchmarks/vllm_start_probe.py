"""Time one vLLM engine start in a plain script, and say where it is if it stalls.

    python benchmarks/vllm_start_probe.py --model DIR [--usage-stats on|off] [--sleep-mode] [--eager]

Builds `vllm.LLM` with the loop's settings (LoRA on, max_loras 2), generates a few tokens,
prints one JSON line (start seconds, generate check, the settings). With --dump-stacks, after
--stall-dump seconds without a ready engine its EngineCore gets SIGUSR1 (faulthandler must be
registered for SIGUSR1 in that process, e.g. by a .pth file; see README's GPU section), so a
stall prints its Python stacks. Each try is one process; the caller kills its whole group.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--usage-stats", choices=["on", "off"], default="off")
    ap.add_argument("--sleep-mode", action="store_true")
    ap.add_argument("--eager", action="store_true")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.45)
    ap.add_argument("--stall-dump", type=float, default=180)
    ap.add_argument("--dump-stacks", action="store_true")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if a.usage_stats == "off":
        os.environ["VLLM_NO_USAGE_STATS"] = "1"
        os.environ["DO_NOT_TRACK"] = "1"
    else:
        for k in ("VLLM_NO_USAGE_STATS", "DO_NOT_TRACK", "VLLM_DO_NOT_TRACK"):
            os.environ.pop(k, None)
    from benchmarks_gpu import StallWatch  # noqa: E402  (benchmarks/gpu_h200.py, imported by path below)
    from vllm import LLM, SamplingParams

    watch = StallWatch("probe", a.stall_dump, a.dump_stacks)
    t0 = time.time()
    llm = LLM(model=a.model, max_model_len=4096, enable_lora=True, max_lora_rank=16, max_loras=2,
              dtype="bfloat16", gpu_memory_utilization=a.gpu_memory_utilization, enable_sleep_mode=a.sleep_mode,
              enforce_eager=a.eager, seed=0)
    start = time.time() - t0
    dumps = watch.done()
    out = llm.generate(["Hello"], SamplingParams(max_tokens=8, temperature=0.0), use_tqdm=False)
    print("PROBE " + json.dumps({"start_seconds": round(start, 1), "generated": len(out[0].outputs[0].token_ids),
                                 "usage_stats": a.usage_stats, "sleep_mode": a.sleep_mode, "eager": a.eager,
                                 "v2_runner_env": os.environ.get("VLLM_USE_V2_MODEL_RUNNER"),
                                 "stack_dumps": dumps["stack_dumps"]}), flush=True)


if __name__ == "__main__":
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmarks_gpu", Path(__file__).with_name("gpu_h200.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules["benchmarks_gpu"] = mod
    main()
