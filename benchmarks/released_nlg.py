"""microsoft/LoRA's released NLG code (`examples/NLG/src`, the code behind the paper's GPT-2 numbers), run as is.

It needs a checkout of microsoft/LoRA at the path its callers are given (tests/golden/make_golden.py takes it as
`--released`); every function here takes that checkout's `examples/NLG/src` folder as `src_dir`. Nothing of the
released code is re-implemented: its modules are imported and called, and its scripts (format_converting_*.py,
gpt2_encode.py, gpt2_decode.py) are run in this process as their command lines would run them. The only changes
are where things run: on the CPU instead of `.cuda()`, in one process instead of torch.distributed (its gather of
one rank is a stack of one tensor, its barrier does nothing).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import runpy
import sys
import tempfile
import types
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler


def _module(src_dir, name: str):
    """Import the released module `name` from `src_dir` (and loralib from the checkout, where nothing imported
    one first; pip's loralib 0.1.2 has the same MergedLinear)."""
    src = Path(src_dir).resolve()
    for path in (src, src.parents[2]):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().parent == src, f"{name} comes from {module.__file__}, not {src}"
    return module


def _run_script(src_dir, script: str, *argv) -> None:
    """`python <src_dir>/<script> argv...`, in this process, its printing swallowed."""
    _module(src_dir, "encoder")  # puts src_dir on sys.path, for the scripts' `import encoder`
    # gpt2_encode.py imports progress.bar.Bar and never uses it: a stand-in where that package is missing.
    if "progress" not in sys.modules and importlib.util.find_spec("progress") is None:
        sys.modules["progress"] = types.ModuleType("progress")
        sys.modules["progress.bar"] = sys.modules["progress"].bar = types.SimpleNamespace(Bar=None)
    path = str(Path(src_dir) / script)
    saved, sys.argv = sys.argv, [path, *map(str, argv)]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(path, run_name="__main__")
    finally:
        sys.argv = saved


def _read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf8") as f:
        return [json.loads(line) for line in f]


def _write_jsonl(path, rows) -> None:
    Path(path).write_text("".join(json.dumps(row) + "\n" for row in rows))


def released_format(src_dir, kind: str, source, out) -> None:
    """`format_converting_{kind}.py source out` (kind: e2e, webnlg or dart): a released data file to the
    formatted jsonl ({"context", "completion"} and, for WebNLG, "cate") that gpt2_encode.py reads."""
    _run_script(src_dir, f"format_converting_{kind}.py", source, out)


def released_encode(src_dir, vocab_dir, formatted, out) -> list[dict]:
    """`gpt2_encode.py --vocab vocab_dir --input formatted --output out --add_bos --add_eos`, as create_datasets.sh
    runs it: the rows it writes to `out`, {"context": ids, "completion": ids}."""
    _run_script(src_dir, "gpt2_encode.py", "--vocab", vocab_dir, "--input", formatted, "--output", out,
                "--add_bos", "--add_eos")  # fmt: skip
    return _read_jsonl(out)


def released_clean(src_dir, vocab_dir, tokens: list[int]) -> str:
    """The text gpt2_decode.py writes for a prediction `tokens` (a `predict` list of gpt2_beam.py): run on a
    one-line sample file, default options (no --tokenize, no --lower)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _write_jsonl(tmp / "sample.jsonl", [{"id": 0, "predict": tokens}])
        _write_jsonl(tmp / "input.jsonl", [{"context": "c", "completion": "r"}])
        _run_script(src_dir, "gpt2_decode.py", "--vocab", vocab_dir, "--sample_file", tmp / "sample.jsonl",
                    "--input_file", tmp / "input.jsonl", "--output_ref_file", tmp / "ref.txt",
                    "--output_pred_file", tmp / "pred.txt")  # fmt: skip
        text = (tmp / "pred.txt").read_text(encoding="utf8")
    assert text.endswith("\n")
    return text[:-1]


def released_model(src_dir, state_dict: dict, config_kwargs: dict):
    """The released `GPT2LMModel(GPT2Config(**config_kwargs))` with a transformers GPT-2 state dict loaded by its
    own `load_weight` (keys without `transformer.`; it ties the head itself). load_weight keeps the fresh
    initialisation of any weight it is not given and ignores unknown keys: both are refused here."""
    model = _module(src_dir, "model")
    net = model.GPT2LMModel(model.GPT2Config(**config_kwargs))
    weights = {k.removeprefix("transformer."): v.clone() for k, v in state_dict.items() if k.startswith("transformer.")}
    expected = {n for n, _ in net.transformer.named_parameters() if "lora_" not in n}
    assert set(weights) == expected, f"weights differ from the released model's: {set(weights) ^ expected}"
    net.load_weight(weights)
    return net


def _no_distributed(module) -> None:
    module.distributed_gather = lambda args, tensor: tensor.unsqueeze(0)  # all_gather over a world of one
    module.distributed_sync = lambda args: None


def released_beam(src_dir, state_dict: dict, config_kwargs: dict, contexts: list[list[int]], beam: int,
                  length_penalty: float, eval_len: int, seq_len: int, no_repeat_ngram_size: int,
                  eos_token_ids: list[int], repetition_penalty: float = 1.0, min_length: int = 0,
                  ) -> list[list[int]]:  # fmt: skip
    """gpt2_beam.py's beam search (its `beam()` over a DataLoader of its `FT_Dataset`, batch size 1, as its main
    builds them) for each context's ids: the `predict` list it writes for each, `eval_len` ids (0 after the
    hypothesis; it does not cut at the end token). `eos_token_ids` as its command line makes them: its default
    [50256] and then each `--eos_token_id`."""
    gpt2_beam = _module(src_dir, "gpt2_beam")
    _no_distributed(gpt2_beam)
    net = released_model(src_dir, state_dict, config_kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.jsonl"
        _write_jsonl(data, [{"context": c, "completion": []} for c in contexts])
        argv = ["--data", data, "--batch_size", 1, "--seq_len", seq_len, "--eval_len", eval_len, "--beam", beam,
                "--length_penalty", length_penalty, "--no_repeat_ngram_size", no_repeat_ngram_size,
                "--repetition_penalty", repetition_penalty, "--min_length", min_length, "--work_dir", tmp,
                "--output_file", "predict.jsonl"]  # fmt: skip
        for eos in eos_token_ids[1:]:
            argv += ["--eos_token_id", eos]
        args = gpt2_beam.parser.parse_args(list(map(str, argv)))
        assert args.eos_token_id == list(eos_token_ids), f"the released command line cannot give {eos_token_ids}"
        args.device, args.rank, args.world_size = torch.device("cpu"), 0, 1  # what parse_gpu sets, on one CPU
        gpt2_beam.args = args  # _add_beam_candidate reads the length penalty from the module's global `args`
        dataset = gpt2_beam.FT_Dataset(args.data, args.batch_size, args.seq_len, args.eval_len)
        loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=0, shuffle=False, pin_memory=False,
                            drop_last=False, sampler=DistributedSampler(dataset, num_replicas=1, rank=0))  # fmt: skip
        with contextlib.redirect_stdout(io.StringIO()):
            gpt2_beam.beam(net, loader, args)
        predicted = {row["id"]: row["predict"] for row in _read_jsonl(Path(tmp) / "predict.jsonl")}
    return [predicted[i] for i in range(len(contexts))]


def released_train_step(src_dir, state_dict: dict, config_kwargs: dict, lora: dict, rows: list[dict],
                        argv: list[str]) -> list[dict]:  # fmt: skip
    """gpt2_ft.py's training (its `train_validate`, one epoch) on `rows` ({"context": ids, "completion": ids}, as
    gpt2_encode.py writes them), batches in file order, with the command-line options `argv` (e.g. --lr,
    --train_batch_size, --lora_dim; the model's shape comes from `config_kwargs`), LoRA weights set from `lora`
    (parameter name -> tensor) after the pretrained ones are loaded, only LoRA trainable (when --lora_dim > 0),
    no scheduler, --max_step batches. Per step: the batch, the loss, the gradients of the trained parameters and
    those parameters after the step."""
    gpt2_ft = _module(src_dir, "gpt2_ft")
    _no_distributed(gpt2_ft)
    steps: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        _write_jsonl(data, rows)
        args = gpt2_ft.parser.parse_args(["--train_data", str(data), "--valid_data", str(data), "--work_dir", tmp,
                                          *argv])  # fmt: skip
        args.device, args.rank, args.world_size = torch.device("cpu"), 0, 1
        config = dict(config_kwargs, lora_attn_dim=args.lora_dim, lora_attn_alpha=args.lora_alpha,
                      lora_dropout=args.lora_dropout)  # fmt: skip
        net = released_model(src_dir, state_dict, config)
        params = dict(net.named_parameters())
        with torch.no_grad():
            for name, value in lora.items():
                params[name].copy_(value)
        if args.lora_dim > 0:
            gpt2_ft.lora.mark_only_lora_as_trainable(net)
        trained = {n: p for n, p in params.items() if p.requires_grad}
        optimizer = gpt2_ft.create_adam_optimizer_from_args(net, args)
        train_data = gpt2_ft.FT_Dataset(args.train_data, args.train_batch_size, args.seq_len,
                                        joint_lm=args.obj == "jlm")  # fmt: skip
        # gpt2_ft.py's loader, but its DistributedSampler does not shuffle: batches in file order.
        sampler = DistributedSampler(train_data, num_replicas=1, rank=0, shuffle=False)
        loader = DataLoader(train_data, batch_size=args.train_batch_size, num_workers=0, shuffle=False,
                            pin_memory=False, drop_last=True, sampler=sampler)  # fmt: skip
        if args.max_step is None:
            args.max_step = len(loader)

        def batch_in(module, inputs, kwargs):
            steps.append({"input": inputs[0].clone(), "target": kwargs["lm_labels"].clone(),
                          "mask": kwargs["lm_mask"].clone()})  # fmt: skip

        def loss_out(module, inputs, kwargs, output):
            steps[-1]["loss"] = output[1].item()

        net.register_forward_pre_hook(batch_in, with_kwargs=True)
        net.register_forward_hook(loss_out, with_kwargs=True)
        optimizer.register_step_pre_hook(
            lambda *_: steps[-1].update(grad={n: p.grad.clone() for n, p in trained.items()})
        )
        optimizer.register_step_post_hook(
            lambda *_: steps[-1].update(after={n: p.detach().clone() for n, p in trained.items()})
        )
        with contextlib.redirect_stdout(io.StringIO()):
            gpt2_ft.train_validate(net, optimizer, None, loader, None, args, train_step=0, epoch=1)
    return steps
