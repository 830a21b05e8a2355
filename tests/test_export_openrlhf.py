"""The RL bundle in OpenRLHF 0.11.2's own code, in a process started outside the project: its
train_ppo_ray argument parser on the README's flags (as the shell expands them), its
blending_datasets + PromptDataset on the bundle's train.jsonl, and its reward-file loader
(SingleTurnAgentExecutor) calling the bundle's reward_openrlhf.py with queries made as OpenRLHF
makes them (prompt + response decoded with special tokens kept, so `<|im_end|>` stays).

OpenRLHF is installed by `make extras` without its dependencies into .venv/extras/ (see
tests/test_export_verl.py); its training needs GPUs and is not run here.
"""
from __future__ import annotations

import json
import subprocess

from loop.export.openrlhf import END_TOKENS, completion_of
from tests.test_export_verl import code_blocks, extras_env, need_extra, run_py, synthetic_bundle


def readme_flags(bundle, cwd, env, program: str = "openrlhf.cli.train_ppo_ray") -> list[str]:
    """The arguments the README's command for `program` passes, as the shell expands them."""
    block = next(b for _, b in code_blocks((bundle / "README.md").read_text()) if f"python -m {program}" in b)
    expanded = block.replace(f"python -m {program}", "printf '%s\\0'", 1)
    p = subprocess.run(["bash", "-c", expanded], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return [a for a in p.stdout.split("\0") if a]


OPENRLHF_CHECK = r'''
import asyncio, importlib.util, json, sys, textwrap
from pathlib import Path

import torch

bundle, tokenizer_dir, flags = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
# OpenRLHF's own parser: the __main__ block of train_ppo_ray.py up to `args = hierarchize(args)`
# (the module itself imports Ray actors and DeepSpeed, which need GPUs).
source = Path(importlib.util.find_spec("openrlhf").submodule_search_locations[0], "cli", "train_ppo_ray.py").read_text()
start = source.index("    parser = argparse.ArgumentParser()")
end = source.index("    args = hierarchize(args)") + len("    args = hierarchize(args)")
namespace = {}
sys.argv = ["train_ppo_ray.py", *flags]
exec("import argparse, os\nfrom datetime import datetime\n" + textwrap.dedent(source[start:end]), namespace)
args = namespace["args"]
args.reward.remote_url = args.reward.remote_url.split(",")  # as train_ppo_ray does next

from openrlhf.datasets import PromptDataset
from openrlhf.datasets.utils import blending_datasets
from openrlhf.utils.agent import SingleTurnAgentExecutor
from openrlhf.utils.utils import get_tokenizer


class Strategy:  # the parts of OpenRLHF's DeepSpeed strategy that dataset loading reads
    def __init__(self, args):
        self.args = args

    def print(self, *a):
        print(*a, file=sys.stderr)

    def is_rank_0(self):
        return True


strategy = Strategy(args)
tok = get_tokenizer(tokenizer_dir, None, "left", strategy)
data = blending_datasets(args.data.prompt_dataset, args.data.prompt_probs, strategy, args.train.seed,
                         max_count=args.data.max_samples, dataset_split=args.data.prompt_split)
dataset = PromptDataset(data, tok, strategy, input_template=args.data.input_template)
executor = SingleTurnAgentExecutor(remote_rm_url=args.reward.remote_url)  # loads reward_func from the .py
assert executor.reward_func is not None, "OpenRLHF did not load reward_func"
problems = {}
with open(bundle / "train.jsonl") as f:
    for line in f:
        row = json.loads(line)
        problems[row["problem_id"]] = row


def reward(prompt, label, response):
    ids = tok(prompt, add_special_tokens=False)["input_ids"] + tok(response, add_special_tokens=False)["input_ids"]
    ids += [tok.convert_tokens_to_ids("<|im_end|>")]
    query = tok.decode(ids, skip_special_tokens=False)  # as SingleTurnAgentExecutor.execute makes it
    info = asyncio.run(executor._fetch_rewards_via_func([query], [prompt], [label]))[0]
    reward = torch.tensor([info["rewards"]])  # as samples_generator turns it into the experience's reward
    return reward.flatten().tolist(), torch.tensor([info["scores"]]).flatten().tolist(), query.endswith("<|im_end|>")


results = []
for i in range(min(len(dataset), 8)):
    source_, prompt, label, _ = dataset[i]
    gold = json.loads(problems[label]["problem"])["reference"]["answer"]
    results.append({"label": label, "prompt_templated": prompt.rstrip().endswith("assistant"),
                    "right": reward(prompt, label, f"<think>\nok\n</think>\nAnswer: {gold}"),
                    "wrong": reward(prompt, label, f"<think>\nok\n</think>\nAnswer: {int(gold) + 1}"),
                    "spaced": reward(prompt, label, f"<think>\nok\n</think>\nAnswer: {gold}\n")})
print(json.dumps({"n": len(dataset), "keys": [args.data.input_key, args.data.label_key],
                  "chat": bool(args.data.apply_chat_template), "results": results}))
'''


def check_openrlhf_result(out: dict, bundle) -> None:
    meta = json.loads((bundle / "bundle.json").read_text())
    assert out["n"] == meta["pool"]["train_count"] and out["keys"] == ["prompt", "problem_id"] and out["chat"]
    assert out["results"]
    for r in out["results"]:
        assert r["prompt_templated"], r
        assert r["right"] == [[1.0], [1.0], True], r  # the query kept <|im_end|>; the reward stripped it
        assert r["spaced"][0] == [1.0] and r["wrong"][0] == [0.0], r


def test_openrlhf_own_parser_dataset_and_reward_loader_on_the_readme_flags(tmp_path):
    need_extra("openrlhf")
    bundle = synthetic_bundle(tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = extras_env(bundle)
    flags = readme_flags(bundle, work, env)
    assert str(bundle / "reward_openrlhf.py") in flags and str(bundle / "train.jsonl") in flags
    out = run_py(OPENRLHF_CHECK, [str(bundle), str(bundle), json.dumps(flags)], work, env)
    check_openrlhf_result(out, bundle)


def test_completion_is_the_query_after_the_prompt_without_end_tokens():
    prompt = "<|im_start|>user\nCompute 1+1.<|im_end|>\n<|im_start|>assistant\n"
    ends = END_TOKENS
    assert completion_of(prompt + "Answer: 2<|im_end|>", prompt, ends) == "Answer: 2"
    assert completion_of(prompt + "Answer: 2<|im_end|><|endoftext|>\n", prompt, ends) == "Answer: 2"
    # only the end: an end token inside the response stays, so it cannot hide text from the verifier
    assert completion_of(prompt + "Answer: 2<|im_end|>3<|im_end|>", prompt, ends) == "Answer: 2<|im_end|>3"
    import pytest

    with pytest.raises(ValueError, match="does not start with its prompt"):
        completion_of("something else", prompt, ends)
