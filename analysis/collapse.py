"""Why a GLUE run sits at its majority-class score: what the frozen model's features carry, and whether a trained
run's sentence features collapsed to one point.

    python -m analysis.collapse --probe TASK [--model minilm_l6]   # a linear probe of the frozen features
    python -m analysis.collapse RUN [RUN ...]                      # spread of each run's features and predictions

The probe fits scikit-learn's logistic regression (classes) or ridge regression (STS-B) on the frozen model's
first-token ([CLS]) and mean-pooled last hidden states of the training set, and scores dev with the task's own
metric: a ceiling on what a head alone reads from the model, and a floor under what adapting it should reach.

A run's "spread" is the norm of the per-dimension standard deviation of its L2-normalised [CLS] states over dev
(0: every sentence maps to one direction; the frozen model's value is printed beside it), and its predictions'
standard deviation (a regression near 0, or one class for all, is a constant predictor whatever its loss says).
Both are on the first `--limit` dev examples, as the files give them. Written for BERT-family sequence classifiers
(`model.bert`), the models Table 2's CPU sweep uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from experiments.models import ModelError, adapter_model, build, load_tokenizer
from experiments.runs import RunError, read_config
from experiments.tasks import build_task, fitted
from experiments.tasks.base import TaskError
from experiments.tasks.glue import GlueTask, encode
from lora import LoRAError
from lora.model import max_positions


@torch.inference_mode()
def hidden_states(model, tokenizer, task: GlueTask, examples, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """([CLS] state, mean-pooled state) of the last layer for each example, in order."""
    cls, mean = [], []
    for i in range(0, len(examples), batch):
        inputs = _inputs(tokenizer, task, examples[i : i + batch])  # token types too: a pair's second segment
        h = _encoder(model)(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(h.dtype)
        cls.append(h[:, 0])
        mean.append((h * mask).sum(1) / mask.sum(1))
    return torch.cat(cls).numpy(), torch.cat(mean).numpy()


def _encoder(model):
    if not hasattr(model, "bert"):
        raise SystemExit(f"error: analysis.collapse reads BERT-family classifiers; got {type(model).__name__}")
    return model.bert


def spread(states: np.ndarray) -> float:
    """Norm of the per-dimension std of the L2-normalised rows: 0 when every row points the same way.

    >>> round(spread(np.array([[1.0, 0.0], [2.0, 0.0]])), 6), round(spread(np.array([[1.0, 0.0], [0.0, 1.0]])), 6)
    (0.0, 0.707107)
    """
    unit = F.normalize(torch.as_tensor(states, dtype=torch.float64), dim=-1)
    return float(unit.std(0, correction=0).norm())


def probe(task_name: str, model_name: str = "minilm_l6") -> dict:
    """Dev scores of a linear model on the frozen features ([CLS] and mean-pooled), with the majority class's."""
    from sklearn.linear_model import LogisticRegression, Ridge

    task, tokenizer = GlueTask(task_name), load_tokenizer(model_name)
    model = build(model_name, head="seq_cls", num_labels=task.num_labels).eval()
    task = fitted(task, max_positions(model.config))
    train, dev = task.examples("train"), task.examples("dev")
    feats = {split: dict(zip(("cls", "mean"), hidden_states(model, tokenizer, task, ex), strict=True))
             for split, ex in (("train", train), ("dev", dev))}  # fmt: skip
    y_train, y_dev = np.array([e.label for e in train]), np.array([e.label for e in dev])
    out = {"task": task_name, "model": model_name, "train_examples": len(train), "dev_examples": len(dev)}
    for kind in ("cls", "mean"):
        fit = Ridge(alpha=1.0) if task.regression else LogisticRegression(max_iter=3000)
        predictions = fit.fit(feats["train"][kind], y_train).predict(feats["dev"][kind])
        out[f"probe_{kind}"] = task.score(predictions, y_dev)
    out["majority_class"] = task.baseline(train, {"dev": dev})
    return out


def run_spread(folder: str, limit: int = 400) -> dict:
    """A trained run's [CLS] spread and prediction spread over dev, beside the frozen model's [CLS] spread."""
    cfg = read_config(folder)
    task, seed = build_task(cfg["task"]), cfg["trainer"]["seed"]
    tokenizer = load_tokenizer(cfg["model"])
    dev = task.examples("dev")[:limit]
    trained = adapter_model(cfg["model"], Path(folder) / "adapter.safetensors", task, tokenizer, seed)
    frozen = build(cfg["model"], head="seq_cls", num_labels=task.num_labels).eval()
    task = fitted(task, max_positions(frozen.config))  # as the run fitted it
    cls, logits = [], []
    with torch.inference_mode():  # one forward per batch gives both the [CLS] states and the predictions
        for i in range(0, len(dev), 128):
            out = trained.eval()(**_inputs(tokenizer, task, dev[i : i + 128]), output_hidden_states=True)
            cls.append(out.hidden_states[-1][:, 0])
            logits.append(out.logits)
    cls, logits = torch.cat(cls).numpy(), torch.cat(logits)
    predictions = logits.squeeze(-1) if task.regression else logits.argmax(-1).float()
    return {"run": str(folder), "task": task.name, "seed": seed, "examples": len(dev),
            "cls_spread": spread(cls), "frozen_cls_spread": spread(hidden_states(frozen, tokenizer, task, dev)[0]),
            "prediction_std": float(predictions.std()), "distinct_predictions": int(predictions.unique().numel()),
            "score": task.score(predictions.numpy(), np.array([e.label for e in dev]))}  # fmt: skip


def _inputs(tokenizer, task: GlueTask, examples) -> dict:
    enc = encode(tokenizer, examples, task.max_length)
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.collapse", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="run folders of GLUE runs")
    parser.add_argument("--probe", metavar="TASK", help="probe the frozen model's features on this GLUE task")
    parser.add_argument("--model", default="minilm_l6", help="the model to probe (a conf/model name)")
    parser.add_argument("--limit", type=int, default=400, help="dev examples per run")
    args = parser.parse_args(argv)
    if not args.runs and not args.probe:
        parser.error("give run folders, or --probe TASK")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    try:
        if args.probe:
            print(json.dumps(probe(args.probe, args.model), indent=1))
        for folder in args.runs:
            print(json.dumps(run_spread(folder, args.limit)))
    except (RunError, TaskError, ModelError, LoRAError) as err:  # a wrong folder, task or model: one line
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
