import copy
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from experiments.models import build  # noqa: E402

# (model config, head) for one tiny model of every family the paper uses.
FAMILIES = {
    "bert": ("tiny_bert", "seq_cls"),
    "roberta": ("tiny_roberta", "seq_cls"),
    "deberta-v2": ("tiny_deberta", "seq_cls"),
    "gpt2": ("tiny_gpt2", "causal_lm"),
    "llama": ("tiny_llama", "causal_lm"),
}


def tiny(family: str, seed: int = 0) -> torch.nn.Module:
    name, head = FAMILIES[family]
    torch.manual_seed(seed)
    return build(name, head=head).eval()


def batch(seed: int = 0, n: int = 3, length: int = 10) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 120, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0  # some padding, so masks matter
    return {"input_ids": ids, "attention_mask": mask}


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def randomize_lora(model, seed: int = 1, std: float = 0.2):
    """Give every LoRA matrix non-zero values, so Delta W != 0."""
    import lora

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora.lora_layers(model):
            for p in (*layer.lora_A.values(), *layer.lora_B.values()):
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture(params=list(FAMILIES))
def family(request) -> str:
    return request.param


@pytest.fixture
def pair(family):
    """(base model, an identical copy) of one family."""
    base = tiny(family)
    return base, copy.deepcopy(base)
