# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Section 7: what LoRA learns
#
# From the runs under `$LORA_RUNS_DIR` (default `runs/sweeps/section7_minilm_sst2`, made by
# `python run.py -m +sweep=section7_minilm_sst2`): LoRA on W_q, W_v at r=8 and r=64 (seed 0) and r=64 seed 1.
#
# - Figure 3: phi(A_r=8, A_r=64, i, j), Eq. 4, for Delta W_q and Delta W_v;
# - Figure 4: phi between two seeds at r=64, beside two random Gaussian matrices;
# - Table 7 and Appendix H.3: Delta W against W (`analysis.amplification`).
#
# The paper reads block 48 of GPT-3's 96; `$LORA_BLOCK` picks ours (default: the last block).

# %%
import json
import os
from pathlib import Path

from IPython.display import Image, display

from analysis import amplification, figures, section7, tables
from analysis.notebooks import fresh_folder
from experiments.runs import RunFolder

RUNS = Path(os.environ.get("LORA_RUNS_DIR", "runs/sweeps/section7_minilm_sst2"))
BESIDE = RUNS.parent if RUNS.is_file() else RUNS  # RUNS may be a runs.csv
OUT = Path(os.environ.get("LORA_ANALYSIS_OUT") or fresh_folder(BESIDE / "analysis"))  # never over earlier outputs
BLOCK = int(os.environ["LORA_BLOCK"]) if os.environ.get("LORA_BLOCK") else None
rows = tables.collect(RUNS)
if RUNS.is_file():  # a runs.csv lists runs; their adapters are in the run folders
    print(f"{RUNS} is a runs.csv: Section 7 reads the runs' adapters, so it needs the run folders")
    rows = []
chosen = section7.choose(rows)  # one comparable group: same model, task, protocol; only r and seed differ
small, large, other = (chosen[role] for role in section7.ROLES)
adapter = lambda row: RunFolder(RUNS / row["run"]).adapter


def about(row) -> str:
    """A run as a figure names it: its folder, seed and init."""
    return f"{row['run']} (seed {row['seed']}, init {row['_config'].get('method.init', 'default')})"


def heading(*runs) -> str:
    """Model, task, init and the runs a figure is drawn from, for its title."""
    first = runs[0]
    return f"{first['model']} on {first['task']}, LoRA on {first['targets']}\n" + "; ".join(map(about, runs))


def show_phi(panels: dict, file: str, title: str):
    for name, grid in panels.items():
        print(f"{name:<28} phi(1,1) {grid[0, 0]:.3f}  mean {grid.mean():.3f}")
    OUT.mkdir(parents=True, exist_ok=True)
    display(Image(filename=str(figures.phi_heatmaps(panels, OUT / file, title))))


print(f"comparable group: {chosen['group'] or 'none: no complete LoRA run at r=8 or r=64'}")
for role in section7.ROLES:
    print(f"{role:<12} {about(chosen[role]) if chosen[role] else 'missing'}")

# %% [markdown]
# ## Figure 3: r=8 against r=64

# %%
if small and large:
    block = section7.a_matrices(adapter(small), BLOCK)[0]
    panels = section7.figure3_panels(adapter(small), adapter(large), block)
    show_phi(
        panels, "figure3_r8_vs_r64.png", f"Figure 3: phi(A_r=8, A_r=64, i, j), block {block}\n" + heading(small, large)
    )
else:
    print("Figure 3 needs an r=8 and an r=64 run")

# %% [markdown]
# ## Figure 4: seed against seed, and a random baseline

# %%
if large and other:
    block = section7.a_matrices(adapter(large), BLOCK)[0]
    panels = section7.figure4_panels(adapter(large), adapter(other), block)
    show_phi(
        panels,
        "figure4_seeds.png",
        f"Figure 4: phi(A_r=64, A'_r=64, i, j) between seeds, block {block}\n" + heading(large, other),
    )
else:
    print("Figure 4 needs two r=64 runs (seeds 0 and 1)")

# %% [markdown]
# ## Table 7 and Appendix H.3: Delta W against W

# %%
curves, table7, blocks = {}, {}, set()
for row in (r for r in (small, large) if r):
    model, cfg = amplification.load_run(RUNS / row["run"])
    measured = amplification.analyse(model, BLOCK)
    block = max(m["layer"] for m in measured) if BLOCK is None else BLOCK
    measured = [m for m in measured if m["layer"] == block]
    print(f"{row['run']} (block {block})\n{amplification.format_table(measured)}\n")
    table7[row["run"]] = measured
    blocks.add(block)
    curves.update({f"ΔW_{m['type']} r={m['r']}": m["h3"] for m in measured})
if table7:  # nothing is written when there is nothing to compute
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "table7_h3.json").write_text(json.dumps(table7) + "\n")
    title = f"Appendix H.3: phi(W, ΔW, k, r), block {', '.join(map(str, sorted(blocks)))}\n" + heading(
        *(r for r in (small, large) if r)
    )
    display(Image(filename=str(figures.h3_curves(curves, OUT / "h3_w_vs_delta_w.png", title))))
else:
    print("Table 7 and H.3 need an r=8 or r=64 run")

# %% [markdown]
# ## Findings: the paper's claims over every block
#
# Figures 3, 4 and Table 7 read one block; here each claim is measured in every block and summarised
# (median, min, max). A verdict is "holds" or "does not hold" only where the difference clears the spread over
# blocks and the random baseline by the margin of `section7.verdict`; otherwise "not decided by these runs",
# with the numbers. Saved as `findings.json`.

# %%
if small and large and other:  # verdicts only from the three runs of one comparable group
    findings = {"group": chosen["group"], "runs": {role: chosen[role]["run"] for role in section7.ROLES}}
    findings["subspace"] = section7.observations(adapter(small), adapter(large), adapter(other))
    print(section7.format_observations(findings["subspace"]))
    for row in (small, large):
        model, cfg = amplification.load_run(RUNS / row["run"])
        summary = section7.amplification_summary(amplification.analyse(model, ks=[1]))
        findings[f"amplification r={row['r']}"] = summary
        print(section7.format_amplification(f"r={row['r']} ({row['run']})", summary))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "findings.json").write_text(json.dumps(findings, indent=2, default=bool) + "\n")
else:
    print("no findings: they need r=8 seed 0, r=64 seed 0 and r=64 seed 1 from one comparable group")
