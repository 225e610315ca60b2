"""MVTec AD's shape (categories and image counts) as data, and a textures dataset built in that shape.

A benchmark of what the MVTec AD preset costs (``benchmarks/bench_scale.py``) needs a dataset with its
categories and counts, not its pixels: the photographs are licensed CC BY-NC-SA and not shipped, so the
project's own synthetic ``textures`` images stand in, in the same layout and numbers::

    <root>/<category>/train/good/000.png ...          MVTEC_AD[category].train images
                      test/good/000.png ...           .test_good
                      test/<defect>/000.png ...       .defects[defect], each with
                      ground_truth/<defect>/000_mask.png

(no ``validation/`` folder: MVTec AD has none, so the evaluate stage holds training images out for its
threshold, as on the real dataset). The images are 8-bit grayscale at ``image_size`` (MVTec AD's are
700-1024 px, RGB except grid, screw and zipper): a stage that reads the files (ingest) reads fewer bytes
here than on the real dataset; every later stage sees ``image_size`` RGB arrays either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from cutswap.data.builtin.textures import CategoryCounts, build_counted_textures

__all__ = ["MVTEC_AD", "MVTEC_AD_SOURCE", "build_mvtec_shaped", "scaled"]

MVTEC_AD_SOURCE = (
    "Bergmann, Fauser, Sattlegger, Steger: MVTec AD - A Comprehensive Real-World Dataset for Unsupervised "
    "Anomaly Detection, CVPR 2019, Table 1 (train and test counts per category: 3629 training, 1725 test "
    "images); per-defect counts: the released archive's folder sizes as commonly listed, not checked "
    "against the archive here (each category's counts sum to its Table 1 test total, which the tests check)"
)

MVTEC_AD: dict[str, CategoryCounts] = {
    "bottle": CategoryCounts(209, 20, {"broken_large": 20, "broken_small": 22, "contamination": 21}),
    "cable": CategoryCounts(
        224,
        58,
        {
            "bent_wire": 13,
            "cable_swap": 12,
            "combined": 11,
            "cut_inner_insulation": 14,
            "cut_outer_insulation": 10,
            "missing_cable": 12,
            "missing_wire": 10,
            "poke_insulation": 10,
        },
    ),
    "capsule": CategoryCounts(
        219, 23, {"crack": 23, "faulty_imprint": 22, "poke": 21, "scratch": 23, "squeeze": 20}
    ),
    "carpet": CategoryCounts(
        280, 28, {"color": 19, "cut": 17, "hole": 17, "metal_contamination": 17, "thread": 19}
    ),
    "grid": CategoryCounts(
        264, 21, {"bent": 12, "broken": 12, "glue": 11, "metal_contamination": 11, "thread": 11}
    ),
    "hazelnut": CategoryCounts(391, 40, {"crack": 18, "cut": 17, "hole": 18, "print": 17}),
    "leather": CategoryCounts(245, 32, {"color": 19, "cut": 19, "fold": 17, "glue": 19, "poke": 18}),
    "metal_nut": CategoryCounts(220, 22, {"bent": 25, "color": 22, "flip": 23, "scratch": 23}),
    "pill": CategoryCounts(
        267,
        26,
        {
            "color": 25,
            "combined": 17,
            "contamination": 21,
            "crack": 26,
            "faulty_imprint": 19,
            "pill_type": 9,
            "scratch": 24,
        },
    ),
    "screw": CategoryCounts(
        320,
        41,
        {
            "manipulated_front": 24,
            "scratch_head": 24,
            "scratch_neck": 25,
            "thread_side": 23,
            "thread_top": 23,
        },
    ),
    "tile": CategoryCounts(
        230, 33, {"crack": 17, "glue_strip": 18, "gray_stroke": 16, "oil": 18, "rough": 15}
    ),
    "toothbrush": CategoryCounts(60, 12, {"defective": 30}),
    "transistor": CategoryCounts(
        213, 60, {"bent_lead": 10, "cut_lead": 10, "damaged_case": 10, "misplaced": 10}
    ),
    "wood": CategoryCounts(247, 19, {"color": 8, "combined": 11, "hole": 10, "liquid": 10, "scratch": 21}),
    "zipper": CategoryCounts(
        240,
        32,
        {
            "broken_teeth": 19,
            "combined": 16,
            "fabric_border": 17,
            "fabric_interior": 16,
            "rough": 17,
            "split_teeth": 18,
            "squeezed_teeth": 16,
        },
    ),
}
"""MVTec AD's 15 categories, in the order of its folders, with their image counts (``MVTEC_AD_SOURCE``)."""


def scaled(counts: CategoryCounts, fraction: float, min_train: int = 1) -> CategoryCounts:
    """``counts`` with every number scaled by ``fraction`` (rounded half up), keeping at least one image of
    every folder that has any and at least ``min_train`` training images (a batch needs that many).

    A benchmark fits how each stage's cost grows with the images from builds at two or three fractions of
    the same categories, so the fitted cost per image is the real category's, whatever the fraction.
    """
    if not fraction > 0:
        raise ValueError(f"fraction must be > 0, got {fraction!r}")

    def scale(n: int) -> int:
        return 0 if n == 0 else max(1, math.floor(n * fraction + 0.5))

    return CategoryCounts(
        train=max(scale(counts.train), min(min_train, counts.train)),
        test_good=scale(counts.test_good),
        defects={name: scale(n) for name, n in counts.defects.items()},
        validation=scale(counts.validation),
    )


def build_mvtec_shaped(
    root: Path,
    categories: Sequence[str] | None = None,
    fraction: float = 1.0,
    seed: int = 0,
    image_size: int = 256,
    min_train: int = 1,
) -> Path:
    """Build (or reuse) a textures dataset in MVTec AD's shape under ``root``.

    Args:
        root: Folder to hold it (absent, empty, or an earlier textures build, which is replaced).
        categories: MVTec AD categories to include, in that order (None: all 15). The random streams are
            numbered by position in the build (``build_counted_textures``), so a subset's images are not
            the full build's: only their number and size matter to a cost benchmark.
        fraction: Scale of every count (``scaled``); 1 is MVTec AD's own.
        seed: Seed of every random choice.
        image_size: Side of the images in pixels (the presets work at 256).
        min_train: Fewest training images of a scaled category (``scaled``).

    Raises:
        ValueError: a category MVTec AD does not have, or a bad fraction or size.
    """
    names = list(MVTEC_AD) if categories is None else list(categories)
    unknown = sorted(set(names) - set(MVTEC_AD))
    if unknown:
        raise ValueError(f"not MVTec AD categories: {unknown}; they are {list(MVTEC_AD)}")
    counts = {name: scaled(MVTEC_AD[name], fraction, min_train) for name in names}
    return build_counted_textures(root, counts, seed=seed, image_size=image_size)
