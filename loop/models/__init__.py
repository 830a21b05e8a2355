"""Models built here, not downloaded: the embedded tiny Qwen3 (`tiny_model.py`, rebuilds
`loop/assets/tiny-qwen3`) and random-weight models of a real model's shape (`shape_model.py`)."""
