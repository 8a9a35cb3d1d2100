"""A run folder tells the truth: a resume trains on the data its run began with (the files' fingerprint), a
write that fails (a full disk, no permission) is one line naming the file, a run folder removed mid-run is
never "done", and a decode stays inside its run folder."""

from __future__ import annotations

import ast
import atexit
import errno
import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import yaml
from test_bad_inputs import outcome  # the one in-process run.py of the bad-input tests
from test_prompt_tasks import FILES as PROMPT_FILES

import experiments.train
from experiments import decode
from experiments.paths import data_dir
from experiments.runs import RunError, ScalarLog
from experiments.tasks import TaskError, build_task

TINY = ["model=tiny_bert", "task=rte", "trainer.max_steps=2", "trainer.train_limit=16", "trainer.eval_limit=8",
        "trainer.batch_size=8", "trainer.eval_every=2", "trainer.threads=1"]  # fmt: skip
RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


def rte_files(glue: Path, flip: bool = False) -> Path:
    """A small RTE in GLUE's layout under `glue`; `flip` swaps every training label (another data set)."""
    labels = ("entailment", "not_entailment")
    rows = [[f"{i}\tA man number {i} walks.\tSomeone walks {i}.\t{labels[(i % 2) ^ f]}\n" for i in range(24)]
            for f in (flip, False)]  # fmt: skip
    (glue / "RTE").mkdir(parents=True)
    (glue / "RTE" / "train.tsv").write_text(RTE_HEADER + "".join(rows[0]))
    (glue / "RTE" / "dev.tsv").write_text(RTE_HEADER + "".join(rows[1][:8]))
    return glue


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return rte_files(tmp_path_factory.mktemp("data") / "glue")


@pytest.fixture(scope="module")
def partial(tmp_path_factory, data) -> Path:
    """A run of 4 steps stopped after 2 (its checkpoint at step 2), trained on `data` (LORA_DATA_DIR)."""
    folder = tmp_path_factory.mktemp("partial") / "run"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LORA_DATA_DIR", str(data.parent))
        code, line = outcome([*TINY, "trainer.max_steps=4", "trainer.stop_after=2", f"trainer.output_dir={folder}"])
    assert code == 0, line
    assert (folder / "checkpoints" / "step-0000002" / "COMPLETE").is_file()
    return folder


@pytest.fixture
def stopped(partial, tmp_path) -> Path:
    """A copy of the stopped run of its own, as if it had been stopped there."""
    folder = Path(shutil.copytree(partial, tmp_path / "run"))
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["trainer"]["output_dir"] = str(folder)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data) -> Path:
    folder = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LORA_DATA_DIR", str(data.parent))
        code, line = outcome([*TINY, f"trainer.output_dir={folder}"])
    assert code == 0, line
    return folder


def resume(folder: Path, *overrides: str) -> tuple[int, str]:
    return outcome([*TINY, "trainer.max_steps=4", f"trainer.output_dir={folder}", *overrides])


def fingerprint(file: Path) -> dict:
    return {"size": file.stat().st_size, "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}


# --- the data's fingerprint ---------------------------------------------------------------------------------


def test_a_resume_on_changed_data_is_refused_in_one_line_naming_the_file(stopped, tmp_path, monkeypatch):
    flipped = rte_files(tmp_path / "flipped" / "glue", flip=True)  # as a requeued job on a node with other data
    monkeypatch.setenv("LORA_DATA_DIR", str(flipped.parent))
    code, line = resume(stopped)
    assert code == 2 and "\n" not in line, line
    assert f"{flipped / 'RTE' / 'train.tsv'} changed" in line and "dev.tsv" not in line, line
    assert not (stopped / "metrics.json").exists()
    assert (stopped / "checkpoints" / "step-0000002" / "COMPLETE").is_file()  # kept for a resume on the right data


def test_a_resume_on_the_same_files_in_another_place_goes_on(stopped, data, tmp_path):
    moved = Path(shutil.copytree(data, tmp_path / "elsewhere" / "glue"))
    code, line = resume(stopped, f"task.data_dir={moved}")
    assert code == 0, line
    metrics = json.loads((stopped / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["steps"] == 4
    assert "resumed from" in (stopped / "log.txt").read_text()


def test_a_resume_reading_a_file_the_run_did_not_read_is_refused(stopped, data, monkeypatch):
    """Here the checkpoint's run read no dev.tsv (its record lost it): what is read now must have been read then."""
    state = stopped / "checkpoints" / "step-0000002" / "state.json"
    saved = json.loads(state.read_text())
    del saved["data"]["files"]["RTE/dev.tsv"]
    _rewrite_checkpoint_file(state, json.dumps(saved))
    monkeypatch.setenv("LORA_DATA_DIR", str(data.parent))
    code, line = resume(stopped)
    assert code == 2 and "RTE/dev.tsv is read now and was not before" in line, line


def _rewrite_checkpoint_file(file: Path, text: str):
    """Change a checkpoint's file and its checksum (as a run of other code, or other data, would have left it)."""
    file.write_text(text)
    marker = file.parent / "COMPLETE"
    sums = json.loads(marker.read_text())
    sums["sha256"][file.name] = hashlib.sha256(file.read_bytes()).hexdigest()
    marker.write_text(json.dumps(sums))


def test_a_run_folder_moved_to_other_storage_resumes_there(partial, data, tmp_path, monkeypatch):
    moved = Path(shutil.copytree(partial, tmp_path / "scratch" / "run"))  # its config.yaml names the old place
    monkeypatch.setenv("LORA_DATA_DIR", str(data.parent))
    code, line = resume(moved)
    assert code == 0, line
    assert json.loads((moved / "metrics.json").read_text())["steps"] == 4


def test_a_checkpoint_of_older_code_without_a_fingerprint_resumes_with_a_warning(stopped, data, monkeypatch, capfd):
    state = stopped / "checkpoints" / "step-0000002" / "state.json"
    saved = json.loads(state.read_text())
    del saved["data"]
    _rewrite_checkpoint_file(state, json.dumps(saved))
    monkeypatch.setenv("LORA_DATA_DIR", str(data.parent))
    code, line = resume(stopped)
    assert code == 0, line
    err = capfd.readouterr().err
    assert "records no data fingerprint (older code): the data it was trained on is not checked" in err


def test_a_data_file_that_is_a_pipe_is_refused_not_read_for_ever(tmp_path):
    glue = rte_files(tmp_path / "glue")
    (glue / "RTE" / "train.tsv").unlink()
    os.mkfifo(glue / "RTE" / "train.tsv")  # or a link to /dev/zero: reading either never ends
    with pytest.raises(TaskError, match="train.tsv is not a regular file"):
        build_task({"name": "rte", "data_dir": str(glue)}).examples("train")


def test_metrics_json_records_every_file_the_run_read(finished, data):
    recorded = json.loads((finished / "metrics.json").read_text())["data"]
    assert recorded["root"] == str(data)
    assert recorded["files"] == {f"RTE/{s}.tsv": fingerprint(data / "RTE" / f"{s}.tsv") for s in ("dev", "train")}


def _prompt_folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return PROMPT_FILES[name](folder)


# Every kind of task (GLUE; E2E, WebNLG, DART in both formats; the GPT-3 tasks): (name, options, split, folder)
KINDS = [
    ("rte", {}, "train", lambda tmp: rte_files(tmp / "glue")),
    ("e2e", {}, "dev", None),
    ("e2e", {"format": "official"}, "dev", None),
    ("webnlg", {}, "dev", None),
    ("webnlg", {"format": "official"}, "test", None),
    ("dart", {}, "dev", None),
    ("wikisql", {}, "train", lambda tmp: _prompt_folder(tmp, "wikisql")),
    ("samsum", {}, "dev", lambda tmp: _prompt_folder(tmp, "samsum")),
    ("mnli_gen", {}, "train", lambda tmp: _prompt_folder(tmp, "mnli_gen")),
]


@pytest.mark.parametrize(("name", "options", "split", "folder"), KINDS,
                         ids=[f"{k[0]}-{k[1].get('format', 'default')}" for k in KINDS])  # fmt: skip
def test_every_kind_of_task_records_each_file_it_reads(tmp_path, name, options, split, folder):
    where = {"data_dir": str(folder(tmp_path))} if folder else {}
    if not folder and not (data_dir() / name).is_dir():
        pytest.skip(f"no {name} data under {data_dir()}")
    task = build_task({"name": name, **where, **({"hub": False} if name in ("e2e", "webnlg", "dart") else {}),
                       **options})  # fmt: skip
    from experiments.tasks import recording_reads  # here: the rest of this file runs on code without it

    with recording_reads() as read:
        assert task.examples(split)
    assert read and all(file.is_relative_to(task.dir) for file in read)
    assert read == {file: fingerprint(file) for file in read}


def test_no_task_module_reads_a_file_except_through_read_data():
    """`read_data` is the one reader, so a new reader cannot leave its files out of a run's fingerprint."""
    readers = {"open", "read_text", "read_bytes", "safe_open", "load", "loadtxt", "read_csv"}
    found = []
    for file in sorted((Path(experiments.train.__file__).parent / "tasks").glob("*.py")):
        if file.name == "base.py":  # read_data itself
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in readers:
                    found.append(f"{file.name}:{node.lineno} {called}")
    assert found == []


# --- writes that fail: one line naming the file, nothing left to fail at exit -------------------------------


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")  # as a write says it: no file named


class FullFile:
    """A file whose writes fail as on a full disk."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        enospc()

    def __getattr__(self, name):
        return getattr(self.file, name)


def test_a_full_disk_under_safetensors_is_one_line_naming_the_file(tmp_path, monkeypatch, capfd):
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("lora.files.save_file", full)
    code, line = outcome([*TINY, f"trainer.output_dir={tmp_path}"])
    assert code == 2 and "\n" not in line, line
    assert line.startswith("error: [Errno 28] No space left on device") and ".safetensors'" in line, line
    assert not (tmp_path / "metrics.json").exists() and "Traceback" not in capfd.readouterr().err


def test_a_full_disk_under_scalars_csv_is_one_line_naming_the_file(tmp_path, monkeypatch):
    real_open = open

    def opened(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return FullFile(f) if mode == "a" else f

    monkeypatch.setattr("experiments.runs.open", opened, raising=False)
    code, line = outcome([*TINY, f"trainer.output_dir={tmp_path}"])
    assert code == 2 and line == f"error: [Errno 28] No space left on device: '{tmp_path / 'scalars.csv'}'"


def test_a_full_disk_under_tensorboard_is_one_line_and_leaves_no_writer_behind(tmp_path, monkeypatch, capfd):
    pytest.importorskip("tensorboardX")
    monkeypatch.setattr("tensorboardX.record_writer.RecordWriter.write", enospc)
    threads, exit_hooks = threading.active_count(), atexit._ncallbacks()
    code, line = outcome([*TINY, f"trainer.output_dir={tmp_path}"])
    assert code == 2 and "\n" not in line, line
    assert line.startswith("error: [Errno 28] No space left on device") and "tensorboard/events.out.tfevents" in line
    assert "Traceback" not in capfd.readouterr().err
    assert (threading.active_count(), atexit._ncallbacks()) == (threads, exit_hooks)  # nothing to fail at exit


def test_tensorboard_files_of_a_stop_and_its_resume_in_the_same_second_are_both_kept(tmp_path):
    pytest.importorskip("tensorboardX")
    for step in (0, 2):  # a run stopped and resumed at once (in one process: a sweep, a test)
        scalars = ScalarLog(tmp_path, step)
        scalars.log(step + 1, {"train/loss": 1.0})
        scalars.close()
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2


def test_a_log_file_that_cannot_be_written_is_said_once(tmp_path, monkeypatch, capfd):
    import logging

    real_open = logging.FileHandler._open
    monkeypatch.setattr(logging.FileHandler, "_open", lambda self: FullFile(real_open(self)))
    code, line = outcome([*TINY, f"trainer.output_dir={tmp_path}"])
    err = capfd.readouterr().err
    assert code == 0, line  # the log still reaches the terminal; the run's files are whole
    assert "Traceback" not in err and "Logging error" not in err
    assert err.count(f"warning: cannot write {tmp_path / 'log.txt'} (No space left on device)") == 1


def test_a_folder_that_refuses_a_file_names_the_file_not_its_temporary(tmp_path, monkeypatch):
    def denied(dir, prefix, suffix):
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/{prefix}x1y2{suffix}")

    monkeypatch.setattr("lora.files.tempfile.mkstemp", denied)
    code, line = outcome([*TINY, f"trainer.output_dir={tmp_path}"])
    assert code == 2 and line.startswith(f"error: cannot write {tmp_path / 'config.yaml'}: "), line
    assert "Permission denied" in line and "x1y2" not in line


# --- a run folder that vanishes --------------------------------------------------------------------------------


def test_a_run_folder_removed_mid_run_is_never_done(tmp_path, monkeypatch):
    save = experiments.train.checkpoints.save

    def removed_first(folder, engine, state):
        shutil.rmtree(folder.path)  # as `rm -r` in another shell would, between two writes
        return save(folder, engine, state)

    monkeypatch.setattr(experiments.train.checkpoints, "save", removed_first)
    code, line = outcome([*TINY, f"trainer.output_dir={tmp_path / 'run'}"])
    assert code == 2 and "was removed or replaced while the run wrote it" in line, line
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_run_whose_files_vanish_before_the_end_is_never_done(tmp_path, monkeypatch):
    write = experiments.train._write_adapter

    def and_lose_the_best(model, tensors, file, cfg):
        write(model, tensors, file, cfg)
        if file.name == "adapter.safetensors":  # the last write before metrics.json
            (file.parent / "adapter-best.safetensors").unlink()

    monkeypatch.setattr(experiments.train, "_write_adapter", and_lose_the_best)
    code, line = outcome([*TINY, f"trainer.output_dir={tmp_path}"])
    assert code == 2 and "adapter-best.safetensors vanished from" in line, line
    assert not (tmp_path / "metrics.json").exists()


# --- decodes stay in their run folder -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["/tmp/elsewhere", "../../escaped", "a/b", "..", ".", "", "a\nb"])
def test_a_decode_name_that_is_a_path_is_refused(finished, name, capsys):
    with pytest.raises(SystemExit) as exit_:
        decode.main([str(finished), "--name", name])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "must be a plain folder name" in err, err
    assert not (finished / "decodes").exists()


def test_a_decode_name_is_checked_before_anything_else(finished):
    with pytest.raises(RunError, match="plain folder name"):
        decode.decode_run(finished, "/abs/path")
