"""The docs cannot go stale: the site builds strictly, and every `run.py` command in the README and the docs composes.

Commands are taken from bash code blocks and from inline code that starts with `python run.py` or `torchrun`. Each
composes with Hydra and passes the checks `run.py` makes before anything runs (`experiments.cli.check_config`), with
shrink settings added; each value of a sweep (`-m a,b`) is composed too. Placeholders in capitals (TASK, FILE, ...)
stand for what the text says; a command whose comment says `needs: hub` or `needs: data` must instead stop with one
`error:` line here, where neither the hub nor that data is reachable.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.paths import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHRINK = ["trainer.max_steps=1", "trainer.eval_limit=2", "trainer.train_limit=2"]
PLACEHOLDERS = {"TASK": "mrpc", "FILE": "/tmp/adapter.bin", "PATH": "/tmp/adapter", "ALPHA": "16",
                "MNLI_RUN": "runs/mnli", "KEY=VALUE": "trainer.seed=1"}  # fmt: skip


def commands(text: str) -> list[tuple[str, str]]:
    """(command, its comment) for every run.py command in a markdown text, continuation lines joined."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command, _, comment = line.partition(" #")
            if re.match(r"\s*(python run\.py|torchrun .*run\.py)", command):
                found.append((command.strip(), comment))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for paragraph in re.split(r"\n\s*\n", prose):  # inline code: its table row or paragraph is its note
        for part in paragraph.splitlines() if paragraph.lstrip().startswith("|") else [" ".join(paragraph.split())]:
            found += [(c, part) for c in re.findall(r"`((?:python run\.py|torchrun [^`]*run\.py)[^`]*)`", part)]
    return found


def overrides(command: str) -> list[str]:
    """The Hydra overrides of a command, placeholders filled, `...` and optional `[...]` parts left out."""
    words = shlex.split(command)
    words = words[words.index("run.py") + 1 :]
    words = [w for w in words if w != "..." and not w.startswith("[")]
    words = [w for w in words if not w.endswith("]")]
    for name, value in PLACEHOLDERS.items():
        words = [re.sub(rf"(?<![A-Za-z]){name}(?![A-Za-z])", value, w) for w in words]
    return words


def jobs(argv: list[str]) -> list[list[str]]:
    """One override list per value of each swept key (the others at their first value); under `-m`, the keys a
    sweep file sweeps (`+sweep=NAME`) too, as Hydra's sweeper adds them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    multirun = any(w in ("-m", "--multirun") for w in argv)
    argv = [w for w in argv if w not in ("-m", "--multirun")]
    if multirun and any(w.lstrip("+").startswith(("sweep=", "table2_lr=")) for w in argv):  # the files that sweep
        argv += from_sweep_file(argv, parser)
    parsed = parser.parse_overrides(argv)
    first = at_first_value(parsed)
    result = [first]
    for i, o in enumerate(parsed):
        if o.is_sweep_override():
            result += [
                [*first[:i], f"{o.get_key_element()}={v}", *first[i + 1 :]] for v in list(o.sweep_string_iterator())[1:]
            ]
    return result


def at_first_value(parsed: list) -> list[str]:
    """Hydra overrides as given, a swept one (`k=a,b`, `k=range(...)`) at its first value."""
    return [f"{o.get_key_element()}={next(o.sweep_string_iterator())}" if o.is_sweep_override() else o.input_line
            for o in parsed]  # fmt: skip


def from_sweep_file(argv: list[str], parser) -> list[str]:
    """The keys a config file sweeps (`hydra.sweeper.params`) that the command leaves to it, at their first value."""
    from experiments.cli import compose

    parsed = parser.parse_overrides(argv)
    try:
        params = compose(at_first_value(parsed), with_hydra=True).hydra.sweeper.get("params") or {}
    except Exception:  # noqa: BLE001 - a command that does not compose: check_config says why, in one line
        return []
    given = {o.key_or_group for o in parsed}
    swept = [parser.parse_override(f"{k}={v}") for k, v in params.items() if k.lstrip("+~") not in given]
    # each at its first value, to keep this test quick: Table 2's every job composes in tests/experiments/test_sweeps.py
    return at_first_value(swept)


def shrunk(job: list[str], output_dir: Path) -> list[str]:
    given = {o.split("=", 1)[0] for o in job}
    return [*job, *(s for s in [*SHRINK, f"trainer.output_dir={output_dir}"] if s.split("=", 1)[0] not in given)]


def problem(argv: list[str], output_dir: Path = Path("/tmp/lora-doc-command")) -> str | None:
    """Why these overrides would not start a run here (one line), or None: what `run.py` checks up front."""
    from experiments.cli import check_config

    for job in jobs(argv):
        try:
            check_config(shrunk(job, output_dir))
        except SystemExit as stop:
            return f"{' '.join(job)}: {stop.code}"
    return None


def first_stop(argv: list[str], output_dir: Path) -> str | None:
    """The one line a run of these overrides stops with here (data is read before any model is built)."""
    from omegaconf import OmegaConf

    from experiments.cli import USER_ERRORS, compose
    from experiments.train import run

    try:
        run(OmegaConf.to_container(compose(shrunk(jobs(argv)[0], output_dir)), resolve=True))
    except USER_ERRORS as err:
        return str(err)
    return None


@pytest.fixture(scope="module", autouse=True)
def one_hydra():
    """Compose every command inside one Hydra initialisation (`experiments.cli.compose` reuses it)."""
    from experiments.cli import hydra_context

    with hydra_context():
        yield


ALL = [(page, cmd, note) for page in PAGES for cmd, note in commands(page.read_text())]


def test_the_docs_hold_commands():
    assert len(ALL) >= 40, [c for _, c, _ in ALL]
    assert {p.name for p, _, _ in ALL} >= {"README.md", "getting-started.md", "running.md"}


@pytest.mark.parametrize(("page", "command", "note"), ALL, ids=[f"{p.name}:{c[:60]}" for p, c, _ in ALL])
def test_every_documented_command_composes(page, command, note, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = overrides(command)
    why = problem(argv, tmp_path / "run")
    if "needs:" not in note:
        assert why is None, f"{page.name}: {why}"
        return
    if why is None and "torchrun" not in command:  # absent data is found when the run reads it, first of all
        why = first_stop(argv, tmp_path / "run")
    assert why is not None, f"{page.name}: '{command}' is marked '{note.strip()}' but would run here"
    assert "\n" not in why and re.search(r"hub|not found|no such|missing|absent|does not exist|SLURM", why, re.I), why


def test_a_stale_command_is_caught():
    """A renamed option, a missing experiment and a bad value: each is found, with the reason."""
    good = "python run.py task=mrpc method=lora trainer.max_steps=690 trainer.batch_size=16 trainer.lr=1e-3"
    assert problem(overrides(good)) is None
    assert "learning_rate" in problem(overrides(good.replace("trainer.lr=", "trainer.learning_rate=")))
    assert "gpt2_medium_e2e_v2" in problem(overrides("python run.py experiment=gpt2_medium_e2e_v2"))
    assert "sst3" in problem(overrides("python run.py -m task=rte,sst3"))  # the second job of a sweep


def test_commands_are_found_in_blocks_and_inline_code():
    text = "```bash\npython run.py task=rte \\\n  method=bitfit   # needs: data\nls\n```\nor `python run.py task=cola`."
    assert commands(text) == [
        ("python run.py task=rte    method=bitfit", " needs: data"),
        ("python run.py task=cola", "or `python run.py task=cola`."),
    ]


def test_the_site_builds_strictly(tmp_path):
    """Broken links, missing pages, a macro that cannot read what it prints: each fails the build."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "paper" / "table2-glue" / "index.html").exists()


def test_the_readme_stays_short_and_lists_the_pages():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    for page in ("getting-started", "configuration", "paper/index", "reliability"):
        assert f"docs/{page}.md" in readme


def test_slurm_without_a_controller_is_one_line(tmp_path, monkeypatch):
    """`python run.py -m hydra/launcher=slurm ...` with no reachable cluster used to print submitit's traceback."""
    from experiments.cli import check_launcher

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch at all
    with pytest.raises(SystemExit, match="^error: hydra/launcher=slurm needs SLURM's sbatch .* SLURM_CONF"):
        check_launcher(["-m", "hydra/launcher=slurm", "method.r=1,2"])
    for tool, text in (("sbatch", ""), ("scontrol", "sbatch: fatal: Could not establish a configuration source")):
        (tmp_path / tool).write_text(f"#!/bin/sh\necho '{text}' >&2\nexit 1\n")
        (tmp_path / tool).chmod(0o755)
    with pytest.raises(SystemExit, match="^error: no SLURM controller is reachable .*configuration source.*SLURM_CONF"):
        check_launcher(["-m", "hydra/launcher=slurm"])
    (tmp_path / "scontrol").write_text("#!/bin/sh\necho 'Slurmctld(primary) at node is UP'\n")
    check_launcher(["-m", "hydra/launcher=slurm"])  # a controller that answers: the launcher goes ahead
    check_launcher(["-m", "method.r=1,2"])  # no SLURM asked for: nothing checked
