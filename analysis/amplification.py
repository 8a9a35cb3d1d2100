"""How Delta W relates to W: the paper's Section 7.3 and Table 7.

For the top-r singular directions U, V of a matrix X (X = Delta W, W itself, or a random matrix),
project W onto them: ||U^T W V||_F. Delta W "amplifies" directions of W that W does not emphasise
when ||Delta W||_F is far larger than the projection of W onto Delta W's own directions:

    amplification = ||Delta W||_F / ||U^T W V||_F  (U, V from Delta W)
"""

from __future__ import annotations

import numpy as np
import torch


def _np(m) -> np.ndarray:
    return np.asarray(m.detach().cpu().double() if isinstance(m, torch.Tensor) else m, dtype=np.float64)


def projection_norm(w, directions, r: int) -> float:
    """||U^T W V||_F with U, V the top-r left and right singular vectors of `directions`."""
    u, _, vh = np.linalg.svd(_np(directions), full_matrices=False)
    return float(np.linalg.norm(u[:, :r].T @ _np(w) @ vh[:r].T))


def table7(w, delta_w, r: int, seed: int = 0) -> dict:
    """The quantities of the paper's Table 7 for one weight matrix.

    >>> w = np.diag([10.0, 5.0, 1.0, 0.5])
    >>> dw = np.zeros((4, 4)); dw[3, 3] = 2.0  # Delta W along W's weakest direction
    >>> t = table7(w, dw, r=1)
    >>> t["w_on_delta"], t["w_on_w"], t["amplification"]
    (0.5, 10.0, 4.0)
    """
    w, delta_w = _np(w), _np(delta_w)
    random = np.random.default_rng(seed).normal(size=w.shape)
    on_delta = projection_norm(w, delta_w, r)
    return {
        "r": r,
        "w_on_delta": on_delta,
        "w_on_w": projection_norm(w, w, r),
        "w_on_random": projection_norm(w, random, r),
        "w_norm": float(np.linalg.norm(w)),
        "delta_norm": float(np.linalg.norm(delta_w)),
        "amplification": float(np.linalg.norm(delta_w)) / on_delta if on_delta > 0 else float("inf"),
    }
