"""Detection metrics, written out so their definitions are pinned (and checked against scikit-learn).

``image_auroc``: area under the ROC curve of per-image scores against labels (1 = anomalous), computed as
the Mann-Whitney U statistic with average ranks for ties, i.e. the probability that a random anomalous
image scores above a random normal one, ties counting one half. This equals scikit-learn's
``roc_auc_score`` and anomalib's ``image_AUROC``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of scores against binary labels; NaN when only one class is present."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in length")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
