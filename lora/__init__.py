"""LoRA: low-rank adaptation of transformers models (Hu et al., 2021).

>>> import lora
>>> from transformers import LlamaConfig, LlamaForCausalLM
>>> model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
...                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=64))
>>> model = lora.apply(model, lora.LoRAConfig(r=4, alpha=8, targets=("q", "v")))
>>> c = lora.count(model)
>>> c.by_type
{'q': 512, 'v': 384}
>>> _ = lora.merge(model)   # W = W0 + (alpha/r) B A, in place
>>> _ = lora.unmerge(model)  # and back
"""

from . import multi
from .config import WEIGHT_TYPES, LoRAConfig, LoRAError
from .families import FAMILIES, Family, family_of
from .io import load, save, trainable_state
from .layer import LoRALayer
from .loralib_format import load_loralib
from .model import ParamCount, apply, count, lora_layers, merge, unload, unmerge
from .swap import HotSwap

__all__ = [
    "FAMILIES",
    "HotSwap",
    "WEIGHT_TYPES",
    "Family",
    "LoRAConfig",
    "LoRAError",
    "LoRALayer",
    "ParamCount",
    "apply",
    "count",
    "family_of",
    "load",
    "load_loralib",
    "lora_layers",
    "merge",
    "multi",
    "save",
    "trainable_state",
    "unload",
    "unmerge",
]
