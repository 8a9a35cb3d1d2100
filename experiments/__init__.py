"""Experiments: models, tasks, training, decoding and run folders, on top of `lora` and `baselines`."""
