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
# 4 and 15 (methods on GPT-3's tasks: WikiSQL, MNLI-m, SAMSum), 5 (weight types at a fixed budget), 6 (rank r),
# 16 (MNLI-m from 100, 1k, 10k examples) and 18 (H.2) where runs exist, the paper's numbers beside ours, and
# Figure 2 (score against trainable parameters). On GPT-3's tasks a cell is the decoded score (WikiSQL's
# logical-form accuracy, MNLI-m's label-word accuracy, SAMSum's ROUGE), not the dev loss that picked the best
# step. One table per comparable group of runs. Everything is written to `$LORA_ANALYSIS_OUT`.

# %%
import os
from pathlib import Path

from IPython.display import Image, Markdown, display

from analysis import figures, tables
from analysis.notebooks import fresh_folder
from lora.files import unused_path

RUNS = Path(os.environ.get("LORA_RUNS_DIR", "runs"))
BESIDE = RUNS.parent if RUNS.is_file() else RUNS  # RUNS may be a runs.csv
OUT = Path(os.environ.get("LORA_ANALYSIS_OUT") or fresh_folder(BESIDE / "analysis"))  # never over earlier outputs
tables.set_aggregate(os.environ.get("LORA_AGGREGATE", "paper"))  # GLUE: median [range]; others: mean ± std
rows = tables.collect(RUNS)
OUT.mkdir(parents=True, exist_ok=True)
print(f"{len(rows)} runs under {RUNS}")

# %%
display(Markdown(tables.all_markdown(rows)))
saved = tables.save(rows, OUT)
print("saved", *saved, sep="\n  ")

# %% [markdown]
# ## Figure 2: score against trainable parameters

# %% [markdown]
# One figure per comparable group of runs (same model, task, metric and protocol): a series per method and
# weight-type set, a point per configuration (the mean over its seeds, the bar their standard deviation).
# Each PNG has a .json beside it with every point and the runs behind it.

# %%
for figure in tables.figure2(rows):
    png = figures.score_vs_params(figure, unused_path(OUT / f"figure2_{figure['model']}_{figure['task']}.png"))
    print(f"{png.name}: {figure['title']}, {len(figure['runs'])} runs")
    display(Image(filename=str(png)))
