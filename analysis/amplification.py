"""How Delta W relates to W: the paper's Section 7.3 and Table 7.

For the top-r singular directions U, V of a matrix X (X = Delta W, W itself, or a random matrix),
project W onto them: ||U^T W V||_F. Delta W "amplifies" directions of W that W does not emphasise
when ||Delta W||_F is far larger than the projection of W onto Delta W's own directions:

    amplification = ||Delta W||_F / ||U^T W V||_F  (U, V from Delta W)

Appendix H.3's curve (`h3_curve`) asks the same question one W direction at a time.

    python -m analysis.amplification RUN [--base MODEL] [--layer N] [--out FILE]

rebuilds the run's base weights W (a `random: true` model with the run's seed, so W is what was trained
against), loads the run's LoRA adapter, and prints Table 7's quantities for every adapted layer and weight
type at r = the adapter's rank; the JSON (default RUN/amplification.json) adds the H.3 curves.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch


def _np(m) -> np.ndarray:
    return np.asarray(m.detach().cpu().double() if isinstance(m, torch.Tensor) else m, dtype=np.float64)


def projection_norm(w, directions, r: int) -> float:
    """||U^T W V||_F with U, V the top-r left and right singular vectors of `directions`."""
    u, _, vh = np.linalg.svd(_np(directions), full_matrices=False)
    return float(np.linalg.norm(u[:, :r].T @ _np(w) @ vh[:r].T))


def table7(w, delta_w, r: int, seed: int = 0) -> dict:
    """The quantities of the paper's Table 7 for one weight matrix.

    >>> w = np.diag([10.0, 5.0, 1.0, 0.5])
    >>> dw = np.zeros((4, 4)); dw[3, 3] = 2.0  # Delta W along W's weakest direction
    >>> t = table7(w, dw, r=1)
    >>> t["w_on_delta"], t["w_on_w"], t["amplification"]
    (0.5, 10.0, 4.0)
    """
    w, delta_w = _np(w), _np(delta_w)
    random = np.random.default_rng(seed).normal(size=w.shape)
    on_delta = projection_norm(w, delta_w, r)
    return {
        "r": r,
        "w_on_delta": on_delta,
        "w_on_w": projection_norm(w, w, r),
        "w_on_random": projection_norm(w, random, r),
        "w_norm": float(np.linalg.norm(w)),
        "delta_norm": float(np.linalg.norm(delta_w)),
        "amplification": float(np.linalg.norm(delta_w)) / on_delta if on_delta > 0 else float("inf"),
    }


def _svd(m) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.linalg.svd(_np(m), full_matrices=False)


def h3_curve(w, delta_w, ks, r: int | None = None, seed: int = 0) -> dict:
    """Appendix H.3 (Figure 8): how Delta W's top-r directions line up with W's top-k, k = each of `ks`.

    Two curves, both computed from the SVDs W = U_W S V_W^T and Delta W = U S V^T (top-r parts U_r, V_r):

    - `phi`: the paper's Figure 8 quantity phi(W, Delta W, k, r) = ||V_W[:, :k]^T V_r||_F^2 / min(k, r), the
      normalized subspace similarity (Eq. 4) between the top-k right-singular directions of W and the top-r ones
      of Delta W (the row space of A, the input side the paper compares). `phi_random` is the same with Delta W
      replaced by a Gaussian matrix of the same shape: the baseline max(k, r) / d_in in expectation.
    - `projection_share`: ||U_r^T W_k V_r||_F / ||U_r^T W V_r||_F with W_k = U_W[:, :k] S[:k] V_W[:, :k]^T, the
      part of Table 7's ||U^T W V^T||_F that W's top-k directions account for: it rises from 0 to 1 as k grows,
      slowly when Delta W amplifies directions that W does not emphasise.

    >>> w = np.diag([4.0, 3.0, 2.0, 1.0])
    >>> dw = np.zeros((4, 4)); dw[2, 2] = 1.0  # Delta W along W's third direction
    >>> c = h3_curve(w, dw, ks=[1, 2, 3, 4], r=1)
    >>> [round(x, 6) for x in c["phi"]], [round(x, 6) for x in c["projection_share"]]
    ([0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0])
    """
    w, delta_w = _np(w), _np(delta_w)
    r = r or int(np.linalg.matrix_rank(delta_w)) or 1
    uw, sw, vwh = _svd(w)
    u, _, vh = _svd(delta_w)
    ur, vr = u[:, :r], vh[:r].T
    vrand = _svd(np.random.default_rng(seed).normal(size=w.shape))[2][:r].T
    full = float(np.linalg.norm(ur.T @ w @ vr))
    out = {"r": r, "ks": [], "phi": [], "phi_random": [], "projection_share": []}
    for k in ks:
        k = min(int(k), len(sw))
        wk = (uw[:, :k] * sw[:k]) @ vwh[:k]
        out["ks"].append(k)
        out["phi"].append(float(np.sum((vwh[:k] @ vr) ** 2) / min(k, r)))
        out["phi_random"].append(float(np.sum((vwh[:k] @ vrand) ** 2) / min(k, r)))
        out["projection_share"].append(float(np.linalg.norm(ur.T @ wk @ vr)) / full if full > 0 else 0.0)
    return out


def default_ks(n: int, r: int) -> list[int]:
    """Numbers of W directions to include: powers of two below n, plus r and n (where every curve ends).

    >>> default_ks(32, 4)
    [1, 2, 4, 8, 16, 32]
    """
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return sorted({*ks, min(r, n), n})


class AmplificationError(ValueError):
    """Bad input to the CLI; the message says what to give instead."""


def load_run(run: Path, base: str | None = None):
    """(model with the run's trained parameters, run config), rebuilt by `experiments.runs.load_trained`.

    A `random: true` model is only the same W with the run's seed, head and number of labels; the run's own
    model section is used when `base` names the run's model, so command-line overrides of it still apply.
    """
    from experiments.runs import RunError, load_trained, read_config

    run = run.parent if run.is_file() else run
    try:
        method = read_config(run)["method"].get("name")
        if method not in ("lora", "lora_prefix_embed", "lora_prefix_layer"):
            raise AmplificationError(f"{run} is a {method} run; Table 7 needs a LoRA adapter")
        trained = load_trained(run, base, tokenizer=False)
    except RunError as err:
        raise AmplificationError(str(err)) from None
    return trained.model, trained.config


def block_index(module_name: str) -> int | None:
    """The transformer block a module belongs to: the first number in its dotted name.

    >>> block_index("bert.encoder.layer.11.attention.self.query"), block_index("embeddings")
    (11, None)
    """
    m = re.search(r"\.(\d+)(?:\.|$)", module_name)
    return int(m.group(1)) if m else None


@torch.no_grad()
def analyse(model, layer: int | None = None, ks=None) -> list[dict]:
    """Table 7 and the H.3 curve for every LoRA layer and weight type (only block `layer` if given)."""
    import lora

    rows = []
    for name, module in lora.lora_layers(model):
        block = block_index(name)
        if layer is not None and block != layer:
            continue
        for t, slot in module.slots.items():
            w, dw = module._weight_slice(t).float(), module.delta_weight(t)
            curve_ks = ks or default_ks(min(w.shape), slot.rank)
            row = {"module": name, "layer": block, "type": t, **table7(w, dw, slot.rank)}
            rows.append({**row, "h3": h3_curve(w, dw, curve_ks, r=slot.rank)})
    return rows


def format_table(rows: list[dict]) -> str:
    """Table 7's columns, one line per adapted matrix."""
    cols = ("W on dW", "W on W", "W on rnd", "|W|", "|dW|")
    head = f"{'layer':>5} {'type':<7} {'r':>4} " + " ".join(f"{c:>9}" for c in cols) + f" {'amplif':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['layer'] if r['layer'] is not None else '-':>5} {r['type']:<7} {r['r']:>4} {r['w_on_delta']:>9.4f} "
            f"{r['w_on_w']:>9.4f} {r['w_on_random']:>9.4f} {r['w_norm']:>9.3f} {r['delta_norm']:>9.4f} "
            f"{r['amplification']:>8.2f}"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run folder (config.yaml + adapter.safetensors)")
    p.add_argument("--base", default=None, help="model config name (default: the run's model)")
    p.add_argument("--layer", type=int, default=None, help="only this transformer block")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: RUN/amplification.json)")
    args = p.parse_args(argv)
    out = args.out or (args.run.parent if args.run.is_file() else args.run) / "amplification.json"
    if out.exists():
        sys.stderr.write(f"error: {out} exists; give --out to write elsewhere\n")
        sys.exit(2)
    try:
        model, cfg = load_run(args.run, args.base)
    except (AmplificationError, ValueError) as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    rows = analyse(model, args.layer)
    if not rows:
        sys.stderr.write(f"error: no LoRA matrix in block {args.layer} of {args.run}\n")
        sys.exit(2)
    print(format_table(rows))
    result = {"run": str(args.run), "model": cfg["model"]["name"], "seed": cfg["trainer"]["seed"], "rows": rows}
    out.write_text(json.dumps(result) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
