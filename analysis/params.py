"""Trainable parameters of the paper's settings, counted from configs alone (meta device, no weights).

    python -m analysis.params          # a table beside the paper's "# Trainable Parameters" column
    python -m analysis.params --json   # the same rows as JSON

The paper prints rounded millions, so a count "agrees" when it rounds to the printed figure.
"""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import asdict, dataclass
from decimal import Decimal

import lora
from experiments.models import build


@dataclass(frozen=True)
class Setting:
    label: str
    model: str  # a conf/model name
    lora: dict  # LoRAConfig keyword arguments
    paper: str  # the paper's figure, as printed, in millions
    source: str  # where the paper prints it
    note: str = ""


_GPT2_NOTE = (
    "2 x L_hat x d x r (L_hat = 2 per block) is exact here and matches loralib's MergedLinear shapes; "
    "the paper's Table 3 figure differs from it"
)

SETTINGS = [
    Setting("RoBERTa-base LoRA r=8 (q,v)", "roberta_base", {"r": 8}, "0.3", "Table 2"),
    Setting("RoBERTa-large LoRA r=8 (q,v)", "roberta_large", {"r": 8}, "0.8", "Table 2"),
    Setting("DeBERTa-XXL LoRA r=16 (q,v)", "deberta_v2_xxlarge", {"r": 16}, "4.7", "Table 2"),
    Setting("GPT-2 M LoRA r=4 (q,v)", "gpt2_medium", {"r": 4}, "0.35", "Table 3", _GPT2_NOTE),
    Setting("GPT-2 L LoRA r=4 (q,v)", "gpt2_large", {"r": 4}, "0.77", "Table 3", _GPT2_NOTE),
    Setting("GPT-3 LoRA r_q=r_v=1", "gpt3_175b", {"r": {"q": 1, "v": 1}}, "4.7", "Table 4"),
    Setting("GPT-3 LoRA r_q=r_v=8", "gpt3_175b", {"r": {"q": 8, "v": 8}}, "37.7", "Table 4"),
]


@functools.cache
def _meta_model(name: str):
    return build(name, device="meta")  # GPT-3 takes seconds even on the meta device: build it once


def count_setting(setting: Setting) -> tuple[int, int]:
    """(trainable LoRA parameters, total parameters of the adapted model), task head excluded."""
    model = lora.apply(_meta_model(setting.model), lora.LoRAConfig(**setting.lora))
    c = lora.count(model)
    lora.unload(model, merge=False)
    return c.lora, c.total


def agrees(count: int, paper_millions: str) -> bool:
    """Whether `count` rounds to the paper's printed figure (e.g. '0.35' means [0.345, 0.355) M).

    >>> agrees(294_912, "0.3"), agrees(393_216, "0.35")
    (True, False)
    """
    printed = Decimal(paper_millions)
    half = Decimal(1).scaleb(printed.as_tuple().exponent) / 2
    return abs(Decimal(count) / Decimal(10**6) - printed) <= half


def table() -> list[dict]:
    rows = []
    for s in SETTINGS:
        trainable, total = count_setting(s)
        rows.append(
            {
                **asdict(s),
                "trainable": trainable,
                "total": total,
                "paper_millions": float(s.paper),
                "agrees": agrees(trainable, s.paper),
                "ratio_to_paper": round(trainable / (float(s.paper) * 1e6), 4),
            }
        )
    return rows


def render(rows: list[dict]) -> str:
    head = f"{'setting':<30} {'ours':>12} {'paper':>8}  {'':<8} {'source'}"
    lines = [head, "-" * len(head)]
    for r in rows:
        verdict = "agrees" if r["agrees"] else f"x{r['ratio_to_paper']:.3f}"
        lines.append(f"{r['label']:<30} {r['trainable']:>12,} {r['paper'] + 'M':>8}  {verdict:<8} {r['source']}")
    notes = dict.fromkeys(r["note"] for r in rows if r["note"] and not r["agrees"])
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    rows = table()
    print(json.dumps(rows, indent=2) if args.json else render(rows))


if __name__ == "__main__":
    main()
