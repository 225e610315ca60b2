"""Batched FCM / k-means against scikit-fuzzy and scikit-learn, top-cluster masks and degenerate maps.

Tolerances (maps in [0, 1], so absolute = relative to the value range):

- FCM, histogram mode (1024 bins, bin width ~1e-3): centroids within 1e-5 of skfuzzy. The in-bin mean makes
  the binning error second order (~bin width^2 = 1e-6); float32 iteration adds ~1e-7.
- FCM, exact mode (float64): within 1e-7, i.e. the two converged to the same fixed point.
- k-means: the reference is the global optimum, found by enumeration (1-D), because sklearn's best of 10
  k-means++ restarts misses it on some of these maps. Exact mode: objective within 1e-6 relative, centroids
  within 1e-4. Histogram mode: hard assignments make the binning error first order, so objective within
  1e-4 relative and centroids within 3 bin widths. Against sklearn: never worse, and equal to the same
  tolerances wherever sklearn reached the optimum.
"""

from __future__ import annotations

import numpy as np
import pytest
import skfuzzy
import torch
from sklearn.cluster import KMeans

from cutswap.method import clustering
from cutswap.method.clustering import (
    UNRANKED,
    cluster_maps,
    cluster_ranks,
    fuzzy_cmeans,
    kmeans,
    top_cluster_mask,
)

SIZE = 64
BIN_WIDTH = 1.0 / 1024


def blob_maps(n: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """Saliency-like maps: a few Gaussian blobs over a zero floor (like ReLU'd CAMs), min-max normalised."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    maps = np.zeros((n, size, size))
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.random(2)
            sigma = rng.uniform(0.05, 0.25)
            maps[i] += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        maps[i] = np.clip(maps[i] - rng.uniform(0.0, 0.2), 0, None)
        maps[i] = (maps[i] - maps[i].min()) / (maps[i].max() - maps[i].min())
    return torch.from_numpy(maps).to(torch.float16)


def bimodal_map(size: int = SIZE, seed: int = 1) -> torch.Tensor:
    """A square object at ~0.8 on a background at ~0.15, with noise: two clear modes."""
    rng = np.random.default_rng(seed)
    m = np.full((size, size), 0.15)
    m[size // 4 : size // 2, size // 3 : 3 * size // 4] = 0.8
    m = np.clip(m + rng.normal(0, 0.05, m.shape), 0, 1)
    return torch.from_numpy(m)[None].to(torch.float16)


@pytest.fixture(scope="module")
def maps() -> torch.Tensor:
    return torch.cat([blob_maps(5), bimodal_map()])


@pytest.fixture(scope="module")
def skfuzzy_centroids(maps: torch.Tensor) -> np.ndarray:
    out = []
    for m in maps:
        data = m.double().numpy().reshape(1, -1)  # skfuzzy wants (features, samples)
        cntr = skfuzzy.cluster.cmeans(data, c=3, m=2.0, error=1e-10, maxiter=3000, seed=0)[0]
        out.append(np.sort(cntr[:, 0]))
    return np.stack(out)


@pytest.fixture(scope="module")
def sklearn_kmeans(maps: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    centres, inertia = [], []
    for m in maps:
        km = KMeans(n_clusters=3, n_init=10, tol=0.0, random_state=0).fit(m.double().numpy().reshape(-1, 1))
        centres.append(np.sort(km.cluster_centers_[:, 0]))
        inertia.append(km.inertia_)
    return np.stack(centres), np.array(inertia)


def optimal_3means(values: np.ndarray) -> tuple[float, np.ndarray]:
    """Global optimum of 1-D 3-means by enumerating both boundaries over the sorted distinct values."""
    v, n = np.unique(values, return_counts=True)
    pw, ps, pq = (np.concatenate([[0.0], np.cumsum(a)]) for a in (n, n * v, n * v * v))

    def sse(i, j):
        w = pw[j] - pw[i]
        return np.where(w > 0, pq[j] - pq[i] - (ps[j] - ps[i]) ** 2 / np.maximum(w, 1), 0.0)

    last = len(v)
    best, split = np.inf, (0, 0)
    for a in range(last + 1):
        b = np.arange(a, last + 1)
        total = sse(0, a) + sse(a, b) + sse(b, last)
        j = int(total.argmin())
        if total[j] < best:
            best, split = float(total[j]), (a, int(b[j]))
    a, b = split
    means = [(ps[j] - ps[i]) / (pw[j] - pw[i]) for i, j in ((0, a), (a, b), (b, last))]
    return best, np.array(means)


@pytest.fixture(scope="module")
def optimal_kmeans(maps: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    results = [optimal_3means(m.double().numpy().ravel()) for m in maps]
    return np.stack([r[1] for r in results]), np.array([r[0] for r in results])


def inertia(m: torch.Tensor, centroids: torch.Tensor) -> np.ndarray:
    """k-means objective of each map: sum of squared distances to the nearest centroid."""
    x = m.double().reshape(len(m), -1, 1)
    return ((x - centroids[:, None, :]) ** 2).amin(dim=2).sum(dim=1).numpy()


def test_fcm_histogram_matches_skfuzzy(maps, skfuzzy_centroids):
    centroids, _ = cluster_maps(maps, tol=1e-9, max_iter=1000)
    assert centroids.shape == (len(maps), 3)
    assert torch.all(centroids[:, 1:] >= centroids[:, :-1])
    np.testing.assert_allclose(centroids.numpy(), skfuzzy_centroids, atol=1e-5, rtol=0)


def test_fcm_exact_matches_skfuzzy_tighter(maps, skfuzzy_centroids):
    centroids, _ = cluster_maps(maps, bins=None, tol=1e-12, max_iter=3000)
    np.testing.assert_allclose(centroids.numpy(), skfuzzy_centroids, atol=1e-7, rtol=0)


def test_fcm_default_tolerance_is_close(maps, skfuzzy_centroids):
    """The defaults the pipeline uses (tol=1e-5, max_iter=100) stay well within a bin width."""
    centroids, _ = cluster_maps(maps)
    np.testing.assert_allclose(centroids.numpy(), skfuzzy_centroids, atol=BIN_WIDTH / 2, rtol=0)


def test_kmeans_exact_reaches_global_optimum(maps, optimal_kmeans):
    centres, best = optimal_kmeans
    centroids, _ = cluster_maps(maps, method="kmeans", bins=None, tol=0.0, max_iter=1000)
    assert np.all(inertia(maps, centroids) <= best * (1 + 1e-6))
    np.testing.assert_allclose(centroids.numpy(), centres, atol=1e-4, rtol=0)


def test_kmeans_histogram_near_global_optimum(maps, optimal_kmeans):
    centres, best = optimal_kmeans
    centroids, _ = cluster_maps(maps, method="kmeans", tol=0.0, max_iter=1000)
    assert np.all(inertia(maps, centroids) <= best * (1 + 1e-4))
    np.testing.assert_allclose(centroids.numpy(), centres, atol=3 * BIN_WIDTH, rtol=0)


@pytest.mark.parametrize("bins", [1024, None])
def test_kmeans_matches_sklearn(maps, sklearn_kmeans, optimal_kmeans, bins):
    """Never worse than sklearn's best of 10 restarts; the same centroids wherever sklearn found the optimum.

    (On these maps sklearn misses the global optimum on some maps: Lloyd stalls in flat valleys.)
    """
    centres, theirs = sklearn_kmeans
    best = optimal_kmeans[1]
    centroids, _ = cluster_maps(maps, method="kmeans", bins=bins, tol=0.0, max_iter=1000)
    slack = 1e-4 if bins else 1e-6
    assert np.all(inertia(maps, centroids) <= theirs * (1 + slack))
    optimal = theirs <= best * (1 + 1e-9)
    assert optimal.sum() >= len(maps) // 2
    atol = 3 * BIN_WIDTH if bins else 1e-4
    np.testing.assert_allclose(centroids.numpy()[optimal], centres[optimal], atol=atol, rtol=0)


def test_bimodal_modes_found(maps):
    centroids, top = cluster_maps(maps[-1:], k=2)
    np.testing.assert_allclose(centroids[0].numpy(), [0.15, 0.8], atol=0.01)
    expected = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    expected[SIZE // 4 : SIZE // 2, SIZE // 3 : 3 * SIZE // 4] = True
    assert torch.equal(top[0], expected)


@pytest.mark.parametrize("method", ["fcm", "kmeans"])
def test_top_mask_is_nearest_to_highest_centroid(maps, method):
    centroids, top = cluster_maps(maps, method=method)
    x = maps.double()[..., None]
    dist = (x - centroids[:, None, None, :]).abs()
    nearest_top = dist[..., -1] < dist[..., :-1].amin(dim=-1)
    assert top.dtype == torch.bool and top.shape == maps.shape
    assert torch.equal(top, nearest_top)
    assert top.flatten(1).any(dim=1).all()


def test_top_mask_agrees_with_skfuzzy_hard_labels(maps):
    """skfuzzy's argmax membership picks the same pixels except within a hair of the decision boundary."""
    centroids, top = cluster_maps(maps)
    for i, m in enumerate(maps):
        data = m.double().numpy().reshape(1, -1)
        cntr, u = skfuzzy.cluster.cmeans(data, c=3, m=2.0, error=1e-10, maxiter=3000, seed=0)[:2]
        theirs = (u.argmax(axis=0) == cntr[:, 0].argmax()).reshape(m.shape)
        differ = theirs != top[i].numpy()
        threshold = 0.5 * float(centroids[i, 1] + centroids[i, 2])
        assert np.all(np.abs(data.reshape(m.shape)[differ] - threshold) < 1e-4)


def test_lower_level_weighted_equals_repeated_points():
    """Integer weights behave exactly like repeating the points; B problems are independent."""
    values = torch.tensor([[0.0, 0.1, 0.5, 0.9, 1.0], [0.2, 0.3, 0.35, 0.7, 0.75]], dtype=torch.float64)
    weights = torch.tensor([[3, 1, 2, 1, 4], [1, 2, 1, 1, 2]], dtype=torch.float64)
    rows = [torch.repeat_interleave(v, w.long()) for v, w in zip(values, weights, strict=True)]
    for fn in (fuzzy_cmeans, kmeans):
        weighted, iters = fn(values, weights, k=3, tol=1e-12, max_iter=500)
        assert iters.shape == (2,) and iters.dtype == torch.int64
        for i, row in enumerate(rows):
            alone, _ = fn(row[None], None, k=3, tol=1e-12, max_iter=500)
            torch.testing.assert_close(weighted[i], alone[0], atol=1e-10, rtol=0)


def test_batch_composition_does_not_change_results(maps):
    together, top_together = cluster_maps(maps)
    for i in range(len(maps)):
        alone, top_alone = cluster_maps(maps[i : i + 1])
        torch.testing.assert_close(alone[0], together[i], atol=1e-6, rtol=0)
        assert torch.equal(top_alone[0], top_together[i])


def test_numpy_input_and_input_untouched(maps):
    as_numpy = maps.numpy().astype(np.float32)
    before = as_numpy.copy()
    c_np, top_np = cluster_maps(as_numpy)
    c_t, top_t = cluster_maps(torch.from_numpy(as_numpy))
    assert isinstance(c_np, torch.Tensor) and isinstance(top_np, torch.Tensor)
    torch.testing.assert_close(c_np, c_t)
    assert torch.equal(top_np, top_t)
    np.testing.assert_array_equal(as_numpy, before)


@pytest.mark.parametrize("bins", [1024, None])
@pytest.mark.parametrize("method", ["fcm", "kmeans"])
def test_degenerate_maps(method, bins):
    m = torch.zeros(5, 16, 16)
    m[1] = 0.7  # constant, not zero
    m[2, :8] = 1.0  # binary: more clusters than distinct values
    m[3, 0, 0] = 1.0  # one hot pixel
    m[4] = torch.linspace(0, 1, 256).reshape(16, 16)  # a healthy control
    centroids, top = cluster_maps(m, method=method, bins=bins)
    assert torch.isfinite(centroids).all()
    assert torch.all(centroids[:, 1:] >= centroids[:, :-1])
    assert torch.all(centroids >= m.flatten(1).amin(1, keepdim=True) - 1e-6)
    assert torch.all(centroids <= m.flatten(1).amax(1, keepdim=True) + 1e-6)
    torch.testing.assert_close(centroids[0], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(centroids[1], torch.full((3,), 0.7, dtype=torch.float64))
    assert not top[0].any() and not top[1].any()  # flat maps have no salient region
    assert torch.equal(top[2], m[2] == 1.0)
    assert torch.equal(top[3], m[3] == 1.0)
    assert 0 < int(top[4].sum()) < 256


def test_top_cluster_mask_merged_top_centroids():
    maps = torch.tensor([[[0.0, 1.0], [1.0, 0.2]]])
    assert torch.equal(top_cluster_mask(maps, torch.tensor([[0.1, 1.0, 1.0]])), maps == 1.0)


def test_cluster_ranks_of_a_hand_made_map():
    """Centroids 1/8, 1/2, 7/8: boundaries at 11/16 and 5/16; a pixel on a boundary goes to the lower rank."""
    maps = torch.tensor([[[0.0, 0.1, 0.3125, 0.5], [0.55, 0.6875, 0.9, 1.0]]], dtype=torch.float64)
    ranks = cluster_ranks(maps, torch.tensor([[0.125, 0.5, 0.875]]))
    assert ranks.dtype == torch.uint8
    assert ranks.tolist() == [[[2, 2, 2, 1], [1, 1, 0, 0]]]


def test_cluster_ranks_with_merged_and_constant_centroids():
    maps = torch.tensor([[[0.0, 1.0], [1.0, 0.2]]] * 3)
    centroids = torch.tensor(
        [
            [0.1, 1.0, 1.0],  # merged on top (a binary map with K = 3): top, then one lower rank
            [0.0, 1e-9, 1.0],  # merged below: still only two ranks
            [0.4, 0.4, 0.4],  # constant map: no cluster structure at all
        ]
    )
    ranks = cluster_ranks(maps, centroids)
    assert ranks[0].tolist() == [[1, 0], [0, 1]] and ranks[1].tolist() == [[1, 0], [0, 1]]
    assert (ranks[2] == UNRANKED).all()
    assert torch.equal(ranks == 0, top_cluster_mask(maps, centroids))


@pytest.mark.parametrize("method", ["fcm", "kmeans"])
def test_cluster_ranks_are_nearest_centroid_from_the_top_and_rank_0_is_the_top_mask(
    maps, method, monkeypatch
):
    centroids, top = cluster_maps(maps, method=method)
    ranks = cluster_ranks(maps, centroids)
    assert torch.equal(ranks == 0, top)
    dist = (maps.double()[..., None] - centroids[:, None, None, :]).abs()
    nearest = (centroids.shape[1] - 1 - dist.argmin(dim=-1)).to(torch.uint8)  # centroids here are distinct
    assert torch.equal(ranks, nearest)
    monkeypatch.setattr(clustering, "_CHUNK_PIXELS", SIZE * SIZE * 2)  # chunks of 2 maps
    assert torch.equal(cluster_ranks(maps.numpy(), centroids.numpy()), ranks)


def test_cluster_ranks_bad_shapes():
    with pytest.raises(ValueError, match="centroids"):
        cluster_ranks(torch.zeros(2, 4, 4), torch.zeros(3, 3))


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"method": "dbscan"}, "method"),
        ({"k": 1}, "k"),
        ({"m": 1.0}, "m"),
        ({"bins": 1}, "bins"),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": -1.0}, "tol"),
    ],
)
def test_bad_settings(kwargs, setting):
    with pytest.raises(ValueError, match=setting):
        cluster_maps(torch.rand(2, 8, 8), **kwargs)


def test_bad_maps():
    bad = torch.rand(3, 8, 8)
    bad[2, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="map 2"):
        cluster_maps(bad)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        cluster_maps(torch.rand(8, 8))


def test_fcm_other_fuzzifier_is_stable():
    """m close to 1 would overflow d^(-2/(m-1)) without the per-point normalisation."""
    values = blob_maps(2).double().flatten(1)
    near_hard, _ = fuzzy_cmeans(values, k=3, m=1.05, max_iter=300, tol=1e-9)
    hard, _ = kmeans(values, k=3, max_iter=300, tol=0.0)
    assert torch.isfinite(near_hard).all()
    torch.testing.assert_close(near_hard, hard, atol=0.02, rtol=0)
