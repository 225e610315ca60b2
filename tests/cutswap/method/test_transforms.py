"""The public negative transforms: what they change, where their randomness comes from, their errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

import cutswap
from cutswap.method.backbones import RESNET18_MEAN, RESNET18_STD, Backbone
from cutswap.method.ops import cut_paste, swap_patches
from cutswap.method.pairs import STEP_TOP, PairBank
from cutswap.method.saliency import SaliencyExtractor


@pytest.fixture
def batch():
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_cutswap_swaps_the_bank_pair_of_each_image(batch):
    boxes = np.array([[[4, 4, 0, 0, 8, 8]], [[2, 3, 1, 1, 10, 10]], [[3, 3, 12, 0, 0, 12]]], np.int32)
    bank = PairBank(boxes, np.full((3, 1), STEP_TOP, np.uint8))
    index = [2, 0, 1]
    out = cutswap.CutSwap(bank)(batch, index)
    expected = swap_patches(batch, torch.from_numpy(boxes[index, 0]))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out[1, :, 0:4, 0:4], batch[1, :, 8:12, 8:12])


def test_transforms_draw_from_the_given_generator(batch):
    a = cutswap.CutPaste()(batch, torch.Generator().manual_seed(5))
    b = cutswap.CutPaste(generator=torch.Generator().manual_seed(5))(batch)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(
        a, cut_paste(batch, (0.02, 0.15), (0.3, 3.3), torch.Generator().manual_seed(5))
    )
    scar = cutswap.Scar()(batch, torch.Generator().manual_seed(1))
    assert scar.shape == batch.shape and not torch.equal(scar, batch)


def test_transforms_refuse_bad_input(batch):
    bank = np.tile(np.array([2, 2, 0, 0, 4, 4], np.int32), (3, 2, 1))
    with pytest.raises(TypeError, match="float tensor"):
        cutswap.CutSwap(bank)((batch * 255).to(torch.uint8), [0, 1, 2])
    with pytest.raises(ValueError, match=r"index must lie in \[0, 3\)"):
        cutswap.CutSwap(bank)(batch, [0, 1, 3])
    with pytest.raises(TypeError, match="integer pixel coordinates"):
        cutswap.CutSwap(bank.astype(np.float32))
    with pytest.raises(ValueError, match="swaps"):
        cutswap.CutSwap(bank, swaps="all")
    with pytest.raises(ValueError, match="area"):
        cutswap.CutPaste(area=(0.3, 0.1))


def test_layercam_over_a_torchvision_model_is_the_pipeline_extractor():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    layers = {"layer2": model.layer2, "layer4": model.layer4}
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    with cutswap.LayerCAM(model, layers, input_size=64) as cam:
        maps, targets = cam(images)
    backbone = Backbone("resnet18", model, layers, RESNET18_MEAN, RESNET18_STD, "", "")
    with SaliencyExtractor(backbone, ["layer2", "layer4"], input_size=64) as reference:
        expected, expected_targets = reference(images)
    assert maps.shape == (2, 2, 32, 32)
    torch.testing.assert_close(maps, expected)
    assert torch.equal(targets, expected_targets)
    with pytest.raises(ValueError, match="layers"):
        cutswap.LayerCAM(model, {})


def test_the_package_exports_resolve_lazily():
    for name in cutswap.__all__:
        assert getattr(cutswap, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cutswap.nope  # noqa: B018
