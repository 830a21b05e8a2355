#!/usr/bin/env bash
# Issue 26: max_num_seqs auto at most 512 (gpu_memory.AUTO_SEQS_CAP) with the sampler at
# gpu_memory_utilization UTIL: a loop run of configs/qwen3-4b-qlora.yaml (the loop part: the trainer takes turns
# with the sleeping engine at that size), then the scale part's goals on the kv_sized engine. Run detached on the
# device machine; poll /tmp/h200/log; JSON in /tmp/h200/r26d.json.
set -x
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
W=/tmp/h200 M=/tmp/h200/qwen3-4b-random U=${UTIL:-0.78}
mkdir -p $W
python3 benchmarks/gpu_h200.py --parts build --out $W/r26d.json --workdir $W --model $M
python3 benchmarks/gpu_h200.py --parts loop --merge --out $W/r26d.json --workdir $W --model $M --part-timeout 900 \
  --loop-set cluster.sampler.gpu_memory_utilization=$U --loop-set cluster.sampler.max_num_seqs=auto
python3 benchmarks/gpu_h200.py --parts scale --merge --out $W/r26d.json --workdir $W --model $M --max-tokens 512 \
  --scale-engines kv_sized --scale-set cluster.sampler.gpu_memory_utilization=$U --part-timeout 900
echo ALL-DONE
