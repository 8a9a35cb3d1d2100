"""The paper's figures as PNG files: each function takes data (no run folders) and an output path.

- `phi_heatmaps`: Figures 3 and 4 (phi grids: r=8 against r=64, seed against seed, a random baseline)
- `score_vs_params`: Figure 2 (score against trainable parameters, a series per method and weight types)
- `h3_curves`: Appendix H.3 / Figure 8 as curves (phi between W's top-k and Delta W's top-r directions)
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on the training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lora.files import write_text  # noqa: E402


def _save(fig, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def phi_heatmaps(panels: dict[str, np.ndarray], out, title: str = "", xlabel: str = "j", ylabel: str = "i") -> Path:
    """One heat map per panel (title -> grid with entry [i-1, j-1]), sharing a colour scale from 0 to 1.

    Figure 3 is panels phi(A_r=8, A_r=64, i, j) for Delta W_q and Delta W_v, whole and zoomed to i, j <= 8;
    Figure 4 the same between two seeds at r=64 beside two random Gaussian matrices.
    """
    # constrained layout keeps the suptitle, panel titles and the shared colour bar apart
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.6), squeeze=False, layout="constrained")
    image = None
    for ax, (name, grid) in zip(axes[0], panels.items(), strict=True):
        grid = np.asarray(grid)
        extent = (0.5, grid.shape[1] + 0.5, grid.shape[0] + 0.5, 0.5)
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="magma", aspect="auto", extent=extent, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set(xlabel=xlabel, ylabel=ylabel)
    fig.colorbar(image, ax=axes[0].tolist(), fraction=0.03)
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def score_vs_params(figure: dict, out) -> Path:
    """Figure 2: a run's score (`analysis.tables.score`) against trainable parameters (log axis), one series per
    method and weight-type set, one point per configuration with its seeds' standard deviation as an error bar.

    `figure` is one `analysis.tables.figure2` entry; the axes name its metric, task and model, and the
    note under the plot the runs it came from (all of them, with every point, in the .json beside the PNG).
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, points) in enumerate(figure["series"].items()):
        xs, ys = [p["trainable"] for p in points], [p["mean"] for p in points]
        errors = [p["std"] if p["n"] > 1 else 0.0 for p in points]
        ax.errorbar(xs, ys, yerr=errors, marker="o", markersize=4, capsize=3, color=f"C{i % 10}", label=label)
        for p in points if len(points) > 1 else ():  # along a series: each point's size (q=8,v=8)
            ax.annotate(p["size"], (p["trainable"], p["mean"]), textcoords="offset points", xytext=(4, 4), fontsize=6)
    ax.set_xscale("log")
    metric = figure["metric"].split("/")[-1] + (" x100" if figure["x100"] else "")
    kind = "decoded" if figure["metric"].startswith("decoded/") else "best dev"  # the GPT-3 tasks' cells
    ax.set(xlabel="trainable parameters", ylabel=f"{kind} {metric} on {figure['task']}",
           title=f"{figure['model']} on {figure['task']}")  # fmt: skip
    ax.grid(alpha=0.3)
    if figure["series"]:
        ax.legend(fontsize=7)
    seeds = max((p["n"] for points in figure["series"].values() for p in points), default=0)
    note = f"{len(figure['runs'])} runs: {figure['title']}" + ("; bars: ± std over seeds" if seeds > 1 else "")
    fig.text(0.01, -0.02, note, fontsize=7, ha="left", va="top")
    out = _save(fig, out)
    write_text(json.dumps(figure, indent=1) + "\n", out.with_suffix(".json"))
    return out


def h3_curves(curves: dict[str, dict], out, title: str = "") -> Path:
    """phi(W, Delta W, k, r) against k for each curve (label -> `analysis.amplification.h3_curve` output),
    with its random baseline dashed: below the baseline, Delta W avoids W's top directions."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for i, (label, c) in enumerate(curves.items()):
        color = f"C{i}"
        ax.plot(c["ks"], c["phi"], marker="o", color=color, label=label)
        ax.plot(c["ks"], c["phi_random"], linestyle="--", color=color, alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="k (top singular directions of W)", ylabel="phi(W, ΔW, k, r)", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8, title="dashed: random", title_fontsize=7)
    return _save(fig, out)
