"""Tables never mix runs that must not be mixed: a fixture folder of hand-written run folders mixing models,
tasks, metrics, learning rates and seeds, each cell checked against a value computed by hand."""

import json

import pytest
import yaml

from analysis import tables


def fake_run(root, name, model, task, best, *, r=8, seed=0, lr=1e-3, test=None):
    folder = root / name
    folder.mkdir(parents=True)
    metric = "dev/loss" if task == "e2e" else "dev/accuracy"
    cfg = {"model": {"name": model}, "method": {"name": "lora", "r": r, "alpha": 8, "targets": ["q", "v"]},
           "task": {"name": task}, "trainer": {"seed": seed, "lr": lr, "max_steps": 100, "batch_size": 8,
                                               "output_dir": str(folder)}}  # fmt: skip
    metrics = {"status": "complete", "model": model, "method": "lora", "task": task, "metric": metric,
               "best": {metric: best, "step": 100}, "final": {metric: best, "step": 100}, "steps": 100,
               "params": {"trainable": 100 * r, "total": 10_000}, **({"test": test} if test else {})}  # fmt: skip
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def mixed(tmp_path):
    fake_run(tmp_path, "rte-s0", "tiny_bert", "rte", 0.60)
    fake_run(tmp_path, "rte-s1", "tiny_bert", "rte", 0.70, seed=1)
    fake_run(tmp_path, "rte-r4", "tiny_bert", "rte", 0.65, r=4)
    fake_run(tmp_path, "rte-lr", "tiny_bert", "rte", 0.55, lr=1e-2)  # another protocol: never averaged in
    fake_run(tmp_path, "sst2", "tiny_bert", "sst2", 0.90)
    fake_run(tmp_path, "e2e", "tiny_gpt2", "e2e", 2.0, test={"test/BLEU": 0.5, "test/NIST": 3.0})
    return tables.collect(tmp_path)


def test_groups_split_models_tasks_metrics_and_protocols(mixed):
    found = {title: sorted(r["run"] for r in rs) for title, rs in tables.groups(mixed, tables.SWEPT["lora"])}
    assert found == {
        "tiny_bert / rte / dev/accuracy (trainer.lr=0.001)": ["rte-r4", "rte-s0", "rte-s1"],
        "tiny_bert / rte / dev/accuracy (trainer.lr=0.01)": ["rte-lr"],
        "tiny_bert / sst2 / dev/accuracy": ["sst2"],
        "tiny_gpt2 / e2e / dev/loss": ["e2e"],
    }


def test_a_cell_averages_only_the_seeds_of_one_configuration(mixed):
    (_, rte), *_ = tables.groups(mixed, tables.SWEPT["lora"])
    qv = next(row for row in tables.table6(rte) if row["weight_type"] == "W_q, W_v")
    mean_std = lambda a: {k: a[k] for k in ("mean", "std", "n")}
    assert mean_std(qv["r=8"]["ours"]) == {"mean": pytest.approx(65.0), "std": pytest.approx(7.0710678), "n": 2}
    assert mean_std(qv["r=4"]["ours"]) == {"mean": pytest.approx(65.0), "std": 0.0, "n": 1}
    assert qv["r=1"]["ours"]["n"] == 0


def test_the_markdown_keeps_tasks_and_metrics_apart_and_finds_e2e_test_scores(mixed):
    text = tables.all_markdown(mixed)
    assert "## Table 6 (rank r): tiny_bert / rte / dev/accuracy, ours x100, median over seeds [min, max]" in text
    assert "## Table 6 (rank r): tiny_gpt2 / e2e / dev/loss, ours as measured, mean ± std over seeds" in text
    # one GLUE rank is no rank study: a Table 2 sweep's LoRA runs are in its Methods tables, not in a Table 6
    one_rank = [r for r in mixed if r["task"] == "rte" and r["r"] == mixed[0]["r"] and r["method"] == "lora"]
    assert "## Table 6" not in tables.all_markdown(one_rank)
    # r=8: lr 1e-3 (60, 70) is chosen over lr 1e-2 (55) by its mean dev score, and named; 1e-2 listed under it
    assert "65.0 [60.0, 70.0] (n=2) [lr=0.001]" in text and "GLUE x100" not in text
    assert "- W_q, W_v r=8: lr=0.01: 55.0 (runs rte-lr)" in text
    # Before, E2E test scores were collected as "test/test/BLEU" and Table 18's test BLEU was always "-".
    e2e = next(r for r in mixed if r["task"] == "e2e")
    assert e2e["test/BLEU"] == 0.5 and "test/test/BLEU" not in e2e
    assert "| tiny_gpt2 | 8 | 2.000 | 50.00 |" in text


def test_the_saved_files_hold_no_internal_columns(mixed, tmp_path):
    out = tmp_path / "out"
    tables.save(mixed, out)
    assert "_config" not in (out / "runs.csv").read_text().splitlines()[0]


def test_saving_again_writes_a_new_version_and_keeps_the_first(mixed, tmp_path):
    out = tmp_path / "out"
    first = tables.save(mixed, out)
    before = {p: p.read_bytes() for p in first}
    again = tables.save(mixed[:2], out)
    assert [p.name for p in again] == ["runs-2.csv", "runs-2.json", "tables-2.md"]
    assert {p: p.read_bytes() for p in first} == before


def test_a_benchmark_result_is_never_overwritten(tmp_path, monkeypatch):
    from benchmarks import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert common.save_json("x-cpu", {"a": 1}).name == "x-cpu.json"
    assert common.save_json("x-cpu", {"a": 2}).name == "x-cpu-2.json"
    assert json.loads((tmp_path / "x-cpu.json").read_text()) == {"a": 1}
    # --out, on every benchmark's command line, sends the result elsewhere, under the same rule
    args = common.parse(common.parser("doc"), ["--out", str(tmp_path / "elsewhere")])
    assert args.out == tmp_path / "elsewhere" and common.save_json("x-cpu", {"a": 3}).parent == args.out


def test_figure2_has_a_figure_per_comparable_group_and_a_point_per_configuration(mixed):
    found = {f["title"]: f for f in tables.figure2(mixed)}
    assert sorted(found) == ["tiny_bert / rte / dev/accuracy", "tiny_bert / sst2 / dev/accuracy",
                             "tiny_gpt2 / e2e / dev/loss"]  # fmt: skip
    rte = found["tiny_bert / rte / dev/accuracy"]
    assert rte["runs"] == ["rte-lr", "rte-r4", "rte-s0", "rte-s1"] and rte["x100"]
    # by hand: r=4 one run (65); r=8 seeds 0 and 1 (60, 70); lr 1e-2 its own series, never averaged in
    points = {label: [(p["trainable"], p["mean"], p["std"], p["n"], p["runs"]) for p in pts]
              for label, pts in rte["series"].items()}  # fmt: skip
    assert points == {
        "lora W_q, W_v, trainer.lr=0.001": [(400, pytest.approx(65.0), 0.0, 1, ["rte-r4"]),
                                            (800, pytest.approx(65.0), pytest.approx(7.0710678), 2,
                                             ["rte-s0", "rte-s1"])],
        "lora W_q, W_v, trainer.lr=0.01": [(800, pytest.approx(55.0), 0.0, 1, ["rte-lr"])],
    }  # fmt: skip
    e2e = found["tiny_gpt2 / e2e / dev/loss"]  # a loss stays as measured: never x100 beside accuracies
    (point,) = e2e["series"]["lora W_q, W_v"]
    assert not e2e["x100"] and list(e2e["series"]) == ["lora W_q, W_v"]
    assert {k: point[k] for k in ("trainable", "value", "how", "std", "n", "size", "runs")} == {
        "trainable": 800,
        "value": 2.0,
        "how": "mean",
        "std": 0.0,
        "n": 1,
        "size": "q=8,v=8",
        "runs": ["e2e"],
    }


def test_figure2_names_metric_task_and_model_and_saves_its_points(mixed, tmp_path, monkeypatch):
    from analysis import figures

    drawn = {}
    save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, out: drawn.setdefault("fig", fig) and save(fig, out))
    rte = next(f for f in tables.figure2(mixed) if f["task"] == "rte")
    png = figures.score_vs_params(rte, tmp_path / "figure2.png")
    ax = drawn["fig"].axes[0]
    assert ax.get_ylabel() == "best dev accuracy x100 on rte"
    assert ax.get_xlabel() == "trainable parameters (task head not counted)"
    assert ax.get_title() == "Figure 2: tiny_bert on rte, best dev accuracy x100" and ax.get_xscale() == "log"
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == sorted(rte["series"])
    assert png.stat().st_size > 10_000 and json.loads(png.with_suffix(".json").read_text()) == json.loads(
        json.dumps(rte)
    )


def test_section7_takes_its_three_runs_from_one_comparable_group(tmp_path):
    from analysis import section7

    fake_run(tmp_path, "e2e-r8", "tiny_gpt2", "e2e", 2.0, r=8)  # was picked as "r=8 seed 0" beside SST-2 runs
    fake_run(tmp_path, "sst2-r64-s0", "tiny_bert", "sst2", 0.8, r=64)
    fake_run(tmp_path, "sst2-r64-s1", "tiny_bert", "sst2", 0.8, r=64, seed=1)
    chosen = section7.choose(tables.collect(tmp_path))
    assert chosen["r=8 seed 0"] is None and chosen["r=64 seed 0"]["run"] == "sst2-r64-s0"
    fake_run(tmp_path, "sst2-r8-lr", "tiny_bert", "sst2", 0.8, r=8, lr=1e-2)  # another protocol: not a partner
    assert section7.choose(tables.collect(tmp_path))["r=8 seed 0"] is None
    fake_run(tmp_path, "sst2-r8", "tiny_bert", "sst2", 0.8, r=8)
    chosen = section7.choose(tables.collect(tmp_path))
    assert chosen["group"] == "tiny_bert / sst2 / dev/accuracy (trainer.lr=0.001)"
    assert [chosen[role]["run"] for role in section7.ROLES] == ["sst2-r8", "sst2-r64-s0", "sst2-r64-s1"]
    fake_run(tmp_path, "lr-r64-s0", "tiny_bert", "sst2", 0.8, r=64, lr=1e-2)
    fake_run(tmp_path, "lr-r64-s1", "tiny_bert", "sst2", 0.8, r=64, seed=1, lr=1e-2)
    with pytest.raises(section7.Section7Error, match="2 groups of runs .* point LORA_RUNS_DIR at one sweep"):
        section7.choose(tables.collect(tmp_path))


def test_a_saved_runs_csv_gives_the_same_figure_and_tables_as_the_folders(mixed, tmp_path):
    csv_file, *_ = tables.save(mixed, tmp_path / "out")
    again = tables.collect(csv_file)
    assert tables.figure2(again) == tables.figure2(mixed)
    assert tables.all_markdown(again) == tables.all_markdown(mixed)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(tables.TablesError, match="not a runs.csv written by analysis.tables"):
        tables.collect(tmp_path / "other.csv")
