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
# # Tables from run folders
#
# Every run under `$LORA_RUNS_DIR` (default `runs/`) as one row, then the paper's Tables 2/3 (methods),
# 5 (weight types at a fixed budget), 6 (rank r) and 18 (H.2) where runs exist, the paper's numbers beside
# ours, and Figure 2 (score against trainable parameters). Everything is written to `$LORA_ANALYSIS_OUT`.

# %%
import os
from pathlib import Path

from IPython.display import Image, Markdown, display

from analysis import figures, tables

RUNS = Path(os.environ.get("LORA_RUNS_DIR", "runs"))
OUT = Path(os.environ.get("LORA_ANALYSIS_OUT", RUNS / "analysis"))
OUT.mkdir(parents=True, exist_ok=True)
rows = tables.collect(RUNS)
print(f"{len(rows)} runs under {RUNS}")

# %%
display(Markdown(tables.all_markdown(rows)))
saved = tables.save(rows, OUT)
print("saved", *saved, sep="\n  ")

# %% [markdown]
# ## Figure 2: score against trainable parameters

# %%
figure2 = figures.accuracy_vs_params(rows, OUT / "figure2_score_vs_params.png")
display(Image(filename=str(figure2)))
