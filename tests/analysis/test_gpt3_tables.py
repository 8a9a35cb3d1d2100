"""The paper's GPT-3 tables (4, 5, 6, 15, 16) on a stand-in: the configs are the paper's printed rows with its
settings, and the tables show the decoded score (not the dev loss a prompt task selects by) beside the paper's
numbers, one comparable group at a time. Fixture run folders are written by hand; every cell is checked against
a value computed by hand."""

import csv
import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from analysis import paper, params, tables
from baselines import MethodError
from experiments.cli import check_values, compose, hydra_context

ROOT = Path(__file__).resolve().parents[2]
# The paper's Table 12: one learning rate per method for all GPT-3 tasks (LoRA+PE/PL: none given, LoRA's used)
TABLE12_LR = {"full_ft": 5e-6, "bitfit": 1.6e-3, "prefix_embed": 5e-4, "prefix_layer": 1e-4, "adapter_h": 1e-4,
              "lora": 2e-4, "lora_prefix_embed": 2e-4, "lora_prefix_layer": 2e-4}  # fmt: skip
# The paper's Table 17: (batch, epochs) per n, and per method (lr per n, its setting per n)
TABLE17_BATCH = {100: (20, 40), 1000: (20, 40), 10000: (100, 4), None: (128, 2)}
TABLE17 = {
    "full_ft": ((5e-6,) * 4, ("full_ft",) * 4),
    "prefix_embed": ((2e-4, 2e-4, 4e-4, 5e-4), tuple(f"prefix_embed l_p={n},l_i=8" for n in (16, 32, 64, 256))),
    "prefix_layer": ((5e-5, 5e-5, 5e-5, 1e-4), ("prefix_layer l_p=8,l_i=8",) * 4),
    "lora": ((2e-4,) * 4, ("lora q=8,v=8",) * 4),
}


def swept(sweep: str) -> list[str]:
    values = OmegaConf.load(ROOT / f"conf/sweep/{sweep}.yaml").hydra.sweeper.params
    ((key, text),) = values.items()
    return [f"{key}={v.strip()}" for v in text.split(",")]


def test_every_gpt3_row_is_a_printed_row_at_the_papers_learning_rate_and_builds_on_the_stand_in(tmp_path):
    printed = {s for p in (*paper.TABLE4, *paper.TABLE15) for s in p.settings}
    seen = set()
    with hydra_context():
        for file in sorted((ROOT / "conf/gpt3_row").glob("*.yaml")):
            row = ["+sweep=table15_smollm2_135m", f"+gpt3_row={file.stem}", f"trainer.output_dir={tmp_path}"]
            cfg = OmegaConf.to_container(compose(row), resolve=True)
            setting = paper.setting(cfg["method"])
            assert setting in printed and cfg["trainer"]["lr"] == TABLE12_LR[cfg["method"]["name"]], file.name
            seen.add(setting)
            if cfg["method"]["name"] == "bitfit":  # refused in one line before anything runs: Llama has no biases
                with pytest.raises(MethodError, match="Llama-family models have no bias"):
                    check_values(cfg)
                continue
            check_values(cfg)
            counted = params.count_setting(params.Setting("x", "smollm2_135m", cfg["method"], "0", "Table 15"))[0]
            assert 0 < counted <= 134_515_008
    assert seen == printed  # a config for every printed setting


@pytest.mark.parametrize("model", ["smollm2_135m", "llama3_8b"])
def test_the_table4_and_table15_sweeps_run_every_printed_row(model):
    with hydra_context():
        for table, printed in (("table4", paper.TABLE4), ("table15", paper.TABLE15)):
            rows = swept(f"{table}_{model}")
            settings = {paper.setting(OmegaConf.to_container(compose([f"+sweep={table}_{model}", row]).method))
                        for row in rows}  # fmt: skip
            expected = {s for p in printed for s in p.settings} - {"bitfit"}  # no biases in a Llama
            assert settings == expected and len(rows) == len(expected)


def test_the_table16_sweeps_split_every_batch_evenly_on_the_gpus_their_command_names(tmp_path):
    text = (ROOT / "conf/sweep/table16_llama3_8b.yaml").read_text()
    gpus = int(text.split("--nproc_per_node ")[1].split()[0])
    with hydra_context():
        for override in swept("table16_llama3_8b"):
            cfg = compose(["+sweep=table16_llama3_8b", override, f"trainer.output_dir={tmp_path}"])
            assert cfg.trainer.batch_size % gpus == 0, override  # engines refuse a global batch that does not


def test_the_table16_cells_carry_the_papers_table17_settings(tmp_path):
    found = {}
    with hydra_context():
        for override in swept("table16_smollm2_135m"):
            cfg = OmegaConf.to_container(
                compose(["+sweep=table16_smollm2_135m", override, f"trainer.output_dir={tmp_path}"]), resolve=True
            )
            t, n = cfg["trainer"], cfg["task"]["train_size"]
            found[(cfg["method"]["name"], n)] = ((t["batch_size"] * t["grad_accum"], t["epochs"]), t["lr"],
                                                 paper.setting(cfg["method"]))  # fmt: skip
            assert cfg["task"]["name"] == "mnli_gen" and t["warmup_tokens"] == 250_000
    expected = {(m, n): (TABLE17_BATCH[n], lrs[i], settings[i])
                for m, (lrs, settings) in TABLE17.items() for i, n in enumerate(paper.TABLE16_SIZES)}  # fmt: skip
    assert found == expected
    assert {k: v[2] for k, v in found.items()} == paper.TABLE17


def fake(root, name, task, method, decoded, *, seed=0, train_size=None, model="smollm2_135m", lr=2e-4):
    """A finished prompt-task run: its dev loss picked the best step, `decoded` (name -> value) was scored."""
    folder = root / name
    folder.mkdir(parents=True)
    split = "test" if task == "samsum" else "dev"
    cfg = {"model": {"name": model}, "method": method,
           "task": {"name": task, "train_size": train_size, "decode_split": split},
           "trainer": {"seed": seed, "lr": lr, "batch_size": 16, "output_dir": str(folder)}}  # fmt: skip
    metrics = {"status": "complete", "model": model, "method": method["name"], "task": task, "metric": "dev/loss",
               "best": {"dev/loss": 1.5, "step": 10}, "final": {"dev/loss": 1.6, "step": 20}, "steps": 20,
               "params": {"trainable": 1000 + len(name), "total": 10_000},
               "test": {f"{split}/{k}": v for k, v in decoded.items()}}  # fmt: skip
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "metrics.json").write_text(json.dumps(metrics))


QV8 = {"name": "lora", "r": {"q": 8, "v": 8}, "targets": None, "alpha": 8}


@pytest.fixture
def gpt3_runs(tmp_path):
    lf = lambda v: {"lf_accuracy": v, "ex_accuracy": v + 0.1}  # noqa: E731
    fake(tmp_path, "wikisql/qv8-s0", "wikisql", QV8, lf(0.5))
    fake(tmp_path, "wikisql/qv8-s1", "wikisql", QV8, lf(0.7), seed=1)
    fake(tmp_path, "wikisql/v2", "wikisql", {"name": "lora", "r": {"v": 2}, "targets": None, "alpha": 8}, lf(0.4))
    fake(tmp_path, "wikisql/pe32", "wikisql", {"name": "prefix_embed", "l_p": 32, "l_i": 8}, lf(0.2), lr=5e-4)
    fake(tmp_path, "wikisql/ah2", "wikisql", {"name": "adapter_h", "r": 2}, lf(0.3), lr=1e-4)
    rouge = {"ROUGE-1": 0.40, "ROUGE-2": 0.20, "ROUGE-L": 0.30}
    fake(tmp_path, "samsum/qv8", "samsum", QV8, rouge)
    for n, acc in ((100, 0.40), (1000, 0.50), (None, 0.80)):
        fake(tmp_path, f"mnli/lora-{n}", "mnli_gen", QV8, {"accuracy": acc}, train_size=n, lr=2e-4)
    fake(tmp_path, "mnli/lora-100-s1", "mnli_gen", QV8, {"accuracy": 0.50}, train_size=100, seed=1)
    for l_p, acc in ((16, 0.30), (32, 0.36)):  # two settings at one size: two lines, never one averaged cell
        fake(tmp_path, f"mnli/pe{l_p}-100", "mnli_gen", {"name": "prefix_embed", "l_p": l_p, "l_i": 8},
             {"accuracy": acc}, train_size=100, lr=2e-4)  # fmt: skip
    return tables.collect(tmp_path)


def _group(rows, task, swept="methods"):
    found = [rs for _, rs in tables.groups([r for r in rows if r["task"] == task], tables.SWEPT[swept])]
    return found


def test_table4_puts_our_decoded_score_beside_the_printed_row_it_stands_for(gpt3_runs):
    (wikisql,) = _group(gpt3_runs, "wikisql")
    lines = {(x["method"], x["setting"]): x for x in tables.gpt3_methods(wikisql, paper.TABLE4)}
    qv8 = lines[("LoRA", "lora q=8,v=8")]  # (50 + 70) / 2; the dev loss (1.5) is not the cell
    assert {k: qv8["ours"]["lf_accuracy"][k] for k in ("value", "std", "n")} == {
        "value": pytest.approx(60.0),
        "std": pytest.approx(14.1421356),
        "n": 2,
    }  # NLG cells: mean ± std
    assert (qv8["paper"], qv8["gpt3_params"], qv8["runs"]) == (74.0, "37.7M", ["wikisql/qv8-s0", "wikisql/qv8-s1"])
    assert lines[("LoRA", "lora v=2")]["ours"]["lf_accuracy"]["mean"] == pytest.approx(40.0)
    assert ("LoRA", "lora q=1,v=1") not in lines  # 4.7M stands for two settings: the one that ran is shown
    assert lines[("Fine-Tune", "full_ft")]["ours"]["lf_accuracy"]["n"] == 0  # printed, not run: "-"
    assert lines[("adapter_h", "adapter_h r=2")]["paper"] is None  # ours, not printed: its own line
    (samsum,) = _group(gpt3_runs, "samsum")
    (line,) = [x for x in tables.gpt3_methods(samsum, paper.TABLE4) if x["runs"]]
    assert {k: a["mean"] for k, a in line["ours"].items()} == pytest.approx(
        {"ROUGE-1": 40.0, "ROUGE-2": 20.0, "ROUGE-L": 30.0}
    )
    assert line["paper"] == (53.4, 29.2, 45.1)


def test_table16_cells_by_size_the_papers_setting_per_size_and_a_line_for_any_other(gpt3_runs):
    (mnli,) = _group(gpt3_runs, "mnli_gen", "table16")
    lines = {(x["method"], x["setting"]): x for x in tables.table16(mnli)}
    lora = lines[("lora", "the paper's (Table 17)")]["cells"]
    assert {k: lora[100]["ours"][k] for k in ("value", "std", "n")} == {
        "value": pytest.approx(45.0),
        "std": pytest.approx(7.0710678),
        "n": 2,
    }
    assert (lora[1000]["ours"]["mean"], lora[10000]["ours"]["n"], lora[None]["ours"]["mean"]) == (50.0, 0, 80.0)
    assert [lora[n]["paper"] for n in paper.TABLE16_SIZES] == [63.8, 85.6, 89.2, 91.7]
    # at n=100 the paper's PrefixEmbed has l_p=16 (its Table 17); l_p=32 there is another setting: its own line
    pe16 = lines[("prefix_embed", "the paper's (Table 17)")]["cells"][100]
    pe32 = lines[("prefix_embed", "prefix_embed l_p=32,l_i=8")]["cells"][100]
    assert (pe16["ours"]["mean"], pe16["paper"]) == (30.0, 37.6) and (pe32["ours"]["mean"], pe32["paper"]) == (
        36.0,
        None,
    )
    assert len(lines) == 3  # no line for a setting with full-data runs only (Table 4's and 15's)


def test_a_run_two_sweeps_made_alike_counts_once_and_table16_keeps_out_full_data_only_settings(tmp_path):
    """Table 4's LoRA r_q=r_v=8 on all of MNLI is Table 16's 'all' cell: the same config and seed, run by two
    sweeps. Counted twice it would read as two seeds (n=2, a spread of zero)."""
    fake(tmp_path, "table4/qv8", "mnli_gen", QV8, {"accuracy": 0.80})
    fake(tmp_path, "table16/qv8-all", "mnli_gen", QV8, {"accuracy": 0.80})
    fake(tmp_path, "table16/qv8-100", "mnli_gen", QV8, {"accuracy": 0.40}, train_size=100)
    fake(tmp_path, "table15/ah4", "mnli_gen", {"name": "adapter_h", "r": 4}, {"accuracy": 0.7}, lr=1e-4)
    rows = tables.collect(tmp_path)
    ((title, group),) = tables.groups([r for r in rows if r["train_size"] is None], tables.SWEPT["methods"])
    assert "left out as repeats of a run with the same config and seed: table4/qv8" in title
    assert sorted(r["run"] for r in group) == ["table15/ah4", "table16/qv8-all"]
    (_, low), *_ = tables.groups(rows, tables.SWEPT["table16"])
    (line,) = tables.table16(low)  # adapter_h ran on all of MNLI only: a Table 15 run, not a Table 16 line
    assert line["cells"][None]["ours"]["n"] == 1 and line["cells"][100]["ours"]["mean"] == pytest.approx(40.0)


def test_a_runs_csv_from_before_the_setting_column_keeps_methods_apart_and_finds_a_test_decoded_score(tmp_path):
    fake(tmp_path, "dev/qv8", "wikisql", QV8, {"lf_accuracy": 0.5})
    fake(tmp_path, "dev/ah1", "wikisql", {"name": "adapter_h", "r": 1}, {"lf_accuracy": 0.3}, lr=1e-4)
    csv_file, *_ = tables.save(tables.collect(tmp_path), tmp_path / "out")
    with open(csv_file, newline="") as f:
        saved = list(csv.DictReader(f))
    with open(tmp_path / "old.csv", "w", newline="") as f:  # the columns a runs.csv had before this change
        writer = csv.DictWriter(f, [c for c in saved[0] if c not in ("setting", "train_size")], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(saved)
    old = tables.collect(tmp_path / "old.csv")
    (_, group), *_ = tables.groups(old, tables.SWEPT["methods"])
    found = {x["setting"]: x["ours"]["lf_accuracy"]["mean"] for x in tables.gpt3_methods(group) if x["runs"]}
    assert found == {"lora q=8,v=8": pytest.approx(50.0), "adapter_h r=1": pytest.approx(30.0)}
    # a runs.csv holds every run's columns: a run decoded on test has an empty dev/lf_accuracy beside it
    row = {"task": "wikisql", "best": 1.0, "dev/lf_accuracy": None, "test/lf_accuracy": 0.25}
    assert tables.score(row) == 25.0


def test_the_markdown_shows_tables_4_15_16_and_tables_5_6_by_decoded_score(gpt3_runs):
    text = tables.all_markdown(gpt3_runs)
    assert "## Table 4 (methods on GPT-3's tasks): smollm2_135m / wikisql / dev/loss" in text
    assert "| LoRA | lora q=8,v=8 | 1014 | 60.0 ± 14.1 (n=2) | 74.0 | 37.7M |" in text
    assert "| LoRA | lora q=8,v=8 | 1010 | 40.0 / 20.0 / 30.0 | 53.4/29.2/45.1 | 37.7M |" in text  # SAMSum
    assert "## Table 15 (every method's size on GPT-3's tasks): smollm2_135m / wikisql" in text  # l_p=32 ran
    assert "## Table 15 (every method's size on GPT-3's tasks): smollm2_135m / samsum" not in text
    assert (
        "## Table 16 (MNLI-m from n training examples)" in text and "| paper GPT-3 (lora) | - | 63.8 | 85.6 |" in text
    )
    assert "## Methods (Tables 2/3 style)" not in text  # the RoBERTa comparison is not for these tasks
    lora = [r for r in gpt3_runs if r["task"] == "wikisql" and r["method"] == "lora"]
    assert len(tables.groups(lora, tables.SWEPT["lora"])) == 1  # per-type ranks (method.r.q, .v) are swept too
    six = tables.table6(_group(gpt3_runs, "wikisql")[0])
    assert next(x for x in six if x["weight_type"] == "W_q, W_v")["r=8"]["ours"]["mean"] == pytest.approx(60.0)


def test_figure2_on_a_gpt3_task_plots_the_decoded_score_a_point_per_setting(gpt3_runs, tmp_path):
    from analysis import figures

    (wikisql,) = [f for f in tables.figure2(gpt3_runs) if f["task"] == "wikisql"]
    assert wikisql["metric"] == "decoded/lf_accuracy" and wikisql["x100"]
    # per-type ranks (method.r.q, method.r.v) set a point's size: one series, one point per setting
    points = [(p["size"], p["mean"], p["n"]) for p in wikisql["series"]["lora W_q, W_v"]]
    assert sorted(points) == [("q=8,v=8", pytest.approx(60.0), 2)]
    assert [(p["size"], p["mean"]) for p in wikisql["series"]["lora W_v"]] == [("v=2", pytest.approx(40.0))]
    assert [p["size"] for p in wikisql["series"]["prefix_embed"]] == ["l_p=32,l_i=8"]
    figures.score_vs_params(wikisql, tmp_path / "f.png")
    assert json.loads((tmp_path / "f.json").read_text())["metric"] == "decoded/lf_accuracy"


def test_figure2_puts_two_ranks_of_one_weight_set_on_one_series(tmp_path):
    fake(tmp_path, "qv8", "wikisql", QV8, {"lf_accuracy": 0.5})
    fake(tmp_path, "qv1", "wikisql", {"name": "lora", "r": {"q": 1, "v": 1}, "targets": None, "alpha": 8},
         {"lf_accuracy": 0.4})  # fmt: skip
    for rows in (tables.collect(tmp_path), tables.collect(tables.save(tables.collect(tmp_path), tmp_path / "o")[0])):
        (figure,) = tables.figure2(rows)
        assert list(figure["series"]) == ["lora W_q, W_v"]
        assert [p["size"] for p in figure["series"]["lora W_q, W_v"]] == ["q=1,v=1", "q=8,v=8"]


def test_a_runs_csv_keeps_the_gpt3_tables(gpt3_runs, tmp_path):
    csv_file, *_ = tables.save(gpt3_runs, tmp_path / "out")
    assert tables.all_markdown(tables.collect(csv_file)) == tables.all_markdown(gpt3_runs)
