"""Table 2 across tasks: hand-written run folders of three methods on two GLUE tasks, every printed number
checked against a value computed by hand; runs of another protocol stay out; a run at the majority-class line
is named."""

import json

import pytest
import yaml

from analysis import tables
from analysis.paper import TABLE2_ROBERTA_BASE

METRIC = {"sst2": "accuracy", "cola": "matthews"}
BASELINE = {"sst2": 0.509, "cola": 0.0}  # the runs' metrics.json "baseline"
LORA = {"name": "lora", "r": 8, "alpha": 8, "targets": ["q", "v"]}


def write_run(root, method, task, seed, best, *, lr=1e-3, steps=300, trainable=1000):
    folder = root / f"{method}-{task}-lr{lr:g}-steps{steps}-s{seed}"
    folder.mkdir(parents=True)
    cfg = {"model": {"name": "minilm_l6"}, "task": {"name": task, "max_length": 128},
           "method": LORA if method == "lora" else {"name": method},
           "trainer": {"seed": seed, "lr": lr, "max_steps": steps, "batch_size": 32}}  # fmt: skip
    metric = f"dev/{METRIC[task]}"
    metrics = {"status": "complete", "model": "minilm_l6", "method": method, "task": task, "metric": metric,
               "best": {metric: best, "step": steps}, "final": {metric: best, "step": steps}, "steps": steps,
               "baseline": {metric: BASELINE[task]}, "params": {"trainable": trainable, "total": 10_000}}  # fmt: skip
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    root = tmp_path_factory.mktemp("table2")
    scores = {  # method -> task -> seeds' best dev score
        "full_ft": {"sst2": (0.90, 0.88, 0.86), "cola": (0.40, 0.30, 0.35)},
        "lora": {"sst2": (0.85, 0.80, 0.83), "cola": (0.20, 0.25, 0.10)},
        "bitfit": {"sst2": (0.60, 0.50, 0.55), "cola": (0.0, -0.02, 0.05)},
    }
    for method, by_task in scores.items():
        for task, bests in by_task.items():
            for seed, best in enumerate(bests):
                write_run(root, method, task, seed, best, lr=1e-4 if method == "full_ft" else 1e-3,
                          trainable={"full_ft": 22_000_000, "lora": 74_498, "bitfit": 26_882}[method])  # fmt: skip
    write_run(root, "lora", "sst2", 0, 0.99, steps=100)  # another budget: another protocol, another table
    return tables.collect(root)


def test_table2_cells_are_seed_medians_and_the_average_is_over_tasks(rows):
    (t2,) = tables.table2(rows)  # the 100-step run is alone on its task: no table of its own
    assert t2["tasks"] == ["cola", "sst2"] and len(t2["runs"]) == 18
    by = {m["method"]: m for m in t2["methods"]}
    assert [m["method"] for m in t2["methods"]] == ["full_ft", "lora", "bitfit"]  # most parameters first
    assert by["lora"]["cells"]["sst2"]["ours"]["median"] == pytest.approx(83.0)
    assert (by["lora"]["cells"]["cola"]["ours"]["min"], by["lora"]["cells"]["cola"]["ours"]["max"]) == (
        pytest.approx(10.0), pytest.approx(25.0))  # fmt: skip
    assert by["full_ft"]["average"] == pytest.approx((88.0 + 35.0) / 2)
    assert by["full_ft"]["lr"] == [1e-4] and by["lora"]["trainable"] == [74_498]
    assert t2["baseline"] == {"cola": 0.0, "sst2": pytest.approx(50.9)}
    # bitfit: cola seeds 0 (0.0) and 1 (-0.02) do not clear the MCC of 0, sst2 seed 1 (50.0) not 50.9
    assert by["bitfit"]["below_baseline"] == [
        "bitfit-cola-lr0.001-steps300-s0",
        "bitfit-cola-lr0.001-steps300-s1",
        "bitfit-sst2-lr0.001-steps300-s1",
    ]
    assert by["lora"]["below_baseline"] == []


def test_table2_markdown_prints_ours_the_papers_rows_and_the_majority_line(rows):
    text = tables.all_markdown(rows)
    section = text[text.index("## Table 2") :].split("\n## ")[0]
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in section.splitlines()
             if line.startswith("| ")}  # fmt: skip
    assert lines["lora q=8,v=8"] == ["74,498", "0.001", "20.0 [10.0, 25.0] (n=3)", "83.0 [80.0, 85.0] (n=3)", "51.5"]
    paper = TABLE2_ROBERTA_BASE["lora"]
    assert lines["paper RoBERTa-base (lora)"] == ["-", "-", f"{paper['cola']}", f"{paper['sst2']}",
                                                  f"{(paper['cola'] + paper['sst2']) / 2:.1f}"]  # fmt: skip
    assert lines["majority class (train's most common label; STS-B: its mean)"] == ["-", "-", "0.0", "50.9", "-"]
    assert "- bitfit: at or under the majority-class line: bitfit-cola-lr0.001-steps300-s0" in section
    assert "18 runs" in section


def test_figure2_of_each_task_draws_the_majority_class_line(rows, tmp_path):
    from analysis import figures

    by_task = {f["task"]: f for f in tables.figure2(rows) if f["fixed"].get("steps") == 300}
    assert by_task["sst2"]["baseline"] == pytest.approx(50.9) and by_task["cola"]["baseline"] == 0.0
    assert sorted(by_task["sst2"]["series"]) == ["bitfit", "full_ft", "lora W_q, W_v"]
    png = figures.score_vs_params(by_task["sst2"], tmp_path / "f.png")
    assert png.stat().st_size > 10_000 and json.loads(png.with_suffix(".json").read_text())["baseline"] == 50.9
