"""Pair banks: geometry of every draw, anchoring in the top cluster, determinism and shard invariance."""

from __future__ import annotations

import numpy as np
import pytest

from cutswap import pairs
from cutswap.errors import SettingsError
from cutswap.pairs import PairBank, random_pair_bank, sample_pair_bank

H = W = 64
DRAWS = 48
AREA = (0.02, 0.15)
ASPECT = (0.3, 3.3)


def blob_masks(n: int, size: int = H, seed: int = 0) -> np.ndarray:
    """Top-cluster-like masks: one or two discs of varying radius per map."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(1, 3)):
            cy, cx = rng.integers(0, size, 2)
            masks[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(3, size / 3) ** 2
    return masks


@pytest.fixture(scope="module")
def masks() -> np.ndarray:
    return blob_masks(24)


@pytest.fixture(scope="module")
def bank(masks) -> PairBank:
    return sample_pair_bank(masks, DRAWS, seed=7)


def assert_valid_geometry(bank: PairBank, height: int, width: int) -> None:
    b = bank.boxes
    assert b.dtype == np.int32 and b.ndim == 3 and b.shape[2] == 6
    h, w, y1, x1, y2, x2 = np.moveaxis(b.astype(np.int64), 2, 0)
    assert np.all((h >= 1) & (w >= 1) & (h <= height) & (w <= width))
    for y, x in ((y1, x1), (y2, x2)):
        assert np.all((y >= 0) & (x >= 0) & (y + h <= height) & (x + w <= width))
    assert np.all((np.abs(y1 - y2) >= h) | (np.abs(x1 - x2) >= w)), "patches overlap"


def centre_candidates(corner: int, size: int, limit: int) -> range:
    """Centres c for which clip(c - size // 2, 0, limit - size) == corner (the sampler's placement rule)."""
    if corner == 0:
        return range(0, size // 2 + 1)
    if corner == limit - size:
        return range(corner + size // 2, limit)
    return range(corner + size // 2, corner + size // 2 + 1)


def test_geometry(bank):
    assert bank.boxes.shape == (24, DRAWS, 6)
    assert bank.fallback.shape == (24, DRAWS) and bank.fallback.dtype == bool
    assert_valid_geometry(bank, H, W)


def test_saliency_draws_are_centred_in_the_top_cluster(masks, bank):
    assert bank.fallback_rate < 0.2
    for i, j in zip(*np.nonzero(~bank.fallback), strict=True):
        h, w, y1, x1, y2, x2 = bank.boxes[i, j].tolist()
        for y, x in ((y1, x1), (y2, x2)):
            ys, xs = centre_candidates(y, h, H), centre_candidates(x, w, W)
            region = masks[i][ys.start : ys.stop, xs.start : xs.stop]
            assert region.any(), f"map {i} draw {j}: no top-cluster pixel can be the centre of a patch"


def test_size_distribution(bank):
    h = bank.boxes[..., 0].astype(float)
    w = bank.boxes[..., 1].astype(float)
    # rint of sqrt(A r) and sqrt(A / r): the product is off by at most (h + w) / 2 + 1/4 pixels.
    slack = (h + w + 1) / 2
    assert np.all(h * w >= AREA[0] * H * W - slack)
    assert np.all(h * w <= AREA[1] * H * W + slack)
    # With a = sqrt(A / r) the unrounded width: h >= r a - 1/2 and a >= w - 1/2 (and the mirror image).
    assert np.all(h / w >= (ASPECT[0] * (w - 0.5) - 0.5) / w)
    assert np.all(h / w <= (ASPECT[1] * (w + 0.5) + 0.5) / w)
    # Spread, not a constant: uniform area, log-uniform aspect.
    area = h * w / (H * W)
    assert area.min() < 0.04 and area.max() > 0.12
    assert (h / w).min() < 0.5 and (h / w).max() > 2.0


def test_deterministic_and_seed_dependent(masks, bank):
    again = sample_pair_bank(masks, DRAWS, seed=7)
    np.testing.assert_array_equal(again.boxes, bank.boxes)
    np.testing.assert_array_equal(again.fallback, bank.fallback)
    other = sample_pair_bank(masks, DRAWS, seed=8)
    assert not np.array_equal(other.boxes, bank.boxes)


def test_chunk_invariance(masks, bank, monkeypatch):
    """Shards with index_offset, and the sampler's own internal chunking, give the same bank as one call."""
    parts = [
        sample_pair_bank(masks[a:b], DRAWS, seed=7, index_offset=a) for a, b in ((0, 5), (5, 17), (17, 24))
    ]
    np.testing.assert_array_equal(np.concatenate([p.boxes for p in parts]), bank.boxes)
    np.testing.assert_array_equal(np.concatenate([p.fallback for p in parts]), bank.fallback)
    monkeypatch.setattr(pairs, "_CHUNK_MAPS", 5)
    rechunked = sample_pair_bank(masks, DRAWS, seed=7)
    np.testing.assert_array_equal(rechunked.boxes, bank.boxes)


def test_empty_and_tiny_top_clusters_fall_back(masks):
    m = masks[:4].copy()
    m[0] = False  # empty
    m[1] = False
    m[1, 10, 10] = True  # one pixel
    m[2] = False
    m[2, 30, 30:32] = True  # two adjacent pixels: every pair gives overlapping patches
    b = sample_pair_bank(m, DRAWS, seed=3)
    assert b.fallback[:3].all()
    assert not b.fallback[3].all()
    assert_valid_geometry(b, H, W)
    assert sample_pair_bank(np.zeros((2, H, W), bool), 4).fallback.all()


def test_fallback_when_tries_run_out():
    """A top cluster of two far-apart pixels always works; max_tries only matters when pairs overlap."""
    m = np.zeros((1, H, W), dtype=bool)
    m[0, 2, 2] = m[0, 60, 60] = True
    b = sample_pair_bank(m, 16, area=(0.02, 0.05), seed=1)
    assert not b.fallback.any()
    starts = {tuple(sorted([(int(r[2]), int(r[3])), (int(r[4]), int(r[5]))])) for r in b.boxes[0]}
    assert all(s[0] == (0, 0) for s in starts)  # clamped at the top-left corner


def test_large_patches_are_shrunk_to_fit():
    b = sample_pair_bank(np.ones((3, 16, 16), bool), 32, area=(0.5, 0.6), aspect=(1.0, 1.0))
    assert_valid_geometry(b, 16, 16)
    h, w = b.boxes[..., 0], b.boxes[..., 1]
    assert np.all((2 * h <= 16) | (2 * w <= 16))


def test_tiny_images():
    b = sample_pair_bank(np.ones((2, 1, 2), bool), 8)
    assert_valid_geometry(b, 1, 2)
    r = random_pair_bank(2, 2, 1, 8)
    assert_valid_geometry(r, 2, 1)


def test_random_bank(bank):
    r = random_pair_bank(24, H, W, DRAWS, seed=7)
    assert r.boxes.shape == (24, DRAWS, 6) and not r.fallback.any()
    assert_valid_geometry(r, H, W)
    # Same seed: the same patch sizes draw for draw as the saliency bank (a paired control).
    np.testing.assert_array_equal(r.boxes[..., :2], bank.boxes[..., :2])
    np.testing.assert_array_equal(random_pair_bank(24, H, W, DRAWS, seed=7).boxes, r.boxes)
    shards = [random_pair_bank(n, H, W, DRAWS, seed=7, index_offset=a) for a, n in ((0, 10), (10, 14))]
    np.testing.assert_array_equal(np.concatenate([s.boxes for s in shards]), r.boxes)
    # Random corners cover the image, not only a band.
    corners = np.concatenate([r.boxes[..., 2:4].reshape(-1, 2), r.boxes[..., 4:6].reshape(-1, 2)])
    assert corners.min() == 0 and corners[:, 0].max() > H // 2 and corners[:, 1].max() > W // 2


def test_random_locations_are_uniform():
    """All non-overlapping placements of two 2x2 patches in a 4x5 image come up equally often."""
    height, width, size = 4, 5, 2
    n = 60_000
    u = np.random.default_rng(0).random((n, pairs._ROUNDS, 7))
    hh = np.full(n, size)
    y1, x1, y2, x2 = pairs._random_locations(u, hh, hh, height, width)
    ny, nx = height - size + 1, width - size + 1
    valid = [
        (a, b, c, d)
        for a in range(ny)
        for b in range(nx)
        for c in range(ny)
        for d in range(nx)
        if abs(a - c) >= size or abs(b - d) >= size
    ]
    codes = ((y1 * nx + x1) * ny + y2) * nx + x2
    counts = np.bincount(codes, minlength=(ny * nx) ** 2)
    expected = n / len(valid)
    valid_codes = [((a * nx + b) * ny + c) * nx + d for a, b, c, d in valid]
    assert counts.sum() == counts[valid_codes].sum(), "an overlapping placement was produced"
    assert np.all(np.abs(counts[valid_codes] - expected) < 5 * np.sqrt(expected))


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"draws": 0}, "draws"),
        ({"area": (0.2, 0.1)}, "area"),
        ({"area": (0.0, 0.1)}, "area"),
        ({"aspect": (0.0, 2.0)}, "aspect"),
        ({"max_tries": 0}, "max_tries"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_settings(kwargs, setting):
    args = {"draws": 4, **kwargs}
    with pytest.raises(SettingsError, match=setting):
        sample_pair_bank(np.ones((1, 8, 8), bool), **args)
