"""The bundle's README.md and its GRPO recipe (train_grpo.py): how to start RL from it with
TRL, verl or vLLM. The recipe is a file in the bundle, so it runs as written from any
directory; tests/test_export_rl.py runs it for two GRPO steps."""
from __future__ import annotations

from pathlib import Path
from typing import Any

GRPO_SCRIPT = '''"""GRPO with TRL from this RL bundle. Runs from any directory once reasoning-loop is
installed (pip install -e <repo>, or its wheel), on a CPU (float32) or a GPU (bf16 when
supported):

    python <bundle>/train_grpo.py --max-steps 200 --output-dir grpo-out
"""
import argparse
import sys
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from loop.export import load_bundle

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

bundle = load_bundle(args.bundle)
cuda = torch.cuda.is_available()
# GRPOConfig defaults to bf16, which a CPU refuses: pick the dtype for the device.
dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
tokenizer = AutoTokenizer.from_pretrained(bundle.dir)
base = AutoModelForCausalLM.from_pretrained(bundle.base_model, dtype=dtype)
model = PeftModel.from_pretrained(base, bundle.dir, is_trainable=True)
model.peft_config["default"].base_model_name_or_path = bundle.base_model  # saved adapters name the real base

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
        lines.append(f"| {c} | {_pct(base.get('by_category', {}).get(c))} | {_pct(final.get('by_category', {}).get(c))} |")
    return "\n".join(lines)


def render_readme(bundle: dict[str, Any], export_dir: Path) -> str:
    """`export_dir` is where the bundle will live; the commands name it, so they run as written."""
    d = str(export_dir)
    a, pool, s = bundle["adapter"], bundle["pool"], bundle["sampling"]
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
    base_line = ("`base/` (a copy of the embedded model)" if base.get("copied") else
                 f"the hub model `{base['path']}`" if base.get("hub_id") else
                 f"`{base['path']}` (a local directory, relative to this one)")
    left = ", ".join(f"{n} {why}" for why, n in pool["pass_rates"]["left_out"].items()) or "none"
    return f"""# RL starting point: run `{bundle['run_id']}`
{warn}
A LoRA adapter (PEFT layout) trained by the self-improvement loop in round {a['round']}, on top of
{base_line}. Why this adapter: {a['why']}.

{_accuracy_table(bundle['heldout'])}

## What is here

| file | what |
|---|---|
| `adapter_model.safetensors`, `adapter_config.json` | the adapter (vLLM loads it with `LoRARequest`) |
| tokenizer files, `chat_template.jinja`, `config.json` | the tokenizer and chat template it was trained with (`config.json` is the base's, so tokenizer loaders find its `model_type`) |
| `train.jsonl` / `train.parquet` | the RL prompt pool: {pool['train_count']} train-split problems whose pass rate under this adapter is strictly between 0 and 1, with `pass_rate` per prompt |
| `val.jsonl` / `val.parquet` | validation: the run's {pool['val_count']} held-out problems (never trained on) |
| `pass_rates.jsonl` | every train problem's pass / fail / error counts under this adapter |
| `train_grpo.py` | GRPO with TRL, runs as written |
| `reward_verl.py` | verl's `compute_score` for this bundle |
| `bundle.json` | base model, adapter choice, held-out accuracy, sampling, quantization, LoRA, chat template, reward specs, the run's config; paths relative to this directory |

Pass rates: {pool['pass_rates']['detail']}. Left out of the pool: {left}.

Rewards: the run's required verifiers that need no model, {', '.join(f'`{n}`' for n in rewards) or '(none)'}
(score in [0, 1]; `None` when a verifier abstains or breaks, so a broken sandbox never reads as
reward 0){'; not rewards: ' + ', '.join(f'`{n}`' for n in others) if others else ''}. The loop sampled with
temperature {s['temperature']}, top_p {s['top_p']}, at most {s['max_tokens']} new tokens; the loop trained
with quantization `{bundle['quantization']}`.

All recipes need the reasoning-loop package importable: `pip install -e <repo>` (or its wheel)
in the environment you train in; they then run from any directory.

## TRL (GRPO)

```bash
python {d}/train_grpo.py --max-steps 200 --output-dir grpo-out
```

`train_grpo.py` loads the base in bf16 on a GPU that has it and float32 otherwise, puts the
adapter on it (trainable), and uses `loop.export.load_bundle(...).reward_funcs()` as TRL
`reward_funcs` (looked up by the dataset's `problem_id` column: keep that column when you
filter or mix the data). `--log-rewards FILE` writes every completion with its rewards.
What it runs:

```python
{GRPO_SCRIPT}```

## verl

```
data.train_files={d}/train.parquet  data.val_files={d}/val.parquet
data.prompt_key=prompt  reward_model.reward_manager=naive
custom_reward_function.path={d}/reward_verl.py  custom_reward_function.name=compute_score
```

Rows carry `data_source`, chat `prompt`, `ability`, `reward_model {{style: rule, ground_truth}}` and
`extra_info` (`problem_id`, `pass_rate`, the whole problem as JSON, which `compute_score` needs).
`compute_score` returns `{{score, acc, verifier_error}}`: `score` is the sum of the reward
verifiers' scores, the same total TRL adds up. verl itself was not run on this bundle: the
layout and the reward function are checked by reading the parquet back and scoring known-good
and known-bad answers (tests/test_export_rl.py). verl's actor starts from a model path; to
start from this adapter, merge it (`PeftModel.from_pretrained(base, bundle).merge_and_unload()`
then `save_pretrained`) or use your verl version's LoRA-adapter option.

## vLLM

```python
from vllm import LLM, SamplingParams
from vllm.lora.request import LoRARequest
from loop.export import load_bundle

bundle = load_bundle("{d}")
llm = LLM(model=bundle.base_model, tokenizer=str(bundle.dir), enable_lora=True,
          max_lora_rank={bundle['lora']['r']})
outs = llm.chat([[{{"role": "user", "content": "..."}}]], SamplingParams(temperature=0, max_tokens={s['max_tokens']}),
                lora_request=LoRARequest("bundle", 1, str(bundle.dir)))
```
"""
