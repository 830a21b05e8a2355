"""OpenRLHF's reward route for a bundle: `reward_openrlhf.py` with `reward_func(queries, prompts, labels)`,
given to `--reward.remote_url <file>.py` (OpenRLHF loads a .py there as a function, not a URL).

OpenRLHF (0.11) builds each `query` by decoding prompt + response tokens with the special tokens
kept, so the completion is the query after the templated prompt, and it still ends with the chat
template's end token (`<|im_end|>`, ...), which a strict verifier reads as part of the answer. The
labels are the bundle's `problem_id` column (`--data.label_key problem_id`): the problem, not only
its gold answer, decides the verdict (code problems carry tests). Scores are the same sum over the
reward verifiers as TRL's and verl's (loop.export.verl.score)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

OPENRLHF_FILE = "reward_openrlhf.py"
OPENRLHF_SOURCE = '''"""OpenRLHF reward function of this bundle: --reward.remote_url <this file>, with
--data.input_key prompt --data.label_key problem_id --data.apply_chat_template.
It needs the reasoning-loop package importable (pip install -e <repo>)."""
from pathlib import Path

from loop.export.openrlhf import bundle_reward_func

reward_func = bundle_reward_func(Path(__file__).resolve().parent)
'''

# End-of-turn and end-of-text markers of common chat templates, stripped from a completion's end
# (the bundle's own eos and pad tokens are added from its tokenizer_config.json).
END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<|end_of_text|>", "</s>", "<eos>",
              "<end_of_turn>", "<|return|>")


def _tokens_of(bundle_dir: Path) -> tuple[str, ...]:
    extra = []
    cfg = bundle_dir / "tokenizer_config.json"
    if cfg.is_file():
        meta = json.loads(cfg.read_text(encoding="utf-8"))
        for key in ("eos_token", "pad_token"):
            tok = meta.get(key)
            tok = tok.get("content") if isinstance(tok, dict) else tok
            if isinstance(tok, str) and tok:
                extra.append(tok)
    return tuple(dict.fromkeys([*extra, *END_TOKENS]))


def completion_of(query: str, prompt: str, end_tokens: tuple[str, ...]) -> str:
    """The response in an OpenRLHF query: the text after the prompt, with trailing end tokens removed."""
    if not query.startswith(prompt):
        raise ValueError("reward_func: the query does not start with its prompt; give the queries and prompts "
                         "OpenRLHF passes (it decodes prompt + response with special tokens kept)")
    text = query[len(prompt):]
    stripped = True
    while stripped:
        stripped = False
        text = text.rstrip()
        for tok in end_tokens:
            if text.endswith(tok):
                text = text[: -len(tok)]
                stripped = True
    return text


@lru_cache(maxsize=8)
def _bundle(bundle_dir: str) -> tuple[dict, list, tuple[str, ...]]:
    from loop.export.bundle import load_problems, reward_verifiers

    return load_problems(bundle_dir), reward_verifiers(bundle_dir), _tokens_of(Path(bundle_dir))


def bundle_reward_func(bundle_dir: str | Path):
    """OpenRLHF's `reward_func` for one bundle."""
    bundle_dir = str(Path(bundle_dir).resolve())

    def reward_func(queries: list[str], prompts: list[str], labels: list[str]) -> dict[str, Any]:
        import torch

        from loop.export.verl import score

        problems, verifiers, ends = _bundle(bundle_dir)
        scores, acc, broke = [], [], []
        for q, p, label in zip(queries, prompts, labels, strict=True):
            if label not in problems:
                raise ValueError(f"reward_func: label {label!r} is not a problem_id of the bundle {bundle_dir}; "
                                 f"pass --data.label_key problem_id with its train.jsonl")
            s = score(verifiers, problems[label], completion_of(q, p, ends))
            scores.append(s["score"])
            acc.append(s["acc"])
            broke.append(s["verifier_error"])
        rewards = torch.tensor(scores, dtype=torch.float32)
        return {"rewards": rewards, "scores": rewards.clone(),
                "extra_logs": {"acc": torch.tensor(acc), "verifier_error": torch.tensor(broke)}}

    return reward_func
