"""Section 7 from run folders: which runs to compare, and the phi grids of Figures 3 and 4.

The paper reads one block (the 48th of GPT-3's 96); `layer=None` here means the last adapted block.
A matrices are compared by their right-singular vectors, as in the paper's Eq. 4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .subspace import phi_grid


def pick(rows: list[dict], r: int, seed: int = 0, **match) -> dict | None:
    """The first complete LoRA run (a `tables.collect` row) with this rank, seed and any field values given."""
    want = {"method": "lora", "status": "complete", "seed": seed, **match}
    hits = (row for row in rows if str(row["r"]) == str(r) and all(row.get(k) == v for k, v in want.items()))
    return next(hits, None)


def a_matrices(adapter: Path, layer: int | None = None) -> tuple[int, dict[str, np.ndarray]]:
    """(block, {weight type: A}) for one block of an adapter file (the last adapted block by default)."""
    from lora.io import read_safetensors

    from .amplification import block_index

    tensors, _ = read_safetensors(Path(adapter))
    found: dict[int, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        if ".lora_A." in key and block_index(key) is not None:
            found.setdefault(block_index(key), {})[key.rsplit(".", 1)[1]] = value.double().numpy()
    if not found:
        raise ValueError(f"{adapter} holds no per-block LoRA A matrix")
    block = max(found) if layer is None else layer
    if block not in found:
        raise ValueError(f"{adapter} has no LoRA matrices in block {block}; blocks: {sorted(found)}")
    return block, found[block]


def figure3_panels(adapter_small: Path, adapter_large: Path, layer: int | None = None, zoom: int = 8) -> dict:
    """phi(A_small, A_large, i, j) per weight type, whole and zoomed to i, j <= `zoom` (Figure 3)."""
    block, small = a_matrices(adapter_small, layer)
    _, large = a_matrices(adapter_large, block)
    panels = {}
    for t in sorted(set(small) & set(large)):
        panels[f"ΔW_{t} (block {block})"] = phi_grid(small[t], large[t])
    for name, grid in list(panels.items()):
        panels[f"{name} i,j≤{zoom}"] = grid[:zoom, :zoom]
    return panels


def figure4_panels(adapter_a: Path, adapter_b: Path, layer: int | None = None, seed: int = 0) -> dict:
    """phi between two seeds' A matrices per weight type, and two random Gaussian matrices of the same shape."""
    block, a = a_matrices(adapter_a, layer)
    _, b = a_matrices(adapter_b, block)
    panels = {f"ΔW_{t} seeds (block {block})": phi_grid(a[t], b[t]) for t in sorted(set(a) & set(b))}
    shape = next(iter(a.values())).shape
    rng = np.random.default_rng(seed)
    panels["random Gaussian"] = phi_grid(rng.normal(size=shape), rng.normal(size=shape))
    return panels
