from __future__ import annotations

import numpy as np
import torch

from cutswap.method.ops import cut_paste, cut_paste_scar, sample_patch_sizes, swap_patches
from cutswap.method.pairs import sample_pair_bank


def _images(b=4, h=32, w=40):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(0))


def _random_pairs(n, h=32, w=40, seed=0):
    """(n, 6) non-overlapping pairs at random places: a bank of empty top clusters falls back on
    every draw."""
    return sample_pair_bank(np.zeros((n, h, w), bool), 1, seed=seed).boxes[:, 0]


def test_swap_matches_a_hand_written_swap():
    images = _images()
    pairs = torch.tensor(
        [[5, 7, 0, 0, 10, 20], [3, 3, 28, 36, 0, 0], [8, 4, 2, 30, 20, 1], [1, 1, 5, 5, 6, 6]]
    )
    expected = images.clone()
    for i, (h, w, y1, x1, y2, x2) in enumerate(pairs.tolist()):
        expected[i, :, y1 : y1 + h, x1 : x1 + w] = images[i, :, y2 : y2 + h, x2 : x2 + w]
        expected[i, :, y2 : y2 + h, x2 : x2 + w] = images[i, :, y1 : y1 + h, x1 : x1 + w]
    torch.testing.assert_close(swap_patches(images, pairs), expected)


def test_swap_twice_is_identity_and_keeps_pixel_multiset():
    images = _images()
    pairs = torch.from_numpy(_random_pairs(4, seed=1))
    once = swap_patches(images, pairs)
    torch.testing.assert_close(swap_patches(once, pairs), images)
    torch.testing.assert_close(once.flatten(1).sort(1).values, images.flatten(1).sort(1).values)


def test_patch_sizes_follow_area_and_aspect():
    h, w = sample_patch_sizes(5000, 256, 256, (0.02, 0.15), (0.3, 3.3), torch.Generator().manual_seed(0))
    area = (h * w).float() / 256**2
    assert area.min() > 0.015 and area.max() < 0.16
    ratio = h.float() / w.float()
    assert ratio.min() > 0.28 and ratio.max() < 3.5


def test_cut_paste_changes_one_rectangle_only():
    images = _images(8)
    out = cut_paste(images, (0.02, 0.15), (0.3, 3.3), torch.Generator().manual_seed(0))
    changed = (out != images).any(1)
    assert changed.any()
    for mask in changed:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if len(ys):
            box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            assert box.float().mean() > 0.5  # changed pixels fill a rectangle (a few may coincide)


def test_several_swaps_compose_into_one_gather_equal_to_swapping_in_turn():
    images = _images()
    bank = torch.from_numpy(_random_pairs(8, seed=2)).view(4, 2, 6)
    in_turn = swap_patches(swap_patches(images, bank[:, 0]), bank[:, 1])
    torch.testing.assert_close(swap_patches(images, bank), in_turn)


def _coordinates(b=6, size=64):
    """Images whose channels 0 and 1 encode each pixel's own row and column, channel 2 is constant."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    plane = torch.stack([ys / (size - 1), xs / (size - 1), torch.full_like(ys, 0.5, dtype=torch.float)])
    return plane.expand(b, 3, size, size).clone()


def test_scar_pastes_a_rotated_copy_of_a_rectangle_of_the_image():
    """Without jitter every changed pixel names its source pixel, so the paste can be checked exactly:
    sources are a rotated copy of the destinations (least-squares rotation matches the drawn angle's
    magnitude), the scar's area is its width x height, and everything else is untouched."""
    size, angle = 64, 30.0
    images = _coordinates(size=size)
    out = cut_paste_scar(
        images, torch.Generator().manual_seed(0), rotation=(angle, angle), jitter=0.0, reference_size=size
    )
    for i in range(len(images)):
        changed = (out[i] != images[i]).any(0)
        dst = torch.nonzero(changed).float()
        src = torch.stack([out[i, 0][changed], out[i, 1][changed]], 1) * (size - 1)
        assert 10 * 2 * 0.6 <= len(dst) <= 16 * 25 * 1.2  # width [2, 16] x height [10, 25] px
        a = torch.linalg.lstsq(
            torch.cat([dst - dst.mean(0), torch.ones(len(dst), 1)], 1), src - src.mean(0)
        ).solution[:2]
        rad = torch.deg2rad(torch.tensor(angle))
        rotation = torch.stack([torch.stack([rad.cos(), rad.sin()]), torch.stack([rad.sin(), rad.cos()])])
        torch.testing.assert_close(a.abs(), rotation, atol=0.08, rtol=0)
        assert (src.round() >= 0).all() and (src.round() <= size - 1).all()


def test_scar_without_rotation_is_an_axis_aligned_thin_rectangle_scaled_to_the_image():
    images = _coordinates(b=16, size=64)
    out = cut_paste_scar(images, torch.Generator().manual_seed(1), rotation=(0.0, 0.0), jitter=0.0)
    for i in range(len(images)):
        changed = (out[i] != images[i]).any(0)
        ys, xs = torch.nonzero(changed, as_tuple=True)
        if not len(ys):
            continue
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert changed.sum() <= h * w
        assert h <= 25 * 64 / 256 + 1 and w <= 16 * 64 / 256 + 1  # default sizes refer to 256 px


def test_scar_changes_every_image_and_keeps_the_range():
    images = _images(16, 64, 64)
    out = cut_paste_scar(images, torch.Generator().manual_seed(2), reference_size=64)
    assert (out != images).flatten(1).any(1).all()
    assert out.min() >= 0 and out.max() <= 1


def test_augmentations_are_reproducible_from_the_generator():
    images = _images(8, 48, 48)
    for fn in (
        lambda g: cut_paste(images, (0.02, 0.15), (0.3, 3.3), g),
        lambda g: cut_paste_scar(images, g),
    ):
        torch.testing.assert_close(fn(torch.Generator().manual_seed(5)), fn(torch.Generator().manual_seed(5)))
