"""Dropout with numpy's PCG64 masks (experiments/cpu_dropout.py): torch's dropout in distribution, scale and
gradient, its masks decided by torch's generator alone.

The rates are checked against the binomial's standard error (5 SE: a false failure about once in 3.5 million runs);
a mask that kept with probability p instead of 1 - p, or drew one bit for several elements, fails them.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from experiments import cpu_dropout

N = 1 << 20


def within_5_se(count: int, n: int, p: float) -> bool:
    return abs(count / n - p) <= 5 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_rate_and_scale_are_torchs(p, dtype):
    torch.manual_seed(0)
    x = torch.ones(N, dtype=dtype)
    ours, theirs = cpu_dropout.dropout(x, p), F.dropout(x, p, True)
    rounded = round(p * cpu_dropout.LEVELS) / cpu_dropout.LEVELS
    assert abs(rounded - p) <= 0.5 / cpu_dropout.LEVELS
    assert within_5_se(int((ours == 0).sum()), N, rounded)
    assert ours.dtype == dtype and set(ours.unique().tolist()) == set(theirs.unique().tolist())  # 0 and 1/(1-p)


def test_masks_are_independent_within_and_between_calls():
    """Neighbours share a 64-bit word (four 16-bit draws): each pair, and the same place in two masks, drops
    together with probability p^2."""
    torch.manual_seed(1)
    p = 0.3
    a, b = (cpu_dropout.keep_mask((N,), p, torch.float32) == 0 for _ in range(2))
    assert within_5_se(int((a[0::2] & a[1::2]).sum()), N // 2, p * p)
    assert within_5_se(int((a[0::4] & a[3::4]).sum()), N // 4, p * p)
    assert within_5_se(int((a & b).sum()), N, p * p)


def test_torchs_generator_decides_each_mask_with_one_draw():
    """A run's masks follow from its seed, and a resumed run (torch's generator restored) draws the same ones."""
    torch.manual_seed(7)
    first = cpu_dropout.keep_mask((3, 500), 0.2, torch.float32)
    after = torch.rand(4)
    torch.manual_seed(7)
    assert torch.equal(cpu_dropout.keep_mask((3, 500), 0.2, torch.float32), first)
    torch.manual_seed(7)
    torch.randint(2**63 - 1, (), dtype=torch.int64)  # the one draw a mask takes
    assert torch.equal(torch.rand(4), after)


def test_gradient_is_the_same_mask():
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    y = cpu_dropout.dropout(x, 0.25)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad * x.detach(), y.detach())  # dy/dx is the mask: 0 or 1/(1-p) at every element
    assert 0 < int((x.grad == 0).sum()) < x.numel()


def test_outside_training_and_at_zero_it_is_the_identity():
    x = torch.randn(5, 7)
    assert cpu_dropout.dropout(x, 0.4, training=False) is x
    assert cpu_dropout.dropout(x, 0.0) is x
    module = cpu_dropout.Dropout(0.4).eval()
    assert module(x) is x
    assert not torch.equal(module.train()(x), x)
