"""The paper's baselines (full fine-tuning, BitFit, prefix tuning, adapters), one file per family of
methods and one registry, each a `prepare(model, cfg) -> model` like `lora.apply`. Not built yet: see the
baselines issue."""
