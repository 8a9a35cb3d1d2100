"""The table of bad inputs: each gets one clear line, a non-zero exit, and leaves existing files as they were.

Each case is (id, setup, command, what the one line must say). `setup(tmp)` writes whatever files the
case needs and returns values substituted into the command ({run}, {data}, {adapter}, ...). Commands
of `run.py` run in-process the way `run.py` runs them (the config check, then the runner, its user
errors printed as one line with exit 2); two subprocess cases check the real entry point. The
server's bad requests (malformed, too large, unknown adapter) are a table of their own in
tests/lora/test_serve.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import lora
from experiments.cli import USER_ERRORS, check_config, compose
from experiments.paths import ROOT
from experiments.train import run
from lora.files import write_safetensors

TINY = ["model=tiny_bert", "task=rte", "trainer.max_steps=2", "trainer.train_limit=16", "trainer.eval_limit=8",
        "trainer.batch_size=8", "trainer.eval_every=2"]  # fmt: skip
RTE = ["index\tsentence1\tsentence2\tlabel", "0\tA man sleeps.\tSomeone sleeps.\tentailment"]


def glue_dir(tmp: Path, train: bytes | str | None = None) -> Path:
    """A GLUE folder with a tiny RTE (dev always valid), its train.tsv replaced when given."""
    folder = tmp / "glue" / "RTE"
    folder.mkdir(parents=True)
    (folder / "dev.tsv").write_text("\n".join(RTE) + "\n")
    body = "\n".join(RTE) + "\n" if train is None else train
    if train != "absent":
        (folder / "train.tsv").write_bytes(body if isinstance(body, bytes) else body.encode())
    return tmp / "glue"


def adapter(tmp: Path, model: str = "tiny_bert", **config) -> Path:
    from experiments.models import build

    m = lora.apply(build(model, head="seq_cls"), lora.LoRAConfig(**{"r": 8, "targets": ("q", "v"), **config}))
    return lora.save(m, tmp / f"adapter-{model}-{config.get('r', 8)}" / "adapter.safetensors")


def finished_run(tmp: Path) -> Path:
    folder = tmp / "done"
    outcome([*TINY, f"trainer.output_dir={folder}"])
    return folder


def partial_run(tmp: Path) -> Path:
    folder = tmp / "partial"
    outcome([*TINY, f"trainer.output_dir={folder}", "trainer.stop_after=1", "trainer.save_every=1"])
    return folder


def notes(tmp: Path) -> Path:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("my notes")
    return tmp / "mine"


def truncated(tmp: Path) -> Path:
    file = adapter(tmp)
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    return file


def garbage(tmp: Path) -> Path:
    file = adapter(tmp)
    data = bytearray(file.read_bytes())
    data[:8] = b"\xff" * 8  # the header length: no longer a safetensors file
    file.write_bytes(bytes(data))
    return file


def glue_task_dir(tmp: Path, folder: str, rows: list[str]) -> Path:
    """A GLUE folder whose task `folder` has train.tsv = rows and a valid one-row dev.tsv."""
    path = tmp / "glue" / folder
    path.mkdir(parents=True)
    (path / "train.tsv").write_text("\n".join(rows) + "\n")
    (path / "dev.tsv").write_text("\n".join(rows[:1] + [_VALID_ROW[folder]]) + "\n")
    return tmp / "glue"


_VALID_ROW = {"SST-2": "a fine film\t1", "STS-B": "0\ta\tb\t\t\t\t\ta\tb\t3.2"}
SST2 = ["sentence\tlabel", "a fine film\t1"]
STSB = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]


def with_file(tmp: Path, name: str, text: str = "not a folder") -> Path:
    (tmp / name).write_text(text)
    return tmp / name


def damaged(tmp: Path, name: str) -> Path:
    """A stopped run whose config.yaml or metrics.json is cut in half."""
    folder = partial_run(tmp)
    file = folder / name
    if not file.exists():
        file.write_text(json.dumps({"status": "stopped", "evals": []}))
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2] + b"\x00{[")
    return folder


_HELD: list[int] = []  # folder locks held by the test process, as a concurrent run would hold them


def locked(tmp: Path) -> Path:
    import fcntl
    import os

    folder = partial_run(tmp)
    fd = os.open(folder, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _HELD.append(fd)
    return folder


def e2e_dir(tmp: Path, train: str) -> Path:
    folder = tmp / "e2e"
    folder.mkdir()
    (folder / "trainset.csv").write_text(train)
    return folder


def peft_folder(tmp: Path, **extra) -> Path:
    from experiments.models import build

    m = lora.apply(build("tiny_bert", head="seq_cls"), lora.LoRAConfig(r=4))
    folder = lora.save(m, tmp / "peft", format="peft")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, **extra}))
    return folder


# (id, setup -> {name: value} for the command, command, part of the one line)
CASES = [
    # config typos and wrong types
    ("unknown key", None, ["trainer.lr_rate=1"], "lr_rate"),
    ("wrong type", None, ["trainer.lr=fast"], "lr"),
    ("unknown model", None, ["model=gpt5"], "gpt5"),
    ("unknown method", None, ["method=lorra"], "lorra"),
    ("unknown task", None, ["task=sst3"], "sst3"),
    ("negative steps", None, [*TINY, "trainer.max_steps=-1"], "max_steps"),
    ("zero batch", None, [*TINY, "trainer.batch_size=0"], "batch_size"),
    ("bad resume mode", None, [*TINY, "trainer.resume=maybe"], "trainer.resume must be auto or never"),
    # ranks and weight types
    ("rank 0", None, [*TINY, "method.r=0"], "rank for 'q' must be a positive integer"),
    ("negative rank", None, [*TINY, "method.r=-4"], "must be a positive integer"),
    ("rank above the weight", None, [*TINY, "method.r=1000"], "exceeds the size"),
    ("unknown weight type", None, [*TINY, "method.targets=[q,gate]"], "unknown weight type 'gate'"),
    ("alpha 0", None, [*TINY, "method.alpha=0"], "alpha for 'q' must be a positive number"),
    ("dropout 1.5", None, [*TINY, "method.dropout=1.5"], "dropout must be in [0, 1)"),
    ("method not for the family", None, ["model=tiny_llama", "method=bitfit", "task=rte"], "does not support"),
    ("block out of range", None, [*TINY, "method.layers=[7]"], "layers=[7] but this bert model has 2 blocks"),
    # adapter files
    ("adapter missing", None, [*TINY, "trainer.init_adapter={tmp}/nothing.safetensors"], "no adapter file"),
    ("adapter truncated", lambda t: {"a": truncated(t)}, [*TINY, "trainer.init_adapter={a}"], "truncated"),
    ("adapter garbled", lambda t: {"a": garbage(t)}, [*TINY, "trainer.init_adapter={a}"], "not a readable"),
    ("adapter of another shape", lambda t: {"a": adapter(t, r=4)}, [*TINY, "trainer.init_adapter={a}"],
     "they must agree on"),
    ("adapter of another model", lambda t: {"a": adapter(t, "tiny_roberta")},
     [*TINY, "model=tiny_deberta", "trainer.init_adapter={a}"], "does not fit this model"),
    # data files
    ("data missing", lambda t: {"d": glue_dir(t, "absent")}, [*TINY, "task.data_dir={d}", "task.hub=false"],
     "GLUE rte train not found"),
    ("data empty", lambda t: {"d": glue_dir(t, "")}, [*TINY, "task.data_dir={d}"], "is empty"),
    ("data wrong columns", lambda t: {"d": glue_dir(t, "id\ttext\tlabel\n0\thi\t1\n")}, [*TINY, "task.data_dir={d}"],
     "lacks the columns"),
    ("data invalid UTF-8", lambda t: {"d": glue_dir(t, "\n".join(RTE).encode() + b"\xff\xfe bad\n")},
     [*TINY, "task.data_dir={d}"], "is not valid UTF-8"),
    ("data wrong label", lambda t: {"d": glue_dir(t, RTE[0] + "\n0\ta\tb\tmaybe\n")}, [*TINY, "task.data_dir={d}"],
     "label 'maybe' is not one of"),
    # output folders
    ("folder holds a finished run", lambda t: {"r": finished_run(t)}, [*TINY, "trainer.output_dir={r}"],
     "already holds a finished run"),
    ("folder holds another config", lambda t: {"r": partial_run(t)},
     [*TINY, "trainer.output_dir={r}", "trainer.lr=0.5"], "holds a run of another config (differs in trainer.lr"),
    ("folder holds other files", lambda t: {"r": notes(t)}, [*TINY, "trainer.output_dir={r}"],
     "already holds other files"),
    ("checkpoint but resume=never", lambda t: {"r": partial_run(t)},
     [*TINY, "trainer.output_dir={r}", "trainer.save_every=1", "trainer.resume=never"],
     "holds a checkpoint and trainer.resume=never"),
    # engines
    ("unknown engine", None, [*TINY, "trainer.engine=horovod"], "unknown trainer.engine 'horovod'"),
    ("offload without DeepSpeed", None, [*TINY, "trainer.offload=true"], "offload needs trainer.engine=deepspeed"),
    ("ZeRO stage 1", None, [*TINY, "trainer=deepspeed_zero2", "trainer.zero_stage=1"], "zero_stage must be 2 or 3"),
    # every numeric trainer setting has a range (experiments.config.RANGES)
    ("unknown experiment", None, ["experiment=roberta_base_rtee"], "Could not find 'experiment/roberta_base_rtee'"),
    ("negative grad norm", None, [*TINY, "trainer.max_grad_norm=-1"], "trainer.max_grad_norm must be >= 0"),
    ("infinite epochs", None, [*TINY, "trainer.max_steps=null", "trainer.epochs=inf"],
     "trainer.epochs must be > 0 (or set trainer.max_steps), got inf"),
    ("seed beyond 2^64", None, [*TINY, "trainer.seed=18446744073709551617"], "trainer.seed must be in [0, "),
    ("negative seed", None, [*TINY, "trainer.seed=-1"], "trainer.seed must be in [0, "),
    ("threads -1", None, [*TINY, "trainer.threads=-1"], "trainer.threads must be >= 1"),
    ("lr nan", None, [*TINY, "trainer.lr=nan"], "trainer.lr must be > 0, got nan"),
    ("negative lr", None, [*TINY, "trainer.lr=-1e-3"], "trainer.lr must be > 0"),
    ("negative weight decay", None, [*TINY, "trainer.weight_decay=-0.1"], "trainer.weight_decay must be >= 0"),
    ("label smoothing 1", None, [*TINY, "trainer.label_smoothing=1"], "trainer.label_smoothing must be in [0, 1)"),
    ("warmup ratio 1.5", None, [*TINY, "trainer.warmup_ratio=1.5"], "trainer.warmup_ratio must be in [0, 1)"),
    ("negative warmup steps", None, [*TINY, "trainer.warmup_steps=-2"], "trainer.warmup_steps must be >= 0"),
    ("negative warmup tokens", None, [*TINY, "trainer.warmup_tokens=-1"], "trainer.warmup_tokens must be >= 0"),
    ("log every 0", None, [*TINY, "trainer.log_every=0"], "trainer.log_every must be > 0"),
    ("eval batch 0", None, [*TINY, "trainer.eval_batch_size=0"], "trainer.eval_batch_size must be > 0"),
    ("save every 0", None, [*TINY, "trainer.save_every=0"], "trainer.save_every must be >= 1 or null"),
    ("stop after 0", None, [*TINY, "trainer.stop_after=0"], "trainer.stop_after must be >= 1 or null"),
    ("train limit 0", None, [*TINY, "trainer.train_limit=0"], "trainer.train_limit must be >= 1 or null"),
    ("unknown trainer", None, ["trainer=zero9"], "zero9"),
    ("unknown logger", None, ["logger=tensorboard"], "tensorboard"),
    # the task's options and decoding settings, checked before training
    ("unknown task option", None, [*TINY, "+task.max_lenght=64"], "task rte has no option max_lenght"),
    ("max length 1", None, [*TINY, "task.max_length=1"], "task.max_length must be an integer >= 2"),
    ("decoding batch 0", None, ["model=tiny_gpt2", "task=e2e", "task.decoding.batch_size=0"],
     "task.decoding.batch_size must be an integer >= 1, got 0"),
    ("decoding beams 0", None, ["model=tiny_gpt2", "task=e2e", "task.decoding.num_beams=0"],
     "task.decoding.num_beams must be an integer >= 1"),
    ("decoding length penalty inf", None, ["model=tiny_gpt2", "task=e2e", "task.decoding.length_penalty=inf"],
     "task.decoding.length_penalty must be a finite number"),
    ("decoding unknown setting", None, ["model=tiny_gpt2", "task=e2e", "+task.decoding.temperature=0.7"],
     "unknown decoding settings ['temperature']"),
    ("decoding unknown loop", None, ["model=tiny_gpt2", "task=e2e", "task.decoding.loop=hf"],
     "task.decoding.loop must be released or transformers, got 'hf'"),
    ("transformers loop, released ban", None, ["model=tiny_gpt2", "task=e2e", "task.decoding.loop=transformers"],
     "with task.decoding.loop=transformers set no_repeat_scope=all and ban_before_softmax=false"),
    ("decoding clean misspelt", None, ["model=tiny_gpt2", "task=e2e", "task.decoding.clean=first-line"],
     "task.decoding.clean must be released or first_line"),
    ("old format name", None, ["model=tiny_gpt2", "task=e2e", "task.format=lora"],
     "task.format must be released or official, got 'lora'"),
    ("unknown optimizer", None, [*TINY, "trainer.optimizer=adam"], "trainer.optimizer must be one of adamw, adamw_r"),
    ("negative adam eps", None, [*TINY, "trainer.adam_eps=-1e-8"], "trainer.adam_eps must be > 0"),
    ("base dropout 1", None, [*TINY, "trainer.base_dropout=1.0"], "trainer.base_dropout must be in [0, 1)"),
    ("decode limit 0", None, ["model=tiny_gpt2", "task=e2e", "task.decode_limit=0"],
     "task.decode_limit must be an integer >= 1 or null"),
    ("decode split unknown", None, ["model=tiny_gpt2", "task=e2e", "task.decode_split=validation"],
     "task.decode_split must be one of train, dev, test"),
    # labels and values the task has no place for, found when the files are read
    ("SST-2 label 2", lambda t: {"d": glue_task_dir(t, "SST-2", [*SST2, "a dull film\t2"])},
     [*TINY, "task=sst2", "task.data_dir={d}"], "label '2' is outside SST-2's range [0, 1]"),
    ("SST-2 label -1", lambda t: {"d": glue_task_dir(t, "SST-2", [*SST2, "a dull film\t-1"])},
     [*TINY, "task=sst2", "task.data_dir={d}"], "label '-1' is outside SST-2's range"),
    ("STS-B nan", lambda t: {"d": glue_task_dir(t, "STS-B", [*STSB, "1\tg\tf\ty\t1\ts\ts\ta\tb\tnan"])},
     [*TINY, "task=stsb", "task.data_dir={d}"], "score 'nan' is outside STS-B's range [0, 5]"),
    ("STS-B 7.5", lambda t: {"d": glue_task_dir(t, "STS-B", [*STSB, "1\tg\tf\ty\t1\ts\ts\ta\tb\t7.5"])},
     [*TINY, "task=stsb", "task.data_dir={d}"], "score '7.5' is outside STS-B's range [0, 5]"),
    ("E2E wrong header", lambda t: {"d": e2e_dir(t, "meaning,text\nname[x],y\n")},
     ["model=tiny_gpt2", "task=e2e", "task.data_dir={d}", "task.hub=false"], "expected `mr,ref` or `MR`"),
    ("E2E data missing", None, ["model=tiny_gpt2", "task=e2e", "task.data_dir={tmp}/none", "task.hub=false"],
     "e2e train not found"),
    # output folders: what cannot be one, what is damaged, what another run holds
    ("output folder is a file", lambda t: {"f": with_file(t, "out.txt")}, [*TINY, "trainer.output_dir={f}"],
     "is a file, not a folder"),
    ("output folder under a file", lambda t: {"f": with_file(t, "out.txt")}, [*TINY, "trainer.output_dir={f}/run"],
     "is a file, so"),
    ("output folder name too long", None, [*TINY, "trainer.output_dir={tmp}/" + "n" * 300], "at most 255"),
    ("damaged metrics.json", lambda t: {"r": damaged(t, "metrics.json")}, [*TINY, "trainer.output_dir={r}"],
     "metrics.json cannot be read"),
    ("damaged config.yaml", lambda t: {"r": damaged(t, "config.yaml")}, [*TINY, "trainer.output_dir={r}"],
     "config.yaml cannot be read"),
    ("folder in use by another run", lambda t: {"r": locked(t)}, [*TINY, "trainer.output_dir={r}"],
     "another run is writing to"),
    # methods that cannot apply
    ("prefix on an encoder", None, ["model=tiny_bert", "method=prefix_embed", "task=rte"], "does not support"),
    ("adapter_d drops every block", None, [*TINY, "method=adapter_d"], "must leave at least one of the 2 blocks"),
    ("init adapter for BitFit", lambda t: {"a": adapter(t)}, [*TINY, "method=bitfit", "trainer.init_adapter={a}"],
     "needs a LoRA method"),
    ("model without weights", None, ["model=gpt3_175b", "task=rte"], "has no weights anywhere"),
    ("unknown LoRA init", None, [*TINY, "method.init=xavier"], "init must be one of"),
    ("init's name before 2026-12", None, [*TINY, "method.init=paper"], "init=paper is now called init=gaussian"),
    ("unknown bias mode", None, [*TINY, "method.bias=some"], "bias must be one of"),
    ("a sweep file without -m", None, ["+sweep=section7_minilm_sst2", "trainer.max_steps=2"],
     "run the sweep with -m (python run.py -m +sweep=section7_minilm_sst2"),
]  # fmt: skip


def outcome(argv: list[str]) -> tuple[int, str]:
    """(exit code, the error line) of `python run.py ARGV`, run in this process as run.py does."""
    try:
        check_config(argv)
        run(OmegaConf.to_container(compose(argv), resolve=True))
    except SystemExit as exit_:
        return 1, str(exit_.code)
    except USER_ERRORS as err:
        return 2, f"error: {err}"
    return 0, ""


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_there_are_at_least_70_bad_inputs():
    assert len({c[0] for c in CASES}) == len(CASES) >= 70


@pytest.mark.parametrize(("name", "setup", "argv", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(tmp_path, monkeypatch, name, setup, argv, message):
    monkeypatch.chdir(tmp_path)  # a run folder with a relative default path would land here
    values = {"tmp": tmp_path, **(setup(tmp_path) if setup else {})}
    argv = [a.format(**values) for a in argv]
    if not any(a.startswith("trainer.output_dir=") for a in argv):
        argv.append(f"trainer.output_dir={tmp_path}/out")
    before = snapshot(tmp_path)
    code, line = outcome(argv)
    assert code != 0, f"{name}: accepted"
    assert line.startswith("error: ") and "\n" not in line.strip(), line
    assert message in line, line
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before, "an existing file changed"


@pytest.mark.parametrize(
    ("env", "argv", "message"),
    [
        ({"WORLD_SIZE": "2"}, [*TINY], "launched as 2 processes but trainer.engine=single"),
        ({"WORLD_SIZE": "3"}, [*TINY, "trainer=ddp"], "trainer.batch_size=8 is the global batch: it must divide"),
        ({"SLURM_STEP_NUM_TASKS": "4"}, [*TINY], "started as one of 4 SLURM tasks without torchrun"),
    ],
)
def test_a_launch_that_does_not_fit_the_engine_is_one_line(tmp_path, monkeypatch, env, argv, message):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for key, value in env.items():  # as torchrun or srun set them; refused before any process group is made
        monkeypatch.setenv(key, value)
    code, line = outcome([*argv, f"trainer.output_dir={tmp_path}/out"])
    assert code == 2 and message in line and "\n" not in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (None, "cannot read the plan"),
        ("[[1, 2]", "cannot read the plan"),
        ('{"a": 1}', "must hold a JSON list of [output_dir, [override, ...]]"),
        ('[["out", ["trainer.lr_rate=1"]]]', "lr_rate"),
    ],
)
def test_a_bad_plan_is_one_line(tmp_path, plan, message):
    if plan is not None:
        (tmp_path / "plan.json").write_text(plan.replace("out", str(tmp_path / "out")))
    done = subprocess.run([sys.executable, "-m", "experiments.plan", str(tmp_path / "plan.json")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_peft_adapter_configs_with_unknown_fields_or_features_are_refused(tmp_path):
    from experiments.models import build

    cases = (({"use_dora": True}, "use_dora"), ({"my_new_field": 1}, "my_new_field"),
             ({"alpha_pattern": {"query(": 8}}, "alpha_pattern key 'query(' is not a regular expression"))  # fmt: skip
    for extra, message in cases:
        folder = peft_folder(tmp_path / str(len(message)), **extra)
        before = snapshot(folder)
        with pytest.raises(lora.LoRAError, match=re.escape(message)) as err:
            lora.load(build("tiny_bert", head="seq_cls"), folder)
        assert "\n" not in str(err.value) and snapshot(folder) == before


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["trainer.lr_rate=1"], 1, "lr_rate"),
        ([*TINY, "task.data_dir=/nonexistent", "task.hub=false"], 2, "rte train not found"),
    ],
)
def test_the_real_entry_point_prints_one_line_and_exits_non_zero(tmp_path, argv, code, message):
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), *argv, f"trainer.output_dir={tmp_path}/o"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert done.returncode == code and message in done.stderr, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_torch_load_never_unpickles_objects(tmp_path):
    """Checkpoints are read with weights_only=True: a pickle that would run code is refused."""
    from experiments.runs import RunFolder

    folder = tmp_path / "checkpoints" / "step-0000001"
    write_safetensors({"w": torch.zeros(2)}, {}, folder / "trainable.safetensors")
    torch.save({"x": shutil.rmtree}, folder / "optimizer.pt")  # a callable: not plain weights
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        RunFolder(tmp_path).load_checkpoint(folder)


# --- parsers fuzzed: whatever the bytes, only the parser's own one-line error may escape ---

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(content=st.binary(max_size=400), task=st.sampled_from(["rte", "sst2", "stsb", "mrpc"]))
def test_glue_tsv_reader_fuzzed(tmp_path_factory, content, task):
    from experiments.tasks import TaskError
    from experiments.tasks.glue import SPECS, read_tsv

    file = tmp_path_factory.mktemp("tsv") / "train.tsv"
    file.write_bytes(content)
    try:
        read_tsv(file, SPECS[task])
    except TaskError as err:
        assert "\n" not in str(err)


@FUZZ
@given(content=st.binary(max_size=600), keep=st.integers(0, 2000))
def test_adapter_file_reader_fuzzed(tmp_path_factory, content, keep):
    """Random bytes, or a real adapter file cut or overwritten at some point: a LoRAError, never a crash."""
    from experiments.models import build

    folder = tmp_path_factory.mktemp("adapter")
    real = lora.save(lora.apply(build("tiny_bert", head="seq_cls"), lora.LoRAConfig(r=2)), folder / "a")
    data = real.read_bytes()
    real.write_bytes(data[:keep] + content + data[keep + len(content) :])
    try:
        lora.load(build("tiny_bert", head="seq_cls"), real)
    except lora.LoRAError as err:
        assert "\n" not in str(err)


@FUZZ
@given(extra=st.dictionaries(st.text(min_size=1, max_size=12), JSON, max_size=3))
def test_peft_adapter_config_fuzzed(tmp_path_factory, extra):
    from experiments.models import build

    folder = peft_folder(tmp_path_factory.mktemp("peft"), **extra)
    try:
        lora.load(build("tiny_bert", head="seq_cls"), folder)
    except lora.LoRAError as err:
        assert "\n" not in str(err)


@FUZZ
@given(body=JSON, path=st.sampled_from(["/classify", "/generate", "/x"]))
def test_server_request_parser_fuzzed(body, path):
    from http import HTTPStatus

    from experiments.models import CharTokenizer
    from lora.serve import BatchRunner, Limits, RequestError

    engine = _ENGINE.get("e")
    if engine is None:
        from experiments.models import build

        model = build("tiny_bert", head="seq_cls")
        bank = lora.multi.load(model, {"a": adapter(Path(__import__("tempfile").mkdtemp()))})
        engine = _ENGINE["e"] = BatchRunner(model, CharTokenizer(128), bank, "classify", Limits())
    try:
        engine.parse(path, body if isinstance(body, dict) else {"text": body})
    except RequestError as err:
        assert 400 <= err.status < 500 and err.status != HTTPStatus.OK and "\n" not in str(err)


_ENGINE: dict = {}
