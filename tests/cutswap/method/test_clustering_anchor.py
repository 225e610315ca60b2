"""The anchor rules of ``cluster.anchor`` beside ``top``: ``threshold`` and ``random``, on hand-computed maps.

Hand case for both: one 2 x 3 map with values ``[[0, .125, .375], [.625, .75, 1]]`` (exact in float32, so
that ``>=`` at a threshold equal to a value is tested as written) and centroids ``(.125, .5, .875)``:
boundaries at .3125 and .6875, so the cluster ranks from the top are ``[[2, 2, 1], [1, 0, 0]]``. With
threshold .5 (and .25 for rank 1) the threshold ranks are ``[[2, 2, 1], [0, 0, 0]]``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cutswap.method.clustering import (
    UNRANKED,
    cluster_maps,
    cluster_ranks,
    distinct_clusters,
    random_cluster_choice,
    random_cluster_mask,
    random_cluster_ranks,
    threshold_mask,
    threshold_ranks,
)
from cutswap.method.pairs import STEP_RANDOM, sample_pair_bank

HAND_MAP = [[0.0, 0.125, 0.375], [0.625, 0.75, 1.0]]
HAND_CENTROIDS = [0.125, 0.5, 0.875]


@pytest.fixture
def hand_map() -> torch.Tensor:
    return torch.tensor([HAND_MAP], dtype=torch.float32)


@pytest.fixture
def hand_ranks(hand_map: torch.Tensor) -> torch.Tensor:
    ranks = cluster_ranks(hand_map, torch.tensor([HAND_CENTROIDS], dtype=torch.float64))
    assert ranks.tolist() == [[[2, 2, 1], [1, 0, 0]]]  # the hand case's premise
    return ranks


@pytest.fixture
def constant_maps() -> torch.Tensor:
    """An all-zero map (what normalisation makes of any constant map) and a constant non-zero one."""
    return torch.stack([torch.zeros(4, 5), torch.full((4, 5), 0.7)])


@pytest.fixture
def blobs() -> torch.Tensor:
    """(40, 24, 24) float32 maps in [0, 1]: a Gaussian blob of random width and place plus noise."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:24, 0:24].astype(float)
    out = []
    for _ in range(40):
        cy, cx, sigma = rng.uniform(4, 20), rng.uniform(4, 20), rng.uniform(2, 6)
        m = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)) + rng.uniform(0, 0.2, (24, 24))
        out.append((m - m.min()) / (m.max() - m.min()))
    return torch.from_numpy(np.stack(out)).float()


# threshold


def test_threshold_mask_and_ranks_by_hand(hand_map: torch.Tensor) -> None:
    assert threshold_mask(hand_map, 0.5).tolist() == [[[False, False, False], [True, True, True]]]
    ranks = threshold_ranks(hand_map, 0.5)
    assert ranks.dtype == torch.uint8
    assert ranks.tolist() == [[[2, 2, 1], [0, 0, 0]]]
    # >= is inclusive: .375 joins the anchor at .375, and .125 joins rank 1 at .25 (whose half is .125)
    assert threshold_mask(hand_map, 0.375).tolist() == [[[False, False, True], [True, True, True]]]
    assert threshold_ranks(hand_map, 0.25).tolist() == [[[2, 1, 0], [0, 0, 0]]]


def test_threshold_reads_normalised_values(hand_map: torch.Tensor) -> None:
    # a positive affine change of a map leaves its normalised values, hence the rule, as they were
    shifted = 2.0 * hand_map.double() + 1.0
    assert torch.equal(threshold_mask(shifted, 0.5), threshold_mask(hand_map, 0.5))
    assert torch.equal(threshold_ranks(shifted.numpy(), 0.5), threshold_ranks(hand_map, 0.5))


def test_threshold_on_constant_maps_is_empty_and_unranked_as_top(constant_maps: torch.Tensor) -> None:
    assert not threshold_mask(constant_maps, 0.5).any()
    assert (threshold_ranks(constant_maps, 0.5) == UNRANKED).all()
    # what the top-cluster rule gives the same maps
    centroids, top = cluster_maps(constant_maps)
    assert not top.any() and (cluster_ranks(constant_maps, centroids) == UNRANKED).all()


def test_threshold_constant_map_falls_back_to_random_pairs(constant_maps: torch.Tensor) -> None:
    masks = threshold_mask(constant_maps, 0.5).numpy()
    ranks = threshold_ranks(constant_maps, 0.5).numpy()
    bank = sample_pair_bank(masks, 8, ranks=ranks)
    assert (bank.step == STEP_RANDOM).all()


def test_threshold_rank_zero_is_the_mask(blobs: torch.Tensor) -> None:
    for threshold in (0.3, 0.5, 0.8):
        mask, ranks = threshold_mask(blobs, threshold), threshold_ranks(blobs, threshold)
        assert torch.equal(ranks == 0, mask)
        assert mask.flatten(1).any(1).all()  # every normalised map reaches 1 >= threshold
        values = blobs[ranks == 1]
        assert ((values >= threshold / 2) & (values < threshold)).all()
        assert (blobs[ranks == 2] < threshold / 2).all()


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, 1.5, True, "0.5"])
def test_threshold_out_of_range_is_refused(hand_map: torch.Tensor, threshold: object) -> None:
    with pytest.raises(ValueError, match="threshold"):
        threshold_mask(hand_map, threshold)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        threshold_ranks(hand_map, threshold)  # type: ignore[arg-type]


def test_threshold_refuses_non_finite_maps(hand_map: torch.Tensor) -> None:
    bad = hand_map.clone()
    bad[0, 0, 0] = torch.nan
    with pytest.raises(ValueError, match="NaN"):
        threshold_mask(bad, 0.5)


# random


def test_random_mask_and_ranks_by_hand(hand_ranks: torch.Tensor) -> None:
    one, two = torch.tensor([1]), torch.tensor([2])
    assert random_cluster_mask(hand_ranks, one).tolist() == [[[False, False, True], [True, False, False]]]
    assert random_cluster_ranks(hand_ranks, one).tolist() == [[[1, 1, 0], [0, 1, 1]]]
    assert random_cluster_mask(hand_ranks, two).tolist() == [[[True, True, False], [False, False, False]]]
    assert random_cluster_ranks(hand_ranks, two).tolist() == [[[0, 0, 1], [1, 2, 2]]]
    assert random_cluster_ranks(hand_ranks, two).dtype == torch.uint8
    # choosing the top cluster is the top rule
    zero = torch.tensor([0])
    assert torch.equal(random_cluster_ranks(hand_ranks, zero), hand_ranks)
    assert torch.equal(random_cluster_mask(hand_ranks, zero), hand_ranks == 0)


def test_distinct_clusters_count_merged_centroids_once() -> None:
    centroids = torch.tensor([[0.1, 0.5, 0.9], [0.0, 1.0, 1.0], [0.3, 0.3, 0.3]], dtype=torch.float64)
    assert distinct_clusters(centroids).tolist() == [3, 2, 1]


def test_random_on_constant_maps_is_empty_and_unranked(constant_maps: torch.Tensor) -> None:
    centroids, _ = cluster_maps(constant_maps)
    ranks = cluster_ranks(constant_maps, centroids)
    chosen = random_cluster_choice(centroids, seed=0)
    assert chosen.tolist() == [0, 0]
    assert not random_cluster_mask(ranks, chosen).any()
    assert (random_cluster_ranks(ranks, chosen) == UNRANKED).all()


@pytest.fixture
def three_clusters() -> torch.Tensor:
    """(300, 3) centroids of 300 maps with three distinct clusters each, and two merged ones in map 7."""
    c = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64).repeat(300, 1)
    c[7] = torch.tensor([0.0, 1.0, 1.0])
    return c


def test_random_choice_is_one_of_the_distinct_clusters_uniformly(three_clusters: torch.Tensor) -> None:
    chosen = random_cluster_choice(three_clusters, seed=0)
    assert chosen.shape == (300,) and chosen.dtype == torch.int64
    assert int(chosen[7]) in (0, 1)  # two distinct clusters there
    counts = np.bincount(chosen.numpy(), minlength=4)
    assert counts[3] == 0
    assert (counts[:3] > 70).all()  # 100 expected each; a 70 would be 3.4 standard deviations low


def test_random_choice_depends_on_seed_and_index_only(three_clusters: torch.Tensor) -> None:
    once = random_cluster_choice(three_clusters, seed=5)
    assert torch.equal(random_cluster_choice(three_clusters, seed=5), once)  # deterministic
    assert not torch.equal(random_cluster_choice(three_clusters, seed=6), once)  # varies with the seed
    assert len(set(once.tolist())) == 3  # and with the index
    # shards: map i of a shard starting at s is map s + i of the whole stack
    shards = [random_cluster_choice(three_clusters[s : s + 70], seed=5, index_offset=s) for s in (0, 70, 140)]
    shards.append(random_cluster_choice(three_clusters[210:], seed=5, index_offset=210))
    assert torch.equal(torch.cat(shards), once)
    # a shard read as if it started at 0 would choose otherwise
    assert not torch.equal(random_cluster_choice(three_clusters[70:140], seed=5), once[70:140])


def test_random_rule_on_clustered_maps(blobs: torch.Tensor) -> None:
    centroids, top = cluster_maps(blobs)
    ranks = cluster_ranks(blobs, centroids)
    chosen = random_cluster_choice(centroids, seed=1)
    mask, near = random_cluster_mask(ranks, chosen), random_cluster_ranks(ranks, chosen)
    assert torch.equal(near == 0, mask)
    for i in range(len(blobs)):
        assert torch.equal(mask[i], ranks[i] == chosen[i])
        if chosen[i] == 0:
            assert torch.equal(mask[i], top[i])
    assert (chosen > 0).any() and (chosen == 0).any()


@pytest.mark.parametrize("kwargs", [{"seed": -1}, {"index_offset": -3}, {"seed": 1.5}, {"seed": True}])
def test_random_choice_refuses_bad_seeds(three_clusters: torch.Tensor, kwargs: dict) -> None:
    with pytest.raises(ValueError, match="integer >= 0"):
        random_cluster_choice(three_clusters, **kwargs)


def test_random_mask_checks_shapes(hand_ranks: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="chosen"):
        random_cluster_mask(hand_ranks, torch.tensor([0, 1]))
