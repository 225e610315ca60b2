"""Anomaly maps: crop geometry, receptive-field upsampling, a planted defect found where it is, and our
Grad-CAM against pytorch-grad-cam's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import mahalanobis
from sklearn.covariance import LedoitWolf

from cutswap.learn.models import ProjectionNet
from cutswap.score.localization import (
    anomaly_logit,
    crop_embeddings,
    gradcam_maps,
    patch_maps,
    patch_positions,
    spread_patch_scores,
)
from cutswap.score.metrics import image_auroc


def _textures(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth random textures, uint8 (n, size, size, 3)."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(n, size, size, 3)), sigma=(0, 1.5, 1.5, 0))
    return np.clip(128 + 400 * noise, 0, 255).astype(np.uint8)


def _model(num_classes: int = 2, seed: int = 0) -> ProjectionNet:
    """A random-init classifier whose batch-norm statistics come from textures, as training would set
    them; with the untouched statistics (mean 0, variance 1) activations and Grad-CAMs are degenerate."""
    torch.manual_seed(seed)
    model = ProjectionNet([32], num_classes)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        model.train()(torch.from_numpy(_textures(16, 48, 9)).permute(0, 3, 1, 2).float() / 255)
    return model.eval()


def test_patch_positions_cover_the_image_flush_to_the_far_edge():
    assert patch_positions(64, 16, 8).tolist() == [0, 8, 16, 24, 32, 40, 48]
    assert patch_positions(64, 24, 16).tolist() == [0, 16, 32, 40]
    assert patch_positions(32, 32, 8).tolist() == [0]
    with pytest.raises(ValueError, match="patch_size"):
        patch_positions(32, 40, 8)


def test_receptive_field_upsampling_is_the_mean_of_covering_crops():
    rng = np.random.default_rng(0)
    size, patch = 10, 4
    offsets = patch_positions(size, patch, 3)  # 0, 3, 6: overlapping, uneven coverage
    scores = rng.normal(size=(2, len(offsets), len(offsets)))
    got = spread_patch_scores(scores, offsets, patch, size)
    for y in range(size):
        for x in range(size):
            cover = [
                (gy, gx)
                for gy, oy in enumerate(offsets)
                for gx, ox in enumerate(offsets)
                if oy <= y < oy + patch and ox <= x < ox + patch
            ]
            expected = np.mean([scores[:, gy, gx] for gy, gx in cover], axis=0)
            np.testing.assert_allclose(got[:, y, x], expected, rtol=1e-12)


def test_crop_embeddings_are_the_trunk_on_the_cut_out_crops():
    model = _model()
    images = _textures(3, 24, 1)
    offsets = patch_positions(24, 16, 4)  # 0, 4, 8
    which = np.array([[0, 0, 2], [2, 1, 0], [1, 2, 2]])  # (image, row position, column position)
    got = crop_embeddings(model, images, which, offsets, 16, batch_size=2, device=torch.device("cpu"))
    with torch.inference_mode():
        for row, (i, gy, gx) in zip(got, which, strict=True):
            y, x = offsets[gy], offsets[gx]
            crop = torch.from_numpy(images[i, y : y + 16, x : x + 16]).permute(2, 0, 1)[None].float() / 255
            np.testing.assert_allclose(row, model.embed(crop)[0].double().numpy(), rtol=1e-4, atol=1e-5)


def test_patch_scores_are_scipys_mahalanobis_under_the_ledoit_wolf_covariance():
    # One crop per image (the crop is the whole image) and no blur: every pixel of a map must be the
    # Mahalanobis distance of that image's trunk embedding, computed here by scipy from the inverted
    # Ledoit-Wolf covariance, independently of ``GaussianDensity``'s stored precision and its formula.
    model = _model()
    size = 24
    train, test = _textures(12, size, 4), _textures(3, size, 5)
    maps = patch_maps(model, train, test, patch_size=size, stride=8, sigma=0.0, batch_size=5)

    def embed(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model.embed(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).double().numpy()

    fitted = LedoitWolf().fit(embed(train))
    inverse = np.linalg.inv(fitted.covariance_)
    expected = [mahalanobis(e, fitted.location_, inverse) for e in embed(test)]
    assert np.ptp(expected) > 0  # distinct distances, so a swapped or shared map would be caught
    for got, want in zip(maps, expected, strict=True):
        np.testing.assert_allclose(got, np.full((size, size), want), rtol=1e-4)


def test_patch_maps_find_a_planted_defect_where_it_is():
    # A random-init trunk is enough to tell a flat bright square from the textures it was fitted on. The
    # square sits in the top-right corner, so swapped axes or misplaced crops would move the peak away.
    size = 48
    train = _textures(12, size, 2)
    test = _textures(4, size, 3)
    masks = np.zeros((4, size, size), bool)
    masks[:2, 4:16, 30:42] = True
    test[masks] = 255
    maps = patch_maps(_model(), train, test, patch_size=16, stride=8, sigma=2.0)
    assert maps.shape == (4, size, size) and maps.dtype == np.float32 and (maps >= 0).all()
    for i in range(2):
        assert image_auroc(maps[i].ravel(), masks[i].ravel()) > 0.8
        assert image_auroc(maps[i].T.ravel(), masks[i].ravel()) < 0.6
        y, x = np.unravel_index(maps[i].argmax(), maps[i].shape)
        assert y < size // 2 <= x  # top-right quadrant
    assert maps[:2].max(axis=(1, 2)).min() > maps[2:].max()  # defective images peak above clean ones


def test_anomaly_logit_is_log_odds_of_any_negative_class():
    logits = torch.tensor([[0.5, 2.0], [1.0, -1.0]])
    torch.testing.assert_close(anomaly_logit(logits), logits[:, 1] - logits[:, 0])
    three = torch.tensor([[0.0, 1.0, 2.0]])
    expected = torch.log(torch.exp(torch.tensor(1.0)) + torch.exp(torch.tensor(2.0)))
    torch.testing.assert_close(anomaly_logit(three), expected[None])


@pytest.mark.parametrize(("num_classes", "layer"), [(2, "layer4"), (2, "layer3"), (3, "layer4")])
def test_gradcam_equals_pytorch_grad_cam(num_classes, layer):
    from pytorch_grad_cam import GradCAM

    model = _model(num_classes, seed=num_classes)
    images = _textures(5, 64, 4)
    ours = gradcam_maps(model, images, layer, batch_size=2)

    class Logits(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)[1]

    def target(output):  # per-sample logits (C,) -> the anomaly logit
        return torch.logsumexp(output[1:], 0) - output[0]

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with GradCAM(Logits(model), [getattr(model.trunk, layer)]) as cam:
        theirs = cam(x, targets=[target] * len(images))  # min-max normalised per image
    low = ours.min(axis=(1, 2), keepdims=True)
    normalised = (ours - low) / (1e-7 + (ours - low).max(axis=(1, 2), keepdims=True))
    assert ours.shape == theirs.shape == (5, 64, 64)
    assert (np.ptp(theirs, axis=(1, 2)) > 0.5).sum() >= 3  # real maps, not all-zero ones
    np.testing.assert_allclose(normalised, theirs, atol=1e-4)
