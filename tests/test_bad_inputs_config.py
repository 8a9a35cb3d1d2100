"""Configs and task files are strict everywhere (issue 26): each bad value is one `error:` line before anything
runs, or, where only the data can tell, before training starts, never a traceback or a result that cannot be
trusted. Grouped by class; most cases stop in `check_config` (no model, no folder) and take milliseconds.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from test_bad_inputs import STSB, TINY, glue_task_dir, outcome

from experiments.cli import check_config, compose
from experiments.config import validate
from experiments.tasks import TaskError, build_task
from lora import LoRAConfig, LoRAError

E2E = ["model=tiny_gpt2", "task=e2e", "trainer.max_steps=1", "trainer.train_limit=2", "trainer.eval_limit=2",
       "trainer.batch_size=2", "task.decode_limit=1"]  # fmt: skip


def refused_up_front(argv: list[str], tmp: Path) -> str:
    """The one line `check_config` exits with (as run.py and experiments.plan call it, before Hydra makes the
    run folder); fails if the config is accepted."""
    with pytest.raises(SystemExit) as exit_:
        check_config([*argv, f"trainer.output_dir={tmp}/out"])
    line = str(exit_.value.code)
    assert line.startswith("error: ") and "\n" not in line, line
    assert not (tmp / "out").exists()
    return line


# --- LoRAConfig: every option checked for type, range and sign (the library, without a model) ---


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": ("a",)}, "layers are block indices (integers from 0; null: every block), got ('a',)"),
        ({"layers": (1.7,)}, "layers are block indices"),  # was silently block 1
        ({"layers": (True,)}, "layers are block indices"),  # was silently block 1
        ({"alpha": math.nan}, "alpha for 'q' must be a positive number (finite), got nan"),
        ({"alpha": math.inf}, "alpha for 'q' must be a positive number (finite), got inf"),
        ({"r": {"q": 4, "v": 4}, "alpha": {"q": 8, "v": math.inf}}, "alpha for 'v' must be a positive number"),
        ({"rslora": "no"}, "rslora must be true or false, got 'no'"),  # a non-empty string was rsLoRA on
        ({"train_head": 0}, "train_head must be true or false, got 0"),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else None,
)
def test_lora_config_refuses_values_of_the_wrong_type_or_range(kwargs, message):
    with pytest.raises(LoRAError) as err:
        LoRAConfig(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_lora_config_still_takes_one_block_or_a_list():
    assert LoRAConfig(layers=1).layers == (1,) and LoRAConfig(layers=[1, 0]).layers == (0, 1)
    assert LoRAConfig.from_dict({"layers": 0}).layers == (0,)


# --- the command line: refused before anything runs ---

UP_FRONT = [
    # the method's options, checked against the model's architecture on the meta device
    ("layers a", [*TINY, "method.layers=[a]"], "layers are block indices"),
    ("layers 1.7", [*TINY, "method.layers=[1.7]"], "layers are block indices"),
    ("alpha nan", [*TINY, "method.alpha=nan"], "alpha for 'q' must be a positive number (finite), got nan"),
    ("alpha inf", [*TINY, "method.alpha=inf"], "alpha for 'q' must be a positive number (finite), got inf"),
    ("rslora yes", [*TINY, "method.rslora=yes"], "rslora must be true or false"),
    ("rank above the weight", [*TINY, "method.r=1000"], "exceeds the size"),  # was found after making the folder
    ("block 7 of 2", [*TINY, "method.layers=[7]"], "layers=[7] but this bert model has 2 blocks"),
    # keys nothing reads
    ("unknown top-level key", [*TINY, "+foo=bar"], "unknown config key foo; the top level has only"),
    ("adapter_alpha without a loralib file", [*TINY, "trainer.adapter_alpha=8"],
     "trainer.adapter_alpha is for a loralib checkpoint"),
    ("adapter_alpha with our adapter", [*TINY, "trainer.max_steps=0", "trainer.eval_adapter=a/adapter.safetensors",
                                        "trainer.adapter_alpha=8"], "a/adapter.safetensors stores its own alpha"),
    # the task's options, checked against their types
    ("E2E separator null", ["model=tiny_gpt2", "task=e2e", "task.format=official", "task.separator=null"],
     "task.separator must be text (not empty), got None"),
    ("E2E separator a number", ["model=tiny_gpt2", "task=e2e", "task.format=official", "task.separator=5"],
     "task.separator must be text (not empty), got 5"),
    ("hub maybe", [*TINY, "task.hub=maybe"], "task.hub must be true or false, got 'maybe'"),
    ("data_dir a number", [*TINY, "task.data_dir=3"], "task.data_dir must be text (not empty) or null, got 3"),
    ("decode_limit true", ["model=tiny_gpt2", "task=e2e", "task.decode_limit=true"],
     "task.decode_limit must be an integer or null, got True"),
    # empty text, as `key=$UNSET` gives it, was read as "not set": the untrained model evaluated, the default data
    ("eval_adapter empty", [*TINY, "trainer.max_steps=0", "trainer.eval_adapter=''"],
     "trainer.eval_adapter must be text (not empty) or null, got ''"),
    ("init_adapter empty", [*TINY, "trainer.init_adapter=''"], "trainer.init_adapter must be text (not empty)"),
    ("data_dir empty", [*TINY, "task.data_dir=''"], "task.data_dir must be text (not empty) or null, got ''"),
    # a model that cannot do the task
    ("BERT on E2E", ["model=tiny_bert", "task=e2e"], "task e2e generates text, which needs a decoder-only"),
    ("DeBERTa on E2E", ["model=tiny_deberta", "task=e2e"], "model type 'deberta-v2' is not one"),
    ("RoBERTa on WebNLG", ["model=tiny_roberta", "task=webnlg"], "task webnlg generates text"),
    ("BERT on WikiSQL", ["model=tiny_bert", "task=wikisql"], "task wikisql generates text"),
    # an evaluation too small for the metric
    ("STS-B eval_limit 1", [*TINY, "task=stsb", "trainer.eval_limit=1"],
     "task stsb scores pearson, which needs at least 2 evaluated examples; trainer.eval_limit=1 is too few"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "argv", "message"), UP_FRONT, ids=[c[0] for c in UP_FRONT])
def test_bad_config_is_one_line_before_anything_runs(tmp_path, name, argv, message):
    assert message in refused_up_front(argv, tmp_path)


def test_every_task_and_model_family_pair_is_checked():
    """Decoders take every task; encoders only classification (check_config calls check_run, as above)."""
    import lora
    from baselines.prefix import DECODERS
    from experiments.tasks import GLUE_TASKS, NLG_TASKS, PROMPT_TASKS, check_run

    for model_type in lora.FAMILIES:
        for name in (*GLUE_TASKS, *NLG_TASKS, *PROMPT_TASKS):
            task = build_task({"name": name})
            if model_type in DECODERS or name in GLUE_TASKS:
                check_run(task, model_type)
            else:
                with pytest.raises(TaskError, match=f"task {name} generates text, which needs a decoder-only"):
                    check_run(task, model_type)


# --- the trainer's and the task's settings as plain dicts (experiments.train.run, experiments.plan) ---


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("batch_size", 1.5, "trainer.batch_size must be an integer, got 1.5"),
        ("max_steps", True, "trainer.max_steps must be an integer or null, got True"),
        ("seed", 2.0, "trainer.seed must be an integer, got 2.0"),
        ("bf16", "no", "trainer.bf16 must be true or false or null, got 'no'"),  # a non-empty string: bf16 on
        ("lr", True, "trainer.lr must be a number, got True"),
        ("lr_rate", 1e-3, "trainer has no setting lr_rate"),
    ],
)
def test_trainer_settings_are_checked_by_type_without_hydra(key, value, message):
    from experiments.runs import RunError

    trainer = OmegaConf.to_container(compose(TINY), resolve=True)["trainer"]
    validate(trainer)  # the composed one is fine
    with pytest.raises(RunError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate({**trainer, key: value})


def test_task_options_are_checked_by_type_without_hydra():
    with pytest.raises(TaskError, match="task.good_only must be true or false, got 'yes'"):
        build_task({"name": "webnlg", "good_only": "yes"})
    with pytest.raises(TaskError, match="task.max_length must be an integer, got 64.0"):
        build_task({"name": "rte", "max_length": 64.0})


# --- task files: read whole, or one line naming the row; every split read before training ---


def test_a_5_mb_sentence_in_a_glue_tsv_is_read(tmp_path):
    from experiments.tasks.glue import SPECS, read_tsv

    file = tmp_path / "train.tsv"
    file.write_text("sentence\tlabel\n" + "word " * 1_000_000 + "\t1\na short one\t0\n")
    examples = read_tsv(file, SPECS["sst2"])
    assert len(examples) == 2 and len(examples[0].text_a) == 5_000_000 and examples[1].label == 0


def test_a_5_mb_reference_in_an_e2e_csv_is_read(tmp_path):
    from experiments.tasks.nlg_files import read_e2e

    file = tmp_path / "trainset.csv"
    file.write_text('mr,ref\n"name[A]","' + "word " * 1_000_000 + '"\n')
    assert len(read_e2e(file)[0].references[0]) == 5_000_000


def _e2e_official(tmp: Path, test: str) -> Path:
    folder = tmp / "e2e"
    folder.mkdir()
    good = 'mr,ref\n"name[The Eagle], food[French]","The Eagle serves French food."\n'
    (folder / "trainset.csv").write_text(good)
    (folder / "devset.csv").write_text(good)
    (folder / "testset_w_refs.csv").write_text(test)
    return folder


def _nothing_trained(folder: Path) -> bool:
    return not any(folder.rglob("*.safetensors")) and not (folder / "metrics.json").exists()


def test_a_bad_e2e_test_file_is_refused_before_training(tmp_path):
    data = _e2e_official(tmp_path, "meaning,text\nx,y\n")
    out = tmp_path / "out"
    code, line = outcome([*E2E, "task.format=official", f"task.data_dir={data}", "task.hub=false",
                          f"trainer.output_dir={out}"])  # fmt: skip
    assert code == 2 and "testset_w_refs.csv is malformed" in line and "\n" not in line, line
    assert _nothing_trained(out)


@pytest.mark.parametrize(
    ("dev_rows", "message"),
    [
        (["1\tg\tf\ty\t1\ts\ts\ta\tb\t2.5", "2\tg\tf\ty\t1\ts\ts\tc\td\t2.5"],
         "stsb dev: pearson/spearman need at least 2 examples with different labels; its 2 evaluated examples have 1"),
        (["1\tg\tf\ty\t1\ts\ts\ta\tb\t2.5"], "its 1 evaluated examples have 1"),  # a one-row dev file
    ],
    ids=["constant labels", "one example"],
)  # fmt: skip
def test_an_sts_b_dev_set_without_a_correlation_is_refused_before_training(tmp_path, dev_rows, message):
    data = glue_task_dir(tmp_path, "STS-B", [*STSB, "1\tg\tf\ty\t1\ts\ts\ta\tb\t3.2", "2\tg\tf\ty\t1\ts\ts\tc\td\t1.0"])
    (data / "STS-B" / "dev.tsv").write_text("\n".join([STSB[0], *dev_rows]) + "\n")
    out = tmp_path / "out"
    code, line = outcome([*TINY, "task=stsb", f"task.data_dir={data}", f"trainer.output_dir={out}"])
    assert code == 2 and message in line and "\n" not in line, line
    assert _nothing_trained(out)


def test_constant_predictions_give_an_undefined_correlation_in_one_line(caplog):
    """A model that predicts one score for every example has no correlation: nan in the record, one log line
    saying why, and no SciPy warning."""
    task = build_task({"name": "stsb"})
    items = [type("E", (), {"label": v})() for v in (1.0, 3.0, 4.5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SciPy's ConstantInputWarning would raise here
        with caplog.at_level(logging.WARNING, logger="lora.train"):
            scores = task.metrics([2.0, 2.0, 2.0], items)
    assert all(np.isnan(v) for v in scores.values())
    assert [r.getMessage() for r in caplog.records] == ["stsb pearson/spearman undefined: the model predicts 2.0 "
                                                        "for all 3 examples"]  # fmt: skip


@pytest.mark.parametrize(
    ("scoring", "message"),
    [
        ({"use_stemmer": "no"}, "task.scoring.use_stemmer must be one of true, false, got 'no'"),
        ({"rouge_l": "rougeLSum"}, "task.scoring.rouge_l must be one of rougeL, rougeLsum, got 'rougeLSum'"),
    ],
)
def test_samsum_scoring_values_are_refused_before_training_not_after(scoring, message):
    """They reached rouge-score after training: a ValueError traceback, or a string read as true."""
    with pytest.raises(TaskError) as err:
        build_task({"name": "samsum", "scoring": scoring})
    assert str(err.value) == message
