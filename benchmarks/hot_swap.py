"""Hot swap on a merged SmolLM2-135M: time per swap and the drift of the weights after many swaps.

    python -m benchmarks.hot_swap                     # CPU, 8 adapters r=8 on q, v, 1000 swaps
    python -m benchmarks.hot_swap --device cuda

Two ways to switch the merged adapter, in float32 and bfloat16 weights:
  in place  W <- W - Delta W_old + Delta W_new (one rounding of W per swap, so errors accumulate);
  exact     W <- W0 + Delta W_new from a kept copy of W0's adapted slices (`lora.HotSwap`'s default).
Drift: the largest |W - (W0 + Delta W_active)| over the adapted weights after k swaps, against one
merge of the active adapter into fresh weights, also relative to the largest |W|.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import torch

import lora
from benchmarks.common import machine, parse, parser, save_json, summary, sync
from benchmarks.multi_adapter import random_adapters
from experiments.models import build

CHECKPOINTS = (1, 10, 100, 1000, 10000)


def merged_weights(base, file) -> dict[str, torch.Tensor]:
    model = lora.unload(lora.load(copy.deepcopy(base), file))
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def run(base, files: dict, exact: bool, swaps: int, device: str) -> dict:
    model = copy.deepcopy(base)
    swap = lora.HotSwap(model, files, exact=exact)
    names = list(files)
    references = {n: merged_weights(base, f) for n, f in files.items()}
    params = dict(model.named_parameters())
    adapted = sorted({f"{site}.weight" for a in swap.adapters.values() for site, _ in a.factors})
    largest = max(params[n].float().abs().max().item() for n in adapted)
    times, drift = [], {}
    for k in range(1, swaps + 1):
        name = names[k % len(names)]
        sync(device)
        start = time.perf_counter()
        swap.activate(name)
        sync(device)
        times.append(time.perf_counter() - start)
        if k in CHECKPOINTS:
            err = max((params[n].float() - references[name][n].float()).abs().max().item() for n in adapted)
            drift[k] = {"max_abs": err, "relative": err / largest}
    return {"swap": summary(times), "drift": drift}


def main(argv=None):
    p = parser(__doc__, model="smollm2_135m", r=8)
    p.add_argument("--adapters", type=int, default=8)
    p.add_argument("--swaps", type=int, default=1000)
    args = parse(p, argv)
    base32 = build(args.model, head="causal_lm").eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = random_adapters(base32, args.adapters, args.r, Path(tmp), format="lora")
        for dtype in (torch.float32, torch.bfloat16):
            base = copy.deepcopy(base32).to(device=args.device, dtype=dtype)
            for exact in (False, True):
                row = {"dtype": str(dtype).removeprefix("torch."), "mode": "exact" if exact else "in place"}
                row.update(run(base, files, exact, args.swaps, args.device))
                rows.append(row)
                print(render(row), flush=True)
    result = {
        "benchmark": "hot_swap",
        "setting": {k: getattr(args, k) for k in ("model", "device", "adapters", "r", "swaps")},
        "machine": machine(),
        "rows": rows,
    }
    print(f"saved {save_json('hot_swap-' + args.device.split(':')[0], result)}")


def render(row: dict) -> str:
    drift = "  ".join(f"{k}: {d['max_abs']:.1e}" for k, d in row["drift"].items())
    ms = row["swap"]["median_s"] * 1e3
    return f"{row['dtype']:<8} {row['mode']:<8} swap {ms:6.1f} ms   drift after k swaps  {drift}"


if __name__ == "__main__":
    main()
