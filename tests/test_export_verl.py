"""The RL bundle in verl 0.9.1's own code: its hydra config composed from the README's command,
its RLHFDataset reading the bundle's parquet, its custom-reward loader and its `naive` reward
manager scoring right and wrong responses, in a process started outside the project.

verl pins transformers < 5.11, so it is not in the project's resolver set: `make extras`
installs it without its dependencies (and a few light ones) into .venv/extras/, which these tests
put on the subprocess's PYTHONPATH. verl's training itself needs GPUs and is not run here.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loop.export import export_run
from loop.run.state import RunDir
from tests.conftest import ROOT
from tests.test_export import make_run

EXTRAS = Path(os.environ.get("RL_EXTRAS", ROOT / ".venv" / "extras"))


def need_extra(package: str) -> None:
    if not (EXTRAS / package).is_dir():
        pytest.skip(f"{package} is not installed in {EXTRAS}: `make extras` installs verl 0.9.1 and OpenRLHF 0.11.2 "
                    f"there (pip install --no-deps --target; they pin other transformers versions than the project)")


def extras_env(bundle: Path) -> dict[str, str]:
    """The environment of a user's shell: the project installed (editable), the RL frameworks on
    PYTHONPATH, BUNDLE set, no repository on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env | {"PYTHONPATH": str(EXTRAS), "BUNDLE": str(bundle), "TOKENIZERS_PARALLELISM": "false",
                  "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}


def run_py(code: str, args: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> dict:
    """Run `code` as a script in `cwd`; its last stdout line is a JSON result."""
    script = cwd / "check.py"
    script.write_text(code)
    p = subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def readme_overrides(bundle: Path, cwd: Path, env: dict[str, str]) -> list[str]:
    """The arguments the README's verl command passes to main_ppo, as the shell expands them."""
    readme = (bundle / "README.md").read_text()
    block = next(b for b in code_blocks(readme) if "verl.trainer.main_ppo" in b[1])[1]
    expanded = block.replace("python -m verl.trainer.main_ppo", "printf '%s\\0'", 1)
    p = subprocess.run(["bash", "-c", expanded], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return [a for a in p.stdout.split("\0") if a]


def code_blocks(markdown: str) -> list[tuple[str, str]]:
    """(language, text) of every fenced block."""
    out, lang, lines = [], None, []
    for line in markdown.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip() or "text", []
            else:
                out.append((lang, "\n".join(lines) + "\n"))
                lang = None
        elif lang is not None:
            lines.append(line)
    assert lang is None, "an unclosed code block"
    return out


VERL_CHECK = r'''
import json, sys
from pathlib import Path

import torch
import verl
from hydra import compose, initialize_config_dir

bundle, overrides = Path(sys.argv[1]), json.loads(sys.argv[2])
# What `python -m verl.trainer.main_ppo <overrides>` composes first (its @hydra.main config).
with initialize_config_dir(config_dir=str(Path(verl.__file__).parent / "trainer" / "config"), version_base=None):
    config = compose(config_name="ppo_trainer", overrides=overrides)

from verl import DataProto
from verl.trainer.ppo.reward import get_custom_reward_fn, load_reward_manager
from verl.trainer.ppo.utils import create_rl_dataset
from verl.utils import hf_tokenizer

tok = hf_tokenizer(str(bundle))
datasets = {split: create_rl_dataset(config.data[f"{split}_files"], config.data, tok, None, is_train=split == "train")
            for split in ("train", "val")}
assert get_custom_reward_fn(config) is not None, "verl did not load the custom reward function"
manager = load_reward_manager(config, tok)
eos = tok.convert_tokens_to_ids("<|im_end|>")


def reward(row, text):
    templated = tok.apply_chat_template(list(row["raw_prompt"]), add_generation_prompt=True, tokenize=False)
    prompt = tok(templated, add_special_tokens=False)["input_ids"]
    response = tok(text, add_special_tokens=False)["input_ids"] + [eos]
    ids = torch.tensor([prompt + response])
    data = DataProto.from_dict(
        tensors={"prompts": torch.tensor([prompt]), "responses": torch.tensor([response]),
                 "input_ids": ids, "attention_mask": torch.ones_like(ids)},
        non_tensors={k: [row[k]] for k in ("data_source", "reward_model", "extra_info")})
    out = manager.loop.run_until_complete(manager.run_single(data))
    return out["reward_score"], out["reward_extra_info"]


results = []
for split, ds in datasets.items():
    for i in range(min(len(ds), 6)):
        row = ds[i]
        gold = row["reward_model"]["ground_truth"]
        right = reward(row, f"<think>\nok\n</think>\nAnswer: {gold}")
        wrong = reward(row, f"<think>\nok\n</think>\nAnswer: {int(gold) + 1}")
        unclosed = reward(row, f"<think>\nthe answer is {gold}\n")
        results.append({"split": split, "data_source": row["data_source"], "right": right, "wrong": wrong,
                        "unclosed": unclosed})
print(json.dumps({
    "manager": type(manager).__module__ + "." + type(manager).__name__,
    "reward_path": config.reward.custom_reward_function.path,
    "lora_adapter_path": config.actor_rollout_ref.model.lora_adapter_path,
    "lora_rank": config.actor_rollout_ref.model.lora_rank,
    "model_path": config.actor_rollout_ref.model.path,
    "sizes": {k: len(v) for k, v in datasets.items()},
    "results": results,
}))
'''


def check_verl_result(out: dict, bundle: Path, copy_base: str) -> None:
    assert out["manager"].endswith("reward_manager.naive.NaiveRewardManager"), out["manager"]
    assert out["reward_path"] == str(bundle / "reward_verl.py")
    assert out["lora_adapter_path"] == str(bundle) and out["lora_rank"] > 0
    assert out["model_path"] == copy_base
    meta = json.loads((bundle / "bundle.json").read_text())
    assert out["sizes"] == {"train": meta["pool"]["train_count"], "val": meta["pool"]["val_count"]}
    assert out["results"] and {r["split"] for r in out["results"]} == {"train", "val"}
    for r in out["results"]:
        assert r["data_source"].startswith("reasoning_loop/arithmetic/")
        assert r["right"][0] == 1.0 and r["right"][1] == {"score": 1.0, "acc": 1.0, "verifier_error": 0.0}, r
        assert r["wrong"][0] == 0.0 and r["unclosed"][0] == 0.0, r


def synthetic_bundle(tmp_path: Path) -> Path:
    """An export of a synthetic run whose adapters carry no tokenizer (the export then ships the
    tiny base's real one, which verl and OpenRLHF load), copied away from the run."""
    run = make_run(tmp_path / "made", accuracies=[0.4, 0.6], trained=[0, 1])
    for r in (0, 1):
        for name in ("tokenizer.json", "chat_template.jinja"):
            (run.round_dir(r) / "adapter" / name).unlink()
    out = export_run(RunDir(run.path))
    copy = tmp_path / "copied" / "bundle"
    shutil.copytree(out, copy)
    shutil.rmtree(tmp_path / "made")
    return copy


def test_verl_own_dataset_reward_loader_and_manager_on_the_readme_settings(tmp_path):
    need_extra("verl")
    bundle = synthetic_bundle(tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = extras_env(bundle)
    overrides = readme_overrides(bundle, work, env)
    assert "reward.custom_reward_function.path=" + str(bundle / "reward_verl.py") in overrides
    out = run_py(VERL_CHECK, [str(bundle), json.dumps(overrides)], work, env)
    check_verl_result(out, bundle, str((bundle / "base").resolve()))


def test_verl_legacy_keys_leave_the_custom_reward_unloaded(tmp_path):
    """Why the README gives verl 0.9's keys: with the legacy ones, verl 0.9.1 loads no custom reward
    (and would fail at the first reward with its default scorer)."""
    need_extra("verl")
    bundle = synthetic_bundle(tmp_path)
    code = r'''
import json, sys
from pathlib import Path
import verl
from hydra import compose, initialize_config_dir
from verl.trainer.ppo.reward import get_custom_reward_fn
with initialize_config_dir(config_dir=str(Path(verl.__file__).parent / "trainer" / "config"), version_base=None):
    config = compose(config_name="ppo_trainer", overrides=sys.argv[1:])
print(json.dumps({"loaded": get_custom_reward_fn(config) is not None}))
'''
    legacy = [f"+custom_reward_function.path={bundle / 'reward_verl.py'}", "+custom_reward_function.name=compute_score"]
    new = [f"reward.custom_reward_function.path={bundle / 'reward_verl.py'}",
           "reward.custom_reward_function.name=compute_score"]
    env = extras_env(bundle)
    assert run_py(code, legacy, tmp_path, env) == {"loaded": False}
    assert run_py(code, new, tmp_path, env) == {"loaded": True}
