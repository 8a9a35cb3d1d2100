"""Remakes the golden files tests/golden/released_{beam,encode,train_step}.json from microsoft/LoRA's own code.

Not a test (pytest collects nothing here): a developer runs it, from the repository root, when the goldens must be
made again, with a git checkout of microsoft/LoRA (the goldens were made at commit c4593f0):

    python tests/golden/make_golden.py --released /path/to/microsoft/LoRA

The released code runs through benchmarks/released_nlg.py; the models are released_gpt2.py's, the data the
offline bundle's (LORA_SHARED_DIR, its data/README.md). Each file records in "made_by" the command, the released
commit and the weight digests of the models. Runs in some minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
EOS_IDS = [50256, 628]  # gpt2_beam.py's default end token and README's `--eos_token_id 628` ("\n\n")
BEAM = dict(beam=10, eval_len=64, seq_len=512, no_repeat_ngram_size=4, repetition_penalty=1.0, min_length=0)
LENGTH_PENALTIES = (0.8, 0.9)
N_EXAMPLES = 100
# gpt2_ft.py options of the training golden: README's E2E ones, but no LoRA dropout, no scheduler, 2 batches of 4.
TRAIN_ARGV = ["--train_batch_size", "4", "--seq_len", "512", "--lr", "0.0002", "--weight_decay", "0.01",
              "--correct_bias", "--adam_beta1", "0.9", "--adam_beta2", "0.999", "--adam_epislon", "1e-06",
              "--clip", "0.0", "--label_smooth", "0.1", "--lora_dim", "4", "--lora_alpha", "32",
              "--lora_dropout", "0.0", "--max_step", "2"]  # fmt: skip
# Released data files: (kind of format_converting_*.py, path under the bundle's data/).
SOURCES = {
    "e2e/valid": ("e2e", "e2e/lora-format/valid.txt"),
    "e2e/test": ("e2e", "e2e/lora-format/test.txt"),
    "webnlg/train": ("webnlg", "webnlg/lora-format/train.json"),
    "webnlg/dev": ("webnlg", "webnlg/lora-format/dev.json"),
    "webnlg/test": ("webnlg", "webnlg/lora-format/test.json"),
    "dart/dev": ("dart", "dart/dart-v1.1.1-full-dev.json"),
}


def write_json(path: Path, obj) -> int:
    """Indented JSON with every innermost list of numbers on one line; returns the size in bytes."""
    text = json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=False)
    # lists of numbers only: a string such as "Jumaat [\u26404 ]" must keep its spaces
    text = re.sub(r"\[[-+.,eE\d\s]*\]", lambda m: re.sub(r"\s+", "", m.group()).replace(",", ", "), text)
    path.write_text(text + "\n", encoding="utf8")
    return path.stat().st_size


def released_config(config: dict) -> dict:
    """released_gpt2.CONFIG as the released model.py's GPT2Config spells it (it has no dropout to set)."""
    return dict(vocab_size_or_config_json_file=config["vocab_size"], n_positions=config["n_positions"],
                n_ctx=config["n_positions"], n_embd=config["n_embd"], n_layer=config["n_layer"],
                n_head=config["n_head"])  # fmt: skip


def lora_init(n_layer: int, width: int, r: int = 4) -> dict[str, torch.Tensor]:
    out = {}
    for layer in range(n_layer):
        g = torch.Generator().manual_seed(1234 + layer)
        name = f"transformer.h.{layer}.attn.c_attn."
        out[name + "lora_A"] = torch.randn(2 * r, width, generator=g) * 0.1
        out[name + "lora_B"] = torch.randn(2 * width, r, generator=g) * 0.1
    return out


def check_lora_layout(nlg, src, state_dict, config, lora, alpha=32, r=4) -> None:
    """loralib's MergedLinear (enable_lora [q, k, v] = [True, False, True]) adds x (B[:w] A[:r])^T * alpha/r to q's
    outputs, nothing to k's, x (B[w:] A[r:])^T * alpha/r to v's: checked on the released model."""
    net = nlg.released_model(src, state_dict, dict(config, lora_attn_dim=r, lora_attn_alpha=alpha))
    params = dict(net.named_parameters())
    x = torch.randn(5, config["n_embd"], generator=torch.Generator().manual_seed(0))
    w = config["n_embd"]
    with torch.no_grad():
        for name, value in lora.items():
            params[name].copy_(value)
        for layer, block in enumerate(net.transformer.h):
            c_attn = block.attn.c_attn
            delta = c_attn(x) - torch.nn.functional.linear(x, c_attn.weight.T, c_attn.bias)
            a, b = (lora[f"transformer.h.{layer}.attn.c_attn.lora_{k}"] for k in "AB")
            want = torch.cat([x @ (b[:w] @ a[:r]).T, torch.zeros(5, w), x @ (b[w:] @ a[r:]).T], 1) * (alpha / r)
            torch.testing.assert_close(delta, want, rtol=1e-4, atol=1e-5)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--released", type=Path, required=True, help="a git checkout of microsoft/LoRA")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="where the files go")
    p.add_argument("--parts", nargs="+", default=["encode", "beam", "train_step"], help="which files to make")
    opts = p.parse_args()
    sys.path.insert(0, str(ROOT))
    import released_gpt2 as tiny

    from benchmarks import released_nlg as nlg

    src, vocab = opts.released / "examples" / "NLG" / "src", opts.released / "examples" / "NLG" / "vocab"
    git = ["git", "-C", str(opts.released)]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "examples/NLG", "loralib"], capture_output=True,
                           text=True, check=True).stdout.strip()  # fmt: skip
    if dirty:
        sys.exit(f"the released checkout has changes:\n{dirty}")
    data = tiny.shared_dir() / "data"
    tmp = Path(tempfile.mkdtemp(prefix="golden_"))
    timings = {}

    start = time.perf_counter()
    models = {"random": tiny.random_gpt2(0), "trained": tiny.trained_gpt2()}
    digests = {name: tiny.weights_digest(m) for name, m in models.items()}
    timings["models"] = time.perf_counter() - start
    made_by = {
        "command": shlex.join(["python", *sys.argv]),
        "released": "microsoft/LoRA",
        "released_commit": commit,
        "models": {
            "random": {"built_by": "released_gpt2.random_gpt2(0)", "weights_digest": digests["random"]},
            "trained": {"built_by": "released_gpt2.trained_gpt2()", "weights_digest": digests["trained"]},
        },
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the trained model's rounding depends on it
    }
    config = released_config(tiny.CONFIG)

    start = time.perf_counter()
    formatted = {}
    for key, (kind, path) in SOURCES.items():
        formatted[key] = tmp / f"{key.replace('/', '_')}_formatted.jsonl"
        nlg.released_format(src, kind, data / path, formatted[key])
    timings["format"] = time.perf_counter() - start

    def lines(key, n=None) -> list[str]:
        return formatted[key].read_text(encoding="utf8").splitlines(keepends=True)[:n]

    def encode_first(key, n) -> Path:
        head = tmp / f"{key.replace('/', '_')}_head{n}.jsonl"
        head.write_text("".join(lines(key, n)), encoding="utf8")
        return nlg.released_encode(src, vocab, head, tmp / "encoded.jsonl")

    if "encode" in opts.parts:
        start = time.perf_counter()
        examples = {}
        for key in ("e2e/test", "webnlg/test", "dart/dev"):
            rows = [json.loads(line) for line in lines(key, N_EXAMPLES)]
            ids = encode_first(key, N_EXAMPLES)
            examples[key] = [dict(row, context_ids=i["context"], completion_ids=i["completion"])
                             for row, i in zip(rows, ids, strict=True)]  # fmt: skip
        files = {}
        for key, (kind, path) in SOURCES.items():
            nlg.released_encode(src, vocab, formatted[key], tmp / "encoded.jsonl")
            files[key] = {"source": path, "converter": f"src/format_converting_{kind}.py", "lines": len(lines(key)),
                          "formatted_sha256": sha256(formatted[key].read_bytes()),
                          "encoded_sha256": sha256((tmp / "encoded.jsonl").read_bytes())}  # fmt: skip
        size = write_json(opts.out / "released_encode.json", {
            "description": "microsoft/LoRA's data preparation (create_datasets.sh): src/format_converting_{e2e,"
            "webnlg,dart}.py turns a released data file (path under the data bundle's data/) into formatted jsonl "
            "(one json.dumps line per example: context, completion and, for WebNLG, cate = category in the 10 "
            "seen ones); src/gpt2_encode.py --vocab vocab --add_bos --add_eos turns each line into GPT-2 ids "
            "(context + [50256], ' ' + completion + [50256]). `files`: line count of each whole formatted file, "
            "sha256 of its bytes and of the bytes of gpt2_encode.py's output for it. `examples`: the first 100 "
            "formatted lines of three files, with their ids.",
            "made_by": {k: v for k, v in made_by.items() if k != "models"},
            "files": files,
            "examples": examples,
        })  # fmt: skip
        timings["encode"] = time.perf_counter() - start
        print(f"released_encode.json: {size} bytes")

    if "beam" in opts.parts:
        start = time.perf_counter()
        rows = [json.loads(line) for line in lines("e2e/test")]
        first: dict[str, int] = {}
        for i, row in enumerate(rows):
            first.setdefault(row["context"], i)
        chosen = sorted(first.values())[:N_EXAMPLES]
        head = tmp / "e2e_test_chosen.jsonl"
        head.write_text("".join(lines("e2e/test")[i] for i in chosen), encoding="utf8")
        contexts = [r["context"] for r in nlg.released_encode(src, vocab, head, tmp / "encoded.jsonl")]

        def decode(name, lp, **changes) -> dict:
            t = time.perf_counter()
            preds = nlg.released_beam(src, models[name].state_dict(), config, contexts, length_penalty=lp,
                                      eos_token_ids=EOS_IDS, **dict(BEAM, **changes))  # fmt: skip
            ends = [next((j + 1 for j, tok in enumerate(pr) if tok in EOS_IDS), len(pr)) for pr in preds]
            assert not any(any(pr[n:]) for pr, n in zip(preds, ends, strict=True))  # zeros after the end
            timings[f"beam {name} {lp} {changes or ''}"] = time.perf_counter() - t
            return {
                "tokens": [pr[:n] for pr, n in zip(preds, ends, strict=True)],
                "text": [nlg.released_clean(src, vocab, pr) for pr in preds],
            }

        outputs = {name: {str(lp): decode(name, lp) for lp in LENGTH_PENALTIES} for name in models}
        # The random model's best hypothesis is <|endoftext|> at once (tied embeddings favour repeating the
        # context's last id, 50256): --min_length 10 makes it decode, so beam search and n-gram blocking are tested.
        min_length = {"min_length": 10, "random": {"0.8": decode("random", 0.8, min_length=10)}}
        size = write_json(opts.out / "released_beam.json", {
            "description": "microsoft/LoRA's src/gpt2_beam.py beam search (its beam(), batch size 1, on CPU) on "
            "the first 100 distinct contexts of the released E2E test.txt (line numbers from 0 in `lines`), "
            "formatted by src/format_converting_e2e.py and encoded by src/gpt2_encode.py --add_bos --add_eos "
            "(`context_ids`: the context's ids then 50256). Per model and length penalty: `tokens`, the ids "
            "gpt2_beam.py writes as `predict`, up to and with the first end token (50256 or 628), or all "
            "eval_len of them if none (what follows an end token there is 0 padding); `text`, what "
            "src/gpt2_decode.py makes of the whole `predict` (decode, cut at <|endoftext|>, then at a blank "
            "line, strip). Settings as README's E2E command: `settings`. `outputs_min_length_10`: the same with "
            "--min_length 10 (no end token before the 11th id), for the random model, whose outputs are otherwise "
            "all [50256].",
            "made_by": made_by,
            "settings": dict(BEAM, eos_token_ids=EOS_IDS, batch_size=1, length_penalties=list(LENGTH_PENALTIES)),
            "lines": chosen,
            "context_ids": contexts,
            "outputs": outputs,
            "outputs_min_length_10": min_length,
        })  # fmt: skip
        timings["beam"] = time.perf_counter() - start
        print(f"released_beam.json: {size} bytes")

    if "train_step" in opts.parts:
        start = time.perf_counter()
        rows = encode_first("e2e/valid", 8)
        state = models["random"].state_dict()
        lora = lora_init(config["n_layer"], config["n_embd"])
        check_lora_layout(nlg, src, state, config, lora)
        steps = nlg.released_train_step(src, state, config, lora, rows, TRAIN_ARGV)
        lengths = [len(r["context"]) + len(r["completion"]) for r in rows]
        out_steps = []
        for k, step in enumerate(steps):
            batch = []
            for b in range(step["input"].shape[0]):
                n = lengths[4 * k + b]
                for key in ("input", "target", "mask"):  # all padding after the first n
                    assert not step[key][b, n:].any()
                batch.append({key: step[key][b, :n].tolist() for key in ("input", "target", "mask")})
            out_steps.append({
                "batch": batch,
                "loss": step["loss"],
                "grad": {n: g.tolist() for n, g in step["grad"].items()},
                "after": {n: v.tolist() for n, v in step["after"].items()},
            })  # fmt: skip
        init_bytes = b"".join(lora[n].numpy().tobytes() for n in sorted(lora))
        size = write_json(opts.out / "released_train_step.json", {
            "description": "Two training steps of microsoft/LoRA's src/gpt2_ft.py (its train_validate: model in "
            "train mode, loss = model(input, lm_labels=target, lm_mask=mask, label_smooth=0.1).mean(), backward, "
            "no clipping, then its optimizer.AdamW from create_adam_optimizer_from_args: one parameter group, "
            "lr 2e-4 constant, betas (0.9, 0.999), eps 1e-6, weight_decay 0.01, correct_bias) on the released "
            "model.py's GPT2LMModel with lora_attn_dim 4, lora_attn_alpha 32, lora_dropout 0 (loralib "
            "MergedLinear on c_attn, enable_lora [q, k, v] = [True, False, True]), weights of `random` "
            "(released_gpt2.random_gpt2(0)), only LoRA trainable (loralib.mark_only_lora_as_trainable). Before "
            "step 1 each layer l's LoRA is set: g = torch.Generator().manual_seed(1234 + l); lora_A = "
            "torch.randn(8, 64, generator=g) * 0.1; then lora_B = torch.randn(128, 4, generator=g) * 0.1 "
            "(`lora_init_sha256`: sha256 of their float32 bytes, names sorted). Layout (checked on the released "
            "model): rows 0-3 of lora_A and rows 0-63 of lora_B are q's (q += x (B[0:64] A[0:4])^T * 32/4), rows "
            "4-7 of A and 64-127 of B are v's (v += x (B[64:128] A[4:8])^T * 8); k has none. Batch 1 = lines 1-4 "
            "of the released E2E valid.txt, batch 2 = lines 5-8, made by the released FT_Dataset (seq_len 512) "
            "from src/gpt2_encode.py --add_bos --add_eos ids. `batch`: each row's input, target and mask up to "
            "len(context ids) + len(completion ids); the rest, up to 512, is 0 in all three. Per step: `loss`, "
            "`grad` (each LoRA tensor's gradient, loralib's shapes) and `after` (each LoRA tensor after the step).",
            "made_by": dict(made_by, models={"random": made_by["models"]["random"]}),
            "gpt2_ft_options": TRAIN_ARGV,
            "lora_init_sha256": sha256(init_bytes),
            "steps": out_steps,
        })  # fmt: skip
        timings["train_step"] = time.perf_counter() - start
        print(f"released_train_step.json: {size} bytes")

    for part, seconds in timings.items():
        print(f"{part}: {seconds:.1f} s")


if __name__ == "__main__":
    main()
