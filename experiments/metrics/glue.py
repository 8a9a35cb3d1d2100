"""GLUE's official metrics (Wang et al., 2019): accuracy, F1, Matthews correlation, Pearson and Spearman."""

from __future__ import annotations

import warnings

import numpy as np


def glue_metrics(names, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """GLUE's official metrics, computed with scikit-learn and SciPy (as the GLUE baselines do).

    >>> glue_metrics(("accuracy", "f1"), np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1]))
    {'accuracy': 0.75, 'f1': 0.8}

    A correlation with a constant input is undefined: nan, without SciPy's warning (the task says why).

    >>> glue_metrics(("pearson", "spearman"), np.array([2.0, 2.0, 2.0]), np.array([1.0, 3.0, 2.0]))
    {'pearson': nan, 'spearman': nan}
    """
    from scipy.stats import ConstantInputWarning, pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    fns = {
        "accuracy": lambda p, y: accuracy_score(y, p),
        "f1": lambda p, y: f1_score(y, p),
        "matthews": lambda p, y: matthews_corrcoef(y, p),
        "pearson": lambda p, y: pearsonr(p, y)[0],
        "spearman": lambda p, y: spearmanr(p, y)[0],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return {name: round(float(fns[name](predictions, labels)), 6) for name in names}
