from __future__ import annotations

import torch

from cutswap.augment import cut_paste, sample_patch_sizes, swap_patches
from cutswap.pairs import random_pair_bank


def _images(b=4, h=32, w=40):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(0))


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
    pairs = torch.from_numpy(random_pair_bank(4, 32, 40, 1, seed=1).boxes[:, 0])
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
