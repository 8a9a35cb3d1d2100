"""The runner: composition of every model x method x task, clear errors, a tiny end-to-end run, resume."""

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import baselines
import lora
from experiments.cli import check_config, compose, hydra_context
from experiments.models import build
from experiments.paths import CONF_DIR, ROOT
from experiments.runs import RunError, read_config, read_scalars, training_curve
from experiments.tasks import GLUE_TASKS, build_task
from experiments.train import run
from lora.files import read_safetensors

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
TASKS = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))
EXPERIMENTS = sorted(
    p.stem for p in (CONF_DIR / "experiment").glob("*.yaml") if not p.stem.startswith(("cpu_", "none"))
)
CPU_EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("cpu_*.yaml"))  # scaled to 2 CPU cores


def config(tmp_path: Path, *overrides: str) -> dict:
    cfg = compose([f"trainer.output_dir={tmp_path}", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


TINY = ("trainer.max_steps=6", "trainer.train_limit=48", "trainer.eval_limit=24", "trainer.batch_size=8",
        "trainer.eval_every=3", "trainer.lr=1e-2")  # fmt: skip


def test_every_model_method_and_task_composes():
    """Groups compose independently (no group's file names another), so every model x method pair and
    every task cover the product; each pair is also prepared for real below, on the meta device."""
    assert set(TASKS) >= set(GLUE_TASKS)
    combos = [(m, me, "sst2") for m in MODELS for me in METHODS] + [("minilm_l6", "lora", t) for t in TASKS]
    with hydra_context():
        for model, method, task in combos:
            cfg = OmegaConf.to_container(compose([f"model={model}", f"method={method}", f"task={task}"]), resolve=True)
            assert (cfg["model"]["name"], cfg["method"]["name"], cfg["task"]["name"]) == (model, method, task)


def should_refuse(model_type: str, method: str, blocks: int) -> bool:
    """The combinations the paper does not use, or that cannot exist, and must be refused."""
    decoder = model_type in ("gpt2", "llama")
    return (
        ("prefix" in method and not decoder)
        or (method == "bitfit" and model_type == "llama")  # no bias vectors
        or (method == "adapter_d" and blocks <= 2)  # drop_lower=2 would drop every adapter of a tiny model
    )


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_prepares_every_model_on_the_meta_device_or_refuses_clearly(model, method):
    cfg = OmegaConf.to_container(compose([f"model={model}", f"method={method}"]), resolve=True)
    built = build(model, head="seq_cls", device="meta")
    model_type, blocks = built.config.model_type, built.config.num_hidden_layers
    if should_refuse(model_type, method, blocks):
        with pytest.raises(baselines.MethodError, match=method):
            baselines.prepare(built, cfg["method"])
        return
    c = lora.count(baselines.prepare(built, cfg["method"]))
    assert 0 < c.trainable <= c.total
    assert (c.trainable == c.total) == (method == "full_ft")


def test_every_experiment_file_composes_with_the_papers_settings():
    assert len(EXPERIMENTS) == 36  # 24 GLUE (Tables 9, 10) + 6 NLG (Table 11) + 6 GPT-3 tasks (Table 4) on 2 models
    for name in CPU_EXPERIMENTS:  # the README's CPU runs: same steps and data for both methods
        cfg = OmegaConf.to_container(compose([f"experiment={name}"]), resolve=True)
        assert cfg["trainer"]["max_steps"] == 400 and cfg["task"]["decode_limit"] == 100
    with hydra_context():
        compose_experiments()
    base_mnli = OmegaConf.to_container(compose(["experiment=roberta_base_mnli"]), resolve=True)
    assert (base_mnli["trainer"]["lr"], base_mnli["trainer"]["epochs"], base_mnli["method"]["alpha"]) == (5e-4, 30, 8)


def compose_experiments():
    for name in EXPERIMENTS:
        overrides = [f"experiment={name}"]
        if name.endswith(("_mrpc", "_rte", "_stsb")):
            overrides.append("trainer.init_adapter=mnli/adapter.safetensors")  # the paper starts these from MNLI
        cfg = OmegaConf.to_container(compose(overrides), resolve=True)
        assert cfg["trainer"]["max_steps"] is None and cfg["method"]["name"] == "lora"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["trainer.lrr=1"], "Key 'lrr' not in 'TrainerConfig'"),
        (["trainer.lr=fast"], "could not be converted to Float"),
        (["model=gpt5"], "Could not find 'model/gpt5' Available options in 'model': deberta_v2_xxlarge"),
        (["method=dora"], "Could not find 'method/dora'"),
        (["task=squad"], "Could not find 'task/squad'"),
        (["method.rank=4"], "Key 'rank' is not in struct"),
        (["experiment=roberta_base_mrpc"], "needs the MNLI-trained adapter"),
    ],
)
def test_config_mistakes_are_one_clear_line(argv, message):
    with pytest.raises(SystemExit) as exc:
        check_config(argv)
    text = str(exc.value.code)
    assert text.startswith("error: ") and message in text and "\n" not in text


def test_the_command_line_prints_one_line_and_no_traceback():
    out = subprocess.run(
        [sys.executable, "run.py", "model=gpt5"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert [line for line in out.stderr.splitlines() if line.strip()] == [out.stderr.strip()]


def test_a_model_without_weights_is_refused_before_anything_loads(tmp_path):
    from experiments.models import ModelError

    with pytest.raises(
        ModelError, match="'gpt3_175b' has no weights anywhere; it can only be built on the meta device"
    ):
        run(config(tmp_path, "model=gpt3_175b"))
    assert not (tmp_path / "config.yaml").exists()


def test_method_not_supported_on_an_architecture_is_refused_by_name():
    with pytest.raises(baselines.MethodError, match="method 'lora' does not support 'distilbert' models; it supports"):
        baselines.check("lora", "distilbert")
    with pytest.raises(baselines.MethodError, match="unknown method 'dora'; choose from lora, full_ft"):
        baselines.check("dora", "bert")


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_roberta", "tiny_deberta", "tiny_gpt2", "tiny_llama"])
def test_tiny_end_to_end_run_writes_a_complete_run_folder(model, tmp_path):
    metrics = run(config(tmp_path, f"model={model}", "task=rte", *TINY))
    assert metrics["status"] == "complete" and metrics["steps"] == 6
    assert [e["step"] for e in metrics["evals"]] == [3, 6]
    assert metrics["best"]["dev/accuracy"] == max(e["dev/accuracy"] for e in metrics["evals"])
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["params"]["trainable"] == metrics["params"]["trainable"] < metrics["params"]["total"]
    assert {"torch", "transformers"} <= set(on_disk["versions"]) and on_disk["git_commit"]
    assert (tmp_path / "config.yaml").exists() and "step 6" in (tmp_path / "log.txt").read_text()
    tensors, _ = read_safetensors(tmp_path / "adapter.safetensors")
    assert sum(t.numel() for t in tensors.values()) == metrics["params"]["trainable"]
    assert not (tmp_path / "checkpoints").exists()
    # every step's loss and lr in scalars.csv: the linear decay's closed form (6 steps, 1 of warm-up: 6% rounded up,
    # as HF Trainer rounds it; the lr logged after step s is the next step's), the evals
    steps, lr = training_curve(tmp_path, "lr")
    assert steps == [1, 2, 3, 4, 5, 6] and lr == pytest.approx([1e-2 * (6 - s) / 5 for s in steps], abs=1e-12)
    assert training_curve(tmp_path, "train/loss")[0] == steps
    assert training_curve(tmp_path, "dev/accuracy") == ([3, 6], [e["dev/accuracy"] for e in metrics["evals"]])
    # the majority-class line: the first 48 training labels' most common one (24 each: the lower id, 0), scored on
    # the first 24 dev examples
    task = build_task({"name": "rte"})
    assert [e.label for e in task.examples("train")[:48]].count(0) == 24
    majority = 0
    dev = [e.label for e in task.examples("dev")[:24]]
    assert on_disk["baseline"] == {"dev/accuracy": round(dev.count(majority) / 24, 6)}


def _tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> (step, value) from the TensorBoard event files under `folder` (TFRecord: length, CRC, event, CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    found: dict = {}
    for file in sorted(folder.rglob("events.out.tfevents.*")):
        data, at = file.read_bytes(), 0
        while at < len(data):
            (n,) = struct.unpack("<Q", data[at : at + 8])
            event = Event.FromString(data[at + 12 : at + 12 + n])
            at += 12 + n + 4
            for v in event.summary.value:
                found.setdefault(v.tag, []).append((event.step, v.simple_value))
    return found


def test_per_step_scalars_reach_tensorboard_as_in_the_csv(tmp_path):
    pytest.importorskip("tensorboardX", reason="tensorboardX is a dev extra: pip install -e '.[dev]'")
    run(config(tmp_path, "model=tiny_bert", "task=rte", *TINY))
    events = _tensorboard_scalars(tmp_path / "tensorboard")
    for tag in ("train/loss", "lr", "dev/accuracy"):
        steps, values = training_curve(tmp_path, tag)
        assert [s for s, _ in events[tag]] == steps and [v for _, v in events[tag]] == pytest.approx(values, rel=1e-6)


def test_full_fine_tuning_and_regression_task(tmp_path):
    metrics = run(config(tmp_path, "model=tiny_bert", "method=full_ft", "task=stsb", *TINY))
    assert metrics["params"]["trainable"] == metrics["params"]["total"]
    assert set(metrics["final"]) >= {"dev/pearson", "dev/spearman"}


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path):
    common = ("model=tiny_bert", "task=rte", "method.dropout=0.1", "trainer.max_steps=9", "trainer.train_limit=40",
              "trainer.eval_limit=8", "trainer.batch_size=8", "trainer.eval_every=3",
              "trainer.grad_accum=2", "trainer.micro_batch_tokens=200")  # fmt: skip
    run(config(tmp_path / "straight", *common))
    assert "packing: true" in (tmp_path / "straight" / "config.yaml").read_text()  # tiny BERT: packed forwards
    stopped = run(config(tmp_path / "resumed", *common, "trainer.stop_after=5"))
    assert stopped == {"status": "stopped", "step": 5}
    assert (tmp_path / "resumed" / "checkpoints" / "step-0000003" / "COMPLETE").exists()
    resumed = run(config(tmp_path / "resumed", *common))  # picks up at step 3 and redoes 4 and 5
    assert resumed["steps"] == 9 and "resumed from" in (tmp_path / "resumed" / "log.txt").read_text()
    a, _ = read_safetensors(tmp_path / "straight" / "adapter.safetensors")
    b, _ = read_safetensors(tmp_path / "resumed" / "adapter.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # steps 4 and 5, logged before the stop, were dropped on resume and logged again: the same scalars
    assert read_scalars(tmp_path / "resumed") == read_scalars(tmp_path / "straight")
    assert [s for s, tag, _ in read_scalars(tmp_path / "resumed") if tag == "lr"] == list(range(1, 10))


def test_a_finished_run_or_another_config_is_never_overwritten(tmp_path):
    cfg = config(tmp_path, "model=tiny_bert", "task=rte", *TINY)
    run(cfg)
    before = (tmp_path / "metrics.json").read_bytes()
    with pytest.raises(RunError, match="already holds a finished run; choose"):
        run(cfg)
    # a sweep run again skips only its own finished runs: one of other settings (a run from before a setting
    # existed, here packing) says which differ
    with pytest.raises(RunError, match=r"finished run of another config \(differs in trainer.packing\)"):
        run(config(tmp_path, "model=tiny_bert", "task=rte", *TINY, "trainer.packing=false"))
    other = tmp_path / "other"
    run(config(other, "model=tiny_bert", "task=rte", *TINY, "trainer.stop_after=3"))
    with pytest.raises(RunError, match=r"another config \(differs in method.r, trainer.lr\)"):
        run(config(other, "model=tiny_bert", "task=rte", *TINY, "method.r=4", "trainer.lr=0.5"))
    assert (tmp_path / "metrics.json").read_bytes() == before


def test_init_adapter_copies_only_the_lora_matrices(tmp_path):
    source = tmp_path / "mnli-like"
    run(config(source, "model=tiny_bert", "task=rte", *TINY))
    cfg = config(tmp_path / "next", "model=tiny_bert", "task=stsb", *TINY, "trainer.max_steps=1",
                 f"trainer.init_adapter={source}/adapter.safetensors", "trainer.lr=1e-12")  # fmt: skip
    run(cfg)
    a, _ = read_safetensors(source / "adapter.safetensors")
    b, _ = read_safetensors(tmp_path / "next" / "adapter.safetensors")
    lora_keys = [k for k in a if ".lora_A." in k]
    assert lora_keys and all(torch.allclose(a[k], b[k], atol=1e-9) for k in lora_keys)
    assert b["classifier.weight"].shape[0] == 1 != a["classifier.weight"].shape[0]  # head: new task, not copied


def test_wandb_logging_works_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run(config(tmp_path, "model=tiny_bert", "task=rte", "logger=wandb", *TINY))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and any(runs[0].rglob("*.wandb"))


# --- regressions found in review -----------------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.batch_size=0", "trainer.batch_size must be > 0"),
        ("trainer.grad_accum=0", "trainer.grad_accum must be > 0"),
        ("trainer.eval_limit=0", "trainer.eval_limit must be >= 1 or null"),
        ("trainer.max_steps=null", None),  # with epochs=0 below
    ],
)
def test_trainer_values_out_of_range_are_one_clear_error(override, message, tmp_path):
    extra = ("trainer.epochs=0",) if message is None else ()
    with pytest.raises(RunError, match=message or "trainer.epochs must be > 0"):
        run(config(tmp_path, "model=tiny_bert", "task=rte", *TINY, override, *extra))
    assert not (tmp_path / "metrics.json").exists()


def test_a_start_that_failed_before_any_checkpoint_does_not_block_the_corrected_command(tmp_path):
    """Before, the failed start's config.yaml made the folder refuse the corrected config."""
    with pytest.raises(baselines.MethodError, match="must leave at least one of the 2 blocks"):
        run(config(tmp_path, "model=tiny_bert", "task=rte", *TINY, "method=adapter_d"))
    assert (tmp_path / "config.yaml").exists()
    metrics = run(config(tmp_path, "model=tiny_bert", "task=rte", *TINY, "method=adapter_h"))
    assert metrics["status"] == "complete" and "never reached a checkpoint" in (tmp_path / "log.txt").read_text()


def test_every_job_of_a_sweep_gets_its_own_default_folder(tmp_path):
    """The README's sweep failed from its second job: every job resolved `${now:}` to one folder."""
    tiny = ["model=tiny_bert", "task=rte", "trainer.max_steps=1", "trainer.train_limit=8", "trainer.eval_limit=8",
            "trainer.batch_size=8"]  # fmt: skip
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", "method.r=1,2,4", *tiny], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    folders = sorted(p.parent.name for p in (tmp_path / "runs").rglob("metrics.json"))
    assert len(folders) == 3 and [f.rsplit("-", 1)[1] for f in folders] == ["0", "1", "2"], folders
    metrics = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())
    assert metrics["command"].startswith("run.py -m method.r=1,2,4 model=tiny_bert")  # the exact command
    assert metrics["experiment"] is None and isinstance(metrics["git_dirty"], bool)
    # the multirun ends with one table of its jobs, from jobs.jsonl in the sweep folder
    jobs = [json.loads(line) for line in next((tmp_path / "multirun").rglob("jobs.jsonl")).read_text().splitlines()]
    assert sorted(j["job"] for j in jobs) == [0, 1, 2] and {j["status"] for j in jobs} == {"complete"}
    table = done.stdout[done.stdout.index("job  swept") :].splitlines()
    for job in jobs:
        best = json.loads((tmp_path / job["folder"] / "metrics.json").read_text())["best"]["dev/accuracy"]
        assert f"{job['job']}    method.r={2 ** job['job']}  complete  {best:.4f}" in table[1 + job["job"]]
    # and no third-party warning reached the terminal (DeepSpeed's "Setting accelerator to CPU" did, on every run)
    assert "WARNING" not in done.stderr + done.stdout and "warn" not in done.stderr.lower(), done.stderr[-2000:]


def test_runs_in_one_process_may_change_bf16_as_a_sweeps_jobs_do(tmp_path, monkeypatch):
    """accelerate's AcceleratorState is a singleton: a sweep over trainer.bf16 failed at its first bf16 job.
    A bf16 run on the CPU trains with attention in fp32, an fp32 run with the model's own SDPA."""
    from experiments import engines

    switched = []
    monkeypatch.setattr(engines, "attention_in_fp32", lambda model: switched.append(model) or model)
    for i, bf16 in enumerate(("false", "true", "false")):
        metrics = run(config(tmp_path / str(i), "model=tiny_bert", "task=rte", *TINY, f"trainer.bf16={bf16}"))
        assert metrics["status"] == "complete"
        assert read_config(tmp_path / str(i))["trainer"]["bf16"] is (bf16 == "true")
        assert len(switched) == (i > 0)  # the bf16 run's model, once
    assert type(switched[0]).__name__ == "BertForSequenceClassification"


def test_bf16_training_holds_frozen_weights_in_bf16_with_the_same_result(tmp_path, monkeypatch):
    """A bf16 run on the CPU casts frozen linear weights once, not at every forward: trained tensors bitwise those
    of casting at every forward (autocast's own way), and only weights that linear layers alone use are held
    (tiny GPT-2: c_attn, c_proj, c_fc weights and biases of each block; not the output layer tied to wte)."""
    from experiments import engines

    select, tensors = engines.frozen_matmul_weights_in_bf16, {}
    for name, held in (("once", select), ("every_forward", lambda model: {})):
        monkeypatch.setattr(engines, "frozen_matmul_weights_in_bf16", held)
        run(config(tmp_path / name, "model=tiny_bert", "task=rte", *TINY, "trainer.bf16=true"))
        tensors[name], _ = read_safetensors(tmp_path / name / "adapter.safetensors")
    assert tensors["once"].keys() == tensors["every_forward"].keys()
    assert all(torch.equal(tensors["once"][k], tensors["every_forward"][k]) for k in tensors["once"])
    model = lora.apply(build("tiny_gpt2", head="causal_lm"), lora.LoRAConfig(r=2, targets=("q", "v")))
    names = {id(p): n for n, p in model.named_parameters()}
    held = {names[id(p)]: copy.dtype for p, copy in select(model).items()}
    blocks = model.config.n_layer
    linears = ("attn.c_attn.base", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    expected = {f"transformer.h.{i}.{m}.{w}" for i in range(blocks) for m in linears for w in ("weight", "bias")}
    assert held == dict.fromkeys(expected, torch.bfloat16)


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2", "llama"])
def test_attention_in_fp32_keeps_fp32_outputs_and_the_padding_mask(family):
    """Switched to fp32 attention (what bf16 training on the CPU uses), a model's fp32 outputs stay bitwise those
    of its SDPA attention, padded rows included: registered without its mask function, transformers built no mask
    at all and padded tokens were attended to (gradients 80% off). Under bf16 autocast: within bf16's rounding."""
    from experiments.engines import FP32_ATTENTION, attention_in_fp32
    from tests.conftest import batch, logits, tiny

    model, inputs = tiny(family), batch()  # row 0 padded
    before = logits(model, inputs)
    attention_in_fp32(model)
    assert model.config._attn_implementation == FP32_ATTENTION
    assert torch.equal(logits(model, inputs), before)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = logits(model, inputs).float()
    assert (low - before).abs().max() <= 0.05 * before.abs().max()


def test_bf16_where_the_machine_only_emulates_it(tmp_path, monkeypatch):
    """Autocast on a CPU without bf16 instructions (AVX2 only) emulates bf16, 16-25x slower than fp32: a model's
    bf16 verdict is not applied there, and a run that asks for bf16 gets it, with one line saying what it costs."""
    from experiments import engines

    def tiny(name: str, bf16: str, native: bool) -> tuple[bool, str]:
        monkeypatch.setattr(engines, "bf16_is_native", lambda: native)
        cfg = config(tmp_path / name, "model=tiny_bert", "task=rte", *TINY, f"trainer.bf16={bf16}")
        cfg["model"]["bf16"] = True  # as a model whose bf16 verdict says safe
        run(cfg)
        return read_config(tmp_path / name)["trainer"]["bf16"], (tmp_path / name / "log.txt").read_text()

    warning = "trainer.bf16=true on a machine without bf16 instructions"
    used, log = tiny("asked", "true", native=False)
    assert used is True and warning in log and "set trainer.bf16=false for speed" in log
    used, log = tiny("verdict", "null", native=False)
    assert used is False and warning not in log
    used, log = tiny("native", "null", native=True)
    assert used is True and warning not in log


def test_a_folder_holding_other_files_is_never_claimed(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(RunError, match="already holds other files"):
        run(config(tmp_path, "model=tiny_bert", "task=rte", *TINY))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_init_adapter_refuses_another_lora_config_or_a_method_without_lora(tmp_path):
    source = tmp_path / "source"
    run(config(source, "model=tiny_bert", "task=rte", *TINY))
    adapter = f"trainer.init_adapter={source}/adapter.safetensors"
    with pytest.raises(RunError, match="must agree on"):
        run(config(tmp_path / "a", "model=tiny_bert", "task=rte", *TINY, adapter, "method.alpha=32"))
    with pytest.raises(RunError, match="needs a LoRA method"):
        run(config(tmp_path / "b", "model=tiny_bert", "task=rte", *TINY, adapter, "method=full_ft"))


def test_model_overrides_on_the_command_line_are_used(tmp_path):
    from experiments.models import ModelError

    with pytest.raises(ModelError, match="cannot load 'minilm_l6' from /nowhere/minilm"):
        build(config(tmp_path, "model.hub=/nowhere/minilm", "model.local=null")["model"], head="seq_cls")


def test_the_seed_reaches_randomly_initialised_models():
    w = [build("tiny_bert", seed=s).embeddings.word_embeddings.weight for s in (0, 0, 1)]
    assert torch.equal(w[0], w[1]) and not torch.equal(w[0], w[2])


def test_a_non_lora_runs_file_loads_with_baselines_load(tmp_path):
    """What a run of another method writes is read back by `baselines.load` alone, with the same outputs."""
    run(config(tmp_path, "model=tiny_bert", "method=bitfit", "task=rte", *TINY))
    model = baselines.load(build("tiny_bert", head="seq_cls"), tmp_path / "adapter.safetensors")
    tensors, _ = read_safetensors(tmp_path / "adapter.safetensors")
    params = dict(model.named_parameters())
    assert tensors and all(torch.equal(params[k], v) for k, v in tensors.items())


def test_evaluation_spreads_its_batches_over_the_processes_and_every_process_runs_as_many():
    """Three processes (threads here, with a barrier as engine.gather) evaluate 9 items in batches of 2:
    the metrics see every output once, in order, and the process one batch short repeats its first, since
    under ZeRO-3 a forward on one process waits for the others."""
    import threading
    from types import SimpleNamespace

    from experiments.train import eval_groups, evaluate

    pairs = eval_groups({"length_batching": False, "eval_batch_size": 2}, list(range(9)), len, 10)

    class Echo:  # outputs 10x the item; metrics shows what it was given
        def __init__(self):
            self.batches = []

        def predict(self, model, tokenizer, items, device, special):
            self.batches.append(items)
            return [10 * x for x in items]

        def metrics(self, outputs, items):
            return {"outputs": outputs, "items": items}

    world, parts, barrier = 3, [None] * 3, threading.Barrier(3)
    tasks, results = [Echo() for _ in range(world)], [None] * world

    def process(rank):
        def gather(obj):
            parts[rank] = obj
            barrier.wait()
            return list(parts)

        engine = SimpleNamespace(rank=rank, world=world, gather=gather)
        results[rank] = evaluate(torch.nn.Identity(), None, tasks[rank], list(range(9)), pairs, "cpu", engine)

    threads = [threading.Thread(target=process, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = {"outputs": [10 * x for x in range(9)], "items": list(range(9))}
    assert results == [expected] * world
    assert [t.batches for t in tasks] == [[[0, 1], [6, 7]], [[2, 3], [8]], [[4, 5], [0, 1]]]
    assert evaluate(torch.nn.Identity(), None, Echo(), list(range(9)), pairs, "cpu") == expected  # one process
    # sorted by length (here the longest first) and cut by tokens: predicted in that order, scored in the items'
    t = {"length_batching": True, "eval_batch_tokens": 20, "forward_cost_tokens": 100, "packing": False}  # few forwards
    by_length = eval_groups(t, list(range(9)), lambda x: 10 - x, 10)
    echo = Echo()
    assert evaluate(torch.nn.Identity(), None, echo, list(range(9)), by_length, "cpu") == expected
    assert echo.batches == [[8, 7, 6], [5, 4], [3, 2], [1, 0]]  # the fewest forwards within 20, the least padding


def test_a_nan_on_one_process_stops_every_process_before_its_backward():
    """Two processes (threads; engine.total sums through a barrier): process 1's second micro-batch has a NaN
    loss. Both leave the step with a non-finite value, after the same collectives, neither has run the
    backward of that micro-batch; without the NaN both return the step's mean over its 10 units."""
    import threading
    from contextlib import nullcontext

    from experiments.train import _accumulate

    class Engine:
        device, world, barrier, box = "cpu", 2, threading.Barrier(2, timeout=20), [0.0, 0.0]  # a hang fails

        def __init__(self, rank):
            self.rank, self.backwards = rank, []

        def total(self, value):
            Engine.box[self.rank] = value
            self.barrier.wait()
            out = sum(Engine.box)
            self.barrier.wait()  # everyone has read the box before it is written again
            return out

        def autocast(self):
            return nullcontext()

        def accumulating(self):
            return nullcontext()

        def backward(self, loss):
            self.backwards.append(loss.item())

    class Task:  # a batch carries its loss and its number of units
        def units(self, batch):
            return int(batch["units"])

        def loss(self, outputs, batch, label_smoothing):
            return batch["loss"]

    def micro(*pairs):
        return [{"loss": torch.tensor(loss), "units": torch.tensor(n)} for loss, n in pairs]

    def step(batches):
        engines, out = [Engine(0), Engine(1)], [None, None]

        def process(rank):
            out[rank] = _accumulate(engines[rank], lambda **kw: None, Task(), batches[rank], 0.0)

        threads = [threading.Thread(target=process, args=(r,)) for r in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out, [e.backwards for e in engines]

    losses, backwards = step([micro((1.0, 2), (2.0, 3)), micro((3.0, 4), (float("nan"), 1))])
    assert not any(math.isfinite(v) for v in losses)
    assert backwards == [[pytest.approx(1.0 * 2 / 10 * 2)], [pytest.approx(3.0 * 4 / 10 * 2)]]
    losses, backwards = step([micro((1.0, 2), (2.0, 3)), micro((3.0, 4), (4.0, 1))])
    assert losses == [pytest.approx((1 * 2 + 2 * 3 + 3 * 4 + 4 * 1) / 10)] * 2  # the mean over all 10 units
    assert backwards[1] == [pytest.approx(3.0 * 4 / 10 * 2), pytest.approx(4.0 * 1 / 10 * 2)]  # x2: engines average


def test_an_accelerate_accumulation_setting_in_the_environment_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")
    with pytest.raises(Exception, match="unset it and use trainer.grad_accum"):
        run(config(tmp_path, "model=tiny_bert", "task=rte", *TINY))


def test_a_scalar_line_cut_short_by_a_kill_is_skipped(tmp_path):
    (tmp_path / "scalars.csv").write_text("step,tag,value\n1,train/loss,2.5\n1,lr,0.01\n2,train/loss,2.4")
    assert read_scalars(tmp_path) == [(1, "train/loss", 2.5), (1, "lr", 0.01)]  # "2.4" may have been "2.4471"


def test_metrics_name_the_commit_the_run_started_from(tmp_path, monkeypatch):
    """A commit made while a run trains used to be named in its metrics.json (read at the end)."""
    from experiments import runs, train

    head, evaluate = {"now": "start-commit"}, train._evaluate_into
    monkeypatch.setattr(runs, "_git", lambda args: head["now"] if args[0] == "rev-parse" else "")
    runs.code_version.cache_clear()  # as in a fresh process

    def evaluate_then_commit(r):
        evaluate(r)
        head["now"] = "a commit made during the run"

    monkeypatch.setattr(train, "_evaluate_into", evaluate_then_commit)
    metrics = run(config(tmp_path / "a", "model=tiny_bert", "task=rte", *TINY))
    assert (metrics["git_commit"], metrics["git_dirty"]) == ("start-commit", False)
    # the next run of a sweep in this process runs the code imported at its start, not the tree's new commit
    metrics = run(config(tmp_path / "b", "model=tiny_bert", "task=rte", *TINY))
    assert metrics["git_commit"] == "start-commit"
    runs.code_version.cache_clear()
