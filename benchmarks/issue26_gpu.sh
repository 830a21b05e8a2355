#!/usr/bin/env bash
# Issue 26's last GPU measures, as run detached on the device machine (the stack in /tmp/site, this
# tree copied to /tmp/proj): the scale part on a `max_num_seqs: auto` engine (
# KV-sized, at most 256) with its one-wave tokens/s at 128 and 256 sequences, then one full-size round
# of configs/qwen3-4b-qlora.yaml (2,048-token samples, n=8; FULL_PER_CATEGORY problems a category, to fit
# the device time). Poll /tmp/h200/issue26.log; the JSON lands in /tmp/h200/r26b.json.
set -x
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
W=/tmp/h200 M=/tmp/h200/qwen3-4b-random
mkdir -p $W
python3 benchmarks/gpu_h200.py --parts build --out $W/r26b.json --workdir $W --model $M
python3 benchmarks/gpu_h200.py --parts scale --merge --out $W/r26b.json --workdir $W --model $M --prompts 32 \
  --max-tokens 512 --scale-engines ${SCALE_ENGINES:-kv_sized} --scale-sweep 128,256 --part-timeout 900
python3 benchmarks/gpu_h200.py --parts fullsize --merge --out $W/r26b.json --workdir $W --model $M --part-timeout 1500 \
  $(for c in add mul; do echo --fullsize-set generators.0.categories.$c.budget=${FULL_PER_CATEGORY:-16}; done) \
  $(for c in bit_manipulation cipher unit_conversion numeral_system; do
      echo --fullsize-set generators.1.categories.$c.budget=${FULL_PER_CATEGORY:-16}; done)
echo ALL-DONE
