"""Run folders -> one row per run -> the paper's tables, with the paper's numbers beside ours.

    python -m analysis.tables RUNS_DIR [--out DIR]   # markdown on stdout; runs.csv, runs.json, tables.md in DIR

`collect` walks RUNS_DIR at any depth (single runs, sweeps, Hydra multirun folders alike): a run is a folder
holding both config.yaml and metrics.json. The paper's figures are constants here, each with where it is
printed (Hu et al., 2021, arXiv:2106.09685 v2); its Section 7 tables are GPT-3 175B on WikiSQL and MultiNLI,
ours a CPU-scale model and task, so they sit side by side for the pattern, not the level.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

PAPER = "Hu et al. (2021), LoRA, arXiv:2106.09685v2"

# Table 5: 18M trainable parameters on GPT-3 175B; (targets, r) -> (WikiSQL +-0.5%, MultiNLI +-0.1%).
TABLE5_PAPER = {
    ("q",): (8, 70.4, 91.0),
    ("k",): (8, 70.0, 90.8),
    ("v",): (8, 73.0, 91.0),
    ("o",): (8, 73.2, 91.3),
    ("q", "k"): (4, 71.4, 91.3),
    ("q", "v"): (4, 73.7, 91.3),
    ("q", "k", "v", "o"): (2, 73.7, 91.7),
}
TABLE6_RANKS = (1, 2, 4, 8, 64)
# Table 6: GPT-3 175B, rank r in TABLE6_RANKS; targets -> (WikiSQL row, MultiNLI row).
TABLE6_PAPER = {
    ("q",): ((68.8, 69.6, 70.5, 70.4, 70.0), (90.7, 90.9, 91.1, 90.7, 90.7)),
    ("q", "v"): ((73.4, 73.3, 73.7, 73.8, 73.5), (91.3, 91.4, 91.3, 91.6, 91.4)),
    ("q", "k", "v", "o"): ((74.1, 73.7, 74.0, 74.0, 73.9), (91.2, 91.7, 91.7, 91.5, 91.4)),
}
# Table 2, RoBERTa-base (dev, median of 5 seeds): method -> {task: score}; the methods this repo names alike.
TABLE2_PAPER_ROBERTA_BASE = {
    "full_ft": {"mnli": 87.6, "sst2": 94.8, "mrpc": 90.2, "cola": 63.6, "qnli": 92.8, "qqp": 91.9, "rte": 78.7,
                "stsb": 91.2},
    "bitfit": {"mnli": 84.7, "sst2": 93.7, "mrpc": 92.7, "cola": 62.0, "qnli": 91.8, "qqp": 84.0, "rte": 81.5,
               "stsb": 90.8},
    "lora": {"mnli": 87.5, "sst2": 95.1, "mrpc": 89.7, "cola": 63.4, "qnli": 93.3, "qqp": 90.8, "rte": 86.6,
             "stsb": 91.5},
}  # fmt: skip
# Table 18 (Appendix H.2): GPT-2 Medium + LoRA on E2E after 26,000 steps; r -> (val loss, BLEU, NIST, METEOR,
# ROUGE_L, CIDEr), BLEU in points as printed there.
TABLE18_PAPER = {
    1: (1.23, 68.72, 8.7215, 0.4565, 0.7052, 2.4329), 2: (1.21, 69.17, 8.7413, 0.4590, 0.7052, 2.4639),
    4: (1.18, 70.38, 8.8439, 0.4689, 0.7186, 2.5349), 8: (1.17, 69.57, 8.7457, 0.4636, 0.7196, 2.5196),
    16: (1.16, 69.61, 8.7483, 0.4629, 0.7177, 2.4985), 32: (1.16, 69.33, 8.7736, 0.4642, 0.7105, 2.5255),
    64: (1.16, 69.24, 8.7174, 0.4651, 0.7180, 2.5070), 128: (1.16, 68.73, 8.6718, 0.4628, 0.7127, 2.5030),
    256: (1.16, 68.92, 8.6982, 0.4629, 0.7128, 2.5012), 512: (1.16, 68.78, 8.6857, 0.4637, 0.7128, 2.5025),
    1024: (1.17, 69.37, 8.7495, 0.4659, 0.7149, 2.5090),
}  # fmt: skip
GLUE = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")

COLUMNS = ("run", "status", "model", "method", "task", "r", "alpha", "targets", "lr", "steps", "batch_size", "seed",
           "metric", "best", "best_step", "final", "trainable", "total", "trainable_pct", "wall_seconds",
           "train_seconds")  # fmt: skip


class TablesError(ValueError):
    """Nothing to tabulate; the message says where we looked."""


def run_folders(runs_dir: Path) -> list[Path]:
    """Every folder under `runs_dir` (itself included) holding config.yaml and metrics.json, sorted."""
    from experiments.runs import find_runs  # here: `python -m analysis.tables` starts without torch

    return find_runs(runs_dir)


def _fmt_targets(targets) -> str:
    return ",".join(targets) if isinstance(targets, list | tuple) else ("" if targets is None else str(targets))


def _fmt_rank(r):
    """One rank as a number, per-type ranks as 'q:4,v:4'.

    >>> _fmt_rank(8), _fmt_rank({"q": 4, "v": 4}), _fmt_rank(None)
    (8, 'q:4,v:4', '')
    """
    if isinstance(r, dict):
        return ",".join(f"{k}:{v}" for k, v in r.items())
    return "" if r is None else r


def lora_shape(method: dict) -> tuple[tuple[str, ...], int | None]:
    """(targets, one rank or None) of a LoRA method config, per-type ranks folded when all equal.

    >>> lora_shape({"r": {"q": 4, "v": 4}, "targets": None})
    (('q', 'v'), 4)
    >>> lora_shape({"r": 8, "targets": ["v", "q"]})
    (('q', 'v'), 8)
    """
    r, targets = method.get("r"), method.get("targets")
    if isinstance(r, dict):
        targets = targets or list(r)
        r = next(iter(r.values())) if len(set(r.values())) == 1 else None
    order = {t: i for i, t in enumerate(("q", "k", "v", "o", "mlp_in", "mlp_out", "embed"))}
    return tuple(sorted(targets or ("q", "v"), key=lambda t: order.get(t, 99))), r


def row_of(folder: Path, root: Path) -> dict:
    """One run as a flat row: what was run (config.yaml) and what came of it (metrics.json)."""
    from experiments.runs import read_config, read_metrics

    cfg, m = read_config(folder), read_metrics(folder)
    method, trainer = cfg.get("method", {}), cfg.get("trainer", {})
    metric = m.get("metric")
    params = m.get("params", {})
    targets, _ = lora_shape(method) if method.get("name", "").startswith("lora") else (method.get("targets"), None)
    row = {
        "run": str(folder.relative_to(root)) if folder != root else ".",
        "status": m.get("status"),
        "model": m.get("model", cfg.get("model", {}).get("name")),
        "method": m.get("method", method.get("name")),
        "task": m.get("task", cfg.get("task", {}).get("name")),
        "r": _fmt_rank(method.get("r")),
        "alpha": _fmt_rank(method.get("alpha")),
        "targets": _fmt_targets(targets),
        "lr": trainer.get("lr"),
        "steps": m.get("steps", trainer.get("max_steps")),
        "batch_size": trainer.get("batch_size"),
        "seed": trainer.get("seed"),
        "metric": metric,
        "best": (m.get("best") or {}).get(metric),
        "best_step": (m.get("best") or {}).get("step"),
        "final": (m.get("final") or {}).get(metric),
        "trainable": params.get("trainable"),
        "total": params.get("total"),
        "trainable_pct": round(100 * params["trainable"] / params["total"], 4) if params.get("total") else None,
        "wall_seconds": m.get("wall_seconds"),
        "train_seconds": m.get("train_seconds"),
    }
    # NLG test scores are stored as "test/BLEU", "test_seen/BLEU": kept as they are (they were "test/test/BLEU")
    row.update({k if "/" in k else f"test/{k}": v for k, v in (m.get("test") or {}).items() if not isinstance(v, dict)})
    row["_config"] = _flat(cfg)  # what makes runs comparable (`groups`); not written to runs.csv
    return row


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


# Keys that never make two runs incomparable: where a run writes and how it was resumed or logged.
_HOUSEKEEPING = ("trainer.output_dir", "trainer.resume", "trainer.stop_after", "trainer.threads", "logger.")
# What each table sweeps: runs that differ only in these keys (and the seed) share a table.
SWEPT = {
    "lora": ("trainer.seed", "method.r", "method.alpha", "method.targets"),
    "methods": ("trainer.seed", "method.", "trainer.lr", "trainer.init_adapter"),  # the paper tunes lr per method
}


def groups(rows: list[dict], swept: tuple[str, ...]) -> list[tuple[str, list[dict]]]:
    """Rows split into comparable groups: same model, task and metric, and the same config but for the keys
    of `swept` (a prefix ending in "." covers a section). Each group comes with a title that names its model,
    task and metric and, where groups share those, what else tells them apart. A cell then averages only runs
    of one group, which differ only in the swept keys: never accuracies with losses or two learning rates."""
    ignore = (*_HOUSEKEEPING, *swept)
    found: dict = {}
    for r in rows:
        protocol = tuple(sorted((k, repr(v)) for k, v in r.get("_config", {}).items() if not _swept(k, ignore)))
        found.setdefault((r["model"], r["task"], r["metric"], protocol), []).append(r)
    out = []
    for (model, task, metric, protocol), rs in found.items():
        title = f"{model} / {task} / {metric}"
        twins = [p for (m, t, mt, p) in found if (m, t, mt) == (model, task, metric) and p != protocol]
        if twins:
            mine = dict(protocol)
            differ = sorted({k for p in twins for k, v in set(p) ^ set(protocol) if mine.get(k) is not None})
            title += " (" + ", ".join(f"{k}={mine[k]}" for k in differ[:4]) + ")"
        out.append((title, rs))
    return sorted(out, key=lambda g: g[0])


# What sets a method's number of trainable parameters: the points along one Figure 2 series.
SIZE_KEYS = ("method.r", "method.l_p", "method.l_i", "method.blocks")


def figure2(rows: list[dict]) -> list[dict]:
    """Figure 2's data, one figure per comparable group of complete runs (`groups`, methods swept): a series
    per method and weight-type set (and any other setting its runs differ in but size), a point per
    configuration at its trainable-parameter count, the mean over that configuration's seeds with their
    standard deviation and n. GLUE scores x100, as the paper plots them. Each figure names its runs."""
    done = [r for r in rows if r["status"] == "complete" and r["best"] is not None and r.get("trainable")]
    figures = []
    for title, rs in groups(done, SWEPT["methods"]):
        glue = rs[0]["task"] in GLUE
        lines: dict = {}
        for r in rs:
            config = {k: repr(v) for k, v in r["_config"].items() if _swept(k, SWEPT["methods"])}
            weights = _shape(r)[0] if r["method"].startswith("lora") else ()  # per-type ranks name them too
            rest = tuple(sorted((k, v) for k, v in config.items() if k not in (*SIZE_KEYS, *_NAMED, "trainer.seed")))
            size = tuple(sorted((k, v) for k, v in config.items() if k in SIZE_KEYS))
            lines.setdefault((r["method"], weights, rest), {}).setdefault(size, []).append(r)
        series = {}
        for (method, weights, rest), points in lines.items():
            twins = [dict(o[2]) for o in lines if o[:2] == (method, weights) and o[2] != rest]
            label = method + (f" {_label(weights)}" if weights else "") + _differences(dict(rest), twins)
            series[label] = sorted(
                ({"trainable": pts[0]["trainable"], **_agg([_pct(p["best"]) if glue else p["best"] for p in pts]),
                  "size": dict(size), "runs": sorted(p["run"] for p in pts)} for size, pts in points.items()),
                key=lambda p: p["trainable"])  # fmt: skip
        model, task, metric = rs[0]["model"], rs[0]["task"], rs[0]["metric"]
        figures.append({"title": title, "model": model, "task": task, "metric": metric, "x100": glue,
                        "runs": sorted(r["run"] for r in rs), "series": dict(sorted(series.items()))})  # fmt: skip
    return figures


_NAMED = ("method.name", "method.targets")  # in a series' label already


def _swept(key: str, swept: tuple[str, ...]) -> bool:
    """Whether `key` is one of `swept`, or under one ending in "." (a whole section)."""
    return any(key == s or (s.endswith(".") and key.startswith(s)) for s in swept)


def _differences(mine: dict, twins: list[dict]) -> str:
    """', key=value' for each setting in which a series differs from its twins (same method and weights).

    >>> _differences({"trainer.lr": "0.001", "method.alpha": "8"}, [{"trainer.lr": "0.01", "method.alpha": "8"}])
    ', trainer.lr=0.001'
    """
    differ = sorted({k for t in twins for k in set(t) | set(mine) if t.get(k) != mine.get(k)})
    return "".join(f", {k}={mine.get(k, '-')}" for k in differ)


def collect(runs_dir) -> list[dict]:
    """One row per run folder under `runs_dir` (or per line of a runs.csv this module wrote); a TablesError
    when there is none."""
    root = Path(runs_dir)
    if root.is_file() and root.suffix == ".csv":
        return rows_from_csv(root)
    if not root.is_dir():
        raise TablesError(f"{root} is not a folder; give the folder your runs were written to (e.g. runs/)")
    rows = [row_of(f, root) for f in run_folders(root)]
    if not rows:
        raise TablesError(f"no run under {root}: no folder there holds both config.yaml and metrics.json")
    return rows


# runs.csv column -> the config key it holds: all a runs.csv can say about what makes runs comparable
_CSV_CONFIG = {"model": "model.name", "method": "method.name", "task": "task.name", "r": "method.r",
               "alpha": "method.alpha", "targets": "method.targets", "lr": "trainer.lr", "steps": "trainer.max_steps",
               "batch_size": "trainer.batch_size", "seed": "trainer.seed"}  # fmt: skip
_CSV_NUMBERS = ("lr", "best", "final", "trainable_pct", "wall_seconds", "train_seconds")


def rows_from_csv(file: Path) -> list[dict]:
    """The rows of a runs.csv that `save` wrote, for tables and figures when only the CSV is at hand (the
    run folders were not kept, or not shared). Comparable groups are judged on its columns (model, method,
    task, r, alpha, targets, lr, steps, batch size, seed), not on the whole config a run folder holds."""
    with open(file, newline="") as f:
        rows = [dict(line) for line in csv.DictReader(f)]
    if not rows or "run" not in rows[0] or "best" not in rows[0]:
        raise TablesError(f"{file} is not a runs.csv written by analysis.tables (no run or best column)")
    for row in rows:
        for key, value in row.items():
            row[key] = None if value == "" else value
        for key in ("r", "alpha", "steps", "batch_size", "seed", "best_step", "trainable", "total"):
            row[key] = int(row[key]) if row.get(key) is not None and row[key].lstrip("-").isdigit() else row.get(key)
        for key in (*_CSV_NUMBERS, *(k for k in row if k.startswith("test/"))):
            row[key] = float(row[key]) if row.get(key) is not None else None
        rank = row["r"]
        if isinstance(rank, str) and ":" in rank:  # per-type ranks, 'q:4,v:4': the config held a mapping
            rank = {k: int(v) for k, v in (kv.split(":") for kv in rank.split(","))}
        config = {key: row.get(column) for column, key in _CSV_CONFIG.items()}
        config["method.r"] = rank
        config["method.targets"] = None if isinstance(rank, dict) or not row["targets"] else row["targets"].split(",")
        row["_config"] = config
    return rows


def _pct(x):
    """Our GLUE scores are fractions; the paper prints percentages."""
    return None if x is None else 100 * x


def _agg(values: list[float]) -> dict:
    """Mean, standard deviation (0 for one value) and count of the numbers given."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}  # fmt: skip


def fmt_score(a: dict) -> str:
    """'81.3 +- 0.4 (n=3)' style; '-' when there is no run.

    >>> fmt_score({"mean": 81.25, "std": 0.0, "n": 1}), fmt_score({"mean": None, "std": None, "n": 0})
    ('81.2', '-')
    """
    if not a["n"]:
        return "-"
    return f"{a['mean']:.1f}" if a["n"] == 1 else f"{a['mean']:.1f} ± {a['std']:.1f} (n={a['n']})"


def _lora_rows(rows: list[dict], model=None, task=None) -> list[dict]:
    return [r for r in rows if r["method"] == "lora" and r["status"] == "complete" and (model in (None, r["model"]))
            and (task in (None, r["task"]))]  # fmt: skip


def _shape(row: dict) -> tuple[tuple[str, ...], int | None]:
    r = row["r"]
    rank = dict(kv.split(":") for kv in r.split(",")) if isinstance(r, str) and ":" in r else r
    return lora_shape({"r": {k: int(v) for k, v in rank.items()} if isinstance(rank, dict) else rank,
                       "targets": row["targets"].split(",") if row["targets"] else None})  # fmt: skip


def _units(row: dict) -> int | None:
    targets, rank = _shape(row)
    return None if rank is None else rank * len(targets)


def _label(targets) -> str:
    return ", ".join(f"W_{t}" for t in targets)


def table5(rows: list[dict], model=None, task=None, budget: int = 8) -> list[dict]:
    """Table 5: weight types at a fixed budget. One row per paper targets set (its rank), then any other set.

    The paper's budget is 8 rank units per block (r x number of weight types: q r=8, (q,k) r=4, (q,k,v,o) r=2);
    only runs that spend exactly `budget` units count, so a Table 6 run at r=64 never lands here.
    """
    runs = [r for r in _lora_rows(rows, model, task) if _units(r) == budget]
    by_targets: dict = {}
    for r in runs:
        by_targets.setdefault(_shape(r)[0], []).append(r)
    out = []
    for targets in [*TABLE5_PAPER, *(t for t in by_targets if t not in TABLE5_PAPER)]:
        mine = by_targets.get(targets, [])
        paper = TABLE5_PAPER.get(targets, (None, None, None))
        out.append({"weight_type": _label(targets), "r_paper": paper[0],
                    "r_ours": ",".join(sorted({str(_shape(r)[1]) for r in mine})) or "-",
                    "trainable": sorted({r["trainable"] for r in mine}) or None,
                    "ours": _agg([_pct(r["best"]) for r in mine]),
                    "paper_wikisql": paper[1], "paper_mnli": paper[2]})  # fmt: skip
    return out


def table6(rows: list[dict], model=None, task=None) -> list[dict]:
    """Table 6: rank r (1, 2, 4, 8, 64, and any other run) by targets set, the paper's rows beside ours."""
    runs = _lora_rows(rows, model, task)
    cells: dict = {}
    for r in runs:
        cells.setdefault(_shape(r), []).append(_pct(r["best"]))
    ranks = sorted({*TABLE6_RANKS, *(rk for _, rk in cells if rk is not None)})
    out = []
    for targets in [*TABLE6_PAPER, *sorted({t for t, _ in cells if t not in TABLE6_PAPER})]:
        paper = TABLE6_PAPER.get(targets)
        row = {"weight_type": _label(targets)}
        for rk in ranks:
            i = TABLE6_RANKS.index(rk) if rk in TABLE6_RANKS else None
            row[f"r={rk}"] = {"ours": _agg(cells.get((targets, rk), [])),
                              "paper_wikisql": paper[0][i] if paper and i is not None else None,
                              "paper_mnli": paper[1][i] if paper and i is not None else None}  # fmt: skip
        out.append(row)
    return out


def methods_table(rows: list[dict]) -> list[dict]:
    """Tables 2/3 style: one row per model x method x rank x targets, one column per task (mean over seeds)."""
    groups: dict = {}
    for r in (r for r in rows if r["status"] == "complete"):
        key = (r["model"], r["method"], str(r["r"]), r["targets"])
        groups.setdefault(key, {}).setdefault(r["task"], []).append(r)
    out = []
    for (model, method, rank, targets), tasks in sorted(groups.items()):
        row = {"model": model, "method": method, "r": rank, "targets": targets,
               "trainable": sorted({r["trainable"] for rs in tasks.values() for r in rs})}  # fmt: skip
        for task, rs in tasks.items():
            glue = task in GLUE
            row[task] = {"ours": _agg([_pct(r["best"]) if glue else r["best"] for r in rs]),
                         "test": {k: _agg([r.get(k) for r in rs]) for k in rs[0] if k.startswith("test/")},
                         "paper_roberta_base": TABLE2_PAPER_ROBERTA_BASE.get(method, {}).get(task)}  # fmt: skip
        out.append(row)
    return out


def table18(rows: list[dict]) -> list[dict]:
    """Appendix H.2 / Table 18 (GPT-2 Medium, E2E, r from 1 to 1024): our rows by rank where runs exist,
    with the paper's (val loss, BLEU, NIST, METEOR, ROUGE_L, CIDEr) for that rank beside them."""
    runs = [r for r in rows if r["method"] == "lora" and r["task"] == "e2e" and r["status"] == "complete"]
    by_rank: dict = {}
    for r in runs:
        by_rank.setdefault((r["model"], str(r["r"])), []).append(r)
    out = []
    for (model, rank), rs in sorted(by_rank.items(), key=lambda kv: (kv[0][0], _num(kv[0][1]))):
        tests = sorted({k for r in rs for k in r if k.startswith("test/")})
        out.append({"model": model, "r": rank, "dev_loss": _agg([r["best"] for r in rs]),
                    **{k: _agg([r.get(k) for r in rs]) for k in tests},
                    "paper": TABLE18_PAPER.get(_num(rank))})  # fmt: skip
    return out


def _bleu_points(a: dict | None) -> str:
    """E2E BLEU is stored as the official script's fraction; Table 18 prints points."""
    return "-" if not a or not a["n"] else f"{100 * a['mean']:.2f}"


def _num(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return float("inf")


def markdown(header: list[str], body: list[list]) -> str:
    """A GitHub markdown table.

    >>> print(markdown(["a", "b"], [[1, None]]))
    | a | b |
    |---|---|
    | 1 | - |
    """
    cell = lambda v: "-" if v is None or v == "" else (_fmt_float(v) if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(cell(v) for v in row) + " |" for row in body)])


def _fmt_float(v: float) -> str:
    """Percentages as the paper prints them (one decimal), fractions and small numbers to 4 digits."""
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.4g}"


def runs_markdown(rows: list[dict]) -> str:
    cols = ["run", "model", "method", "task", "r", "targets", "seed", "steps", "best", "final", "trainable",
            "train_seconds", "status"]  # fmt: skip
    return markdown(cols, [[r.get(c) for c in cols] for r in rows])


def table5_markdown(t5: list[dict]) -> str:
    head = ["weight type", "r (paper)", "r (ours)", "trainable", "ours", "paper WikiSQL ±0.5", "paper MNLI ±0.1"]
    body = [[r["weight_type"], r["r_paper"], r["r_ours"], ",".join(map(str, r["trainable"] or [])) or None,
             fmt_score(r["ours"]), r["paper_wikisql"], r["paper_mnli"]] for r in t5]  # fmt: skip
    return markdown(head, body)


def table6_markdown(t6: list[dict]) -> str:
    ranks = [k for k in t6[0] if k.startswith("r=")] if t6 else []
    body = []
    for r in t6:
        cells = [r[k] for k in ranks]
        body.append([r["weight_type"], *(fmt_score(c["ours"]) for c in cells)])
        body.append(["paper WikiSQL / MNLI", *(_pair(c) for c in cells)])
    return markdown(["weight type", *ranks], body)


def _pair(c: dict) -> str | None:
    return None if c["paper_wikisql"] is None else f"{c['paper_wikisql']} / {c['paper_mnli']}"


def methods_markdown(mt: list[dict]) -> str:
    tasks = sorted({k for r in mt for k in r if k not in ("model", "method", "r", "targets", "trainable")})
    body = []
    for r in mt:
        cells = [r.get(t) for t in tasks]
        body.append([r["model"], r["method"], r["r"], r["targets"], ",".join(map(str, r["trainable"])),
                     *(fmt_score(c["ours"]) if c else None for c in cells)])  # fmt: skip
    paper = [[f"paper RoBERTa-base ({m})", m, None, None, None,
              *(TABLE2_PAPER_ROBERTA_BASE[m].get(t) for t in tasks)] for m in TABLE2_PAPER_ROBERTA_BASE]  # fmt: skip
    return markdown(["model", "method", "r", "targets", "trainable", *tasks], body + paper)


def all_markdown(rows: list[dict]) -> str:
    """Every table the rows allow, each under a heading that says what the paper's columns are; one table per
    comparable group of runs (`groups`), its title naming model, task and metric and the runs it holds."""
    parts = [f"## Runs ({len(rows)})\n\n" + runs_markdown(rows)]
    for title, rs in groups(rows, SWEPT["methods"]):
        scale = "x100" if rs[0]["task"] in GLUE else "as measured"
        table = methods_markdown(methods_table(rs))
        parts.append(f"## Methods (Tables 2/3 style): {title}, {scale}; {len(rs)} runs\n\n{table}\n\n"
                     f"Paper: {PAPER}, Table 2 (RoBERTa-base).")  # fmt: skip
    for title, rs in groups(_lora_rows(rows), SWEPT["lora"]):
        scale = "ours x100" if rs[0]["task"] in GLUE else "ours as measured"
        names = ", ".join(r["run"] for r in rs)
        if table5_runs := [r for r in rs if _units(r) == 8]:
            parts.append(f"## Table 5 (weight types at a fixed budget): {title}, {scale}\n\n"
                         + table5_markdown(table5(table5_runs)) + f"\n\nRuns: {names}.\n"
                         f"Paper: {PAPER}, Table 5 (GPT-3 175B, 18M parameters).")  # fmt: skip
        parts.append(f"## Table 6 (rank r): {title}, {scale}\n\n" + table6_markdown(table6(rs))
                     + f"\n\nRuns: {names}.\nPaper: {PAPER}, Table 6 (GPT-3 175B).")  # fmt: skip
    t18 = table18(rows)
    if t18:
        parts.append(
            "## Table 18 (H.2, E2E by rank; the paper's GPT-2 M after 26,000 steps beside ours)\n\n"
            + markdown(
                ["model", "r", "dev loss", "test BLEU", "paper val loss", "paper BLEU"],
                [
                    [
                        r["model"],
                        r["r"],
                        fmt_score(r["dev_loss"]),
                        _bleu_points(r.get("test/BLEU")),
                        *(r["paper"][:2] if r["paper"] else (None, None)),
                    ]
                    for r in t18
                ],
            )
        )
    return "\n\n".join(parts) + "\n"


def save(rows: list[dict], out: Path) -> list[Path]:
    """runs.csv (one line per run, every column any run has), runs.json and tables.md in `out`; where any of
    them exists already, the set is written as runs-N.csv, runs-N.json, tables-N.md (nothing is overwritten)."""
    from lora.files import atomic_path, write_text

    out.mkdir(parents=True, exist_ok=True)
    names = ("runs.csv", "runs.json", "tables.md")
    n = 1
    while any((out / _versioned(name, n)).exists() for name in names):
        n += 1
    files = [out / _versioned(name, n) for name in names]
    text = all_markdown(rows)
    rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    cols = [*COLUMNS, *sorted({k for r in rows for k in r} - set(COLUMNS))]
    with atomic_path(files[0]) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    write_text(json.dumps(rows, indent=1) + "\n", files[1])
    write_text(text, files[2])
    return files


def _versioned(name: str, n: int) -> str:
    """The n-th version of a file name: tables.md, tables-2.md, ..."""
    stem, _, ext = name.partition(".")
    return name if n == 1 else f"{stem}-{n}.{ext}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs_dir", type=Path)
    p.add_argument(
        "--out", type=Path, default=None, help="folder for runs.csv, runs.json, tables.md (default RUNS_DIR)"
    )
    args = p.parse_args(argv)
    try:
        rows = collect(args.runs_dir)
    except TablesError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    print(all_markdown(rows))
    for f in save(rows, args.out or args.runs_dir):
        print(f"saved {f}")


if __name__ == "__main__":
    main()
