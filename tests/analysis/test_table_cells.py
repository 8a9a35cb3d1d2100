"""A cell is one configuration: hand-written run folders mixing learning rate, alpha, init, eval_limit,
train_limit and seeds; every printed cell and every Figure 2 point checked against a value computed by hand."""

import json

import pytest
import yaml

from analysis import figures, section7, tables


def write_run(root, name, best, *, seed=0, lr=1e-3, alpha=8, init="gaussian", r=8, eval_limit=None,
              train_limit=None, status="complete", method="lora"):  # fmt: skip
    folder = root / name
    folder.mkdir(parents=True)
    lora = {"name": "lora", "r": r, "alpha": alpha, "targets": ["q", "v"], "init": init}
    cfg = {"model": {"name": "tiny_bert"}, "task": {"name": "rte"},
           "method": lora if method == "lora" else {"name": method},
           "trainer": {"seed": seed, "lr": lr, "max_steps": 100, "batch_size": 8, "eval_limit": eval_limit,
                       "train_limit": train_limit, "output_dir": str(folder)}}  # fmt: skip
    metric = "dev/accuracy"
    metrics = {"status": status, "model": "tiny_bert", "method": method, "task": "rte", "metric": metric,
               "best": {metric: best, "step": 100}, "final": {metric: best, "step": 100}, "steps": 100,
               "params": {"trainable": 100 * r if method == "lora" else 50, "total": 10_000}}  # fmt: skip
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


# configuration -> its runs' dev accuracies (seed 0, 1, ...); A, B, C, D share the cell "W_q, W_v, r=8"
A = ("A-s0", "A-s1", "A-s2")  # lr 1e-3, alpha 8, init gaussian: 60, 70, 62 -> mean 64 (chosen), median 62
B = ("B-s0", "B-s1")  # lr 1e-2: 50, 56 -> mean 53
C = ("C-s0",)  # alpha 16: 63
D = ("D-s0",)  # init kaiming_uniform: 58
R4 = ("r4-s0", "r4-s1")  # r=4: 55, 57 -> median 56


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    for name, best, seed in zip(A, (0.60, 0.70, 0.62), range(3), strict=True):
        write_run(root, name, best, seed=seed)
    for name, best, seed in zip(B, (0.50, 0.56), range(2), strict=True):
        write_run(root, name, best, seed=seed, lr=1e-2)
    write_run(root, "C-s0", 0.63, alpha=16)
    write_run(root, "D-s0", 0.58, init="kaiming_uniform")
    for name, best, seed in zip(R4, (0.55, 0.57), range(2), strict=True):
        write_run(root, name, best, seed=seed, r=4)
    write_run(root, "bitfit-s0", 0.52, method="bitfit")
    write_run(root, "eval64-s0", 0.90, eval_limit=64)  # scored on 64 of RTE's 277 dev examples
    write_run(root, "train100-s0", 0.51, train_limit=100)
    write_run(root, "stopped-s5", 0.99, seed=5, status="stopped")
    write_run(root, "damaged", 0.5)
    (root / "damaged" / "metrics.json").write_text('{"status": "complete", "best": ')
    (root / "lone").mkdir()
    (root / "lone" / "metrics.json").write_text("{}")
    return root


@pytest.fixture(scope="module")
def rows(folder):
    return tables.collect(folder)


def _main(rows):
    """The comparable group of the full-data, full-dev runs (A's)."""
    return next(rs for _, rs in tables.groups(rows, tables.SWEPT["methods"]) if "A-s0" in {r["run"] for r in rs})


def test_groups_never_pool_a_subset_or_a_smaller_training_set(rows):
    found = {title: sorted(r["run"] for r in rs) for title, rs in tables.groups(rows, tables.SWEPT["methods"])}
    assert found == {
        "tiny_bert / rte / dev/accuracy": sorted([*A, *B, *C, *D, *R4, "bitfit-s0", "stopped-s5"]),
        "tiny_bert / rte / dev/accuracy (trainer.train_limit=100)": ["train100-s0"],
        "tiny_bert / rte / dev/accuracy, 64 of 277 (trainer.eval_limit=64)": ["eval64-s0"],
    }


def test_a_cell_is_the_configuration_with_the_best_mean_dev_score_and_lists_the_others(rows):
    qv = next(r for r in tables.table6(_main(rows)) if r["weight_type"] == "W_q, W_v")
    c = qv["r=8"]["cell"]
    # by hand: A = 60, 70, 62 (mean 64 beats C 63, D 58, B 53); the paper's GLUE cell: median 62, range 60-70
    assert c["runs"] == sorted(A) and c["config"] == {"method.alpha": 8, "method.init": "gaussian", "trainer.lr": 0.001}
    assert (c["ours"]["value"], c["ours"]["min"], c["ours"]["max"], c["ours"]["n"]) == pytest.approx((62, 60, 70, 3))
    others = [(o["runs"], o["ours"]["value"]) for o in c["others"]]
    assert others == [(["C-s0"], pytest.approx(63)), (["D-s0"], pytest.approx(58)), (sorted(B), pytest.approx(53))]
    assert qv["r=4"]["cell"]["runs"] == sorted(R4) and qv["r=4"]["ours"]["value"] == pytest.approx(56)
    assert not qv["r=4"]["cell"]["others"]


def test_the_printed_tables_name_the_chosen_values_the_aggregate_and_the_runs_left_out(rows):
    text = tables.all_markdown(rows)
    assert "62.0 [60.0, 70.0] (n=3) [alpha=8, init=gaussian, lr=0.001]" in text
    assert "- W_q, W_v r=8: alpha=16, init=gaussian, lr=0.001: 63.0 (runs C-s0)" in text
    assert "- W_q, W_v r=8: alpha=8, init=gaussian, lr=0.01: 53.0 [50.0, 56.0] (n=2) (runs B-s0, B-s1)" in text
    assert "median over seeds [min, max]" in text and "(n=4)" not in text and "(n=7)" not in text
    for pooled in ("61.7", "60.5", "64.0 ±"):  # A with D; A with B, C, D; A's mean shown as the paper's cell
        assert pooled not in text
    assert "Note: left out of the tables, not complete: stopped-s5 (stopped)." in text
    assert "Note: skipped damaged: " in text and "damaged/metrics.json cannot be read" in text
    assert "Note: skipped, a metrics.json without config.yaml beside it: lone." in text


def test_the_aggregate_is_a_setting(rows):
    tables.set_aggregate("mean")
    try:
        qv = next(r for r in tables.table6(_main(rows)) if r["weight_type"] == "W_q, W_v")
        assert qv["r=8"]["ours"]["value"] == pytest.approx(64.0)  # (60 + 70 + 62) / 3
        assert "mean ± std over seeds" in tables.all_markdown(rows)
    finally:
        tables.set_aggregate("paper")
    with pytest.raises(tables.TablesError, match="not one of"):
        tables.set_aggregate("mode")


def _figure_points(rows):
    fig = next(f for f in tables.figure2(rows) if "A-s0" in f["runs"])
    return fig, {tuple(p["runs"]): p for pts in fig["series"].values() for p in pts}


def test_figure2_has_one_point_per_configuration_equal_to_the_table(rows):
    fig, points = _figure_points(rows)
    by_hand = {tuple(sorted(A)): 62, tuple(sorted(B)): 53, C: 63, D: 58, tuple(sorted(R4)): 56, ("bitfit-s0",): 52}
    assert {runs: p["value"] for runs, p in points.items()} == pytest.approx(by_hand)
    assert fig["aggregate"] == "median over seeds [min, max]" and len(fig["series"]) == 5  # + bitfit
    # the table lists the same configurations: every cell's chosen one and the ones under it
    cells = [c for row in tables.methods_table(_main(rows)) for t, c in row.items() if t == "rte"]
    listed = {tuple(x["runs"]): x["ours"]["value"] for c in cells for x in (c["cell"], *c["cell"]["others"])}
    assert listed == pytest.approx({runs: p["value"] for runs, p in points.items()})


def test_a_saved_runs_csv_regroups_exactly_as_the_folders(rows, tmp_path):
    csv_file, *_ = tables.save(rows, tmp_path / "out")
    header = csv_file.read_text().splitlines()[0].split(",")
    assert {"method.init", "trainer.eval_limit", "trainer.train_limit", "dev_examples"} <= set(header)
    again = tables.collect(csv_file)
    regroup = lambda rs: {t: sorted(r["run"] for r in g) for t, g in tables.groups(rs, tables.SWEPT["methods"])}
    assert regroup(again) == regroup(rows)
    assert tables.figure2(again) == tables.figure2(rows)
    assert tables.all_markdown(again) == tables.all_markdown(list(rows))  # the folder's skip notes aside


def test_figure2_stands_alone(rows, tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, out: drawn.setdefault("fig", fig) and out)  # not drawn
    fig, _ = _figure_points(rows)
    figures.score_vs_params(fig, tmp_path / "figure2.png")
    ax = drawn["fig"].axes[0]
    assert "tiny_bert on rte" in ax.get_title() and "accuracy" in ax.get_title()
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == sorted(fig["series"])
    text = " ".join(t.get_text() for t in drawn["fig"].texts)
    assert "16 runs" not in text and f"{len(fig['runs'])} runs" in text and "median" in text
    assert "batch_size=8" in text and "steps=100" in text
    markers = [line for line in ax.get_lines() if line.get_marker() not in (None, "None", "", "_")]  # not caps
    assert len({line.get_marker() for line in markers}) == len(fig["series"])  # a shape per series, drawn open
    assert all(line.get_markerfacecolor() == "none" for line in markers)


def test_h3_curves_draw_and_label_the_random_baseline(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, out: drawn.setdefault("fig", fig) and out)  # not drawn
    curve = {"ks": [1, 2, 4], "phi": [0.1, 0.2, 0.3], "phi_random": [0.1, 0.2, 0.3]}
    figures.h3_curves({"ΔW_q r=8": curve, "ΔW_v r=8": curve}, tmp_path / "h3.png", "title")
    legend = [t.get_text() for t in drawn["fig"].axes[0].get_legend().get_texts()]
    assert legend == ["ΔW_q r=8", "ΔW_v r=8", "random subspaces, r=8"]
    random = next(line for line in drawn["fig"].axes[0].get_lines() if line.get_label().startswith("random"))
    assert random.get_zorder() > 2 and random.get_linewidth() >= 2  # on top of the curves it coincides with


def _summary(median, low, high):
    return {"median": median, "min": low, "max": high}


def test_a_verdict_is_given_only_where_the_runs_decide():
    # the committed loralib findings: q 0.0147 against v 0.0141 with random subspaces at 0.0147
    noise = section7.verdict(_summary(0.0147, 0.010, 0.020), _summary(0.0141, 0.009, 0.019), random=0.0147)
    assert noise["verdict"] == "not decided by these runs"
    assert noise["median"] == 0.0147 and noise["than"] == 0.0141 and noise["random"] == 0.0147
    assert section7.verdict(_summary(0.0147, 0.0147, 0.0147), 0.0141, random=0.0147)["verdict"] == noise["verdict"]
    clear = section7.verdict(_summary(0.50, 0.48, 0.52), _summary(0.10, 0.09, 0.12), random=0.015)
    assert clear["verdict"] == "holds"
    assert section7.verdict(_summary(0.10, 0.09, 0.12), _summary(0.50, 0.48, 0.52))["verdict"] == "does not hold"
    # above the other side but not above random subspaces: no claim about shared directions
    assert section7.verdict(_summary(0.02, 0.02, 0.02), 0.001, random=0.0195)["verdict"] == noise["verdict"]
    # a gap within the spread over blocks decides nothing
    assert section7.verdict(_summary(0.5, 0.2, 0.8), _summary(0.3, 0.25, 0.35))["verdict"] == noise["verdict"]
    line = section7.format_verdict("seeds share fewer directions for ΔW_v than for ΔW_q", noise)
    assert line.startswith("not decided by these runs: seeds share") and "0.0147 against 0.0141" in line


def test_the_section7_notebook_writes_nothing_when_there_is_nothing_to_compute(tmp_path, monkeypatch, capsys):
    import runpy

    from analysis.notebooks import HERE

    write_run(tmp_path / "runs", "bitfit", 0.5, method="bitfit")
    monkeypatch.setenv("LORA_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("LORA_ANALYSIS_OUT", str(tmp_path / "out"))
    runpy.run_path(str(HERE / "section7_subspace.py"))  # as a script: no kernel to start
    assert "Table 7 and H.3 need an r=8 or r=64 run" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()  # was an empty table7_h3.json ("{}")


def test_the_tables_command_on_a_runs_csv_saves_beside_it_and_names_a_bad_cell(rows, tmp_path, capsys):
    csv_file, *_ = tables.save(rows, tmp_path / "out")
    tables.main([str(csv_file)])  # was: a folder made at the runs.csv's own path (FileExistsError)
    assert (tmp_path / "out" / "runs-2.csv").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text(csv_file.read_text().replace('"""gaussian"""', "gaussian", 1))  # a hand-edited cell
    with pytest.raises(SystemExit) as exit_:
        tables.main([str(bad)])
    assert exit_.value.code == 2 and "method.init is 'gaussian', not a JSON value" in capsys.readouterr().err
