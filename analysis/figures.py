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


MARKERS = "osD^vP*Xph"  # one shape per series, drawn open: points that coincide stay visible
NUDGE = 0.008  # series i of n is drawn at x * 10**(NUDGE * (i - (n-1)/2)): ±3% for 8 series


def score_vs_params(figure: dict, out) -> Path:
    """Figure 2: a run's score (`analysis.tables.score`) against trainable parameters (log axis), one series per
    method and weight-type set, one point per configuration, its seeds summed up as the tables' cells are
    (`figure["aggregate"]`: the median with the range as a bar, or the mean with ± std).

    `figure` is one `analysis.tables.figure2` entry. The title names model, task and metric; the caption the
    aggregate, the settings all runs share (lr, alpha, init, steps, ...), the number of runs and the group.
    Every series is in the legend; each series has its own open marker and is nudged sideways a little (at
    most ±5%), so points at the same place stay visible; each point is annotated with its size and n.
    The .json beside the PNG holds every point and the runs behind it."""
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    n = len(figure["series"])
    for i, (label, points) in enumerate(figure["series"].items()):
        nudge = 10 ** (NUDGE * (i - (n - 1) / 2))  # on the log axis: the same relative shift at every size
        xs, ys = [p["trainable"] * nudge for p in points], [p["value"] for p in points]
        median = figure.get("aggregate", "").startswith("median")
        low = [p["value"] - p["min"] if median else p["std"] for p in points]
        high = [p["max"] - p["value"] if median else p["std"] for p in points]
        color = f"C{i % 10}"
        ax.errorbar(xs, ys, yerr=[low, high], marker=MARKERS[i % len(MARKERS)], markersize=7, capsize=3,
                    color=color, markerfacecolor="none", markeredgewidth=1.4, linewidth=1, label=label)  # fmt: skip
        for x, p in zip(xs, points, strict=True):
            ax.annotate(f"{p['size']} n={p['n']}" if p["size"] else f"n={p['n']}", (x, p["value"]),
                        textcoords="offset points", xytext=(5, 4 + 8 * (i % 4)), fontsize=6, color=color)  # fmt: skip
    if figure.get("baseline") is not None:  # the majority class: the line every run has to clear
        ax.axhline(figure["baseline"], color="0.5", linestyle=":", linewidth=1, label="majority class")
    ax.set_xscale("log")
    xs = [p["trainable"] for points in figure["series"].values() for p in points]
    if xs and max(xs) / min(xs) < 10:  # a decade at least, so the nudge does not read as a size difference
        middle = (max(xs) * min(xs)) ** 0.5
        ax.set_xlim(min(middle / 10**0.5, min(xs) / 1.3), max(middle * 10**0.5, max(xs) * 1.3))
    ax.margins(x=0.12, y=0.15)  # room for the annotations right of and above the outer points
    metric = figure["metric"].split("/")[-1] + (" x100" if figure["x100"] else "")
    kind = "decoded" if figure["metric"].startswith("decoded/") else "best dev"  # the GPT-3 tasks' cells
    subset = f" ({figure['subset']} dev examples)" if figure.get("subset") else ""
    ax.set(xlabel="trainable parameters (task head not counted)", ylabel=f"{kind} {metric} on {figure['task']}{subset}",
           title=f"Figure 2: {figure['model']} on {figure['task']}, {kind} {metric}")  # fmt: skip
    ax.grid(alpha=0.3)
    if figure["series"]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="series", title_fontsize=7)
    fig.text(0.01, -0.02, caption(figure), fontsize=7, ha="left", va="top", wrap=True)
    out = _save(fig, out)
    write_text(json.dumps(figure, indent=1) + "\n", out.with_suffix(".json"))
    return out


def caption(figure: dict) -> str:
    """What a Figure 2 shows, in words: aggregate, shared settings, runs and the group they came from."""
    fixed = ", ".join(f"{k}={v}" for k, v in figure.get("fixed", {}).items()) or "none shared by all runs"
    bars = "bars: min to max" if figure.get("aggregate", "").startswith("median") else "bars: ± std"
    picked = " (the best step picked by the dev metric)" if figure["metric"].startswith("decoded/") else ""
    n = len(figure["series"])
    nudge = f"; series nudged sideways by up to ±{10 ** (NUDGE * (n - 1) / 2) - 1:.0%}" if n > 1 else ""
    return (f"{len(figure['runs'])} runs; each point: {figure.get('aggregate', 'mean')} of one configuration{picked}, "
            f"{bars}{nudge}; settings of all runs: {fixed}\ngroup: {figure['title']}")  # fmt: skip


def h3_curves(curves: dict[str, dict], out, title: str = "") -> Path:
    """phi(W, Delta W, k, r) against k for each curve (label -> `analysis.amplification.h3_curve` output),
    and each distinct random baseline as a thick grey dashed line drawn on top, in the legend with its r:
    below the baseline, Delta W avoids W's top directions."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, c) in enumerate(curves.items()):
        ax.plot(c["ks"], c["phi"], marker=MARKERS[i % len(MARKERS)], markerfacecolor="none", color=f"C{i}",
                label=label)  # fmt: skip
    baselines = {}
    for label, c in curves.items():  # curves of one r share a baseline: one line each, labelled
        r = label.rpartition("r=")[2] or label
        baselines.setdefault(r, c)
    for j, (r, c) in enumerate(baselines.items()):
        ax.plot(c["ks"], c["phi_random"], linestyle=(0, (4, 2)), color=str(0.2 + 0.3 * j), linewidth=2.2,
                zorder=5, label=f"random subspaces, r={r}")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set(xlabel="k (top singular directions of W)", ylabel="phi(W, ΔW, k, r)", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, out)
