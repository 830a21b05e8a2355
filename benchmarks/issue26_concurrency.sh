#!/usr/bin/env bash
# Issue 26: does more than 256 sequences at once help, where the KV cache holds them? The scale part at
# gpu_memory_utilization UTIL (default 0.78: KV for about 512 sequences of 512 + prompt tokens with NF4
# serving on an 80 GB card) with max_num_seqs 512 (one-wave tokens/s at 256 and 512, then 256 vs 2,048
# sequences) and with `auto` (at most 256) for comparison on the same memory. Run detached on the device
# machine (stack in /tmp/site, tree in /tmp/proj); poll /tmp/h200/log; JSON in /tmp/h200/r26c.json.
set -x
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
W=/tmp/h200 M=/tmp/h200/qwen3-4b-random
mkdir -p $W
python3 benchmarks/gpu_h200.py --parts build --out $W/r26c.json --workdir $W --model $M
python3 benchmarks/gpu_h200.py --parts scale --merge --out $W/r26c.json --workdir $W --model $M --max-tokens 512 \
  --scale-engines ${SCALE_ENGINES:-seqs512,kv_sized} --scale-sweep ${SCALE_SWEEP:-256,512} \
  --scale-set cluster.sampler.gpu_memory_utilization=${UTIL:-0.78} --part-timeout 1200
echo ALL-DONE
