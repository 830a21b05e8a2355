"""Optional fast paths of training, each with an off switch under `training.*`: the one-addmm LoRA
forward (`fused_lora.py`), Liger's Triton kernels (`fused_kernels.py`), packed varlen attention."""
