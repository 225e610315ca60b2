"""Gaussian density estimator (GDE) over embeddings, as CutPaste scores images.

Fitted on the embeddings of the **normal training images only** (fitting on augmented negatives is a
known reimplementation bug, LilitYolyan/CutPaste#24). The covariance uses Ledoit-Wolf shrinkage because
a category has a few hundred images for a 512-d (ResNet-18) or 1280-d (EfficientNet-Lite0) embedding. The
score is the Mahalanobis distance.

``l2_normalize`` projects every embedding onto the unit sphere before the fit and before each score, as the
CutPaste authors' density does (reported by users of the re-implementations, Runinho/pytorch-cutpaste#2):
the direction of a feature vector carries the pattern, its length mostly the image's contrast, which
ImageNet features in particular scale widely. It is a property of the density, so a stored density
scores new images the way it was fitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.covariance import LedoitWolf


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (a zero row stays zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


@dataclass(frozen=True)
class GaussianDensity:
    mean: np.ndarray  # (D,)
    precision: np.ndarray  # (D, D)
    l2_normalize: bool = False

    @classmethod
    def fit(cls, embeddings: np.ndarray, l2_normalize: bool = False) -> GaussianDensity:
        """Mean and Ledoit-Wolf shrunk inverse covariance of (N, D) normal embeddings."""
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"need at least 2 embeddings of shape (N, D), got {x.shape}")
        estimator = LedoitWolf().fit(unit_rows(x) if l2_normalize else x)
        return cls(estimator.location_, estimator.precision_, l2_normalize)

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """Mahalanobis distance ``sqrt((x - mean)^T P (x - mean))`` of each (N, D) embedding; larger means
        more anomalous.

        One (N, D) x (D, D) matrix product and a row-wise dot product, never an (N, D, D) temporary: the
        patch localization scores tens of thousands of crops with it (``cutswap.score.localization``).
        Rounding can make a distance of a point at the mean a tiny negative square, hence the clamp at 0.
        """
        x = np.asarray(embeddings, dtype=np.float64)
        d = (unit_rows(x) if self.l2_normalize else x) - self.mean
        return np.sqrt(np.maximum(np.sum((d @ self.precision) * d, axis=1), 0.0))
