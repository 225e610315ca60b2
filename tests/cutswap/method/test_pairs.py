"""Pair banks: geometry of every draw, anchoring in the top cluster, the ladder of steps (each reached on
masks where it must be, checked against brute force), determinism, shard invariance, the random control."""

from __future__ import annotations

import numpy as np
import pytest

from cutswap.method import pairs
from cutswap.method.clustering import UNRANKED, cluster_maps, cluster_ranks
from cutswap.method.pairs import (
    STEP_NEXT_CLUSTER,
    STEP_RANDOM,
    STEP_SMALLER,
    STEP_TOP,
    STEP_TOP_EXTRA,
    STEPS,
    PairBank,
    random_pair_bank,
    sample_pair_bank,
)

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


def ring_ranks(masks: np.ndarray, width: int = 6) -> np.ndarray:
    """Hand-made cluster ranks: 0 on the mask, 1 on a ring ``width`` px around it, 2 elsewhere."""
    from scipy.ndimage import binary_dilation

    ring = np.stack([binary_dilation(m, iterations=width) for m in masks]) & ~masks
    return np.where(masks, 0, np.where(ring, 1, 2)).astype(np.uint8)


def centred_object_maps(n: int, size: int = H, seed: int = 0) -> np.ndarray:
    """Saliency of small centred objects: a sharp central blob (sigma 2.5-7 px), a faint halo, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    out = np.zeros((n, size, size))
    for i in range(n):
        cy, cx = size / 2 + rng.uniform(-3, 3, 2)
        sigma = rng.uniform(2.5, 7.0)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        m = np.exp(-d2 / (2 * sigma**2)) + 0.35 * np.exp(-d2 / (2 * (3 * sigma) ** 2))
        m = m + rng.uniform(0, 0.05, m.shape)
        out[i] = (m - m.min()) / (m.max() - m.min())
    return out.astype(np.float16)


def centred_object_masks(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top-cluster masks and cluster ranks of ``centred_object_maps``, clustered as the cluster stage does."""
    maps = centred_object_maps(n, seed=seed)
    centroids, top = cluster_maps(maps)
    return top.numpy(), cluster_ranks(maps, centroids).numpy()


def drawn_and_smaller(seed: int, index: int, draws: int, tries: int, area, aspect, height, width):
    """The sampler's drawn and smaller patch sizes of one map, recomputed from its generator."""
    u = pairs._draw_uniforms(seed, index, draws, tries)
    frac, ratio = pairs._size_parameters(u.sizes, area, aspect)
    h, w = pairs._patch_sizes(frac, ratio, height, width)
    hs, ws = pairs._patch_sizes(pairs._smaller_fraction(frac, u.shrink, area), ratio, height, width)
    return h, w, hs, ws


def hosts(pixels: np.ndarray, h: int, w: int, height: int, width: int) -> bool:
    """Brute force: does some pair of these (y, x) centres give two non-overlapping clamped patches?"""
    y = np.clip(pixels[:, 0] - h // 2, 0, height - h)
    x = np.clip(pixels[:, 1] - w // 2, 0, width - w)
    apart = (np.abs(y[:, None] - y[None]) >= h) | (np.abs(x[:, None] - x[None]) >= w)
    return bool(apart.any())


def centred_in(mask: np.ndarray, corner_y: int, corner_x: int, h: int, w: int) -> bool:
    ys, xs = centre_candidates(corner_y, h, mask.shape[0]), centre_candidates(corner_x, w, mask.shape[1])
    return bool(mask[ys.start : ys.stop, xs.start : xs.stop].any())


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
    assert bank.step.shape == (24, DRAWS) and bank.step.dtype == np.uint8
    np.testing.assert_array_equal(bank.fallback, bank.step == STEP_RANDOM)
    assert sum(bank.step_rates.values()) == pytest.approx(1.0) and list(bank.step_rates) == list(STEPS)
    assert_valid_geometry(bank, H, W)


def test_saliency_draws_are_centred_in_the_top_cluster(masks, bank):
    assert bank.fallback_rate < 0.1
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
    np.testing.assert_array_equal(rechunked.step, bank.step)


def test_chunk_invariance_with_ranks(masks, monkeypatch):
    ranks = ring_ranks(masks)
    whole = sample_pair_bank(masks, DRAWS, seed=7, ranks=ranks)
    assert (whole.step == STEP_NEXT_CLUSTER).any()
    parts = [
        sample_pair_bank(masks[a:b], DRAWS, seed=7, index_offset=a, ranks=ranks[a:b])
        for a, b in ((0, 7), (7, 24))
    ]
    monkeypatch.setattr(pairs, "_CHUNK_MAPS", 3)
    parts.append(sample_pair_bank(masks, DRAWS, seed=7, ranks=ranks))
    sharded = PairBank(
        np.concatenate([p.boxes for p in parts[:2]]), np.concatenate([p.step for p in parts[:2]])
    )
    for got in (sharded, parts[2]):
        np.testing.assert_array_equal(got.boxes, whole.boxes)
        np.testing.assert_array_equal(got.step, whole.step)


def test_empty_and_tiny_top_clusters_fall_back(masks):
    m = masks[:4].copy()
    m[0] = False  # empty
    m[1] = False
    m[1, 10, 10] = True  # one pixel
    m[2] = False
    m[2, 30, 30:32] = True  # two adjacent pixels: every pair gives overlapping patches
    b = sample_pair_bank(m, DRAWS, seed=3)  # no ranks: there is no next cluster to fall back on
    assert b.fallback[:3].all() and (b.step[:3] == STEP_RANDOM).all()
    assert not b.fallback[3].all()
    assert_valid_geometry(b, H, W)
    assert sample_pair_bank(np.zeros((2, H, W), bool), 4).fallback.all()


def test_fallback_when_tries_run_out():
    """A top cluster of two far-apart pixels always works; max_tries only matters when pairs overlap."""
    m = np.zeros((1, H, W), dtype=bool)
    m[0, 2, 2] = m[0, 60, 60] = True
    b = sample_pair_bank(m, 16, area=(0.02, 0.05), seed=1)
    assert not b.fallback.any() and set(b.step.ravel()) <= {STEP_TOP, STEP_TOP_EXTRA}
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
    r = random_pair_bank(np.ones((2, 8, 2), np.int32), 2, 1)
    assert_valid_geometry(r, 2, 1)


def test_random_bank(bank):
    r = random_pair_bank(bank.boxes[..., :2], H, W, seed=7)
    assert r.boxes.shape == (24, DRAWS, 6) and (r.step == STEP_RANDOM).all()
    assert_valid_geometry(r, H, W)
    np.testing.assert_array_equal(r.boxes[..., :2], bank.boxes[..., :2])
    np.testing.assert_array_equal(random_pair_bank(bank.boxes[..., :2], H, W, seed=7).boxes, r.boxes)
    shards = [
        random_pair_bank(bank.boxes[a:b, :, :2], H, W, seed=7, index_offset=a) for a, b in ((0, 10), (10, 24))
    ]
    np.testing.assert_array_equal(np.concatenate([s.boxes for s in shards]), r.boxes)
    # A CutSwap draw at the random step is the control's draw: same generator, same location numbers.
    np.testing.assert_array_equal(r.boxes[bank.fallback], bank.boxes[bank.fallback])
    # Random corners cover the image, not only a band.
    corners = np.concatenate([r.boxes[..., 2:4].reshape(-1, 2), r.boxes[..., 4:6].reshape(-1, 2)])
    assert corners.min() == 0 and corners[:, 0].max() > H // 2 and corners[:, 1].max() > W // 2


def test_random_bank_copies_sizes_shrunk_by_the_ladder_draw_for_draw():
    top, ranks = centred_object_masks(8)
    bank = sample_pair_bank(top, DRAWS, seed=3, ranks=ranks)
    assert (bank.step == STEP_SMALLER).any()  # sizes that a seed alone would not give
    r = random_pair_bank(bank.boxes[..., :2], H, W, seed=3)
    np.testing.assert_array_equal(r.boxes[..., :2], bank.boxes[..., :2])
    assert_valid_geometry(r, H, W)


def test_random_bank_rejects_sizes_that_do_not_fit():
    with pytest.raises(ValueError, match="cannot hold two patches"):
        random_pair_bank(np.array([[[40, 40]]]), H, W)
    with pytest.raises(ValueError, match="sizes must be"):
        random_pair_bank(np.ones((2, 3), np.int32), H, W)


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
    with pytest.raises(ValueError, match=setting):
        sample_pair_bank(np.ones((1, 8, 8), bool), **args)


# -- the ladder -------------------------------------------------------------------------------------------


def two_pixels(*points: tuple[int, int], size: int = H) -> np.ndarray:
    m = np.zeros((1, size, size), dtype=bool)
    for y, x in points:
        m[0, y, x] = True
    return m


def test_steps_top_smaller_next_cluster_and_random_on_two_close_pixels():
    """Two top pixels 12 px apart in a row host square patches of side <= 12 only (the rows coincide): by
    hand, a draw is ``top`` when its drawn side is <= 12, else ``smaller`` when its smaller side is, else
    the next cluster (two pixels near the edges of that row) at the drawn size, or ``random`` without it."""
    top = two_pixels((32, 26), (32, 38))
    ranks = np.full(top.shape, 2, np.uint8)
    ranks[top] = 0
    ranks[0, 32, 2] = ranks[0, 32, 61] = 1
    d, area, aspect = 64, (0.02, 0.15), (1.0, 1.0)
    h, w, hs, ws = drawn_and_smaller(5, 0, d, 20, area, aspect, H, W)
    assert np.array_equal(h, w) and np.array_equal(hs, ws)
    expected = np.where(h <= 12, STEP_TOP, np.where(hs <= 12, STEP_SMALLER, STEP_NEXT_CLUSTER))
    assert {STEP_TOP, STEP_SMALLER, STEP_NEXT_CLUSTER} <= set(expected)
    bank = sample_pair_bank(top, d, area, aspect, seed=5, ranks=ranks)
    np.testing.assert_array_equal(bank.step[0], expected)
    side = np.where(expected == STEP_SMALLER, hs, h)
    np.testing.assert_array_equal(bank.boxes[0, :, 0], side)
    np.testing.assert_array_equal(bank.boxes[0, :, 1], side)
    assert_valid_geometry(bank, H, W)
    without = sample_pair_bank(top, d, area, aspect, seed=5)
    np.testing.assert_array_equal(
        without.step[0], np.where(expected == STEP_NEXT_CLUSTER, STEP_RANDOM, expected)
    )
    # Where both reached a guided step they made the same draw: the ladder's numbers are per rung.
    same = expected != STEP_NEXT_CLUSTER
    np.testing.assert_array_equal(without.boxes[0, same], bank.boxes[0, same])


def test_top_extra_finds_the_one_far_pixel_that_random_tries_miss():
    """A disc of ~80 pixels (too small to host two patches of side >= 14) and one far pixel: only pairs
    with the far pixel are valid, 2 random tries rarely draw it, the exhaustive step always does."""
    yy, xx = np.mgrid[0:H, 0:W]
    top = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 25)[None]
    top[0, 60, 60] = True
    bank = sample_pair_bank(top, 64, area=(0.05, 0.15), aspect=(1.0, 1.0), max_tries=2, seed=0)
    assert set(bank.step.ravel()) <= {STEP_TOP, STEP_TOP_EXTRA}
    assert (bank.step == STEP_TOP_EXTRA).mean() > 0.8
    far = np.zeros_like(top[0])
    far[60, 60] = True
    for h, w, y1, x1, y2, x2 in bank.boxes[0].tolist():
        assert centred_in(far, y1, x1, h, w) or centred_in(far, y2, x2, h, w)
        assert centred_in(top[0], y1, x1, h, w) and centred_in(top[0], y2, x2, h, w)


def test_next_cluster_helps_a_one_pixel_top_cluster_and_empty_maps_go_random():
    top = np.concatenate([two_pixels((2, 2)), np.zeros((2, H, W), bool)])
    ranks = np.full(top.shape, 2, np.uint8)
    ranks[0, 2, 2], ranks[0, 61, 61] = 0, 1  # one top pixel, the next cluster in the far corner
    ranks[1] = UNRANKED  # a constant map: no cluster at all
    bank = sample_pair_bank(top, 32, seed=2, ranks=ranks)  # map 2: nothing above rank 2
    assert (bank.step[0] == STEP_NEXT_CLUSTER).all() and (bank.step[1:] == STEP_RANDOM).all()
    h, w, _, _ = drawn_and_smaller(2, 0, 32, 20, AREA, ASPECT, H, W)
    np.testing.assert_array_equal(bank.boxes[0, :, 0], h)  # at the drawn size
    np.testing.assert_array_equal(bank.boxes[0, :, 1], w)
    assert bank.fallback_rate == pytest.approx(2 / 3)
    assert_valid_geometry(bank, H, W)


def test_every_draw_is_made_at_the_first_step_that_can_make_it():
    """Brute force on small sparse maps: a draw lands at a later step only if no pair of anchors of the
    earlier steps can host its patches, its size is the one of its step, and its centres are anchors of it."""
    size, n, d, tries = 16, 40, 16, 3
    rng = np.random.default_rng(4)
    top = rng.random((n, size, size)) < rng.uniform(0.0, 0.03, (n, 1, 1))
    ranks = np.where(top, 0, np.where(rng.random(top.shape) < 0.02, 1, 2)).astype(np.uint8)
    bank = sample_pair_bank(top, d, max_tries=tries, seed=9, ranks=ranks)
    assert_valid_geometry(bank, size, size)
    assert set(bank.step.ravel()) == set(range(len(STEPS))), "every step occurs"
    near = top | (ranks <= 1)
    for i in range(n):
        h, w, hs, ws = drawn_and_smaller(9, i, d, tries, AREA, ASPECT, size, size)
        pts_top, pts_near = np.argwhere(top[i]), np.argwhere(near[i])
        for j in range(d):
            step = bank.step[i, j]
            bh, bw, y1, x1, y2, x2 = bank.boxes[i, j].tolist()
            assert (step >= STEP_SMALLER) != hosts(pts_top, h[j], w[j], size, size)
            if step >= STEP_NEXT_CLUSTER:
                assert not hosts(pts_top, hs[j], ws[j], size, size)
            if step == STEP_RANDOM:
                assert not hosts(pts_near, h[j], w[j], size, size)
                assert not hosts(pts_near, hs[j], ws[j], size, size)
            smaller = step == STEP_SMALLER or (
                step == STEP_NEXT_CLUSTER and not hosts(pts_near, h[j], w[j], size, size)
            )
            assert (bh, bw) == ((hs[j], ws[j]) if smaller else (h[j], w[j]))
            if step != STEP_RANDOM:
                anchors = top[i] if step <= STEP_SMALLER else near[i]
                assert centred_in(anchors, y1, x1, bh, bw) and centred_in(anchors, y2, x2, bh, bw)


def test_small_centred_objects_rarely_fall_back():
    """Maps of small centred objects: most top clusters are too small for two patches of the drawn size.
    The single-step sampler (today's rung 0, whose draws are unchanged) falls back on a large share; the
    ladder keeps the guidance on all but a few percent."""
    top, ranks = centred_object_masks(48)
    bank = sample_pair_bank(top, DRAWS, seed=0, ranks=ranks)
    single_step_fallback = (bank.step != STEP_TOP).mean()
    assert single_step_fallback > 0.3
    assert bank.fallback_rate <= 0.05
    assert_valid_geometry(bank, H, W)


def test_bad_ranks_shape():
    with pytest.raises(ValueError, match="ranks"):
        sample_pair_bank(np.ones((1, 8, 8), bool), 4, ranks=np.zeros((1, 8, 9), np.uint8))
