"""Sweeps: Table 2's jobs compose with the learning rates their configs record, and a sweep run again skips the
jobs it finished and resumes the one that was stopped."""

import json
import subprocess
import sys

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from experiments.cli import compose, hydra_context, resolved_as_one_job
from experiments.paths import CONF_DIR, ROOT

TABLE2_METHODS = ("full_ft", "bitfit", "adapter_d", "adapter_p", "adapter_h", "lora", "head_only")


def lr_grid(method: str) -> list[float]:
    """The learning rates Table 2's search tried for `method` (conf/table2_lr/METHOD.yaml)."""
    searched = OmegaConf.load(CONF_DIR / "table2_lr" / f"{method}.yaml").hydra.sweeper.params["trainer.lr"]
    return swept({"trainer.lr": searched})["trainer.lr"]


def swept(params) -> dict[str, list]:
    """A sweep's hydra.sweeper.params as {key: [values]}, parsed as Hydra's sweeper parses them."""
    parser = OverridesParser.create()
    return {k: list(parser.parse_override(f"{k}={v}").sweep_iterator()) for k, v in params.items()}


def test_table2_composes_every_method_task_and_seed_with_the_learning_rate_its_config_records():
    with hydra_context():
        params = swept(compose(["+sweep=table2_minilm"], with_hydra=True).hydra.sweeper.params)
        assert params == {"+table2_method": list(TABLE2_METHODS), "task": ["sst2", "mrpc", "cola", "stsb"],
                          "trainer.seed": [0, 1, 2]}  # fmt: skip
        for method in TABLE2_METHODS:
            recorded = OmegaConf.load(CONF_DIR / "table2_method" / f"{method}.yaml")
            grid = lr_grid(method)
            assert len(grid) >= 3 and recorded.trainer.lr in grid  # the lr is one of the grid searched
            # one method's sweep is the same jobs: its tasks and seeds at the recorded lr, never its lr grid
            one = compose(["+sweep=table2_minilm", f"+table2_method={method}"], with_hydra=True)
            one = swept(one.hydra.sweeper.params)
            assert "trainer.lr" not in one and one["task"] == params["task"], one
            for i, task in enumerate(params["task"]):  # every task, and every seed across them
                seed = params["trainer.seed"][i % 3]
                job = [f"+table2_method={method}", f"task={task}", f"trainer.seed={seed}"]
                cfg = OmegaConf.to_container(compose(["+sweep=table2_minilm", *job]))
                t = cfg["trainer"]
                assert (cfg["model"]["name"], cfg["method"]["name"], cfg["task"]["name"]) == ("minilm_l6", method, task)
                assert (t["lr"], t["seed"], t["max_steps"], t["batch_size"]) == (recorded.trainer.lr, seed, 300, 32)
            # the lr search: the method's grid on SST-2, seed 0, at the same budget
            search = compose(["+sweep=table2_minilm_lr", f"+table2_lr={method}"], with_hydra=True)
            assert swept(search.hydra.sweeper.params) == {"trainer.lr": grid}
            assert (search.task.name, search.trainer.seed, search.trainer.max_steps) == ("sst2", 0, 300)
            assert search.method.name == method and search.trainer.lr == recorded.trainer.lr
        lora_cfg = compose(["+sweep=table2_minilm", "+table2_method=lora"]).method
        assert (lora_cfg.r, list(lora_cfg.targets), lora_cfg.init) == (8, ["q", "v"], "kaiming_uniform")


def test_a_sweep_run_again_skips_its_finished_jobs_and_resumes_the_stopped_one(tmp_path):
    """First pass: the 2-step job finishes, the 4-step job stops after step 2 as if killed. The same sweep again:
    the finished job is skipped (its files untouched, one line in the summary table), the stopped one resumes
    from its checkpoint and finishes."""
    tiny = ["model=tiny_bert", "task=rte", "trainer.train_limit=16", "trainer.eval_limit=8", "trainer.batch_size=8",
            "trainer.eval_every=2", "trainer.threads=1",
            f"trainer.output_dir={tmp_path}/runs/steps${{trainer.max_steps}}"]  # fmt: skip

    def sweep(*extra):
        cmd = [sys.executable, str(ROOT / "run.py"), "-m", "trainer.max_steps=2,4", *tiny, *extra]
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    sweep("trainer.stop_after=2")
    finished, stopped = tmp_path / "runs/steps2", tmp_path / "runs/steps4"
    assert json.loads((finished / "metrics.json").read_text())["status"] == "complete"
    assert not (stopped / "metrics.json").exists() and any(stopped.rglob("step-0000002"))
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in finished.iterdir() if p.is_file()}

    again = sweep()
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in finished.iterdir() if p.is_file()} == before
    metrics = json.loads((stopped / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["final"]["step"] == 4
    assert "resumed from" in (stopped / "log.txt").read_text()
    table = again.stdout[again.stdout.index("job  swept") :].splitlines()
    assert table[1].split()[:3] == ["0", "trainer.max_steps=2", "skipped"]
    assert table[2].split()[:3] == ["1", "trainer.max_steps=4", "complete"]
    assert "2 jobs, 1 skipped as finished before" in again.stdout
    assert f"skipped: {finished}" in again.stderr


def test_each_table2_method_trains_at_the_best_learning_rate_of_its_committed_search():
    """The lr a conf/table2_method file records is its method's best SST-2 dev score in the committed search
    (experiments/results/table2_minilm_lr/runs.csv), and every lr of its grid was run, none at the grid's edge."""
    import csv

    from experiments.paths import ROOT as root

    with open(root / "experiments/results/table2_minilm_lr/runs.csv", newline="") as f:
        runs = [r for r in csv.DictReader(f) if r["status"] == "complete"]
    for method in TABLE2_METHODS:
        recorded = OmegaConf.load(CONF_DIR / "table2_method" / f"{method}.yaml")
        grid = lr_grid(method)
        scores = {float(r["lr"]): float(r["best"]) for r in runs if r["method"] == method}
        assert sorted(scores) == sorted(grid), method
        best = max(scores, key=scores.get)
        assert best == recorded.trainer.lr and min(grid) < best < max(grid), (method, scores)


def test_every_sweep_names_its_job_folders_by_what_the_job_trains_only():
    """A job's folder name (Hydra's override_dirname) leaves out the keys that only say how or where it runs: with
    `trainer.output_dir=...` on the command line, a sweep had named each folder after the output folder itself."""
    with hydra_context():
        for file in sorted((CONF_DIR / "sweep").glob("*.yaml")):
            excluded = compose([f"+sweep={file.stem}"], with_hydra=True).hydra.job.config.override_dirname.exclude_keys
            assert {"sweep", "trainer.threads", "trainer.output_dir"} <= set(excluded), file.name


def test_only_sweep_files_and_search_grids_sweep():
    """A config group file that sets hydra.sweeper.params adds its sweep to every multirun it takes part in as
    a single choice: Table 2's method files once carried their lr grids, and one method's run of the Table 2
    sweep searched the grid instead of training at the recorded lr. Sweeps live in conf/sweep, search grids in
    files named for them (conf/table2_lr); a method, model or task file never sweeps."""
    sweeping = {
        str(path.relative_to(CONF_DIR))
        for path in CONF_DIR.rglob("*.yaml")
        if OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params") is not None
    }
    assert sweeping and all(name.split("/")[0] in {"sweep", "table2_lr"} for name in sweeping), sorted(sweeping)


def test_one_job_of_a_sweep_runs_without_m_into_the_folder_the_sweep_gives_it():
    """Re-running one cell of a sweep (`python run.py +sweep=table2_minilm +table2_method=lora task=stsb
    trainer.seed=2`) resolves `${hydra:job.override_dirname}` as the sweep's job did (the folder its jobs.jsonl
    names), and leaves no Hydra state behind; a sweep file with a swept key unset is refused, not run once."""
    import pytest
    from hydra.core.hydra_config import HydraConfig

    cell = ["+sweep=table2_minilm", "+table2_method=lora", "task=stsb", "trainer.seed=2"]
    cfg = resolved_as_one_job(cell)
    recorded = [json.loads(line) for line in (ROOT / "experiments/results/table2_minilm/jobs.jsonl").open()]
    job = next(j for j in recorded if j["overrides"].startswith(" ".join(cell[1:])))
    assert cfg["trainer"]["output_dir"] == job["folder"]
    assert (cfg["task"]["name"], cfg["trainer"]["seed"], cfg["method"]["name"]) == ("stsb", 2, "lora")
    assert not HydraConfig.initialized()
    with pytest.raises(ValueError, match=r"sweeps \+table2_method, task, trainer.seed: run the sweep with -m .*set "
                       r"\+table2_method, trainer.seed to run one"):  # fmt: skip
        resolved_as_one_job(["+sweep=table2_minilm", "task=stsb"])
