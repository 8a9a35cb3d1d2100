"""Trainable parameters, checkpoint size and training memory of a method against full fine-tuning.

    python -m experiments.estimate model=gpt3_175b method=lora method.r=4     # the paper's Section 4.2 case
    python -m experiments.estimate model=roberta_large method=adapter_h        # any model and method config

The model is built on the meta device (no memory, no weights), so GPT-3 175B costs nothing. Memory is
the usual mixed-precision Adam accounting of ZeRO (Rajbhandari et al., 2020), summed over all GPUs:
16-bit weights (2 bytes per parameter, trainable or not), 16-bit gradients and fp32 master weights plus
Adam's two moments (2 + 12 bytes per trainable parameter). Activations are left out: they depend on
batch and sequence length, not on the method. Prints a table and saves JSON (never over an older file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from lora.files import unused_path, write_text

WEIGHT_BYTES, GRAD_BYTES, ADAM_BYTES = 2, 2, 12  # bf16/fp16 weights and grads; fp32 master, m, v
PAPER = {  # Section 4.2, GPT-3 175B, LoRA r=4 on W_q, W_v
    "gpt3_175b": {"vram_full_ft": "1.2 TB", "vram_lora": "350 GB", "checkpoint_full_ft": "350 GB",
                  "checkpoint_lora": "35 MB", "trainable_ratio": "10,000x"},
}  # fmt: skip


def estimate(cfg: dict) -> dict:
    """Counts and byte estimates for cfg's model with cfg's method, and with full fine-tuning."""
    import baselines
    import lora
    from experiments.models import from_arch

    out = {"model": cfg["model"]["name"], "method": cfg["method"]["name"]}
    for name, method in (("with_method", cfg["method"]), ("full_ft", {"name": "full_ft"})):
        model = baselines.prepare(from_arch(cfg["model"]["arch"], head="base", device="meta"), method)
        count = lora.count(model)
        out[name] = {
            "trainable": count.trainable,
            "total": count.total,
            "checkpoint_bytes_16bit": WEIGHT_BYTES * count.trainable,
            "checkpoint_bytes_fp32": 4 * count.trainable,
            "memory_bytes": {
                "weights": WEIGHT_BYTES * count.total,
                "gradients": GRAD_BYTES * count.trainable,
                "adam_states": ADAM_BYTES * count.trainable,
            },
        }
        out[name]["memory_bytes"]["total"] = sum(out[name]["memory_bytes"].values())
    ours, full = out["with_method"], out["full_ft"]
    out["trainable_ratio"] = full["trainable"] / max(ours["trainable"], 1)
    out["memory_ratio"] = full["memory_bytes"]["total"] / ours["memory_bytes"]["total"]
    out["paper"] = PAPER.get(out["model"])
    return out


def human(n: float) -> str:
    """Bytes in decimal units, as the paper writes them.

    >>> human(350e9), human(37.7e6), human(2.8e12)
    ('350.0 GB', '37.7 MB', '2.80 TB')
    """
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}" if unit == "TB" else f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def render(e: dict) -> str:
    m, f = e["with_method"], e["full_ft"]
    rows = [
        ("trainable parameters", f"{m['trainable']:,}", f"{f['trainable']:,}"),
        ("checkpoint (16-bit)", human(m["checkpoint_bytes_16bit"]), human(f["checkpoint_bytes_16bit"])),
        ("weights (16-bit)", human(m["memory_bytes"]["weights"]), human(f["memory_bytes"]["weights"])),
        ("gradients (16-bit)", human(m["memory_bytes"]["gradients"]), human(f["memory_bytes"]["gradients"])),
        ("Adam: fp32 master, m, v", human(m["memory_bytes"]["adam_states"]), human(f["memory_bytes"]["adam_states"])),
        ("training memory, all GPUs", human(m["memory_bytes"]["total"]), human(f["memory_bytes"]["total"])),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{e['model']}: {e['method']} against full fine-tuning ({f['total']:,} parameters, meta device)",
             f"{'':<{width}}  {e['method']:>16}  {'full_ft':>18}"]  # fmt: skip
    lines += [f"{a:<{width}}  {b:>16}  {c:>18}" for a, b, c in rows]
    lines.append(f"full FT trains {e['trainable_ratio']:,.0f}x more parameters and needs {e['memory_ratio']:.1f}x "
                 "the memory (activations not counted)")  # fmt: skip
    if e["paper"]:
        p = e["paper"]
        lines.append(
            f"paper (LoRA r=4 on q,v): training memory {p['vram_full_ft']} -> {p['vram_lora']}, checkpoint "
            f"{p['checkpoint_full_ft']} -> {p['checkpoint_lora']}, {p['trainable_ratio']} fewer trainable parameters"
        )
    return "\n".join(lines)


def save(e: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = unused_path(folder / f"{e['model']}-{e['method']}.json")  # never over an earlier estimate
    write_text(json.dumps(e, indent=2) + "\n", path)
    return path


def main(argv: list[str] | None = None) -> int:
    from experiments.cli import USER_ERRORS, check_config, compose

    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    check_config(argv, training=False)  # a model without weights (GPT-3) is what this is for
    cfg = OmegaConf.to_container(compose(argv), resolve=True)
    try:
        e = estimate(cfg)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render(e))
    print(f"saved {save(e, Path('runs') / 'estimates')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
