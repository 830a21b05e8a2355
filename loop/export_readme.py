"""The README.md written into <run>/export/: what the bundle is and how to start RL from it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _accuracy_table(heldout: dict[str, Any]) -> str:
    base, final = heldout.get("baseline") or {}, heldout.get("final") or {}
    cats = sorted(set(base.get("by_category", {})) | set(final.get("by_category", {})))
    lines = ["| held-out | baseline | final |", "|---|---|---|",
             f"| **overall** | {_pct(base.get('accuracy'))} | {_pct(final.get('accuracy'))} |"]
    for c in cats:
        lines.append(f"| {c} | {_pct(base.get('by_category', {}).get(c))} | {_pct(final.get('by_category', {}).get(c))} |")
    return "\n".join(lines)


def render_readme(bundle: dict[str, Any], export_dir: Path) -> str:
    s = bundle["sampling"]
    rewards = [v["name"] for v in bundle["verifiers"] if v["reward"]]
    others = [v["name"] for v in bundle["verifiers"] if not v["reward"]]
    partial = ("\n> **Partial export**: the run was not completed (status "
               f"`{bundle['status']}`); this is the adapter of its last completed round.\n"
               if bundle["partial"] else "")
    return f"""# RL starting point: run `{bundle['run_id']}`
{partial}
A LoRA adapter (PEFT layout) trained by the self-improvement loop in round {bundle['adapter_round']},
on top of the base model `{bundle['base_model']}`. Held-out accuracy (greedy) of round
{bundle['heldout']['final_round']}, which evaluated this adapter:

{_accuracy_table(bundle['heldout'])}

| file | what |
|---|---|
| `adapter_model.safetensors`, `adapter_config.json` | the adapter |
| tokenizer files, `chat_template.jinja` | the tokenizer and chat template it was trained with |
| `problems.jsonl` | {bundle['problems']['count']} train problems of every round: `prompt` (chat messages), `problem_id`, `answer`, ... |
| `bundle.json` | base model, held-out accuracy, the run's config, the reward verifiers, sampling settings |

Reward functions: the run's required verifiers {', '.join(f'`{n}`' for n in rewards) or '(none)'}
(each through `verifiers.base.as_reward_func`: score in [0, 1], `None` when a verifier abstains
or breaks){'; not used as rewards: ' + ', '.join(f'`{n}`' for n in others) if others else ''}.
The loop sampled with temperature {s['temperature']}, top_p {s['top_p']}, at most {s['max_tokens']} new tokens.

## Load it

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

export_dir = "{export_dir}"
tokenizer = AutoTokenizer.from_pretrained(export_dir)
base = AutoModelForCausalLM.from_pretrained("{bundle['base_model']}")
model = PeftModel.from_pretrained(base, export_dir, is_trainable=True)
```

## Train it with GRPO (TRL)

Run from the loop's repository (`{REPO}`) so `loop` and `verifiers` import.

```python
import json

from datasets import load_dataset
from trl import GRPOConfig, GRPOTrainer

from loop.export import load_problems
from verifiers.base import VERIFIERS, as_reward_func

bundle = json.load(open(f"{{export_dir}}/bundle.json"))
problems = load_problems(export_dir)                 # problem_id -> Problem (gold answer, tests, ...)
reward_funcs = [as_reward_func(VERIFIERS.build(v["name"], v["options"]), problems)
                for v in bundle["verifiers"] if v["reward"]]
# (the same list: loop.export.reward_funcs(export_dir))
dataset = load_dataset("json", data_files=f"{{export_dir}}/problems.jsonl", split="train")

args = GRPOConfig(output_dir="grpo-out", num_generations=8,
                  temperature={s['temperature']}, top_p={s['top_p']}, max_completion_length={s['max_tokens']})
trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args,
                      train_dataset=dataset, processing_class=tokenizer)
trainer.train()
```

The dataset's `problem_id` column is what the reward functions look the gold answer up by;
keep it when you filter or mix the dataset.
"""
