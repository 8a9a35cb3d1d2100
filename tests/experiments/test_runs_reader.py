"""The run folder's one reader: every method's model rebuilt as trained, damaged files as one line, and the
task interface every consumer relies on."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from analysis.amplification import AmplificationError, analyse, load_run
from experiments.cli import compose
from experiments.decode import decode_run
from experiments.models import ModelError
from experiments.paths import data_dir
from experiments.runs import RunError, RunFolder, find_runs, load_trained, read_config, read_metrics
from experiments.tasks import GlueTask, NLGTask, Task, TaskError, build_task, fitted
from experiments.train import run
from lora.files import read_safetensors

TINY = ["model=tiny_gpt2", "task=rte", "trainer.max_steps=2", "trainer.train_limit=16", "trainer.eval_limit=8",
        "trainer.batch_size=8", "trainer.lr=1e-2"]  # fmt: skip
needs_rte = pytest.mark.skipif(not (data_dir() / "glue" / "RTE").exists(), reason=f"no GLUE RTE under {data_dir()}")


def train(folder, *overrides):
    run(OmegaConf.to_container(compose([f"trainer.output_dir={folder}", *TINY, *overrides]), resolve=True))
    return folder


@needs_rte
@pytest.mark.parametrize("method", ["lora", "lora_prefix_embed", "prefix_layer", "adapter_h", "bitfit"])
def test_load_trained_rebuilds_every_method_with_the_saved_tensors(tmp_path, method):
    folder = train(tmp_path / method, f"method={method}")
    trained = load_trained(folder)
    saved, _ = read_safetensors(RunFolder(folder).adapter)
    params = dict(trained.model.named_parameters())
    assert saved and all(torch.equal(params[k], v) for k, v in saved.items())
    assert trained.config == read_config(folder) and trained.task.name == "rte"
    if method == "lora":  # the base model by its config name (or hub id), never a path on this machine
        assert json.loads((folder / "adapter.json").read_text())["base_model"] == "tiny_gpt2"


@needs_rte
def test_table7_reads_a_lora_prefix_run_and_refuses_a_run_without_lora(tmp_path):
    """Before the one reader, `load_run` loaded with `lora.load` alone, which has no place for prefix tensors."""
    model, cfg = load_run(train(tmp_path / "lp", "method=lora_prefix_embed"))
    assert cfg["method"]["name"] == "lora_prefix_embed" and analyse(model)
    with pytest.raises(AmplificationError, match="is a bitfit run; Table 7 needs a LoRA adapter"):
        load_run(train(tmp_path / "bitfit", "method=bitfit"))


@needs_rte
def test_decoding_a_classification_run_is_one_line(tmp_path):
    folder = train(tmp_path / "rte", "method=lora")
    with pytest.raises(RunError, match="is a rte run; only generation tasks"):
        decode_run(folder, "again")
    assert not (folder / "decodes" / "again").exists()


@pytest.mark.parametrize(("name", "text", "message"), [
    ("metrics.json", "{not json", "metrics.json cannot be read"),
    ("metrics.json", "[1, 2]", "is not a JSON object"),
    ("config.yaml", "model: [unclosed", "config.yaml cannot be read"),
    ("config.yaml", "just a string", "is not a run's config"),
    ("metrics.json", b"\xff\xfe", "metrics.json cannot be read"),
])  # fmt: skip
def test_a_damaged_run_file_is_one_line(tmp_path, name, text, message):
    (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    reader = read_metrics if name == "metrics.json" else read_config
    with pytest.raises(RunError, match=message) as err:
        reader(tmp_path)
    assert "\n" not in str(err.value)


def test_find_runs_needs_both_files(tmp_path):
    for name, files in {"a": ("config.yaml", "metrics.json"), "b": ("metrics.json",), "c/d": ("config.yaml",)}.items():
        for f in files:
            (tmp_path / name).mkdir(parents=True, exist_ok=True)
            (tmp_path / name / f).write_text(json.dumps({}))
    assert find_runs(tmp_path) == [tmp_path / "a"]


def test_both_task_families_are_tasks_and_refuse_unknown_options():
    for cfg in ({"name": "rte"}, {"name": "e2e"}):
        assert isinstance(build_task(cfg), Task)
    assert isinstance(build_task({"name": "sst2"}), GlueTask) and isinstance(build_task({"name": "dart"}), NLGTask)
    with pytest.raises(TaskError, match="task rte has no option decoding, max_lenght; its options: name, data_dir"):
        build_task({"name": "rte", "max_lenght": 64, "decoding": {}})
    with pytest.raises(TaskError, match="unknown task 'glue'"):
        build_task({"name": "glue"})


def test_every_task_config_builds():
    with_defaults = [compose([f"task={name}"]).task for name in ("rte", "mnli", "e2e", "webnlg", "dart")]
    for cfg in with_defaults:
        build_task(OmegaConf.to_container(cfg, resolve=True))


def test_fitting_a_task_to_a_model_leaves_the_task_as_it_was():
    task = build_task({"name": "e2e", "max_length": 128})
    short = fitted(task, 64)
    assert (short.max_length, task.max_length) == (64, 128) and fitted(task, 1024).max_length == 128


# --- evaluating a trained adapter without training (issue 19) ---------------------------------------------


def test_an_evaluation_only_run_reproduces_the_dev_metric_of_the_run_that_trained_the_adapter(tmp_path):
    if not (data_dir() / "glue" / "RTE").exists():
        pytest.skip(f"no GLUE RTE under {data_dir()}")
    bert = ["model=tiny_bert", "task=rte", "trainer.train_limit=32", "trainer.eval_limit=24", "trainer.batch_size=8"]
    trained = run(OmegaConf.to_container(compose([f"trainer.output_dir={tmp_path}/a", *bert, "trainer.max_steps=4",
                                                  "trainer.lr=1e-2", "method.r=4"]), resolve=True))  # fmt: skip
    again = run(OmegaConf.to_container(compose([f"trainer.output_dir={tmp_path}/b", *bert, "trainer.max_steps=0",
                                                f"trainer.eval_adapter={tmp_path}/a/adapter.safetensors",
                                                "method.r=2"]), resolve=True))  # fmt: skip  # the file's r=4 wins
    assert again["best"]["dev/accuracy"] == trained["final"]["dev/accuracy"]
    assert again["evaluated_adapter"].endswith("a/adapter.safetensors") and again["steps"] == 0
    x = {"input_ids": torch.tensor([[1, 40, 50, 60, 2]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    a, b = (load_trained(tmp_path / n, tokenizer=False).model.eval() for n in "ab")  # b's method section says r=2
    torch.testing.assert_close(b(**x).logits, a(**x).logits, rtol=0, atol=0)


def test_an_evaluation_only_nlg_run_reproduces_the_test_scores(tmp_path):
    if not (data_dir() / "e2e" / "trainset.csv").exists():
        pytest.skip(f"no E2E under {data_dir()}")
    gpt2 = ["model=tiny_gpt2", "task=e2e", "trainer.train_limit=16", "trainer.eval_limit=8", "trainer.batch_size=8",
            "task.decode_limit=3", "task.decoding.num_beams=2", "task.decoding.max_new_tokens=6"]  # fmt: skip
    trained = run(OmegaConf.to_container(compose([f"trainer.output_dir={tmp_path}/a", *gpt2, "trainer.max_steps=3",
                                                  "trainer.lr=1e-2"]), resolve=True))  # fmt: skip
    again = run(OmegaConf.to_container(compose([f"trainer.output_dir={tmp_path}/b", *gpt2, "trainer.max_steps=0",
                                                f"trainer.eval_adapter={tmp_path}/a"]), resolve=True))  # fmt: skip
    assert again["test"] == trained["test"]
    assert (tmp_path / "b/predictions/test.txt").read_text() == (tmp_path / "a/predictions/test.txt").read_text()


def test_a_loralib_checkpoint_without_its_alpha_is_refused_before_training(tmp_path):
    torch.save({"transformer.h.0.attn.c_attn.lora_A": torch.zeros(8, 32)}, tmp_path / "lora.pt")
    overrides = [f"trainer.output_dir={tmp_path}/out", *TINY[:2], "trainer.max_steps=0",
                 f"trainer.eval_adapter={tmp_path}/lora.pt"]  # fmt: skip
    with pytest.raises(ModelError, match="without its alpha: set trainer.adapter_alpha"):
        run(OmegaConf.to_container(compose(overrides), resolve=True))
    with pytest.raises(RunError, match="set trainer.max_steps=0"):
        run(OmegaConf.to_container(compose([*overrides[:-2], f"trainer.eval_adapter={tmp_path}/lora.pt"]),
                                   resolve=True))  # fmt: skip


def test_a_loralib_checkpoint_is_evaluated_into_a_run_folder_like_any_adapter(tmp_path):
    if not (data_dir() / "glue" / "RTE").exists():
        pytest.skip(f"no GLUE RTE under {data_dir()}")
    import lora
    from experiments.models import build

    model = lora.apply(build("tiny_roberta", head="seq_cls"), lora.LoRAConfig(r=2, init="kaiming_uniform"))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3)
    rename = {".lora_A.q": ".lora_A", ".lora_B.q": ".lora_B", ".lora_A.v": ".lora_A", ".lora_B.v": ".lora_B"}
    state = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            for ours, theirs in rename.items():
                name = name.replace(ours, theirs)
            state[name] = p.detach()
    torch.save(state, tmp_path / "roberta_lora_rte.bin")  # microsoft's key layout: NAME.lora_A, classifier.*
    roberta = ["model=tiny_roberta", "task=rte", "trainer.eval_limit=24", "trainer.max_steps=0"]
    loralib_file = [f"trainer.eval_adapter={tmp_path}/roberta_lora_rte.bin", "trainer.adapter_alpha=8"]
    first = run(OmegaConf.to_container(compose([f"trainer.output_dir={tmp_path}/a", *roberta, *loralib_file]),
                                       resolve=True))  # fmt: skip
    again = run(OmegaConf.to_container(compose([f"trainer.output_dir={tmp_path}/b", *roberta,
                                                f"trainer.eval_adapter={tmp_path}/a"]), resolve=True))  # fmt: skip
    assert first["status"] == again["status"] == "complete"
    assert first["best"]["dev/accuracy"] == again["best"]["dev/accuracy"]


def test_the_best_adapter_is_kept_and_reproduces_the_best_metric(tmp_path):
    """Before, adapter.safetensors was the last step while metrics.json reported the best evaluation (the
    README's MRPC number was step 460 of 690), and the adapter behind it was gone."""
    if not (data_dir() / "glue" / "RTE").exists():
        pytest.skip(f"no GLUE RTE under {data_dir()}")
    bert = ["model=tiny_bert", "task=rte", "trainer.train_limit=64", "trainer.eval_limit=48", "trainer.batch_size=8"]
    steps = ["trainer.max_steps=12", "trainer.eval_every=2", "trainer.lr=3e-3"]  # peaks at step 2, then falls
    trained = run(OmegaConf.to_container(compose([f"trainer.output_dir={tmp_path}/a", *bert, *steps]), resolve=True))
    adapters = trained["adapters"]
    assert adapters == {"last": "adapter.safetensors", "best": "adapter-best.safetensors",
                        "best_step": trained["best"]["step"]}  # fmt: skip
    assert trained["best"]["step"] != trained["final"]["step"]  # this run peaks before its end
    again = run(OmegaConf.to_container(compose([f"trainer.output_dir={tmp_path}/b", *bert, "trainer.max_steps=0",
                                                f"trainer.eval_adapter={tmp_path}/a/adapter-best.safetensors"]),
                                       resolve=True))  # fmt: skip
    assert again["best"]["dev/accuracy"] == trained["best"]["dev/accuracy"] != trained["final"]["dev/accuracy"]
