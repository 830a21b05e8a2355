#!/usr/bin/env bash
# Issue 22's targeting comparison on one GPU: every run of `benchmarks/efficacy.py` at once (--jobs), the
# tiny default in bf16 (vLLM's CUDA LoRA kernels take no float32), sampler and trainer each half of the one
# GPU, nothing asleep, vLLM at a small share of the memory. As run detached on the device machine (the stack
# in /tmp/site, this tree copied to /tmp/proj):
#
#   bash benchmarks/efficacy_gpu.sh start   # copies the tree to /tmp/proj, starts the runs with setsid
#   bash benchmarks/efficacy_gpu.sh wait S  # up to S seconds until the benchmark wrote its JSON; prints progress
#   bash benchmarks/efficacy_gpu.sh pack    # the runs' records (no weights) and the JSON -> $OUT
#
# EFFICACY_ARGS picks the runs (default: default_targeting, 5 seeds, 3 rounds, all 10 runs at once).
set -u
P=/tmp/proj
W=/tmp/eff
GPU_SETS=(model.dtype=bfloat16 quantization.compute_dtype=bfloat16 cluster.sampler.num_gpus=0.5
          cluster.trainer_num_gpus=0.5 cluster.gpu_sharing=none cluster.sampler.gpu_memory_utilization=0.08)
case "${1:-}" in
start)
  rm -rf $P $W && mkdir -p $P $W && cp -r . $P/ && cd $P
  export HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
  sets=(); for s in "${GPU_SETS[@]}" ${EXTRA_SETS:-}; do sets+=(--set "$s"); done
  # shellcheck disable=SC2086
  setsid nohup python3 benchmarks/efficacy.py ${EFFICACY_ARGS:---only default_targeting --targeting-seeds 0 1 2 3 4 \
    --rounds 3 --jobs 10 --fresh} --out $W/efficacy_gpu.json "${sets[@]}" > $W/main.log 2>&1 < /dev/null &
  sleep 5; nvidia-smi -L; echo started ;;
wait)
  end=$((SECONDS + ${2:-500}))
  while [ $SECONDS -lt $end ] && ! grep -q "^wrote " $W/main.log 2>/dev/null; do sleep 10; done
  grep -E "FAILED|^dt-|^wrote|Traceback" $W/main.log | tail -20
  for f in $P/state/efficacy-logs/*.log; do
    echo "== $(basename "$f"): $(grep -aoE 'round [0-9]+[^|]{0,60}' "$f" | tail -1)"; tail -c 300 "$f" | tr '\r' '\n' | tail -2
  done
  nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader; uptime ;;
pack)
  mkdir -p "$OUT" && cp $W/efficacy_gpu.json $W/main.log "$OUT"/ 2>/dev/null
  cd $P/state && tar -czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' \
    --exclude='merged*' runs efficacy-logs && ls -la "$OUT" ;;
*) echo "usage: $0 start|wait SECONDS|pack"; exit 2 ;;
esac
