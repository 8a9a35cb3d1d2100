"""Normalized subspace similarity between learned LoRA matrices: the paper's Eq. 4 (Section 7.2).

    phi(A1, A2, i, j) = || U1[:, :i]^T U2[:, :j] ||_F^2 / min(i, j)

with U the right-singular vectors of the (r, k) matrices A as stored in adapter files (for B matrices,
of shape (d, r), the left-singular vectors: `side="left"`). phi is 1 when one subspace contains the
other and, for independent random subspaces of R^d, max(i, j) / d on average.

    python -m analysis.subspace RUN_A RUN_B     # every common LoRA matrix, printed and saved as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from experiments.runs import RunFolder


def singular_vectors(m, side: str = "right") -> np.ndarray:
    """Orthonormal singular vectors as columns, by decreasing singular value."""
    m = np.asarray(m.detach().cpu().double() if isinstance(m, torch.Tensor) else m, dtype=np.float64)
    u, _, vh = np.linalg.svd(m, full_matrices=False)
    return vh.T if side == "right" else u


def phi_grid(m1, m2, side: str = "right") -> np.ndarray:
    """phi for every (i, j), i <= rank of m1, j <= rank of m2: entry [i-1, j-1].

    One product U1^T U2 and two cumulative sums give the whole grid.
    """
    overlap = singular_vectors(m1, side).T @ singular_vectors(m2, side)
    sums = np.cumsum(np.cumsum(overlap**2, axis=0), axis=1)
    i = np.arange(1, sums.shape[0] + 1)[:, None]
    j = np.arange(1, sums.shape[1] + 1)[None, :]
    return sums / np.minimum(i, j)


def phi(m1, m2, i: int, j: int, side: str = "right") -> float:
    """The paper's phi(A1, A2, i, j).

    >>> a = np.random.default_rng(0).normal(size=(8, 64))
    >>> round(phi(a, 3 * a, 4, 4), 6)  # a subspace with itself
    1.0
    """
    return float(phi_grid(m1, m2, side)[i - 1, j - 1])


def compare_adapters(file_a: Path, file_b: Path) -> dict:
    """phi between every LoRA A (and B) matrix two adapter files share, by module and weight type."""
    from lora.files import read_safetensors

    a, _ = read_safetensors(file_a)
    b, _ = read_safetensors(file_b)
    out = {}
    for key in sorted(set(a) & set(b)):
        if ".lora_A." not in key and ".lora_B." not in key:
            continue
        grid = phi_grid(a[key], b[key], "right" if ".lora_A." in key else "left")
        out[key] = {"phi_1_1": float(grid[0, 0]), "mean": float(grid.mean()), "grid": grid.round(6).tolist()}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: RUN_A/subspace-<RUN_B name>.json)")
    args = p.parse_args(argv)
    files = [RunFolder(r).adapter if r.is_dir() else r for r in (args.run_a, args.run_b)]
    for f in files:
        if not f.exists():
            sys.exit(f"error: no adapter at {f}; give run folders or adapter files")
    result = compare_adapters(*files)
    if not result:
        sys.exit("error: the two adapters share no LoRA matrix (different targets or models?)")
    for key, r in result.items():
        print(f"{key:<70} phi(1,1) {r['phi_1_1']:.3f}  mean {r['mean']:.3f}")
    out = args.out or files[0].parent / f"subspace-{args.run_b.name}.json"
    if out.exists():
        sys.exit(f"error: {out} exists; give --out to write elsewhere")
    out.write_text(json.dumps(result) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
