"""Prefix-based baselines of the paper (Section 5.1), for decoders as the paper uses them.

Both reserve l_p prefix and l_i infix special tokens, with ids just past the vocabulary; the data
pipeline places them as  [prefix] context [infix] completion  (`experiments.tasks.base.insert_special_tokens`).

    prefix_embed  (PreEmbed)  the special tokens' input embeddings train: d (l_p + l_i) parameters
    prefix_layer  (PreLayer)  also their activations after every block but the last are replaced by
                              trainable vectors: L d (l_p + l_i) parameters
"""

from __future__ import annotations

import torch
from torch import nn

from lora.families import family_of
from lora.model import max_positions

from .common import MethodError, freeze, integer_options, train_head

DECODERS = ("gpt2", "llama", "mistral", "qwen2")


class SpecialTokens(nn.Module):
    """The token embedding, with ids >= vocab_size looked up in a small trainable table instead."""

    def __init__(self, base: nn.Embedding, count: int):
        super().__init__()
        self.base, self.vocab = base, base.num_embeddings
        self.vectors = nn.Parameter(base.weight.new_empty(count, base.embedding_dim).normal_(std=0.02))
        self.ids: torch.Tensor | None = None  # the last input ids, read by PreLayer's block hooks

    @property
    def weight(self):  # tied output layers and resize logic read the embedding's weight
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.ids = ids
        special = ids >= self.vocab
        out = self.base(ids.clamp(max=self.vocab - 1))
        if not special.any():
            return out
        return torch.where(special.unsqueeze(-1), self.vectors[(ids - self.vocab).clamp(min=0)].to(out.dtype), out)


class ReplaceActivations(nn.Module):
    """Trainable activations for the special tokens, written over a block's output (PreLayer)."""

    def __init__(self, tokens: SpecialTokens):
        super().__init__()
        self.tokens = [tokens]  # a list, so the embedding is not registered twice as a submodule
        self.vectors = nn.Parameter(tokens.vectors.detach().clone().normal_(std=0.02))

    def hook(self, module, args, output):
        tokens = self.tokens[0]
        hidden = output[0] if isinstance(output, tuple) else output
        special = tokens.ids >= tokens.vocab
        if not special.any():
            return output
        vectors = self.vectors[(tokens.ids - tokens.vocab).clamp(min=0)].to(hidden.dtype)
        replaced = torch.where(special.unsqueeze(-1), vectors, hidden)
        return (replaced, *output[1:]) if isinstance(output, tuple) else replaced


def add_prefix(model: nn.Module, cfg: dict) -> nn.Module:
    """Freeze the model and add the special tokens of prefix_embed or prefix_layer (cfg["name"])."""
    name = cfg["name"]
    family = family_of(model)
    if model.config.model_type not in DECODERS:
        raise MethodError(f"{name} is a decoder method in the paper; {model.config.model_type} is not a decoder")
    l_p, l_i = integer_options(name, cfg).values()
    if l_p + l_i == 0:
        raise MethodError(f"{name}: l_p and l_i must not both be 0 (no special token would train)")
    if l_p + l_i >= (positions := max_positions(model.config)):  # else found only when decoding, after training
        raise MethodError(f"{name}: l_p + l_i = {l_p + l_i} special tokens leave no room for the input in the "
                          f"model's {positions} positions")  # fmt: skip
    if not name.startswith("lora_"):
        freeze(model)
    embed_name = next(n for n, m in model.named_modules() if n.endswith(family.embed) and isinstance(m, nn.Embedding))
    tokens = SpecialTokens(model.get_submodule(embed_name), l_p + l_i)
    parent, _, child = embed_name.rpartition(".")
    setattr(model.get_submodule(parent), child, tokens)
    if name.endswith("prefix_layer"):
        blocks = family.block_names(dict(model.named_modules()))
        model.prefix_layers = nn.ModuleList()  # registered, so their vectors train and are saved
        for block in blocks[:-1]:
            layer = ReplaceActivations(tokens)
            model.get_submodule(block).register_forward_hook(layer.hook)
            model.prefix_layers.append(layer)
        _start_from_real_tokens(model, tokens)
    vocab = tokens.vocab
    model.special_tokens = {
        "prefix": list(range(vocab, vocab + l_p)),
        "infix": list(range(vocab + l_p, vocab + l_p + l_i)),
    }
    train_head(model)
    return model


@torch.no_grad()
def _start_from_real_tokens(model: nn.Module, tokens: SpecialTokens):
    """PreLayer's vectors start as what the model computes for real tokens (ids spread evenly over the
    vocabulary, run as one sequence): their embeddings, and their activations after each block. Li & Liang
    (2021, Section 7.2) find prefix activations initialised from real words train far better than random
    ones; random N(0, 0.02) vectors written over a Llama's hidden states, whose norms run into the tens, put
    SmolLM2-135M's dev loss on WikiSQL at 13 before any training, against the base model's 1.5."""
    if tokens.vectors.is_meta:
        return  # counting parameters on the meta device: nothing to compute
    count = tokens.vectors.shape[0]
    ids = torch.linspace(0, tokens.vocab - 1, count).long().to(tokens.vectors.device)
    hidden = model(input_ids=ids[None], output_hidden_states=True).hidden_states
    tokens.vectors.copy_(tokens.base(ids))  # the token embeddings (GPT-2's hidden_states[0] adds positions)
    for i, layer in enumerate(model.prefix_layers):  # block i's output: hidden_states[i + 1]
        layer.vectors.copy_(hidden[i + 1][0].to(layer.vectors.dtype))
