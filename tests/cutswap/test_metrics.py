from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cutswap.density import GaussianDensity
from cutswap.metrics import image_auroc


@pytest.mark.parametrize("seed", range(5))
def test_image_auroc_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + labels * 0.7, 1)  # rounding creates ties
    assert image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_image_auroc_hand_computed():
    # pairs (pos, neg): (3>1) (3>2) (2=2 -> 0.5) (2>1) => 3.5 / 4
    assert image_auroc([1, 2, 2, 3], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert np.isnan(image_auroc([1, 2], [1, 1]))


def test_gaussian_density_is_mahalanobis_under_ledoit_wolf():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 8)) @ rng.normal(size=(8, 8))
    test = rng.normal(size=(10, 8))
    gde = GaussianDensity.fit(train)
    lw = LedoitWolf().fit(train)
    expected = np.sqrt(lw.mahalanobis(test))  # sklearn returns the squared distance
    np.testing.assert_allclose(gde.score(test), expected, rtol=1e-10)
    far = train.mean(0) + 10 * train.std(0)
    assert gde.score(far[None])[0] > gde.score(train).max()
