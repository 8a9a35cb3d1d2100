"""The beam search that produced the paper's GPT-2 numbers: microsoft/LoRA's `examples/NLG/src/gpt2_beam.py`,
batched over inputs, token for token the same decodes (tests/experiments/test_beam.py checks 400 of them against
golden files made by running the released script).

Written here rather than through transformers' `generate` because the two algorithms differ in ways no logits
processor can change: the released loop keeps the `num_beams` best continuations of all live hypotheses, and one
that ends (on an end token) is scored, kept if best so far, and dropped, so fewer hypotheses stay alive;
transformers keeps 2 x `num_beams` candidates so that the beam is always full, and stops early. The released loop
also always runs `max_new_tokens` steps, scores a finished hypothesis as  log p / length ** length_penalty  with
the end token counted in the length, and bans repeated n-grams before the softmax (the rest are renormalised).

Settings that the paper's text or our earlier pipeline chose otherwise are switches (`generation.DEFAULTS`):
`no_repeat_scope` (the released code bans n-grams repeated within the generated tokens only; `all` counts the
prompt too, as transformers does) and `ban_before_softmax` (false: banned tokens are removed after the softmax,
the others keep their probabilities, as transformers does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from lora.padding import pad


def _banned(sequences: list[list[int]], n: int) -> list[list[int]]:
    """For each sequence, the tokens that would repeat one of its n-grams (fairseq's rule, as released).

    >>> _banned([[5, 6, 7, 5, 6], [1, 2]], 3)
    [[7], []]
    """
    out = []
    for seq in sequences:
        if len(seq) + 1 < n:
            out.append([])
            continue
        seen: dict[tuple, list[int]] = {}
        for i in range(len(seq) - n + 1):
            seen.setdefault(tuple(seq[i : i + n - 1]), []).append(seq[i + n - 1])
        out.append(seen.get(tuple(seq[len(seq) - n + 1 :]), []))
    return out


def _log_probs(logits: torch.Tensor, banned: list[list[int]], before_softmax: bool) -> torch.Tensor:
    """Log probabilities, banned tokens at -inf, removed before or after the softmax. The released code takes
    log(softmax(.)); log_softmax is one pass instead of two over batch x beams x vocabulary (50,257 for GPT-2)
    and no second temporary, and rounds a few last bits differently: the 500 golden decodes of test_beam.py
    (gpt2_beam.py's own outputs) are the same token for token either way."""
    rows = [i for i, b in enumerate(banned) for _ in b]
    cols = [t for b in banned for t in b]
    if before_softmax:
        logits[rows, cols] = -float("inf")
    logp = F.log_softmax(logits, dim=-1)
    if not before_softmax:
        logp[rows, cols] = -float("inf")
    return logp


class _Best:
    """The best finished hypothesis of each input so far: ties keep the first, as the released loop does."""

    def __init__(self, batch: int):
        self.score = torch.full((batch,), -float("inf"))
        self.found = torch.zeros(batch, dtype=torch.bool)
        self.tokens: list[list[int]] = [[] for _ in range(batch)]

    def offer(self, scores: torch.Tensor, ended: torch.Tensor, history: torch.Tensor, length_penalty: float):
        """Score the hypotheses that `ended` (batch x beams), keep each input's best, kill them (-inf)."""
        normed = torch.where(ended, scores / history.shape[1] ** length_penalty, -float("inf"))
        best, beam = normed.max(dim=1)  # the first of equal maxima, as the released loop's strict `<`
        beams = scores.shape[1]
        for b in torch.nonzero(ended.any(dim=1)).flatten().tolist():
            if not self.found[b] or self.score[b] < best[b]:
                self.found[b], self.score[b] = True, best[b]
                self.tokens[b] = history[b * beams + beam[b]].tolist()
        scores[ended] = -float("inf")

    def final(self, scores: torch.Tensor, length: int, steps: int, length_penalty: float) -> bool:
        """True when no live hypothesis can ever beat its input's best, so more steps change nothing. Log
        probabilities are <= 0, so a score only falls; divided by a length ** penalty it is at most
        score / max(L ** penalty) over the lengths L still possible (an exact bound, not a heuristic)."""
        if not self.found.all():
            return False
        longest = max((length + 1) ** length_penalty, steps**length_penalty)
        reachable = (scores / longest).max(dim=1).values.cpu()
        return bool((self.score >= reachable).all())


@torch.inference_mode()
def beam_search(model, contexts: list[list[int]], s: dict, end_ids: list[int], pad_id: int) -> list[list[int]]:
    """Generated token ids of each context (ending with its end token, if one was chosen), `s` being checked
    decoding settings (`generation.decoding_settings`)."""
    device = next(model.parameters()).device
    batch, beams, steps = len(contexts), s["num_beams"], s["max_new_tokens"]
    ids, mask = pad(contexts, pad_id, left=True)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=DynamicCache(), use_cache=True)
    cache = out.cache
    cache.batch_repeat_interleave(beams)  # every hypothesis of an input shares its prompt's keys and values
    mask, last = mask.repeat_interleave(beams, 0), positions[:, -1].repeat_interleave(beams)
    logits = out.logits[:, -1].float().repeat_interleave(beams, 0)
    prompts = [list(c) for c in contexts for _ in range(beams)]
    offset = torch.arange(batch, device=device)[:, None] * beams
    history = torch.empty(batch * beams, 0, dtype=torch.long, device=device)
    scores = torch.zeros(batch, beams, device=device)
    best = _Best(batch)
    ends = torch.tensor(end_ids, device=device)  # built once, not at every step
    for step in range(steps):
        seqs = history.tolist()
        if s["no_repeat_scope"] == "all":
            seqs = [p + h for p, h in zip(prompts, seqs, strict=True)]
        banned = _banned(seqs, s["no_repeat_ngram_size"]) if s["no_repeat_ngram_size"] > 0 and step else []
        if step < s["min_new_tokens"]:  # gpt2_beam.py --min_length: no end token yet (before the softmax)
            logits[:, end_ids] = -float("inf")
        logp = _log_probs(logits, banned, s["ban_before_softmax"]).view(batch, beams, -1)
        vocab = logp.shape[-1]
        # The first step continues the prompt once (all hypotheses are the same), later ones every hypothesis.
        candidates = logp[:, 0] if step == 0 else logp.add_(scores[:, :, None]).view(batch, -1)  # in place
        scores, picked = torch.topk(candidates, beams, dim=1, largest=True, sorted=True)
        rows = (picked // vocab + offset).view(-1)
        tokens = (picked % vocab).view(-1, 1)
        history = torch.cat([history[rows], tokens], dim=1)
        best.offer(scores, torch.isin(tokens.view(batch, beams), ends),
                   history.cpu(), s["length_penalty"])  # fmt: skip
        if step == steps - 1 or best.final(scores, step + 1, steps, s["length_penalty"]):
            break  # no live hypothesis can still be kept: the released loop would go on without effect
        cache.reorder_cache(rows)
        mask = torch.cat([mask[rows], mask.new_ones(len(rows), 1)], dim=1)
        last = last[rows] + 1
        prompts = [prompts[r] for r in rows.tolist()]
        logits = model(input_ids=tokens, attention_mask=mask, position_ids=last[:, None], cache=cache,
                       use_cache=True).logits[:, -1].float()  # fmt: skip
    alive = torch.ones_like(scores, dtype=torch.bool)  # after the last step every hypothesis is a candidate
    best.offer(scores, alive, history.cpu(), s["length_penalty"])
    return best.tokens
