"""PatchCore against independent references: a brute-force numpy greedy coreset, scikit-learn's
``NearestNeighbors``, hooks on the trunk for the staged forward, and a hand-computed neighbourhood mean.

anomalib's PatchCore is not a reference here: it does not install beside this project's pinned torch
(lightning and its own torch pins), so the parts it would check are checked one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.neighbors import NearestNeighbors

from cutswap.learn.models import build_model
from cutswap.score.patchcore import (
    LAYERS,
    PatchCore,
    aggregate,
    greedy_coreset,
    nearest_distances,
    patch_features,
    random_projection,
)


def _numpy_greedy(features: np.ndarray, k: int, start: int, projection: np.ndarray) -> list[int]:
    """k-center greedy written out: the full distance of every point to every chosen one, each round."""
    z = features @ projection
    chosen = [start]
    for _ in range(k - 1):
        d = np.sqrt(((z[:, None, :] - z[None, chosen, :]) ** 2).sum(-1)).min(axis=1)
        chosen.append(int(np.argmax(d)))
    return chosen


@pytest.mark.parametrize(("m", "dim", "fraction"), [(300, 40, 0.1), (500, 200, 0.05), (3000, 160, 0.05)])
def test_greedy_coreset_equals_the_brute_force_numpy_greedy(m, dim, fraction):
    """The last case takes 150 steps, several of the selection's blocks of farthest patches."""
    rng = np.random.default_rng(1)
    features = rng.normal(size=(m, dim)).astype(np.float32)
    got = greedy_coreset(torch.from_numpy(features), fraction, seed=3).tolist()
    k = int(np.ceil(fraction * m))
    projection = random_projection(dim, 3).double().numpy()
    start = int(torch.randint(m, (1,), generator=torch.Generator().manual_seed(3)))
    assert got == _numpy_greedy(features.astype(np.float64), k, start, projection)
    assert len(set(got)) == k


def test_the_coreset_covers_the_features_better_than_a_random_subset():
    """The k-center objective: the largest distance of any feature to its nearest chosen one."""
    rng = np.random.default_rng(0)
    clusters = rng.normal(size=(8, 16)) * 10
    features = np.concatenate([c + rng.normal(size=(100, 16)) for c in clusters]).astype(np.float32)
    chosen = greedy_coreset(torch.from_numpy(features), 0.02, seed=0).numpy()

    def radius(idx):
        return NearestNeighbors(n_neighbors=1).fit(features[idx]).kneighbors(features)[0].max()

    random_radius = np.median(
        [radius(rng.choice(len(features), len(chosen), replace=False)) for _ in range(20)]
    )
    assert radius(chosen) < 0.5 * random_radius


def test_a_fraction_of_one_keeps_everything_and_bad_fractions_are_refused():
    x = torch.randn(10, 4)
    assert greedy_coreset(x, 1.0).tolist() == list(range(10))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="coreset_fraction"):
            greedy_coreset(x, bad)


def test_nearest_distances_equal_scikit_learns_nearest_neighbors(monkeypatch):
    rng = np.random.default_rng(2)
    bank = rng.normal(size=(700, 48)).astype(np.float32)
    queries = rng.normal(size=(333, 48)).astype(np.float32) * 1.5
    monkeypatch.setattr("cutswap.score.patchcore.SEARCH_BLOCK", 100)  # several blocks, one partial
    got = nearest_distances(torch.from_numpy(queries), torch.from_numpy(bank)).numpy()
    expected = NearestNeighbors(n_neighbors=1).fit(bank).kneighbors(queries)[0][:, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # A query that is a bank row is at distance 0 (the clamp keeps rounding from making it NaN).
    assert nearest_distances(torch.from_numpy(bank[:5]), torch.from_numpy(bank)).max() < 1e-2


def test_aggregate_averages_each_neighbourhood_and_upsamples_the_deeper_stage():
    shallow = torch.arange(16.0).reshape(1, 1, 4, 4)
    deep = torch.ones(1, 2, 2, 2)
    out = aggregate([shallow, deep])
    assert out.shape == (1, 4, 4, 3)
    # A corner averages its 4 in-image neighbours and 5 zeros of padding, an inner cell its 9 neighbours.
    assert out[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 9)
    assert out[0, 1, 1, 0] == pytest.approx(np.mean([0, 1, 2, 4, 5, 6, 8, 9, 10]))
    # Every cell of a 2 x 2 map of ones sees 4 ones and 5 zeros; upsampling a constant keeps it.
    assert torch.allclose(out[..., 1:], torch.full((1, 4, 4, 2), 4 / 9))


@pytest.mark.parametrize("trunk", ["resnet18", "efficientnet_lite0"])
def test_stage_features_equal_forward_hooks_on_the_same_stages(trunk):
    torch.manual_seed(0)
    model = build_model([8], False, 1, trunk).eval()
    x = torch.rand(2, 3, 64, 64)
    captured = {}
    hooks = [
        model.stages[n].register_forward_hook(lambda _m, _i, o, n=n: captured.setdefault(n, o))
        for n in LAYERS
    ]
    with torch.no_grad():
        model.embed(x)
        staged = model.stage_features(x, LAYERS)
    for h in hooks:
        h.remove()
    for name, got in zip(LAYERS, staged, strict=True):
        assert torch.equal(got, captured[name])
    assert [t.shape[-1] for t in staged] == [8, 4]  # strides 8 and 16


def test_a_defect_scores_high_where_it_is():
    """Normal images are smooth gradients; a test image carries a bright square in one corner: the image
    scores above every normal one, and its map peaks inside the square."""
    torch.manual_seed(0)
    model = build_model([8], False, 1, "resnet18").eval()
    rng = np.random.default_rng(0)
    ramp = np.linspace(40, 200, 64)[None, :, None]
    normal = np.stack(
        [
            np.clip(np.broadcast_to(ramp, (64, 64, 3)) + rng.normal(0, 4, (64, 64, 3)), 0, 255)
            for _ in range(12)
        ]
    ).astype(np.uint8)
    defect = normal[:1].copy()
    defect[0, 40:56, 40:56] = [255, 0, 255]
    core = PatchCore.fit(model, normal[:10], 0.5, 2.0, 4, torch.device("cpu"))
    patches = core.patch_scores(model, np.concatenate([normal[10:], defect]), 4, torch.device("cpu"))
    scores = core.image_scores(patches)
    assert scores[-1] > scores[:-1].max()
    maps = core.maps(patches, 64)
    y, x = np.unravel_index(np.argmax(maps[-1]), maps[-1].shape)
    assert 32 <= y < 64 and 32 <= x < 64
    # maps are the patch scores upsampled, then blurred as scipy does.
    unblurred = PatchCore(core.memory_bank, 0.0).maps(patches, 64)
    np.testing.assert_allclose(
        maps,
        ndimage.gaussian_filter(unblurred.astype(np.float64), (0, 2.0, 2.0), mode="nearest"),
        rtol=1e-5,
        atol=1e-5,
    )
    assert patch_features(model, normal[:2], 1, torch.device("cpu")).shape == (2, 8, 8, 128 + 256)


@pytest.mark.slow
def test_scores_equal_anomalibs_patchcore_on_the_same_trunk_and_bank():
    """anomalib's PatchCore (not in the test extra: it brings lightning and OpenCV; run with anomalib on
    the path) with our ResNet-18's weights in its timm trunk and our memory bank: the same image scores;
    and its k-center greedy coreset covers the features about as tightly as ours (another projection, so
    not the same patches)."""
    pytest.importorskip("anomalib")
    from anomalib.models.components.sampling import KCenterGreedy
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    torch.manual_seed(0)
    model = build_model([8], False, 1, "resnet18").eval()
    reference = PatchcoreModel(
        layers=["layer2", "layer3"], backbone="resnet18", pre_trained=False, num_neighbors=1
    )
    loaded = reference.feature_extractor.feature_extractor.load_state_dict(
        model.trunk.state_dict(), strict=False
    )
    assert not loaded.missing_keys and all(k.startswith("layer4.") for k in loaded.unexpected_keys)
    reference.eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (14, 64, 64, 3), dtype=np.uint8)
    core = PatchCore.fit(model, images[:10], 0.25, 4.0, 5, torch.device("cpu"))
    reference.memory_bank = torch.from_numpy(core.memory_bank)
    ours = core.image_scores(core.patch_scores(model, images[10:], 4, torch.device("cpu")))
    x = torch.from_numpy(images[10:]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        theirs = reference((x - model.mean) / model.std).pred_score.numpy()
    np.testing.assert_allclose(ours, theirs.reshape(-1), rtol=1e-4)

    features = patch_features(model, images[:10], 5, torch.device("cpu")).reshape(-1, 384)
    ours_idx = greedy_coreset(features, 0.05).numpy()
    theirs_bank = KCenterGreedy(embedding=features, sampling_ratio=0.05).sample_coreset().numpy()

    def radius(bank):
        return NearestNeighbors(n_neighbors=1).fit(bank).kneighbors(features.numpy())[0].max()

    assert len(theirs_bank) == len(ours_idx)
    assert radius(features.numpy()[ours_idx]) <= 1.15 * radius(theirs_bank)
