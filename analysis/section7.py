"""Section 7 from run folders: which runs to compare, and the phi grids of Figures 3 and 4.

The paper reads one block (the 48th of GPT-3's 96); `layer=None` here means the last adapted block.
A matrices are compared by their right-singular vectors, as in the paper's Eq. 4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .subspace import phi_grid

ROLES = {"r=8 seed 0": (8, 0), "r=64 seed 0": (64, 0), "r=64 seed 1": (64, 1)}  # name -> (rank, seed)


class Section7Error(ValueError):
    """The runs given cannot answer Section 7's questions without mixing runs; the message says why."""


def choose(rows: list[dict]) -> dict:
    """The runs Section 7 compares (ROLES), all from one comparable group of complete LoRA runs: the same
    model, task, metric, weight types and protocol, differing only in r and the seed (`tables.groups`).

    Returns {"group": its title or None, role: row or None}: the group holding most of the roles. A
    Section7Error when two groups hold all three (point the notebook at one sweep's folder)."""
    from .tables import groups  # analysis.tables reads run folders; this module only its rows

    lora = [r for r in rows if r["method"] == "lora" and r["status"] == "complete"]
    found = []
    for title, rs in groups(lora, ("trainer.seed", "method.r")):
        picked = {role: _pick(rs, r, seed) for role, (r, seed) in ROLES.items()}
        found.append((sum(v is not None for v in picked.values()), title, picked))
    complete = [title for n, title, _ in found if n == len(ROLES)]
    if len(complete) > 1:
        raise Section7Error(f"{len(complete)} groups of runs each hold r=8 and r=64 runs ({'; '.join(complete)}); "
                            "point LORA_RUNS_DIR at one sweep's folder")  # fmt: skip
    if not found:
        return {"group": None, **dict.fromkeys(ROLES)}
    n, title, picked = max(found, key=lambda f: f[0])
    return {"group": title if n else None, **picked}


def _pick(rows: list[dict], r: int, seed: int) -> dict | None:
    """The run of this rank and seed; the first in folder order when a group holds two (a repeat)."""
    return next((row for row in rows if str(row["r"]) == str(r) and row["seed"] == seed), None)


def a_matrices(adapter: Path, layer: int | None = None) -> tuple[int, dict[str, np.ndarray]]:
    """(block, {weight type: A}) for one block of an adapter file (the last adapted block by default)."""
    found = _blocks(adapter)
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


def _blocks(adapter: Path) -> dict[int, dict[str, np.ndarray]]:
    from lora.files import read_safetensors

    from .amplification import block_index

    tensors, _ = read_safetensors(Path(adapter))
    found: dict[int, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        if ".lora_A." in key and block_index(key) is not None:
            found.setdefault(block_index(key), {})[key.rsplit(".", 1)[1]] = value.double().numpy()
    return found


def observations(adapter_small: Path, adapter_large: Path, adapter_seed: Path, zoom: int = 8, seed: int = 0) -> dict:
    """The paper's Section 7 claims measured over every block, each with the numbers it rests on.

    - top direction shared: phi(A_r=8, A_r=64, 1, 1) > 0.5 (Figure 3), per weight type, over blocks;
    - seeds share fewer directions for Delta W_v than Delta W_q: the mean of phi over i, j <= `zoom`
      between two seeds at r=64 (Figure 4), per type;
    - random matrices share none: the same mean for two Gaussian matrices of the same shape, beside its
      expectation (the mean of max(i, j) / d over the grid).

    Each claim's verdict ("verdicts") follows `verdict`'s margin rule, with the spread over blocks (one seed).
    """
    small, large, other = _blocks(adapter_small), _blocks(adapter_large), _blocks(adapter_seed)
    rng = np.random.default_rng(seed)
    top, seeds, random = {}, {}, []
    for block in sorted(set(small) & set(large) & set(other)):
        for t in sorted(set(small[block]) & set(large[block]) & set(other[block])):
            top.setdefault(t, []).append(float(phi_grid(small[block][t], large[block][t])[0, 0]))
            seeds.setdefault(t, []).append(float(phi_grid(large[block][t], other[block][t])[:zoom, :zoom].mean()))
            shape = large[block][t].shape
            random.append(float(phi_grid(rng.normal(size=shape), rng.normal(size=shape))[:zoom, :zoom].mean()))
    d = next(iter(next(iter(large.values())).values())).shape[1]
    i = np.arange(1, zoom + 1)
    expected = float(np.maximum(i[:, None], i[None, :]).mean() / d)
    summary = {
        "top_direction_phi_1_1": {t: _stats(v) for t, v in top.items()},
        "seed_phi_mean_ij_le_zoom": {t: _stats(v) for t, v in seeds.items()},
        "random_phi_mean_ij_le_zoom": {**_stats(random), "expected": expected},
        "zoom": zoom,
        "d": d,
    }
    summary["verdicts"] = subspace_verdicts(summary)
    return summary


HOLDS, FAILS, UNDECIDED = "holds", "does not hold", "not decided by these runs"
MARGIN = 0.1  # a difference must clear 10% of the larger value compared, beyond the spread


def verdict(claim: dict, other: dict | float, random: float | None = None, margin: float = MARGIN) -> dict:
    """Whether `claim` (a summary: median, min, max over seeds, or over blocks where there is one seed) is
    larger than `other` (another such summary, or a threshold), decided only where the data decides.

    The margin rule: the gap between the two medians must exceed the spread (the larger of the two ranges,
    max - min) plus `margin` times the larger of the two medians. "holds" when claim's median is above
    other's by that much and, where a random baseline is given, also above the random baseline by that much
    (sharing more than noise does); "does not hold" when other's median is above claim's by that much; else
    "not decided by these runs". Every verdict comes with the numbers it rests on.

    >>> verdict({"median": 0.0147, "min": 0.0147, "max": 0.0147}, 0.0141, random=0.0147)["verdict"]
    'not decided by these runs'
    """
    other = other if isinstance(other, dict) else {"median": other, "min": other, "max": other}
    a, b = claim["median"], other["median"]
    spread = max(claim["max"] - claim["min"], other["max"] - other["min"])

    def needed(x, y):
        return spread + margin * max(abs(x), abs(y))

    above = a - b > needed(a, b) and (random is None or a - random > needed(a, random))
    below = b - a > needed(a, b)
    numbers = {"median": a, "than": b, "spread": spread, "needed": needed(a, b), "random": random}
    return {"verdict": HOLDS if above else FAILS if below else UNDECIDED, **numbers}


def subspace_verdicts(summary: dict) -> dict:
    """Section 7's claims from `observations`' summary (each type's median, min and max over blocks)."""
    top, seeds = summary["top_direction_phi_1_1"], summary["seed_phi_mean_ij_le_zoom"]
    rnd = summary["random_phi_mean_ij_le_zoom"]
    out = {f"top direction of ΔW_{t} shared by r=8 and r=64 (phi(1,1) > 0.5)": verdict(s, 0.5) for t, s in top.items()}
    if "q" in seeds and "v" in seeds:  # q shares more than v, and more than two random matrices do
        out["seeds share fewer directions for ΔW_v than for ΔW_q"] = verdict(seeds["q"], seeds["v"], rnd["median"])
    out["random matrices share none (below 2 max(i,j)/d)"] = verdict(
        {"median": 2 * rnd["expected"], "min": 2 * rnd["expected"], "max": 2 * rnd["expected"]}, rnd
    )
    return out


def format_verdict(claim: str, v: dict) -> str:
    """'holds: claim (0.306 against 0.468; spread 0.24, needed 0.29; random 0.0147)'."""
    rnd = "" if v["random"] is None else f"; random {v['random']:.4g}"
    return (f"{v['verdict']}: {claim} ({v['median']:.4g} against {v['than']:.4g}; gap needed "
            f"{v['needed']:.3g}: spread {v['spread']:.3g} + {MARGIN:.0%} of the larger{rnd})")  # fmt: skip


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()), "n": len(v)}


def format_observations(obs: dict) -> str:
    lines = [f"phi(A_r=8, A_r=64, 1, 1) over {next(iter(obs['top_direction_phi_1_1'].values()))['n']} blocks:"]
    for t, s in obs["top_direction_phi_1_1"].items():
        lines.append(f"  ΔW_{t}: median {s['median']:.3f} (min {s['min']:.3f}, max {s['max']:.3f})")
    lines.append(f"mean phi over i, j <= {obs['zoom']}, seed 0 against seed 1 at r=64:")
    for t, s in obs["seed_phi_mean_ij_le_zoom"].items():
        lines.append(f"  ΔW_{t}: median {s['median']:.3f} (min {s['min']:.3f}, max {s['max']:.3f})")
    rnd = obs["random_phi_mean_ij_le_zoom"]
    lines.append(f"  random Gaussian: median {rnd['median']:.4f} (expected {rnd['expected']:.4f} = mean max(i,j)/d)")
    lines += [format_verdict(claim, v) for claim, v in obs["verdicts"].items()]
    return "\n".join(lines)


def amplification_summary(rows: list[dict]) -> dict:
    """Table 7's claims over every block, from `amplification.analyse` rows of one run.

    The paper (GPT-3, block 48, r=4): ||U^T W V^T|| is far below ||W's top-r part|| (Delta W amplifies
    directions W does not emphasise), above the random projection (it still correlates with W), and
    the amplification ||Delta W|| / ||U^T W V^T|| is well above 1 (21.5 at r=4).
    """
    out = {}
    for t in sorted({r["type"] for r in rows}):
        mine = [r for r in rows if r["type"] == t]
        amp = [r["amplification"] for r in mine]
        out[t] = {
            "amplification": _stats(amp),
            "w_on_delta_over_w_on_w": _stats([r["w_on_delta"] / r["w_on_w"] for r in mine]),
            "w_on_delta_over_w_on_random": _stats([r["w_on_delta"] / r["w_on_random"] for r in mine]),
        }
    out["verdicts"] = amplification_verdicts(out)
    return out


def amplification_verdicts(summary: dict) -> dict:
    """Table 7's claims from `amplification_summary`'s per-type numbers, under `verdict`'s margin rule."""
    verdicts = {}
    for t, s in ((t, s) for t, s in summary.items() if t != "verdicts"):
        verdicts[f"ΔW_{t} amplification well above 1 (> 2)"] = verdict(s["amplification"], 2.0)
        # "below half of W's top-r part": half against the ratio, so the claim is the larger side
        verdicts[f"ΔW_{t} is not along W's top directions (U^T W V^T below half of W's top-r part)"] = verdict(
            {"median": 0.5, "min": 0.5, "max": 0.5}, s["w_on_delta_over_w_on_w"]
        )
        verdicts[f"ΔW_{t} correlates with W more than a random matrix (ratio > 1)"] = verdict(
            s["w_on_delta_over_w_on_random"], 1.0
        )
    return verdicts


def format_amplification(name: str, summary: dict) -> str:
    lines = [f"{name}: amplification ||ΔW|| / ||U^T W V^T|| over blocks"]
    for t, s in summary.items():
        if t == "verdicts":
            continue
        a, top, rnd = s["amplification"], s["w_on_delta_over_w_on_w"], s["w_on_delta_over_w_on_random"]
        lines.append(
            f"  ΔW_{t}: median {a['median']:.2f} (min {a['min']:.2f}, max {a['max']:.2f}); "
            f"U^T W V^T / W's top-r {top['median']:.3f}; / random {rnd['median']:.2f}"
        )
    lines += [f"  {format_verdict(claim, v)}" for claim, v in summary["verdicts"].items()]
    return "\n".join(lines)
