"""The cluster and pairs stages: the rank array beside ``top``, the step array and the per-level step rates,
and a bank that does not depend on the shard size."""

from __future__ import annotations

import numpy as np
import pytest

from cutswap.method.clustering import cluster_maps, cluster_ranks
from cutswap.method.pairs import STEPS, sample_pair_bank
from cutswap.pipeline import parallel
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stages.cluster import cluster_category
from cutswap.pipeline.stages.pairs import pairs_category
from cutswap.pipeline.stores import build_store, open_store, write_array

LEVELS = ["layer1", "layer4"]


def _maps(n: int, size: int = 32) -> np.ndarray:
    """(n, 2, size, size) float16 saliency: a centred blob of varying width per level, plus noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(float) - size / 2
    out = np.empty((n, len(LEVELS), size, size))
    for i in range(n):
        for level in range(len(LEVELS)):
            sigma = rng.uniform(1.5, 6.0)
            m = np.exp(-(yy**2 + xx**2) / (2 * sigma**2)) + rng.uniform(0, 0.1, (size, size))
            out[i, level] = (m - m.min()) / (m.max() - m.min())
    out[0, 1] = 0.0  # a constant map: no cluster may anchor its pairs
    return out.astype(np.float16)


@pytest.fixture
def stores(tmp_path):
    maps = _maps(10)
    saliency, _ = build_store(
        tmp_path, "saliency", "blobs", {"n": 10}, {}, lambda g: write_array(g, "maps", maps),
        extra_attrs={"levels": LEVELS},
    )  # fmt: skip
    settings = Settings(storage_root=tmp_path)
    cluster, _ = cluster_category(settings, saliency)
    pairs, _ = pairs_category(settings, cluster)
    return maps, settings, cluster, pairs


def test_cluster_store_holds_ranks_consistent_with_top(stores):
    maps, settings, cluster, _ = stores
    group = open_store(cluster)
    rank, top = group["rank"][:], group["top"][:]
    assert rank.dtype == np.uint8 and rank.shape == top.shape == maps.shape
    np.testing.assert_array_equal(rank == 0, top)
    flat = maps.reshape(-1, *maps.shape[2:])
    centroids, _ = cluster_maps(flat, settings.cluster.method, settings.cluster.k)
    np.testing.assert_array_equal(cluster_ranks(flat, centroids).numpy().reshape(maps.shape), rank)
    assert (rank[0, 1] == 255).all()


def test_pairs_store_holds_steps_and_per_level_rates(stores):
    maps, settings, cluster, pairs = stores
    group = open_store(pairs)
    step, boxes = group["step"][:], group["boxes"][:]
    n, levels, d = step.shape
    np.testing.assert_array_equal(group["fallback"][:], step == STEPS.index("random"))
    rates = group.attrs["step_rates"]
    assert list(rates) == LEVELS
    for level, name in enumerate(LEVELS):
        counts = np.bincount(step[:, level].ravel(), minlength=len(STEPS))
        assert rates[name] == pytest.approx({s: c / (n * d) for s, c in zip(STEPS, counts, strict=True)})
    assert group.attrs["fallback_rate"] == pytest.approx((step == STEPS.index("random")).mean())
    assert (step[0, 1] == STEPS.index("random")).all()  # the constant map
    assert group.attrs["fallback_rate"] < 0.1  # only that one map of 20, give or take
    # The stage's bank is the library's on the stored masks and ranks, whatever the shard size.
    c = open_store(cluster)
    cfg = settings.pairs
    bank = sample_pair_bank(
        c["top"][:].reshape(n * levels, *maps.shape[2:]), cfg.draws, cfg.area, cfg.aspect, cfg.max_tries,
        cfg.seed, ranks=c["rank"][:].reshape(n * levels, *maps.shape[2:]),
    )  # fmt: skip
    np.testing.assert_array_equal(bank.boxes.reshape(boxes.shape), boxes)
    np.testing.assert_array_equal(bank.step.reshape(step.shape), step)


def test_pairs_do_not_depend_on_the_shard_size(stores, monkeypatch):
    _, settings, cluster, pairs = stores
    before = {name: open_store(pairs)[name][:] for name in ("boxes", "step")}
    monkeypatch.setattr(parallel, "SHARD", 3)
    again, computed = pairs_category(settings, cluster, mode="force")  # 4 shards instead of 1
    assert computed and open_store(again)["step"].shards[0] == 3
    for name, array in before.items():
        np.testing.assert_array_equal(open_store(again)[name][:], array)


def test_the_library_bank_equals_the_pipeline_bank(stores):
    """``cutswap.build_pair_bank`` on the same maps gives the pairs stage's draws, level by level."""
    from cutswap import build_pair_bank

    maps, settings, _, pairs = stores
    c, p = settings.cluster, settings.pairs
    banks = build_pair_bank(
        maps, p.draws, p.area, p.aspect, method=c.method, k=c.k, m=c.m, bins=c.bins,
        max_iter=c.max_iter, tol=c.tol, max_tries=p.max_tries, seed=p.seed,
    )  # fmt: skip
    group = open_store(pairs)
    assert len(banks) == len(LEVELS)
    for level, bank in enumerate(banks):
        np.testing.assert_array_equal(bank.boxes, group["boxes"][:, level])
        np.testing.assert_array_equal(bank.step, group["step"][:, level])
    single = build_pair_bank(maps[:, 0], p.draws, seed=p.seed)
    assert single.boxes.shape == (len(maps), p.draws, 6)
