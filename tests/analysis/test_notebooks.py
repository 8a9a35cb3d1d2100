"""Every notebook runs end to end on the tiny-run fixture and leaves its outputs; the sweep files compose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from analysis.notebooks import notebooks
from analysis.notebooks.__main__ import main as run_notebooks

SWEEPS = {  # name: (swept keys and their number of values, steps per run)
    "table5_minilm_sst2": ({"method.r": 7}, 150),
    "table6_minilm_sst2": ({"method.targets": 2, "method.r": 5}, 150),
    "table6_minilm_sst2_inits": ({"method.targets": 2, "method.r": 5, "method.init": 2}, 150),
    "bf16_minilm_sst2": ({"trainer.bf16": 2, "trainer.seed": 3}, 300),
    "section7_minilm_sst2": ({"method.r": 2, "trainer.seed": 2}, 300),
    "section7_minilm_sst2_loralib": ({"method.r": 2, "trainer.seed": 2}, 300),
}


def test_every_notebook_executes_on_the_fixture(tiny_runs, tmp_path, capfd):
    out = tmp_path / "analysis"
    run_notebooks([str(tiny_runs), "--out", str(out)])
    for source in notebooks():
        nb = nbformat.read(out / f"{source.stem}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert not [o for c in code for o in c.get("outputs", []) if o.output_type == "error"]
        assert all(c.get("outputs") for c in code)
    for png in ("figure2_tiny_bert_sst2", "figure3_r8_vs_r64", "figure4_seeds", "h3_w_vs_delta_w"):
        assert (out / f"{png}.png").stat().st_size > 1000
    assert len(json.loads((out / "runs.json").read_text())) == 4
    assert set(json.loads((out / "table7_h3.json").read_text())) == {"section7/r8-s0", "section7/r64-s0"}
    # one comparable group (tiny BERT, SST-2): LoRA r=8 (one seed) and r=64 (two) beside BitFit
    figure2 = json.loads((out / "figure2_tiny_bert_sst2.json").read_text())
    assert {label: [p["n"] for p in points] for label, points in figure2["series"].items()} == {
        "bitfit": [1], "lora W_q, W_v": [1, 2]}  # fmt: skip
    findings = json.loads((out / "findings.json").read_text())
    assert findings["runs"] == {"r=8 seed 0": "section7/r8-s0", "r=64 seed 0": "section7/r64-s0",
                                "r=64 seed 1": "section7/r64-s1"}  # fmt: skip
    printed = capfd.readouterr()  # the kernels' stderr too: no log noise from them ("running over TCP")
    assert "outputs in" in printed.out and "WARNING" not in printed.err
    rerun_from_its_own_folder(out, tmp_path / "rerun")
    # run again: a new folder beside the first, which stays as it was
    before = {p: p.read_bytes() for p in out.iterdir() if p.suffix in (".png", ".json")}
    run_notebooks([str(tiny_runs), "--out", str(out), "--only", "tables"])
    assert (tmp_path / "analysis-2" / "tables.ipynb").exists()
    assert {p: p.read_bytes() for p in out.iterdir() if p.suffix in (".png", ".json")} == before


def rerun_from_its_own_folder(out: Path, rerun: Path):
    """`jupyter nbconvert --execute` of each executed notebook in its own folder, none of the runner's
    variables set but where to write: it finds its runs and this repository from what it recorded."""
    env = {k: v for k, v in os.environ.items() if k not in ("LORA_RUNS_DIR", "PYTHONPATH")}
    env["LORA_ANALYSIS_OUT"] = str(rerun)  # not beside the session's shared runs folder
    nbconvert = Path(sys.executable).parent / "jupyter-nbconvert"
    names = [f"{source.stem}.ipynb" for source in notebooks()]
    done = subprocess.run([nbconvert, "--to", "notebook", "--execute", "--output-dir", str(rerun / "notebooks"),
                           *names], cwd=out, env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (out / "runs").exists()  # was: an empty runs/analysis left in the notebook's folder
    assert len(json.loads((rerun / "runs.json").read_text())) == 4 and (rerun / "figure3_r8_vs_r64.png").exists()


def test_notebook_runner_refuses_a_folder_without_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_notebooks([str(tmp_path / "missing")])
    assert exit_.value.code == 2 and capsys.readouterr().err.startswith("error: ")


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_files_compose_with_their_sweeper_params(name):
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from experiments.cli import hydra_context
    from experiments.config import register

    register()
    with hydra_context():
        cfg = compose(config_name="config", overrides=[f"+sweep={name}"], return_hydra_config=True)
        narrowed = compose(config_name="config", overrides=[f"+sweep={name}", "model=tiny_bert"])
    parser = OverridesParser.create()
    params = {k: list(parser.parse_override(f"{k}={v}").sweep_iterator()) for k, v in cfg.hydra.sweeper.params.items()}
    swept, steps = SWEEPS[name]
    assert {k: len(v) for k, v in params.items()} == swept
    composed = (cfg.model.name, cfg.method.name, cfg.task.name, cfg.trainer.max_steps)
    assert composed == ("minilm_l6", "lora", "sst2", steps)
    measured_before_the_init_changed = name.startswith(("table5", "table6", "section7")) and "loralib" not in name
    assert cfg.method.init == ("gaussian" if measured_before_the_init_changed else "kaiming_uniform")
    if name.startswith("table5"):  # one rank per type; the mapping's keys are the targets; 8 rank units each
        assert cfg.method.targets is None and all(sum(r.values()) == 8 for r in params["method.r"])
    output_dir = OmegaConf.to_container(cfg.trainer)["output_dir"]
    assert output_dir == f"runs/sweeps/{name}/${{hydra:job.override_dirname}}"
    excluded = list(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert excluded == ["sweep", "trainer.threads", "trainer.output_dir"]
    assert narrowed.model.name == "tiny_bert"  # the command line still picks the model
