"""One round of the loop's QLoRA training (loop/cluster/trainer.py: bitsandbytes NF4 + double
quant, peft LoRA, TRL SFTTrainer) on CUDA, with the tiny model or a Qwen3-4B-shaped one.

    python benchmarks/gpu_qlora_check.py                       # tiny model, 512 chains
    python benchmarks/gpu_qlora_check.py --qwen3-4b-shape      # random-weight Qwen3-4B shape

Prints the trainer's metrics (steps, loss, seconds, peak GiB) and tokens/s. The same code
path runs on the CPU in CI; this checks the CUDA path.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def qwen3_4b_shape(out: Path) -> Path:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from loop.models.tiny_model import build_tokenizer

    cfg = Qwen3Config(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                      num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=4096,
                      tie_word_embeddings=True, torch_dtype="bfloat16")
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out)
    build_tokenizer().save_pretrained(out)  # byte-level: token count = byte count
    del model
    torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qwen3-4b-shape", action="store_true")
    ap.add_argument("--examples", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256, help="max_seq_len (4B shape: chains are padded up to it)")
    ap.add_argument("--prepare-kbit", action="store_true", help="use peft prepare_model_for_kbit_training")
    args = ap.parse_args()
    import torch

    import generators  # noqa: F401
    from generators.base import GENERATORS
    from loop.cluster.trainer import TrainerWorker
    from loop.config import TINY_MODEL, LoraCfg, QuantCfg, TrainingCfg

    assert torch.cuda.is_available(), "this check needs a CUDA GPU"
    tmp = Path(tempfile.mkdtemp())
    model = qwen3_4b_shape(tmp / "base") if args.qwen3_4b_shape else TINY_MODEL
    gen = GENERATORS.build("arithmetic", {})
    probs = gen.generate("add", 3, args.examples, seed=0)
    examples = [{"prompt": [m.model_dump() for m in p.prompt],
                 "completion": [{"role": "assistant", "content": p.reference.chain * (args.seq // 64 if args.qwen3_4b_shape else 1)}]}
                for p in probs]
    quant = QuantCfg(compute_dtype="bfloat16", prepare_for_kbit=args.prepare_kbit).model_dump()
    train = TrainingCfg(epochs=1, batch_size=args.batch, max_seq_len=args.seq, device="cuda").model_dump()
    worker = TrainerWorker(str(model), quant, LoraCfg().model_dump(), train)
    t0 = time.time()
    m = worker.train(examples, str(tmp / "adapter"), None, seed=0)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    ntok = sum(min(args.seq, len(tok.apply_chat_template(e["prompt"] + e["completion"], tokenize=False))) for e in examples)
    m["tokens"] = ntok
    m["tokens_per_s"] = ntok / m["seconds"]
    m["model"] = "qwen3-4b-shape" if args.qwen3_4b_shape else "tiny-qwen3"
    m["gpu"] = torch.cuda.get_device_name(0)
    m["wall_s"] = time.time() - t0
    m["adapter_files"] = sorted(p.name for p in (tmp / "adapter").iterdir())
    print(json.dumps(m, indent=2))


if __name__ == "__main__":
    main()
