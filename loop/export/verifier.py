"""The learned verifier in the RL bundle: its adapter (bundle/verifier/) and a TRL reward function that
scores with it, for RL on tasks that have no programmatic reward.

    from loop.export.verifier import verifier_reward
    reward = verifier_reward("<run>/export")        # reward(prompts, completions, **_) -> [P(Yes), ...]
    GRPOTrainer(..., reward_funcs=[reward])

The reward is P(Yes) of "Is this solution correct?" under the base model plus the verifier adapter,
normalised over Yes and No, computed with transformers + PEFT in the RL trainer's process (the loop
itself scores on its vLLM sampler). A verifier is a model: it can be gamed, so prefer a programmatic
reward wherever one exists and watch the RL run's held-out accuracy, not its reward.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loop.export.bundle import BundleError, load_bundle
from loop.run.state import RunDir, read_json
from verifiers.learned import NO, QUESTION, YES, verification_content
from verifiers.untrusted import defang, special_tokens

DIR = "verifier"
FILES = ("adapter_config.json", "adapter_model.safetensors")


def newest_verifier(run: RunDir) -> tuple[int, Path] | None:
    """(round, adapter directory) of the newest round that trained a verifier, or None."""
    for rd in sorted(run.path.glob("round-*"), reverse=True):
        f = rd / "verifier.json"
        if f.is_file():
            try:
                adapter = read_json(f).get("adapter")
            except (OSError, ValueError) as e:
                raise ValueError(f"{f} is damaged ({type(e).__name__}); restore it from a copy of the run") from None
            if adapter:
                return int(rd.name.split("-")[1]), run.resolve(adapter)
    return None


def write_verifier(run: RunDir, cfg: Any, out: Path, base_dir: Path | None) -> dict | None:
    """Copy the newest verifier adapter into out/verifier/ after checking it fits the base; the
    bundle.json entry, or None when the run trained no verifier. ValueError saying what is wrong."""
    from loop.verifier_data import VerifierDataError, check_adapter

    if not cfg.learned_verifier.enabled:
        return None
    found = newest_verifier(run)
    if found is None:
        return None
    r, src = found
    try:
        check_adapter(src, base_dir or Path(cfg.model.resolved_path()), f"round {r}'s verifier adapter")
    except VerifierDataError as e:
        raise ValueError(f"{e}; restore it from a copy of the run (or export a run whose verifier is whole)") from None
    (out / DIR).mkdir()
    for name in FILES:
        shutil.copyfile(src / name, out / DIR / name)
    return {"path": DIR, "round": r, "question": QUESTION, "answers": [YES, NO],
            "reward": {"module": "loop.export.verifier", "function": "verifier_reward"}}


README = """
## The learned verifier as a reward

The run trained a verifier (round {round}'s, in `verifier/`): a LoRA adapter of the same base that answers
"{question}" about a chain. For RL on tasks without a programmatic reward, score completions with it:

```python
from loop.export.verifier import verifier_reward
reward = verifier_reward("$BUNDLE")     # TRL reward_funcs callable: P(Yes) per completion
trainer = GRPOTrainer(..., reward_funcs=[reward])
```

For verl, wrap it in a custom reward function (`compute_score(data_source, solution_str, ground_truth,
extra_info)` returning `reward([[{{"role": "user", "content": extra_info["question"]}}]], [solution_str])[0]`).
A model can be talked into "Yes": keep a programmatic reward where one exists and judge the RL run by its
held-out accuracy, not by this reward.
"""


def verifier_reward(bundle_dir: str | Path, batch_size: int = 16, max_chain_chars: int = 1200
                    ) -> Callable[..., list[float]]:
    """A TRL reward function: (prompts, completions, **columns) -> P(Yes) per completion."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bundle = load_bundle(bundle_dir)
    info = bundle.meta.get("learned_verifier")
    if not info:
        raise BundleError(f"the bundle {bundle.dir} carries no learned verifier (the run had "
                          "learned_verifier.enabled: false, or trained none); export a run that trained one")
    adapter = bundle.dir / info["path"]
    missing = [f for f in FILES if not (adapter / f).is_file()]
    if missing:
        raise BundleError(f"the bundle's verifier adapter {adapter} is missing {', '.join(missing)}; export again")
    base_dir = bundle.base_model
    tok = AutoTokenizer.from_pretrained(bundle.dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                                      str(adapter)).eval()
    yes, no = (tok.encode(w, add_special_tokens=False)[0] for w in (YES, NO))
    specials = special_tokens(tok)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token

    def reward_learned_verifier(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        texts = []
        for p, c in zip(prompts, completions):
            task = p if isinstance(p, str) else "\n".join(m["content"] for m in p if m["role"] == "user")
            chain = c if isinstance(c, str) else c[-1]["content"]
            # the completion is the policy's own text, and RL will search it for a way to say "Yes" for it:
            # besides the common control-token spellings, this tokenizer's own are broken too
            msgs = [{"role": "user", "content": defang(verification_content(task, chain, max_chain_chars), specials)}]
            texts.append(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
        out: list[float] = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
                logits = model(**enc).logits[:, -1].float()
                two = torch.softmax(logits[:, [yes, no]], dim=-1)[:, 0]
                out += two.tolist()
        return out

    return reward_learned_verifier
