"""Model families: where each weight type of the paper lives in a transformers model.

A new family is one `Family` entry: the path of its block list and, per weight type, the module
paths inside a block. Nothing else in the library knows about architectures.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

from .config import WEIGHT_TYPES, LoRAError


@dataclass(frozen=True)
class Part:
    """Output slice `index` of `count` equal slices of a fused module (GPT-2's c_attn = [q | k | v])."""

    path: str
    index: int
    count: int


@dataclass(frozen=True)
class Family:
    name: str
    blocks: str  # dotted path of the block list, e.g. "encoder.layer" (matched at any prefix)
    weights: dict[str, tuple[str | Part, ...]]  # weight type -> module paths inside one block
    embed: str  # dotted path of the token embedding
    norms: tuple[str, ...] = ()  # the normalisation layers inside one block
    # The task head, trained with every method when config.train_head: every layer between the encoder's last
    # hidden states and the logits, as module paths in the task model (`head_module`).
    heads: tuple[str, ...] = ("classifier", "score")
    # Heads whose weights come trained with the checkpoint: an adapter file without them (PEFT's default
    # modules_to_save, ours before BERT's pooler joined the head) leaves them as the checkpoint has them, frozen.
    pretrained_heads: tuple[str, ...] = ()

    def find(self, model: nn.Module, targets, layers=None) -> dict[str, dict[str, tuple[int, int]]]:
        """Modules of these weight types (in these blocks): {name: {weight type: (offset, width)}}."""
        found: dict[str, dict[str, tuple[int, int]]] = {}
        modules = dict(model.named_modules())
        n_blocks = self.num_blocks(modules)
        if layers is not None and layers and max(layers) >= n_blocks:
            raise LoRAError(
                f"layers={list(layers)} but this {self.name} model has {n_blocks} blocks (0..{n_blocks - 1})"
            )
        for t in targets:
            hits = list(self._matches(modules, t, layers))
            if not hits:
                raise LoRAError(
                    f"target {t!r} matches no module of this {self.name} model; "
                    f"{self.name} has weight types {', '.join(self.weight_types())}"
                )
            for name, module, part in hits:
                out = _out_features(module, name)
                offset, width = (0, out) if part is None else _slice(out, part, name)
                found.setdefault(name, {})[t] = (offset, width)
        return found

    def weight_types(self) -> list[str]:
        return [t for t in WEIGHT_TYPES if t in self.weights or (t == "embed" and self.embed)]

    def num_blocks(self, modules: dict[str, nn.Module]) -> int:
        return len(self.block_names(modules))

    def block_names(self, modules: dict[str, nn.Module]) -> list[str]:
        """Names of the transformer blocks, in order."""
        pattern = re.compile(rf"(?:^|.*\.){re.escape(self.blocks)}\.(\d+)$")
        return sorted((n for n in modules if pattern.match(n)), key=lambda n: int(n.rsplit(".", 1)[1]))

    def _matches(self, modules, weight_type, layers) -> Iterator[tuple[str, nn.Module, Part | None]]:
        if weight_type == "embed":
            pattern = re.compile(rf"(?:^|.*\.){re.escape(self.embed)}$")
            yield from ((n, m, None) for n, m in modules.items() if pattern.match(n))
            return
        for spec in self.weights.get(weight_type, ()):
            path = spec.path if isinstance(spec, Part) else spec
            pattern = re.compile(rf"(?:^|.*\.){re.escape(self.blocks)}\.(\d+)\.{re.escape(path)}$")
            for name, module in modules.items():
                m = pattern.match(name)
                if m and (layers is None or int(m.group(1)) in layers):
                    yield name, module, spec if isinstance(spec, Part) else None


def head_module(name: str, heads: tuple[str, ...]) -> str | None:
    """The task-head module that parameter (or module) `name` belongs to, or None.

    >>> heads = ("classifier", "score", "bert.pooler")
    >>> head_module("bert.pooler.dense.weight", heads), head_module("classifier.bias", heads)
    ('bert.pooler', 'classifier')
    >>> head_module("bert.encoder.layer.0.output.dense.bias", heads), head_module("pooler.dense.bias", heads)
    (None, None)
    """
    return next((h for h in heads if name == h or name.startswith(h + ".")), None)


def train_heads(model: nn.Module, heads: tuple[str, ...]):
    """Mark the task-head modules `heads` names trainable (what every method trains beside its own parameters)."""
    for name, module in model.named_modules():
        if head_module(name, heads) == name:
            module.requires_grad_(True)


def _out_features(module: nn.Module, name: str) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.Embedding):
        return module.embedding_dim
    if type(module).__name__ == "Conv1D":  # transformers' GPT-2 layer, weight stored (in, out)
        return module.weight.shape[1]
    raise LoRAError(f"module {name} is a {type(module).__name__}; LoRA adapts Linear, Conv1D and Embedding")


def _slice(out: int, part: Part, name: str) -> tuple[int, int]:
    if out % part.count:
        raise LoRAError(f"fused module {name} has {out} outputs, not divisible into {part.count} parts")
    width = out // part.count
    return part.index * width, width


_BERT = Family(
    name="bert",
    blocks="encoder.layer",
    weights={
        "q": ("attention.self.query",),
        "k": ("attention.self.key",),
        "v": ("attention.self.value",),
        "o": ("attention.output.dense",),
        "mlp_in": ("intermediate.dense",),
        "mlp_out": ("output.dense",),
    },
    embed="embeddings.word_embeddings",
    norms=("attention.output.LayerNorm", "output.LayerNorm"),
    # BERT's sequence classifier reads [CLS] through its pooler (dense + tanh), where RoBERTa's head has its own
    # dense + tanh (`classifier.dense`), which the paper trains with every method; frozen, a pooler outside the
    # checkpoint's own training (all-MiniLM-L6-v2 mean-pools; its pooler's weights have std 0.009) let LoRA's STS-B
    # runs collapse to the mean.
    # A bare BertModel (no task head) keeps its pooler as part of the base model.
    heads=("classifier", "score", "bert.pooler", "roberta.pooler"),
    pretrained_heads=("bert.pooler", "roberta.pooler"),
)

_DEBERTA_V2 = Family(
    name="deberta-v2",
    blocks="encoder.layer",
    weights={
        "q": ("attention.self.query_proj",),
        "k": ("attention.self.key_proj",),
        "v": ("attention.self.value_proj",),
        "o": ("attention.output.dense",),
        "mlp_in": ("intermediate.dense",),
        "mlp_out": ("output.dense",),
    },
    embed="embeddings.word_embeddings",
    norms=("attention.output.LayerNorm", "output.LayerNorm"),
    heads=("classifier", "pooler"),  # DeBERTa's sequence classifier pools with a newly initialised layer
)

_GPT2 = Family(
    name="gpt2",
    blocks="h",
    weights={
        "q": (Part("attn.c_attn", 0, 3),),
        "k": (Part("attn.c_attn", 1, 3),),
        "v": (Part("attn.c_attn", 2, 3),),
        "o": ("attn.c_proj",),
        "mlp_in": ("mlp.c_fc",),
        "mlp_out": ("mlp.c_proj",),
    },
    embed="wte",
    norms=("ln_1", "ln_2"),
)

_LLAMA = Family(
    name="llama",
    blocks="layers",
    weights={
        "q": ("self_attn.q_proj",),
        "k": ("self_attn.k_proj",),
        "v": ("self_attn.v_proj",),
        "o": ("self_attn.o_proj",),
        "mlp_in": ("mlp.gate_proj", "mlp.up_proj"),
        "mlp_out": ("mlp.down_proj",),
    },
    embed="embed_tokens",
    norms=("input_layernorm", "post_attention_layernorm"),
)

# transformers' `config.model_type` -> family. Architectures that share a layout share an entry.
FAMILIES: dict[str, Family] = {
    "bert": _BERT,
    "roberta": _BERT,
    "deberta-v2": _DEBERTA_V2,
    "gpt2": _GPT2,
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
}


def family_of(model: nn.Module) -> Family:
    """The family of a transformers model, from its `config.model_type`.

    >>> from transformers import GPT2Config, GPT2Model
    >>> family_of(GPT2Model(GPT2Config(n_embd=8, n_layer=1, n_head=2, vocab_size=10))).name
    'gpt2'
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise LoRAError(
            f"no LoRA family for model type {model_type!r}; supported: {', '.join(sorted(FAMILIES))} "
            "(add one Family entry in lora/families.py)"
        )
    return FAMILIES[model_type]
