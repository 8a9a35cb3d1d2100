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
    assert qv["r=8"]["ours"] == {"mean": pytest.approx(65.0), "std": pytest.approx(7.0710678), "n": 2}  # (60+70)/2
    assert qv["r=4"]["ours"] == {"mean": pytest.approx(65.0), "std": 0.0, "n": 1}
    assert qv["r=1"]["ours"]["n"] == 0


def test_the_markdown_keeps_tasks_and_metrics_apart_and_finds_e2e_test_scores(mixed):
    text = tables.all_markdown(mixed)
    assert "## Table 6 (rank r): tiny_bert / rte / dev/accuracy (trainer.lr=0.001), ours x100" in text
    assert "## Table 6 (rank r): tiny_gpt2 / e2e / dev/loss, ours as measured" in text
    assert "65.0 ± 7.1 (n=2)" in text and "GLUE x100" not in text
    # Before, E2E test scores were collected as "test/test/BLEU" and Table 18's test BLEU was always "-".
    e2e = next(r for r in mixed if r["task"] == "e2e")
    assert e2e["test/BLEU"] == 0.5 and "test/test/BLEU" not in e2e
    assert "| tiny_gpt2 | 8 | 2.0 | 50.00 |" in text


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
