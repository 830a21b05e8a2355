"""Ray: the driver's handles to coarse workers (`driver.py`), the sampler pool, placement, how adapters
travel (`shipping.py`), cleanup after a kill, and the two workers themselves (`sampler.py`: vLLM,
`trainer.py`: QLoRA through TRL)."""
