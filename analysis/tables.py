"""Run folders -> one row per run -> the paper's tables, with the paper's numbers beside ours.

    python -m analysis.tables RUNS_DIR [--out DIR]   # markdown on stdout; runs.csv, runs.json, tables.md in DIR

`collect` walks RUNS_DIR at any depth (single runs, sweeps, Hydra multirun folders alike): a run is a folder
holding both config.yaml and metrics.json. The paper's numbers are in `analysis.paper`, each with the table
it is printed in; its GPT-3 tables (4, 5, 6, 15, 16) are GPT-3 175B on WikiSQL, MultiNLI and SAMSum, ours a
stand-in model, so they sit side by side for the pattern, not the level.

What a cell shows for a run is `score`: GLUE's dev score, and for the paper's GPT-3 tasks the decoded metric
(WikiSQL's logical-form accuracy, MNLI-m's label-word accuracy, SAMSum's ROUGE), both x100 as the paper prints
them; any other task its selection metric as measured (E2E's dev loss).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

from .paper import (
    PAPER,
    TABLE2_ROBERTA_BASE,
    TABLE4,
    TABLE5,
    TABLE6,
    TABLE6_RANKS,
    TABLE15,
    TABLE16,
    TABLE16_SIZES,
    TABLE17,
    TABLE18,
    Row,
    setting,
)

GLUE = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")

COLUMNS = ("run", "status", "model", "method", "task", "r", "alpha", "targets", "setting", "lr", "steps",
           "batch_size", "train_size", "seed", "metric", "dev_examples", "best", "best_step", "final", "baseline",
           "trainable", "head", "total", "trainable_pct", "wall_seconds", "train_seconds")  # fmt: skip
# GLUE's dev sets (MNLI: matched), for the heading of a run evaluated on its first trainer.eval_limit examples
# when its metrics.json predates "eval_examples"
GLUE_DEV_SIZE = {"cola": 1043, "sst2": 872, "mrpc": 408, "stsb": 1500, "qqp": 40430, "mnli": 9815, "qnli": 5463,
                 "rte": 277}  # fmt: skip
# How a cell sums up its seeds: "paper" (GLUE: the median with the range, as the paper reports the median of
# 5 runs; every other task: mean ± standard deviation), or "median" / "mean" everywhere. `--aggregate`.
AGGREGATE = "paper"


class TablesError(ValueError):
    """Nothing to tabulate; the message says where we looked."""


class Runs(list):
    """The rows `collect` found, and notes on what it left out (damaged, unfinished or config-less folders)."""

    def __init__(self, rows=(), notes=()):
        super().__init__(rows)
        self.notes = list(notes)


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
        "setting": setting(method),
        "lr": trainer.get("lr"),
        "steps": m.get("steps", trainer.get("max_steps")),
        "batch_size": trainer.get("batch_size"),
        "train_size": cfg.get("task", {}).get("train_size"),
        "seed": trainer.get("seed"),
        "metric": metric,
        "dev_examples": _dev_examples(m, cfg),
        "best": (m.get("best") or {}).get(metric),
        "best_step": (m.get("best") or {}).get("step"),
        "final": (m.get("final") or {}).get(metric),
        "baseline": (m.get("baseline") or {}).get(metric),  # a constant answer's score (GLUE: majority class)
        "trainable": params.get("trainable"),
        "head": (params.get("by_type") or {}).get("head", 0) if params.get("trainable") is not None else None,
        "total": params.get("total"),
        "trainable_pct": round(100 * params["trainable"] / params["total"], 4) if params.get("total") else None,
        "wall_seconds": m.get("wall_seconds"),
        "train_seconds": m.get("train_seconds"),
    }
    # NLG test scores are stored as "test/BLEU", "test_seen/BLEU": kept as they are (they were "test/test/BLEU")
    row.update({k if "/" in k else f"test/{k}": v for k, v in (m.get("test") or {}).items() if not isinstance(v, dict)})
    row["_config"] = _flat(cfg)  # what makes runs comparable (`groups`); not written to runs.csv
    return row


def _dev_examples(metrics: dict, cfg: dict) -> str | None:
    """'64 of 872' for a run evaluated on part of its dev set (trainer.eval_limit), None for the whole set.

    >>> _dev_examples({"eval_examples": {"dev": {"used": 64, "of": 872}}}, {})
    '64 of 872'
    >>> _dev_examples({}, {"task": {"name": "sst2"}, "trainer": {"eval_limit": 64}})
    '64 of 872'
    >>> _dev_examples({}, {"task": {"name": "e2e"}, "trainer": {"eval_limit": 64}}), _dev_examples({}, {})
    ('first 64', None)
    """
    split = (metrics.get("metric") or "dev/").split("/")[0]
    recorded = (metrics.get("eval_examples") or {}).get(split)
    if isinstance(recorded, dict):
        used, of = recorded.get("used"), recorded.get("of")
    else:  # a metrics.json written before "eval_examples": the config's limit, GLUE's dev sizes
        used, of = (cfg.get("trainer") or {}).get("eval_limit"), GLUE_DEV_SIZE.get((cfg.get("task") or {}).get("name"))
    if used is None or (of is not None and used >= of):
        return None
    return f"{used} of {of}" if of is not None else f"first {used}"


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
    # Table 16: the training-set size with what the paper's Table 17 changes along with it
    "table16": (
        "trainer.seed",
        "method.",
        "trainer.lr",
        "task.train_size",
        "trainer.batch_size",
        "trainer.grad_accum",
        "trainer.epochs",
    ),
}


def groups(rows: list[dict], swept: tuple[str, ...]) -> list[tuple[str, list[dict]]]:
    """Rows split into comparable groups: same model, task and metric, and the same config but for the keys
    of `swept` (a prefix ending in "." covers a section). Each group comes with a title that names its model,
    task and metric and, where groups share those, what else tells them apart. A cell then averages only runs
    of one group, which differ only in the swept keys: never accuracies with losses or two learning rates."""
    found: dict = {}
    for r in rows:
        protocol = _config_key(r, (*_HOUSEKEEPING, *swept))
        found.setdefault((r["model"], r["task"], r["metric"], protocol), []).append(r)
    out = []
    for (model, task, metric, protocol), rs in found.items():
        subset = rs[0].get("dev_examples")  # one group, one eval_limit: a protocol key
        title = f"{model} / {task} / {metric}" + (f", {subset}" if subset else "")
        twins = [p for (m, t, mt, p) in found if (m, t, mt) == (model, task, metric) and p != protocol]
        if twins:
            mine = dict(protocol)
            differ = sorted({k for p in twins for k, v in set(p) ^ set(protocol) if mine.get(k, "None") != "None"})
            title += " (" + ", ".join(f"{k}={mine[k]}" for k in differ[:4]) + ")" if differ else ""
        kept, repeats = _distinct(rs)
        if repeats:
            title += "; left out as repeats of a run with the same config and seed: " + ", ".join(repeats)
        out.append((title, kept))
    return sorted(out, key=lambda g: g[0])


def _config_key(row: dict, ignore: tuple[str, ...]) -> tuple:
    """A run's config but for the `ignore`d keys (`_swept`), as a hashable key."""
    return tuple(sorted((k, repr(v)) for k, v in row.get("_config", {}).items() if not _swept(k, ignore)))


def _distinct(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """The rows with one run per config and seed (two sweeps can make the same run: Table 4's LoRA is Table
    16's on all of MNLI), a complete one first; and the names of the runs left out. Two runs of one seed are
    not two seeds: counted twice, they would shrink the spread a cell shows."""
    seen: dict = {}
    for r in sorted(rows, key=lambda r: (r["status"] != "complete", r["run"])):
        seen.setdefault((_config_key(r, _HOUSEKEEPING), r.get("setting")), []).append(
            r
        )  # a runs.csv's columns hold no l_p: setting does
    kept = [rs[0] for rs in seen.values()]
    return sorted(kept, key=lambda r: r["run"]), sorted(r["run"] for rs in seen.values() for r in rs[1:])


# What sets a method's number of trainable parameters: the points along one Figure 2 series.
SIZE_KEYS = ("method.r", "method.l_p", "method.l_i", "method.blocks", "method.drop_lower")


def figure2(rows: list[dict]) -> list[dict]:
    """Figure 2's data, one figure per comparable group of complete runs (`groups`, methods swept, as the
    tables'): a series per method and weight-type set (and any other setting its runs differ in but size), a
    point per configuration (`config_of`) at its trainable-parameter count, its seeds summed up as the tables'
    cells are (`aggregate`: `value`, with mean, std, median, min, max and n). GLUE scores x100, as the paper
    plots them. Each figure names its runs, the settings all of them share (`fixed`) and the aggregate."""
    done = [r for r in rows if r["status"] == "complete" and score(r) is not None and own_params(r)]
    figures = []
    for title, rs in groups(done, SWEPT["methods"]):
        how = aggregate(rs[0]["task"])
        lines: dict = {}
        for r in rs:
            config = {k: repr(v) for k, v in r["_config"].items() if _swept(k, SWEPT["methods"])}
            weights = _shape(r)[0] if r["method"].startswith("lora") else ()  # per-type ranks name them too
            rest = tuple(
                sorted((k, v) for k, v in config.items() if not _swept(k, (*SIZE_KEYS, *_NAMED, "trainer.seed")))
            )
            size = r["setting"].partition(" ")[2]  # what sets its size: "q=8,v=8", "l_p=32,l_i=8", "r=8"
            lines.setdefault((r["method"], weights, rest), {}).setdefault((size, config_of(r)), []).append(r)
        series = {}
        for (method, weights, rest), points in lines.items():
            twins = [dict(o[2]) for o in lines if o[:2] == (method, weights) and o[2] != rest]
            label = method + (f" {_label(weights)}" if weights else "") + _differences(dict(rest), twins)
            series[label] = sorted(
                ({"trainable": own_params(pts[0]), **_agg([score(p) for p in pts], how),
                  "size": size, "runs": sorted(p["run"] for p in pts)} for (size, _), pts in points.items()),
                key=lambda p: (p["trainable"], p["runs"]))  # fmt: skip
        model, task = rs[0]["model"], rs[0]["task"]
        metric = f"decoded/{DECODED[task][0]}" if task in DECODED else rs[0]["metric"]
        figures.append({"title": title, "model": model, "task": task, "metric": metric,
                        "x100": task in GLUE or task in DECODED, "aggregate": aggregate_name(task),
                        "subset": rs[0].get("dev_examples"), "fixed": _fixed(rs),
                        "baseline": _pct(next((r["baseline"] for r in rs if r.get("baseline") is not None), None)),
                        "runs": sorted(r["run"] for r in rs), "series": dict(sorted(series.items()))})  # fmt: skip
    return figures


# Settings a figure's caption names when every run in it shares them
_CAPTION_KEYS = ("method.alpha", "method.init", "method.dropout", "trainer.lr", "trainer.epochs",
                 "trainer.batch_size", "trainer.train_limit", "trainer.eval_limit")  # fmt: skip


def _fixed(rows: list[dict]) -> dict:
    """The caption's settings (`_CAPTION_KEYS`) that every run of a figure shares, with their value."""
    out = {}
    for key in _CAPTION_KEYS:
        values = {repr(_value(r, key)) for r in rows}
        if len(values) == 1 and _value(rows[0], key) is not None:
            out[_short(key)] = _value(rows[0], key)
    if len({r.get("steps") for r in rows}) == 1 and rows[0].get("steps") is not None:
        out["steps"] = rows[0]["steps"]
    return out


_NAMED = ("method.name", "method.targets")  # in a series' label already


def _swept(key: str, swept: tuple[str, ...]) -> bool:
    """Whether `key` is one of `swept` or under one: per-type ranks flatten to method.r.q, method.r.v, which
    `method.r` covers; one ending in "." covers a whole section.

    >>> _swept("method.r.q", ("method.r",)), _swept("method.rslora", ("method.r",)), _swept("method.l_p", ("method.",))
    (True, False, True)
    """
    return any(key == s or key.startswith(s if s.endswith(".") else s + ".") for s in swept)


def _differences(mine: dict, twins: list[dict]) -> str:
    """', key=value' for each setting in which a series differs from its twins (same method and weights).

    >>> _differences({"trainer.lr": "0.001", "method.alpha": "8"}, [{"trainer.lr": "0.01", "method.alpha": "8"}])
    ', trainer.lr=0.001'
    """
    differ = sorted({k for t in twins for k in set(t) | set(mine) if t.get(k) != mine.get(k)})
    return "".join(f", {k}={mine.get(k, '-')}" for k in differ)


def collect(runs_dir) -> Runs:
    """One row per run folder under `runs_dir` (or per line of a runs.csv this module wrote); a TablesError
    when there is none. A folder whose config.yaml or metrics.json cannot be read is skipped, and so is a
    metrics.json without a config.yaml beside it: each gets a one-line note (`Runs.notes`), which the tables
    print under themselves."""
    from experiments.runs import RunError

    root = Path(runs_dir)
    if root.is_file() and root.suffix == ".csv":
        return Runs(rows_from_csv(root))
    if not root.is_dir():
        raise TablesError(f"{root} is not a folder; give the folder your runs were written to (e.g. runs/)")
    rows, notes = [], []
    for folder in run_folders(root):
        try:
            rows.append(row_of(folder, root))
        except (RunError, AttributeError, TypeError, ValueError, KeyError) as err:  # a damaged or foreign file
            notes.append(f"skipped {_relative(folder, root)}: {err}")
    lone = sorted(
        _relative(m.parent, root) for m in root.rglob("metrics.json") if not (m.parent / "config.yaml").exists()
    )
    if lone:
        notes.append(f"skipped, a metrics.json without config.yaml beside it: {', '.join(lone)}")
    if not rows:
        raise TablesError(f"no run under {root}: no folder there holds both config.yaml and metrics.json"
                          + "".join(f"; {n}" for n in notes))  # fmt: skip
    return Runs(rows, notes)


def _relative(folder: Path, root: Path) -> str:
    return str(folder.relative_to(root)) if folder != root else "."


# runs.csv column -> the config key it holds: all a runs.csv can say about what makes runs comparable
_CSV_CONFIG = {"model": "model.name", "method": "method.name", "task": "task.name", "r": "method.r",
               "alpha": "method.alpha", "targets": "method.targets", "lr": "trainer.lr",
               "steps": "trainer.max_steps", "batch_size": "trainer.batch_size", "train_size": "task.train_size",
               "seed": "trainer.seed"}  # fmt: skip
_CSV_NUMBERS = ("lr", "best", "final", "baseline", "trainable_pct", "wall_seconds", "train_seconds")


_CSV_COUNTS = ("trainable", "head", "total")


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
        row.setdefault("train_size", None)  # a runs.csv written before these columns
        row.setdefault("head", None)  # a runs.csv written before the column: its trainable counts hold the head
        for key in ("r", "alpha", "steps", "batch_size", "train_size", "seed", "best_step", *_CSV_COUNTS):
            row[key] = int(row[key]) if row.get(key) is not None and row[key].lstrip("-").isdigit() else row.get(key)
        for key in (*_CSV_NUMBERS, *(k for k in row if k.split("/")[0] in _SPLITS)):
            row[key] = float(row[key]) if row.get(key) is not None else None
        rank = row["r"]
        if isinstance(rank, str) and ":" in rank:  # per-type ranks, 'q:4,v:4': the config held a mapping
            rank = {k: int(v) for k, v in (kv.split(":") for kv in rank.split(","))}
        config = {key: row.get(column) for column, key in _CSV_CONFIG.items()}
        config.update({k: _json_cell(file, row, k) for k in row if _is_config_column(k) and row[k] is not None})
        config["method.r"] = rank
        config["method.targets"] = None if isinstance(rank, dict) or not row["targets"] else row["targets"].split(",")
        if not row.get("setting"):  # a runs.csv written before the column: what its columns say (no l_p, l_i)
            row["setting"] = setting({"name": row["method"], "r": rank, "targets": config["method.targets"]})
        row["_config"] = config
    return rows


def _json_cell(file: Path, row: dict, column: str):
    """A config column's value (`config_columns` writes JSON); a TablesError naming the cell if it is not."""
    try:
        return json.loads(row[column])
    except ValueError:
        raise TablesError(
            f"{file}: run {row['run']}'s {column} is {row[column]!r}, not "
            'a JSON value as analysis.tables writes it (e.g. "paper", with its quotes); fix the cell'
        ) from None


def _is_config_column(column: str) -> bool:
    """A runs.csv column holding a config key (`config_columns`): 'method.init', not 'test/BLEU'."""
    return "." in column and "/" not in column


def _pct(x):
    """Our GLUE scores are fractions; the paper prints percentages."""
    return None if x is None else 100 * x


# The paper's GPT-3 tasks: what its tables report (decoded at the end of a run; the first is a table's cell)
DECODED = {"wikisql": ("lf_accuracy", "ex_accuracy"), "mnli_gen": ("accuracy",),
           "samsum": ("ROUGE-1", "ROUGE-2", "ROUGE-L")}  # fmt: skip
_SPLITS = ("train", "dev", "test", "test_seen", "test_unseen")  # the split a test score is prefixed with


def decoded(row: dict, name: str) -> float | None:
    """A decoded score of a run ("dev/lf_accuracy" for `name` lf_accuracy), whichever split was decoded."""
    found = (v for k, v in row.items() if k.split("/")[0] in _SPLITS and k.split("/", 1)[-1] == name)
    return next((v for v in found if v is not None), None)  # a runs.csv has every run's columns, most empty


def score(row: dict, name: str | None = None) -> float | None:
    """What a table shows for a run (the module's docstring): x100 for GLUE and the GPT-3 tasks.

    >>> score({"task": "sst2", "best": 0.9}), score({"task": "e2e", "best": 1.5})
    (90.0, 1.5)
    >>> score({"task": "wikisql", "best": 1.2, "dev/lf_accuracy": 0.25, "dev/ex_accuracy": 0.5})
    25.0
    """
    if row["task"] in DECODED:
        return _pct(decoded(row, name or DECODED[row["task"]][0]))
    return _pct(row["best"]) if row["task"] in GLUE else row["best"]


def score_name(task: str) -> str:
    """What `score` is for `task`, for headings and axes.

    >>> score_name("wikisql"), score_name("rte"), score_name("e2e")
    ('decoded lf_accuracy x100', 'best dev score x100', 'best dev score as measured')
    """
    if task in DECODED:
        return f"decoded {DECODED[task][0]} x100"
    return "best dev score " + ("x100" if task in GLUE else "as measured")


def aggregate(task: str | None) -> str:
    """How a cell of `task` sums up its seeds under `AGGREGATE`: "median" (with the range) or "mean" (± std).

    >>> aggregate("rte"), aggregate("e2e"), aggregate("wikisql")
    ('median', 'mean', 'mean')
    """
    if AGGREGATE in ("median", "mean"):
        return AGGREGATE
    return "median" if task in GLUE else "mean"


def aggregate_name(task: str | None) -> str:
    """The aggregate, as a heading names it."""
    return "median over seeds [min, max]" if aggregate(task) == "median" else "mean ± std over seeds"


def _agg(values: list[float], how: str = "mean") -> dict:
    """The numbers given summed up: `value` is their median or mean (`how`), with mean, standard deviation
    (0 for one value), median, min, max and count beside it."""
    values = [v for v in values if v is not None]
    if not values:
        return {"value": None, "how": how, "mean": None, "std": None, "median": None, "min": None, "max": None, "n": 0}
    mean, median = statistics.fmean(values), statistics.median(values)
    return {"value": median if how == "median" else mean, "how": how, "mean": mean,
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "median": median,
            "min": min(values), "max": max(values), "n": len(values)}  # fmt: skip


def fmt_score(a: dict) -> str:
    """'81.3 ± 0.4 (n=3)' (mean) or '81.3 [80.9, 81.6] (n=3)' (median, range); '-' when there is no run.

    >>> fmt_score(_agg([81.25])), fmt_score(_agg([])), fmt_score(_agg([1.0, 2.0, 4.0], "median"))
    ('81.2', '-', '2.000 [1.000, 4.000] (n=3)')
    >>> fmt_score({**_agg([0.0, 8.8, 17.61], "median"), "decimals": 1})  # an x100 score near 0 (CoLA's MCC)
    '8.8 [0.0, 17.6] (n=3)'
    """
    if not a["n"]:
        return "-"
    decimals = a.get("decimals", 1 if abs(a["value"]) >= 10 else 3)  # x100 scores, or losses (when not told)
    f = lambda v: f"{v:.{decimals}f}"  # noqa: E731
    if a["n"] == 1:
        return f(a["value"])
    if a.get("how") == "median":
        return f"{f(a['median'])} [{f(a['min'])}, {f(a['max'])}] (n={a['n']})"
    return f"{f(a['mean'])} ± {f(a['std'])} (n={a['n']})"


# --- a cell is one configuration -----------------------------------------------------------------------------


def config_of(row: dict) -> tuple:
    """What makes a run's configuration: its whole config but for the seed and housekeeping keys. Two runs
    share a cell only when this is equal."""
    return _config_key(row, (*_HOUSEKEEPING, "trainer.seed"))


def _lower_is_better(metric: str | None) -> bool:
    return any(w in (metric or "") for w in ("loss", "perplexity"))


def cell(rows: list[dict], name: str | None = None) -> dict:
    """A table cell from the runs that land in it: its runs split by configuration (`config_of`); the one with
    the best mean dev score (the run's selection metric, as the paper tunes its learning rate on dev) is
    shown, the others come back in "others" with their own aggregates, never averaged in.

    Returns {"ours": aggregate of the chosen configuration's `score`, "runs": its runs, "config": the values in
    which it differs from the others (empty when there is one), "others": [{"config", "ours", "runs"}, ...]}."""
    configs: dict = {}
    for r in rows:
        configs.setdefault(config_of(r), []).append(r)
    how = aggregate(rows[0]["task"]) if rows else "mean"

    def dev(rs):
        values = [r["best"] for r in rs if isinstance(r.get("best"), int | float)]
        mean = statistics.fmean(values) if values else float("nan")
        sign = 1 if _lower_is_better(rs[0].get("metric")) else -1
        return (not values, sign * mean if values else 0.0, sorted(r["run"] for r in rs))

    ranked = sorted(configs.values(), key=dev)
    differ = _differing([dict(config_of(rs[0])) for rs in ranked])
    decimals = 3 if _lower_is_better(rows[0].get("metric") if rows else None) else 1  # losses, or x100 scores
    entries = [{"config": {k: _value(rs[0], k) for k in differ},
                "ours": {**_agg([score(r, name) for r in rs], how), "decimals": decimals},
                "runs": sorted(r["run"] for r in rs), "rows": rs} for rs in ranked]  # fmt: skip
    if not entries:
        return {"ours": _agg([], how), "runs": [], "config": {}, "others": [], "rows": []}
    return {**entries[0], "others": entries[1:]}


def _differing(configs: list[dict]) -> list[str]:
    """The keys in which the configurations given differ (a key one lacks counts as differing)."""
    keys = {k for c in configs for k in c}
    return sorted(k for k in keys if len({c.get(k) for c in configs}) > 1)


def _value(row: dict, key: str):
    return row.get("_config", {}).get(key)


def _short(key: str) -> str:
    """A config key as a cell names it: its section dropped (trainer.lr -> lr, method.alpha -> alpha)."""
    return key.split(".", 1)[-1]


def fmt_cell(c: dict) -> str:
    """A cell's aggregate, and the values that chose it among the configurations it had."""
    named = ", ".join(f"{_short(k)}={v}" for k, v in c["config"].items())
    return fmt_score(c["ours"]) + (f" [{named}]" if named and c["ours"]["n"] else "")


def others_note(cells: list[tuple[str, dict]]) -> str:
    """The lines under a table for its cells with more than one configuration: each one not shown, with its
    own aggregate and runs."""
    lines = [f"- {label}: {', '.join(f'{_short(k)}={v}' for k, v in o['config'].items())}: {fmt_score(o['ours'])}"
             f" (runs {', '.join(o['runs'])})" for label, c in cells for o in c.get("others", [])]  # fmt: skip
    if not lines:
        return ""
    return (
        "\n\nOther configurations in these cells (each cell shows the one with the best mean dev score; "
        "these are not averaged in):\n" + "\n".join(lines)
    )


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
    for targets in [*TABLE5, *(t for t in by_targets if t not in TABLE5)]:
        mine = by_targets.get(targets, [])
        paper = TABLE5.get(targets, (None, None, None))
        c = cell(mine)
        out.append({"weight_type": _label(targets), "r_paper": paper[0],
                    "r_ours": ",".join(sorted({str(_shape(r)[1]) for r in c["rows"]})) or "-",
                    "trainable": sorted({r["trainable"] for r in c["rows"]}) or None,
                    "ours": c["ours"], "cell": c,
                    "paper_wikisql": paper[1], "paper_mnli": paper[2]})  # fmt: skip
    return out


def table6(rows: list[dict], model=None, task=None) -> list[dict]:
    """Table 6: rank r (1, 2, 4, 8, 64, and any other run) by targets set, the paper's rows beside ours."""
    runs = _lora_rows(rows, model, task)
    cells: dict = {}
    for r in runs:
        cells.setdefault(_shape(r), []).append(r)
    ranks = sorted({*TABLE6_RANKS, *(rk for _, rk in cells if rk is not None)})
    out = []
    for targets in [*TABLE6, *sorted({t for t, _ in cells if t not in TABLE6})]:
        paper = TABLE6.get(targets)
        row = {"weight_type": _label(targets)}
        for rk in ranks:
            i = TABLE6_RANKS.index(rk) if rk in TABLE6_RANKS else None
            c = cell(cells.get((targets, rk), []))
            row[f"r={rk}"] = {"ours": c["ours"], "cell": c,
                              "paper_wikisql": paper[0][i] if paper and i is not None else None,
                              "paper_mnli": paper[1][i] if paper and i is not None else None}  # fmt: skip
        out.append(row)
    return out


def methods_table(rows: list[dict]) -> list[dict]:
    """Tables 2/3 style: one row per model x method setting (method, rank, targets, ...), one column per task;
    a cell is one configuration (`cell`)."""
    groups: dict = {}
    for r in (r for r in rows if r["status"] == "complete"):
        key = (r["model"], r["method"], r.get("setting") or "")
        groups.setdefault(key, {}).setdefault(r["task"], []).append(r)
    out = []
    for (model, method, _), tasks in sorted(groups.items()):
        first = next(iter(tasks.values()))[0]
        row = {"model": model, "method": method, "r": "" if first["r"] is None else str(first["r"]),
               "targets": first["targets"],
               "trainable": sorted({own_params(r) for rs in tasks.values() for r in rs})}  # fmt: skip
        for task, rs in tasks.items():
            c = cell(rs)
            how = aggregate(task)
            row[task] = {"ours": c["ours"], "cell": c,
                         "test": {k: _agg([r.get(k) for r in c["rows"]], how) for k in rs[0] if k.startswith("test/")},
                         "paper_roberta_base": TABLE2_ROBERTA_BASE.get(method, {}).get(task)}  # fmt: skip
        out.append(row)
    return out


def table2(rows: list[dict]) -> list[dict]:
    """The paper's Table 2 across tasks: complete GLUE runs split by model and by everything but the method, its
    lr, the seed and the task (so one table holds one protocol); in each, a row per method setting with its
    trainable count and learning rate(s), a cell per task (`cell`), the average of the cells' values over the
    tasks (when every task has one), and the majority-class line each task's runs have to clear. Only groups
    with two tasks or more: a single task is the Methods table's."""
    glue = [r for r in rows if r["status"] == "complete" and r["task"] in GLUE]
    found: dict = {}
    for r in glue:
        found.setdefault((r["model"], _config_key(r, (*_HOUSEKEEPING, *SWEPT["methods"], "task."))), []).append(r)
    out = []
    for (model, _), rs in sorted(found.items(), key=lambda kv: kv[0][0]):
        tasks = [t for t in GLUE if any(r["task"] == t for r in rs)]
        if len(tasks) < 2:
            continue
        lines: dict = {}
        for r in rs:
            lines.setdefault((r["method"], r["setting"]), {}).setdefault(r["task"], []).append(r)
        methods = []
        for (method, setting_), by_task in lines.items():
            cells = {t: cell(by_task[t]) for t in tasks if t in by_task}
            values = [c["ours"]["value"] for c in cells.values()]
            chosen = [r for c in cells.values() for r in c["rows"]]
            methods.append({"method": method, "setting": setting_, "cells": cells,
                            "average": statistics.fmean(values) if len(values) == len(tasks) else None,
                            "trainable": sorted({own_params(r) for r in chosen}),
                            "lr": sorted({r["lr"] for r in chosen}),
                            "below_baseline": sorted(r["run"] for r in chosen if _not_above_baseline(r))})  # fmt: skip
        methods.sort(key=lambda m: (-max(m["trainable"]), m["method"], m["setting"]))
        baseline = {t: next((_pct(r["baseline"]) for r in rs if r["task"] == t and r.get("baseline") is not None),
                            None) for t in tasks}  # fmt: skip
        out.append({"model": model, "tasks": tasks, "methods": methods, "baseline": baseline,
                    "runs": sorted(r["run"] for r in rs)})  # fmt: skip
    return out


def own_params(row: dict) -> int | None:
    """A run's trainable parameters without its task head, as the paper counts a method (Table 2's first column,
    Figure 2's axis): the head (BERT's pooler and classifier: 148,610 on MiniLM-L6) trains with every method.

    >>> own_params({"trainable": 222_338, "head": 148_610}), own_params({"trainable": 74_498, "head": None})
    (73728, 74498)
    """
    if row.get("trainable") is None:
        return None
    return row["trainable"] - (row.get("head") or 0)


def _not_above_baseline(row: dict) -> bool:
    return row.get("baseline") is not None and row.get("best") is not None and row["best"] <= row["baseline"]


def table18(rows: list[dict]) -> list[dict]:
    """Appendix H.2 / Table 18 (GPT-2 Medium, E2E, r from 1 to 1024): our rows by rank where runs exist,
    with the paper's (val loss, BLEU, NIST, METEOR, ROUGE_L, CIDEr) for that rank beside them."""
    runs = [r for r in rows if r["method"] == "lora" and r["task"] == "e2e" and r["status"] == "complete"]
    by_rank: dict = {}
    for r in runs:
        by_rank.setdefault((r["model"], str(r["r"])), []).append(r)
    out = []
    for (model, rank), rs in sorted(by_rank.items(), key=lambda kv: (kv[0][0], _num(kv[0][1]))):
        c = cell(rs)
        tests = sorted({k for r in c["rows"] for k in r if k.startswith("test/")})
        out.append({"model": model, "r": rank, "dev_loss": c["ours"], "cell": c,
                    **{k: _agg([r.get(k) for r in c["rows"]], aggregate("e2e")) for k in tests},
                    "paper": TABLE18.get(_num(rank))})  # fmt: skip
    return out


def gpt3_methods(rows: list[dict], printed: tuple[Row, ...] = TABLE4) -> list[dict]:
    """Tables 4 and 15 (`printed`: `paper.TABLE4` or `paper.TABLE15`) for one comparable group of runs of one
    GPT-3 task: a line per printed row, its method, GPT-3 parameters and score beside our mean over seeds of
    the setting it stands for (a printed row that stands for two settings gets a line for each one run), then
    a line per setting of ours the paper does not print. SAMSum's cells are ROUGE-1, -2 and -L."""
    task = rows[0]["task"]
    names = DECODED[task] if task == "samsum" else DECODED[task][:1]
    runs: dict = {}
    for r in rows:
        if r["status"] == "complete":
            runs.setdefault(r["setting"], []).append(r)

    def line(method, params, setting_, paper):
        c = cell(runs.get(setting_, []))
        mine = c["rows"]
        return {"method": method, "gpt3_params": params, "setting": setting_, "paper": paper, "cell": c,
                "trainable": sorted({r["trainable"] for r in mine}), "runs": sorted(r["run"] for r in mine),
                "ours": {n: _agg([score(r, n) for r in mine], aggregate(task)) for n in names}}  # fmt: skip

    out = []
    for p in (p for p in printed if task in p.scores):
        ran = [s for s in p.settings if s in runs] or [" or ".join(p.settings)]
        out.extend(line(p.method, p.gpt3_params, s, p.scores[task]) for s in ran)
    shown = {s for p in printed for s in p.settings}
    out.extend(line(rs[0]["method"], None, s, None) for s, rs in sorted(runs.items()) if s not in shown)
    return out


def table16(rows: list[dict]) -> list[dict]:
    """Table 16 for one comparable group of MNLI-m runs that differ in training-set size (and method): a cell
    per size in `paper.TABLE16_SIZES` (None: the whole set), our mean over seeds beside the paper's GPT-3 175B.
    A method's line holds the runs of the paper's setting for each size (`paper.TABLE17`: PrefixEmbed's l_p
    grows with n); any other setting of it gets a line of its own, so no cell averages two settings. Only lines
    with a low-data run are shown: a full-data run alone (Tables 4 and 15) is not a Table 16 line."""
    lines: dict = {}
    for r in (r for r in rows if r["status"] == "complete" and r["task"] == "mnli_gen"):
        own = None if TABLE17.get((r["method"], r["train_size"])) == r["setting"] else r["setting"]
        lines.setdefault((r["method"], own), {}).setdefault(r["train_size"], []).append(r)
    order = {m: i for i, m in enumerate(TABLE16)}
    out = []
    for (method, own), sizes in sorted(
        lines.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][0], kv[0][1] or "")
    ):
        if set(sizes) == {None}:
            continue
        paper = TABLE16.get(method) if own is None else None
        out.append({"method": method, "setting": own or "the paper's (Table 17)",
                    "cells": {n: {**_cell_entry(cell(sizes.get(n, []))),
                                  "paper": paper[i] if paper else None} for i, n in enumerate(TABLE16_SIZES)},
                    "runs": sorted(r["run"] for rs in sizes.values() for r in rs)})  # fmt: skip
    return out


def _cell_entry(c: dict) -> dict:
    return {"ours": c["ours"], "cell": c}


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
             fmt_cell(r["cell"]), r["paper_wikisql"], r["paper_mnli"]] for r in t5]  # fmt: skip
    return markdown(head, body) + others_note([(r["weight_type"], r["cell"]) for r in t5])


def table6_markdown(t6: list[dict]) -> str:
    ranks = [k for k in t6[0] if k.startswith("r=")] if t6 else []
    body = []
    for r in t6:
        cells = [r[k] for k in ranks]
        body.append([r["weight_type"], *(fmt_cell(c["cell"]) for c in cells)])
        body.append(["paper WikiSQL / MNLI", *(_pair(c) for c in cells)])
    others = [(f"{r['weight_type']} {k}", r[k]["cell"]) for r in t6 for k in ranks]
    return markdown(["weight type", *ranks], body) + others_note(others)


def _pair(c: dict) -> str | None:
    return None if c["paper_wikisql"] is None else f"{c['paper_wikisql']} / {c['paper_mnli']}"


def methods_markdown(mt: list[dict]) -> str:
    tasks = sorted({k for r in mt for k in r if k not in ("model", "method", "r", "targets", "trainable")})
    body = []
    for r in mt:
        cells = [r.get(t) for t in tasks]
        body.append([r["model"], r["method"], r["r"], r["targets"], ",".join(map(str, r["trainable"])),
                     *(fmt_cell(c["cell"]) if c else None for c in cells)])  # fmt: skip
    paper = [[f"paper RoBERTa-base ({m})", m, None, None, None,
              *(TABLE2_ROBERTA_BASE[m].get(t) for t in tasks)] for m in TABLE2_ROBERTA_BASE]  # fmt: skip
    label = lambda r: " ".join(x for x in (r["method"], r["r"] and f"r={r['r']}", r["targets"]) if x)
    others = [(f"{label(r)} on {t}", r[t]["cell"]) for r in mt for t in tasks if r.get(t)]
    head = ["model", "method", "r", "targets", "trainable (no head)", *tasks]
    return markdown(head, body + paper) + others_note(others)


def table2_markdown(t2: dict) -> str:
    """One Table 2 as markdown: ours (cells `fmt_score`, x100), the paper's RoBERTa-base rows where it printed
    the method, and the majority-class line; a method's runs at or under that line are named below."""
    tasks = t2["tasks"]
    head = ["method", "trainable (no head)", "lr", *tasks, "avg"]
    body = [[m["setting"] or m["method"], "/".join(f"{n:,}" for n in m["trainable"]),
             "/".join(f"{lr:g}" for lr in m["lr"]),
             *(fmt_score(m["cells"][t]["ours"]) if t in m["cells"] else None for t in tasks),
             None if m["average"] is None else f"{m['average']:.1f}"] for m in t2["methods"]]  # fmt: skip
    for method in dict.fromkeys(m["method"] for m in t2["methods"]):
        printed = [TABLE2_ROBERTA_BASE.get(method, {}).get(t) for t in tasks]
        if any(v is not None for v in printed):
            avg = statistics.fmean(printed) if None not in printed else None
            body.append([f"paper RoBERTa-base ({method})", None, None, *printed,
                         None if avg is None else f"{avg:.1f}"])  # fmt: skip
    base = [t2["baseline"][t] for t in tasks]
    if any(v is not None for v in base):
        body.append(["majority class (train's most common label; STS-B: its mean)", None, None,
                     *(None if v is None else f"{v:.1f}" for v in base), None])  # fmt: skip
    notes = [f"- {m['setting'] or m['method']}: at or under the majority-class line: {', '.join(m['below_baseline'])}"
             for m in t2["methods"] if m["below_baseline"]]  # fmt: skip
    others = others_note([(f"{m['setting'] or m['method']} on {t}", c) for m in t2["methods"]
                          for t, c in m["cells"].items()])  # fmt: skip
    return markdown(head, body) + ("\n\n" + "\n".join(notes) if notes else "") + others


def gpt3_methods_markdown(lines: list[dict]) -> str:
    """Table 4 or 15 as markdown: ours beside the paper's GPT-3 175B, SAMSum's three ROUGE scores in one cell."""
    head = ["method", "setting (ours)", "trainable (ours)", "ours", "paper GPT-3", "paper GPT-3 params"]
    body = []
    for x in lines:
        ours = " / ".join(fmt_score(a) for a in x["ours"].values()) if any(a["n"] for a in x["ours"].values()) else None
        named = ", ".join(f"{_short(k)}={v}" for k, v in x["cell"]["config"].items())
        ours = f"{ours} [{named}]" if ours and named else ours
        paper = "/".join(map(str, x["paper"])) if isinstance(x["paper"], tuple) else x["paper"]
        body.append([x["method"], x["setting"], ",".join(map(str, x["trainable"])) or None, ours, paper,
                     x["gpt3_params"]])  # fmt: skip
    return markdown(head, body) + others_note([(x["setting"], x["cell"]) for x in lines])


def table16_markdown(t16: list[dict]) -> str:
    head = ["method", "setting", *(f"MNLI-{n}" if n else "MNLI (all)" for n in TABLE16_SIZES)]
    body = []
    for x in t16:
        cells = x["cells"].values()
        body.append([x["method"], x["setting"], *(fmt_cell(c["cell"]) for c in cells)])
        if any(c["paper"] is not None for c in cells):
            body.append([f"paper GPT-3 ({x['method']})", None, *(c["paper"] for c in cells)])
    others = [(f"{x['method']} n={n or 'all'}", c["cell"]) for x in t16 for n, c in x["cells"].items()]
    return markdown(head, body) + others_note(others)


def _section(heading: str, table: str, runs: list[str], source: str) -> str:
    """A table under its heading, with the runs in its cells and where the paper's numbers are printed."""
    return f"## {heading}\n\n{table}\n\nRuns: {', '.join(runs) or 'none'}.\nPaper: {PAPER}, {source}."


def _gpt3_markdown(rows: list[dict]) -> list[str]:
    """Tables 4, 15 and 16 for the runs of the paper's GPT-3 tasks, one table per comparable group."""
    parts = []
    full = [r for r in rows if r["task"] in DECODED and r["train_size"] is None]
    for title, rs in groups(full, SWEPT["methods"]):
        task, done = rs[0]["task"], sorted(r["run"] for r in rs if r["status"] == "complete")
        ours = " / ".join(DECODED["samsum"]) + " x100" if task == "samsum" else score_name(task)
        ours += ", " + aggregate_name(task)
        parts.append(
            _section(
                f"Table 4 (methods on GPT-3's tasks): {title}; ours: {ours}",
                gpt3_methods_markdown(gpt3_methods(rs, TABLE4)),
                done,
                "Table 4 (GPT-3 175B)",
            )
        )
        beyond = {r["setting"] for r in rs} - {s for p in TABLE4 for s in p.settings}
        if task != "samsum" and beyond & {s for p in TABLE15 for s in p.settings}:
            parts.append(
                _section(
                    f"Table 15 (every method's size on GPT-3's tasks): {title}; ours: {ours}",
                    gpt3_methods_markdown(gpt3_methods(rs, TABLE15)),
                    done,
                    "Table 15 (GPT-3 175B)",
                )
            )
    for title, rs in groups([r for r in rows if r["task"] == "mnli_gen"], SWEPT["table16"]):
        if t16 := table16(rs):
            parts.append(_section(f"Table 16 (MNLI-m from n training examples): {title}; ours: "
                                  f"{score_name('mnli_gen')}, {aggregate_name('mnli_gen')}", table16_markdown(t16),
                                  sorted(run for x in t16 for run in x["runs"]),
                                  "Table 16 (GPT-3 175B; its Table 17 the settings for each n)"))  # fmt: skip
    return parts


def all_markdown(rows: list[dict]) -> str:
    """Every table the rows allow, each under a heading that says what the paper's columns are; one table per
    comparable group of runs (`groups`), its title naming model, task and metric and the runs it holds."""
    parts = [f"## Runs ({len(rows)})\n\n" + runs_markdown(rows)]
    for title, rs in groups([r for r in rows if r["task"] not in DECODED], SWEPT["methods"]):
        task = rs[0]["task"]
        scale = "x100" if task in GLUE else "as measured"
        table = methods_markdown(methods_table(rs))
        parts.append(f"## Methods (Tables 2/3 style): {title}, {scale}, {aggregate_name(task)}; {len(rs)} runs\n\n"
                     f"{table}\n\n{CELL_RULE}\nPaper: {PAPER}, Table 2 (RoBERTa-base).")  # fmt: skip
    for t2 in table2(rows):
        parts.append(f"## Table 2 (methods x GLUE tasks): {t2['model']}, best dev score x100, "
                     f"{aggregate_name('sst2')}, average over the tasks; {len(t2['runs'])} runs\n\n"
                     f"{table2_markdown(t2)}\n\n{CELL_RULE}\nPaper: {PAPER}, Table 2 (RoBERTa-base; MRPC and "
                     "RTE accuracy, CoLA Matthews correlation, STS-B Pearson, as ours).")  # fmt: skip
    parts.extend(_gpt3_markdown(rows))
    # the groups of Figure 2 and the Methods table: a learning rate or alpha is a configuration of a cell
    for title, rs in groups(_lora_rows(rows), SWEPT["methods"]):
        task = rs[0]["task"]
        scale = "ours " + (score_name(task) if task in DECODED else "x100" if task in GLUE else "as measured")
        scale += ", " + aggregate_name(task)
        names = ", ".join(r["run"] for r in rs)
        if table5_runs := [r for r in rs if _units(r) == 8]:
            parts.append(f"## Table 5 (weight types at a fixed budget): {title}, {scale}\n\n"
                         + table5_markdown(table5(table5_runs)) + f"\n\n{CELL_RULE}\nRuns: {names}.\n"
                         f"Paper: {PAPER}, Table 5 (GPT-3 175B, 18M parameters).")  # fmt: skip
        # a rank study (or, beyond GLUE, the table a task's readers look for); one GLUE rank, as a Table 2 sweep's
        # LoRA runs, is no rank study: its Methods table and Table 2 show it
        if len({str(r.get("r")) for r in rs}) > 1 or task not in GLUE:
            parts.append(f"## Table 6 (rank r): {title}, {scale}\n\n" + table6_markdown(table6(rs))
                         + f"\n\n{CELL_RULE}\nRuns: {names}.\nPaper: {PAPER}, Table 6 (GPT-3 175B).")  # fmt: skip
    t18 = table18(rows)
    if t18:
        parts.append(
            "## Table 18 (H.2, E2E by rank; the paper's GPT-2 M after 26,000 steps beside ours; "
            f"{aggregate_name('e2e')})\n\n"
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
            + others_note([(f"r={r['r']}", r["cell"]) for r in t18])
        )
    parts.extend(_left_out(rows))
    return "\n\n".join(parts) + "\n"


CELL_RULE = ("A cell is one configuration (the whole config equal but for the seed); where a row had several, "
             "the one with the best mean dev score is shown with the values that tell it apart.")  # fmt: skip


def _left_out(rows: list[dict]) -> list[str]:
    """Notes under the tables: runs that are not in them (not complete) and folders `collect` skipped."""
    notes = list(getattr(rows, "notes", []))
    stopped = [f"{r['run']} ({r['status']})" for r in rows if r["status"] != "complete"]
    if stopped:
        notes.insert(0, f"left out of the tables, not complete: {', '.join(stopped)}")
    return [f"Note: {n}." for n in notes]


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
    config = config_columns(rows)
    rows = [{**{k: v for k, v in r.items() if not k.startswith("_")}, **config[i]} for i, r in enumerate(rows)]
    cols = [*COLUMNS, *sorted({k for r in rows for k in r} - set(COLUMNS))]
    with atomic_path(files[0]) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    write_text(json.dumps(rows, indent=1) + "\n", files[1])
    write_text(text, files[2])
    return files


def config_columns(rows: list[dict]) -> list[dict]:
    """Per row, the config keys in which the rows differ and no runs.csv column holds yet (method.init,
    trainer.eval_limit, trainer.train_limit, ...), each as JSON (a key a run's config lacks: no value), so a
    saved runs.csv regroups exactly as the run folders do (`rows_from_csv`)."""
    configs = [r.get("_config", {}) for r in rows]
    covered = tuple(_CSV_CONFIG.values())
    named = {k for c in configs for k in c if k in _CAPTION_KEYS}  # what a figure's caption names
    keys = [k for k in sorted({*_differing([{k: repr(v) for k, v in c.items()} for c in configs]), *named})
            if not _swept(k, (*_HOUSEKEEPING, *covered))]  # fmt: skip
    return [{k: json.dumps(c[k]) if k in c else None for k in keys} for c in configs]


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
    p.add_argument("--aggregate", choices=("paper", "median", "mean"), default=AGGREGATE,
                   help="how a cell sums up its seeds: paper (GLUE median [range], others mean ± std), median "
                        "or mean everywhere")  # fmt: skip
    args = p.parse_args(argv)
    set_aggregate(args.aggregate)
    try:
        rows = collect(args.runs_dir)
    except TablesError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    print(all_markdown(rows))  # its last lines: the notes on runs left out and folders skipped
    beside = args.runs_dir.parent if args.runs_dir.is_file() else args.runs_dir  # RUNS_DIR may be a runs.csv
    for f in save(rows, args.out or beside):
        print(f"saved {f}")


def set_aggregate(how: str):
    """`AGGREGATE` for the tables and figures that follow ("paper", "median" or "mean")."""
    global AGGREGATE
    if how not in ("paper", "median", "mean"):
        raise TablesError(f"aggregate {how!r} is not one of paper, median, mean")
    AGGREGATE = how


if __name__ == "__main__":
    main()
