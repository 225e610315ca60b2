"""Fixtures shared by the training tests: tiny striped images and the ingest store a train run reads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cutswap.stores import StoreRef, build_store, write_array


@pytest.fixture
def make_stripes() -> Callable[..., np.ndarray]:
    """``make(size, n)``: n noisy copies of a horizontal ramp, uint8 (n, size, size, 3); learnable in a few
    steps, and 16 px is the smallest size where ResNet-18 still ends at 1x1."""

    def make(size: int = 16, n: int = 12) -> np.ndarray:
        rng = np.random.default_rng(0)
        base = np.linspace(0, 255, size, dtype=np.float32)
        plane = np.broadcast_to(base[None, :, None], (size, size, 3))
        noisy = [np.clip(plane + rng.normal(0, 8, plane.shape), 0, 255) for _ in range(n)]
        return np.stack(noisy).astype(np.uint8)

    return make


@pytest.fixture
def ingest_store() -> Callable[[Path, np.ndarray], StoreRef]:
    """``make(root, images)``: a minimal ingest store holding the images, all normal training images."""

    def make(root: Path, images: np.ndarray) -> StoreRef:
        def write(group):
            write_array(group, "images", images)
            write_array(group, "masks", np.zeros(images.shape[:3], bool))
            group.attrs["samples"] = [
                {
                    "split": "train",
                    "label": 0,
                    "defect_type": "good",
                    "image_path": f"{i}.png",
                    "mask_path": None,
                }
                for i in range(len(images))
            ]

        return build_store(root, "ingest", "stripes", {"n": len(images)}, {}, write)[0]

    return make
