"""The Gaussian density against scikit-learn's Ledoit-Wolf Mahalanobis distance, with and without the
L2 normalisation of the embeddings."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

from cutswap.deploy.export import Mahalanobis
from cutswap.score.density import GaussianDensity


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


def test_l2_normalised_density_is_ledoit_wolf_on_unit_vectors_and_ignores_length():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(60, 6)) @ rng.normal(size=(6, 6)) + 3
    test = rng.normal(size=(10, 6)) + 3
    gde = GaussianDensity.fit(train, l2_normalize=True)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    expected = np.sqrt(LedoitWolf().fit(unit(train)).mahalanobis(unit(test)))
    np.testing.assert_allclose(gde.score(test), expected, rtol=1e-10)
    # An embedding's length no longer matters; without the normalisation it does.
    np.testing.assert_allclose(gde.score(7.5 * test), gde.score(test), rtol=1e-10)
    plain = GaussianDensity.fit(train)
    assert not np.allclose(plain.score(7.5 * test), plain.score(test))
    # The exported graph's distance normalises the same way (a zero row stays finite in both).
    rows = np.vstack([test, np.zeros((1, 6))])
    with torch.no_grad():
        graph = Mahalanobis(gde)(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(graph, gde.score(rows), rtol=1e-12)
