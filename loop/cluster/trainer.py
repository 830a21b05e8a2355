"""The trainer worker: QLoRA (bitsandbytes NF4 + double quant, peft LoRA) with TRL's SFTTrainer.

Examples are conversational prompt/completion pairs, so TRL puts the loss on the
assistant turn only. `restart` trains a fresh adapter on the base each round (ReST-EM);
`continue` loads the last adapter and keeps training it. Adapters are saved in PEFT's
layout (adapter_model.safetensors + adapter_config.json), which vLLM loads as a LoRA.

Speed and memory levers (each measured on the H200 by benchmarks/gpu_h200.py):
- no fp32 upcast: `quantization.prepare_for_kbit: false` keeps norms and the tied
  embedding in the compute dtype (peft's prepare_model_for_kbit_training casts them to fp32);
- `training.packing: true`: best-fit-decreasing packing into rows of `max_seq_len`, padding-free
  (only real tokens are computed), with per-sequence causal attention (loop/kernels/packed_attention.py:
  PyTorch's varlen flash kernel on CUDA), so a micro-batch is a token budget of
  `batch_size * max_seq_len` rather than a count of chains;
- TRL's fused LM head projects only the positions that carry a loss, in tiles, so the
  151,936-wide logits of a Qwen3 are never materialised;
- `training.fused_lora`: each LoRA linear adds its product to the base output in one addmm
  (loop/kernels/fused_lora.py);
- `training.fused_kernels`: Liger's RMSNorm/SwiGLU/RoPE kernels on CUDA (loop/kernels/fused_kernels.py).

Every optimizer step is logged (loop/cluster/train_log.py: loss, learning rate, grad norm, tokens, GPU
memory and utilisation); the rows come back in the metrics under "log". With a `tb_dir`, TRL's own
TensorBoard callback (`report_to=["tensorboard"]`) writes the same steps as event files there.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from loop.cluster.train_log import StepLog
from loop.kernels import fused_kernels, fused_lora
from loop.run.state import StageFailed
from verifiers.untrusted import special_tokens, spelled_control_token

log = logging.getLogger(__name__)


def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class TrainerWorker:
    def __init__(self, model_path: str, quant: dict, lora: dict, training: dict):
        self.model_path, self.quant, self.lora, self.training = model_path, quant, lora, training
        import torch

        dev = training["device"]
        self.cuda = torch.cuda.is_available() if dev == "auto" else dev == "cuda"

    def _load_base(self):
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        q = self.quant
        kwargs: dict[str, Any] = {"device_map": {"": 0 if self.cuda else "cpu"}}
        if q["load_in_4bit"]:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=q["quant_type"], bnb_4bit_use_double_quant=q["double_quant"],
                bnb_4bit_compute_dtype=_dtype(q["compute_dtype"]),
            )
        kwargs["dtype"] = _dtype(q["compute_dtype"])
        if self.training["packing"]:
            from loop.kernels.packed_attention import register

            kwargs["attn_implementation"] = register()
        model = AutoModelForCausalLM.from_pretrained(self.model_path, **kwargs)
        if q["load_in_4bit"] and q["prepare_for_kbit"]:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=self.training["gradient_checkpointing"])
        elif self.training["gradient_checkpointing"]:
            # Without prepare_model_for_kbit_training (which upcasts norms/embeddings to fp32
            # and ran ~2.5x slower on the H200, ENVIRONMENT.md) we only need input grads.
            model.enable_input_require_grads()
        return model

    def train(self, examples: list[dict], out_dir: str, init_adapter: str | None, seed: int,
              overrides: dict | None = None, tb_dir: str | None = None) -> dict:
        """examples: [{"prompt": [messages], "completion": [assistant message]}]. Returns metrics.
        `overrides` replace training settings for this call only (the learned verifier's adapter is
        trained by the same actor with its own epochs and learning rate). `tb_dir`: TensorBoard event
        files of the steps go there (TRL's report_to)."""
        if overrides:
            overrides = dict(overrides)
            lora = overrides.pop("lora", None)  # a new adapter's LoRA settings (the verifier's own rank)
            saved = self.training, self.lora
            self.training, self.lora = {**self.training, **overrides}, {**self.lora, **(lora or {})}
            try:
                return self.train(examples, out_dir, init_adapter, seed, tb_dir=tb_dir)
            finally:
                self.training, self.lora = saved
        import torch
        from transformers import AutoTokenizer

        t0 = time.time()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        tok = AutoTokenizer.from_pretrained(self.model_path)
        examples, spelled = without_control_spellings(examples, special_tokens(tok))
        model = self._load_base()
        with fused_kernels.applied(model, self.training["fused_kernels"], self.cuda) as kernels:
            metrics = self._train(model, tok, examples, out_dir, init_adapter, seed, tb_dir)
        metrics.update(fused_kernels=kernels, seconds=time.time() - t0, control_token_chains=spelled)
        del model
        if self.cuda:
            torch.cuda.empty_cache()
        return metrics

    def _train(self, model, tok, examples: list[dict], out_dir: str, init_adapter: str | None, seed: int,
               tb_dir: str | None = None) -> dict:
        import torch
        from datasets import Dataset
        from peft import LoraConfig, PeftModel, get_peft_model
        from trl import SFTConfig, SFTTrainer

        tr = self.training
        if init_adapter and tr["mode"] == "continue":
            model = PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
        else:
            lc = self.lora
            model = get_peft_model(model, LoraConfig(
                r=lc["r"], lora_alpha=lc["alpha"], lora_dropout=lc["dropout"], target_modules=lc["target_modules"],
                task_type="CAUSAL_LM"))
        fused = fused_lora.install(model) if tr["fused_lora"] else 0
        ds = Dataset.from_list(examples)
        report_to = ["tensorboard"] if tb_dir and _tensorboard() else []
        args = SFTConfig(
            output_dir=os.path.join(out_dir, "_trainer"), num_train_epochs=tr["epochs"],
            learning_rate=tr["learning_rate"],
            per_device_train_batch_size=tr["batch_size"], gradient_accumulation_steps=tr["grad_accum"],
            max_length=tr["max_seq_len"], gradient_checkpointing=tr["gradient_checkpointing"],
            gradient_checkpointing_kwargs={"use_reentrant": False}, packing=tr["packing"], packing_strategy="bfd",
            padding_free=tr["packing"], completion_only_loss=True,
            train_sampling_strategy="group_by_length" if tr.get("group_by_length") else "random", use_cpu=not self.cuda,
            bf16=self.cuda and self.quant["compute_dtype"] == "bfloat16", fp16=False, seed=seed, data_seed=seed,
            save_strategy="no", report_to=report_to, logging_steps=1,
            lr_scheduler_type="cosine", warmup_steps=0, dataloader_num_workers=0, disable_tqdm=False,
        )
        from loop.run.faults import trainer_callbacks  # test-only fault injection; [] by default

        steps = StepLog(self.cuda)
        with _env("TENSORBOARD_LOGGING_DIR", tb_dir if report_to else None):  # read by TRL's TensorBoardCallback
            trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                                 callbacks=[*trainer_callbacks(), steps])
        if tr.get("loss_on_words"):
            # The learned verifier: the loss on its Yes/No token alone. Averaged with the template's
            # role and end-of-turn tokens, the decision got a fraction of the gradient and the adapter
            # learned only the class prior (benchmarks/results/verifier_objective.json).
            words = [tok.encode(w, add_special_tokens=False)[0] for w in tr["loss_on_words"]]
            trainer.train_dataset = trainer.train_dataset.map(_decision_token, fn_kwargs={"ids": sorted(set(words))})
            if len(words) == 2:
                trainer.compute_loss = _decision_loss(*words)
        tokens = _real_tokens(trainer.train_dataset)
        padding = _padding_share(trainer)
        from loop.kernels import packed_attention

        calls, lora_calls = dict(packed_attention.CALLS), dict(fused_lora.CALLS)
        result = trainer.train()
        served = {k: packed_attention.CALLS[k] - calls[k] for k in ("varlen", "segments")}
        model.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
        shutil.rmtree(os.path.join(out_dir, "_trainer"), ignore_errors=True)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        metrics = {
            "examples": len(examples), "steps": trainer.state.global_step, "train_loss": result.training_loss,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "device": "cuda" if self.cuda else "cpu",
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None,
            # real (non-padding) tokens per epoch and those that carry the loss; tokens/s over the training loop
            "tokens": tokens["tokens"], "loss_tokens": tokens["loss_tokens"],
            "train_seconds": result.metrics.get("train_runtime"),
            "tokens_per_s": tokens["tokens"] * tr["epochs"] / max(result.metrics.get("train_runtime") or 0, 1e-9),
            "packing": tr["packing"], "group_by_length": bool(tr.get("group_by_length")), "padding_share": padding,
            "tokens_per_micro_batch": tr["batch_size"] * tr["max_seq_len"] if tr["packing"] else None,
            # which kernel served the packed rows' attention (varlen on a CUDA GPU in bf16/fp16)
            "packed_attention": ((max(served, key=served.get) if any(served.values()) else None)
                                 if tr["packing"] else None),
            # LoRA layers given the one-addmm forward, and the calls each path served while training
            "fused_lora_layers": fused, "lora_calls": {k: fused_lora.CALLS[k] - lora_calls[k] for k in lora_calls},
            "tensorboard": bool(report_to) if tb_dir else None,
            "log": steps.rows,  # per step; the driver writes it to the round's train_log.jsonl
        }
        del trainer
        return metrics


def without_control_spellings(examples: list[dict], specials: list[str]) -> tuple[list[dict], list[dict]]:
    """The examples whose completion spells none of the tokenizer's control tokens, and {sample_id, token}
    of those left out: encoded with the chat template, `<|im_end|>` written as text becomes the real token,
    so training on it would teach the policy to end its turn mid-chain (verifiers/untrusted.py)."""
    kept, left = [], []
    for ex in examples:
        c = ex.get("completion")
        text = c if isinstance(c, str) else "".join(str(m.get("content") or "") for m in c or [])
        hit = spelled_control_token(text, specials)
        if hit is None:
            kept.append(ex)
        else:
            left.append({"sample_id": ex.get("sample_id"), "problem_id": ex.get("problem_id"), "token": hit})
    if examples and not kept:
        raise StageFailed(f"all {len(examples)} training examples spell one of the tokenizer's control tokens "
                         f"(e.g. {left[0]['token']!r}) as text; trained on, it would become the real token. The "
                         "chains are in the round's accepted.jsonl: fix the generator or the acceptance policy")
    return kept, left


def _tensorboard() -> bool:
    """TRL's TensorBoard callback needs the tensorboard package in this (the trainer's) process."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        log.warning("tensorboard is not installed where the trainer runs: its steps are not written to "
                    "TensorBoard (they are in the round's train_log.jsonl); pip install -r requirements/trackers.txt")
        return False
    return True


@contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None:
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _decision_loss(yes: int, no: int):
    """The learned verifier's loss at its decision token: cross-entropy over Yes vs No alone, the very
    score the sampler reads (P(Yes) / (P(Yes) + P(No)), each read exactly whatever its rank). An extra
    cross-entropy over the whole vocabulary (to keep Yes/No in vLLM's top-k) started near 19 on the tiny
    model and took the first epochs' gradient: two epochs of it separated two chains of one problem at
    a within-problem AUC of 0.53-0.58, the two-way loss alone at 0.83-0.89 (3 seeds, the shipped warm
    start; benchmarks/verifier_learnability.py, benchmarks/results/verifier_learnability.json). Logits
    are computed at the decision positions only."""

    def compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None):
        import torch
        import torch.nn.functional as F

        labels = inputs["labels"]
        rows, cols = (labels[:, 1:] != -100).nonzero(as_tuple=True)  # position cols predicts token cols + 1
        keep = torch.unique(cols)
        fwd = {k: v for k, v in inputs.items() if k not in ("labels", "completion_mask", "use_cache")}
        out = model(**fwd, use_cache=False, logits_to_keep=keep)
        if rows.numel() == 0:  # a batch without a decision (cut off by max_seq_len): no gradient
            return (out.logits.sum() * 0, out) if return_outputs else out.logits.sum() * 0
        z = out.logits[rows, torch.searchsorted(keep, cols)].float()
        target = labels[rows, cols + 1]
        two_way = torch.stack([z[:, yes], z[:, no]], dim=-1)
        loss = F.cross_entropy(two_way, (target == no).long())
        return (loss, out) if return_outputs else loss

    return compute_loss


def _decision_token(ex: dict, ids: list[int]) -> dict:
    """Only the completion's first token among `ids` (the first token of Yes / No) keeps its loss; the
    completion also holds the template's role header and end of turn. TRL folds the completion mask
    into `labels` (-100: no loss); older versions keep a `completion_mask` column."""
    if "labels" in ex:
        at = next((i for i, v in enumerate(ex["labels"]) if v in ids), -1)
        return {"labels": [v if i == at else -100 for i, v in enumerate(ex["labels"])]}
    mask, tokens = ex["completion_mask"], ex["input_ids"]
    at = next((i for i, (m, t) in enumerate(zip(mask, tokens)) if m and t in ids), -1)
    return {"completion_mask": [int(i == at) for i in range(len(mask))]}


def _padding_share(trainer) -> float | None:
    """Share of the micro-batches' positions that are padding, over one pass of the trainer's
    own dataloader (same sampler and collator as training): what length grouping and packing cut."""
    real = total = 0
    for batch in trainer.get_train_dataloader():
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        total += ids.numel()
        real += int(mask.sum()) if mask is not None else ids.numel()
    return round(1 - real / total, 4) if total else None


def _real_tokens(dataset) -> dict:
    """Tokens the trainer computes on, without padding (the prepared dataset holds no padding:
    the collator adds it per batch), and those under the loss (completion tokens)."""
    cols = dataset.column_names
    tokens = sum(len(x) for x in dataset["input_ids"])
    loss = None
    if "completion_mask" in cols:
        loss = sum(sum(m) for m in dataset["completion_mask"])
    elif "labels" in cols:
        loss = sum(sum(1 for v in lab if v != -100) for lab in dataset["labels"])
    return {"tokens": tokens, "loss_tokens": loss}


class TrainerActor(TrainerWorker):
    """What the trainer's Ray actor runs. Adapters come and go as bytes (loop/cluster/shipping.py):
    the actor trains into its own temp directory, so its node needs no access to the run
    directory, and a trainer killed mid-way leaves nothing half-written there."""

    def __init__(self, model_path: str, quant: dict, lora: dict, training: dict,
                 memory_budget_gib: float | None = None):
        from loop.cluster.cleanup import die_with_driver

        die_with_driver()  # a driver killed -9 takes this actor with it
        from loop.run.logs import worker_logging

        worker_logging()
        if model_path.startswith("builtin:"):
            from loop.config import ModelCfg

            model_path = ModelCfg(path=model_path).resolved_path()
        super().__init__(model_path, quant, lora, training)
        if memory_budget_gib is not None and self.cuda:
            import torch

            from loop.cluster.gpu_memory import utilization

            # PyTorch's allocator stops at the budget (an OOM inside it, not a device-wide squeeze)
            torch.cuda.set_per_process_memory_fraction(utilization(memory_budget_gib, torch.cuda.mem_get_info()[1]))

    def where(self) -> dict:
        from loop.cluster.placement import node_info

        return node_info()

    def train_shipped(self, examples: list[dict], init_files: dict[str, bytes] | None, seed: int,
                      overrides: dict | None = None, tb_dir: str | None = None) -> tuple[dict, dict]:
        """(metrics, the adapter's files). TensorBoard event files go straight to `tb_dir` where this node
        sees it (the driver's machine, or a shared filesystem); elsewhere they come back in the metrics
        under "tensorboard_files" for the driver to write."""
        import tempfile

        from loop.cluster.shipping import pack_files, unpack

        with tempfile.TemporaryDirectory(prefix="loop-trainer-") as tmp:
            init = str(unpack(init_files, os.path.join(tmp, "init"))) if init_files else None
            out = os.path.join(tmp, "adapter")
            here = tb_dir if tb_dir is None or os.path.isdir(tb_dir) else os.path.join(tmp, "tensorboard")
            metrics = self.train(examples, out, init, seed, overrides, tb_dir=here)
            if here and here != tb_dir and os.path.isdir(here):
                metrics["tensorboard_files"] = pack_files(here)
            return metrics, pack_files(out)
