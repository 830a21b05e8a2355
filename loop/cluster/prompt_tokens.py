"""How many tokens a chat prompt takes under a model's chat template: preflight checks every prompt
against `model.max_model_len` with it before anything starts, and each sampler worker finds the
prompts that do not fit its engine with it. Lives here, below both, so neither reaches into the other."""
from __future__ import annotations

import json
from pathlib import Path


class _FastCounter:
    """Prompt token counts from tokenizer.json + the chat template, without importing
    transformers' model stack (torch): seconds instead of tens of seconds on a busy CPU.
    Same rendering function transformers uses (render_jinja_template)."""

    def __init__(self, model_dir: Path):
        from tokenizers import Tokenizer
        from transformers.utils.chat_template_utils import render_jinja_template

        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tc = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8")) \
            if (model_dir / "tokenizer_config.json").exists() else {}
        tpl = (model_dir / "chat_template.jinja").read_text(encoding="utf-8") \
            if (model_dir / "chat_template.jinja").exists() else tc.get("chat_template")
        if not isinstance(tpl, str):
            raise ValueError("no single chat template string")
        self.template, self.render = tpl, render_jinja_template
        self.special = {k: (v if isinstance(v, str) else v.get("content")) for k, v in tc.items()
                        if k.endswith("_token") and isinstance(v, (str, dict))}

    def __call__(self, messages: list[dict]) -> int:
        text = self.render(conversations=[messages], chat_template=self.template, add_generation_prompt=True,
                           **self.special)[0][0]
        return len(self.tok.encode(text, add_special_tokens=False).ids)


def token_counter(model_dir: Path):
    """messages -> the chat prompt's token count (generation prompt included); used by preflight and
    by the sampler to find prompts that do not fit the engine."""
    try:
        return _FastCounter(model_dir)
    except Exception:  # noqa: BLE001 - an unusual tokenizer layout: let transformers do it
        pass
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if not getattr(tok, "chat_template", None):
        raise LookupError("no chat template")
    return lambda messages: len(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                        return_dict=False))
