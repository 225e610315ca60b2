"""The embedded default dataset ``textures``: real texture photographs with synthetic defects.

It lets a newcomer run the whole benchmark with no download: the photographs ship inside scikit-image's
wheel, and the defects are drawn here, deterministically from a seed. On disk it has the MVTec AD layout,
so it goes through exactly the code path a real dataset does (``cutswap.data.layouts.mvtec.scan_mvtec``)::

    <root>/
      README.md                          # what this is, how it was built, the seed and the counts
      .cutswap-textures.json             # build marker: parameters and generator version
      brick/ grass/ gravel/              # one category per photograph
        train/good/000.png ...           # n_train normal crops
        validation/good/000.png ...      # n_validation normal crops, the threshold's calibration set
        test/good/000.png ...            # n_test_good normal crops
        test/<kind>/000.png ...          # n_test_defect crops per defect kind: crack, hole, scratch, stain
        ground_truth/<kind>/000_mask.png # 0/255 mask of the pixels the defect changed

Images are 8-bit grayscale PNGs of ``image_size x image_size`` (the photographs are grayscale; readers
convert to RGB).

How the images are made:

- **Photographs**: ``skimage.data.brick()``, ``grass()`` and ``gravel()``, 512 x 512 grayscale, CC0.

  - The brick wall is photographed in perspective (its courses converge above the photo, so bricks get
    wider towards the bottom and tilt more towards the sides); it is rectified first (512 x 610 px), or
    held-out test crops would show bricks of a width and tilt no training crop has.
  - Slow illumination gradients are divided out (Gaussian low-pass, sigma 48 px), so that the held-out
    test region is not systematically brighter or darker than the training one.

- **Normal crops**: 224 x 224 px windows of the photo at a random position, a random flip (brick keeps
  its vertical courses: flips only) or any of the 8 flips/90-degree rotations (grass, gravel), a mild
  brightness jitter (gain 0.92-1.08, offset +-6 grey levels), resized to ``image_size``.
  **Train and test never share pixels**: training crops come from the left 288 columns of the photo, test
  crops (normal and defective) from the right 224 columns (each at a random height).
- **Validation crops** (the decision threshold's calibration set) are cut exactly as normal test crops are
  (right-hand strip, random height, same flips and jitter) from random streams of their own: they are
  exchangeable with the normal test crops, which is what a threshold chosen on them needs to keep its
  false-positive rate on new normal images, and share no pixels with training crops. Training crops are
  not exchangeable with test crops here (another part of each photograph), so a threshold chosen on
  held-out training crops sits too low: they look more familiar than any new image (and nearly sit in
  PatchCore's memory bank). Like the normal test crops among themselves, validation and test windows of
  the one strip may overlap.
- **Defects** are drawn on test crops, never pasted or swapped from elsewhere (which is what the training
  augmentations do), with varied size, position, orientation and contrast:

  - ``scratch``: a thin curved (quadratic Bezier) anti-aliased line, bright on dark areas and dark on
    bright ones, fading towards its ends;
  - ``stain``: a soft-edged irregular blob that darkens (or, less often, lightens) the texture and
    flattens its contrast, with a faint tide mark at its edge;
  - ``hole``: a dark elliptical pit with a shaded floor and a rim lit from one side;
  - ``crack``: a jagged, tapering dark polyline with one to three branches.

  The mask holds the defect's core plus every pixel it changed by at least ``VISIBLE_CHANGE`` grey
  levels, with enclosed holes filled; outside the mask the image differs from the defect-free crop by less
  than that. A defect is redrawn (deterministically) until most of its mask is visibly changed and it
  stays clear of the image border.

The build is deterministic (same parameters and library versions => byte-identical files) and atomic: it
is written to a temporary sibling folder and renamed into place. A root that already holds a build with
the same parameters and ``GENERATOR_VERSION`` is reused as it is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from cutswap.data.builtin.builds import build_once

__all__ = [
    "CATEGORIES",
    "DEFECT_KINDS",
    "GENERATOR_VERSION",
    "MARKER",
    "VISIBLE_CHANGE",
    "CategoryCounts",
    "add_defect",
    "build_counted_textures",
    "build_textures",
]

GENERATOR_VERSION = "2"  # 2: validation/good, the calibration crops
"""Bump whenever the output of the same parameters changes; an existing build is then rebuilt."""

MARKER = ".cutswap-textures.json"
VISIBLE_CHANGE = 12.0
"""Grey levels (of 255) from which a change counts as visible, and is therefore inside the mask."""

DEFECT_KINDS = ("crack", "hole", "scratch", "stain")

_REFERENCE_SIZE = 256  # defect sizes are specified at this image size and scaled with image_size
_ILLUMINATION_SIGMA = 48.0
_CROP_FRACTION = 7 / 16  # 224 px of a 512 px photograph
_PNG_COMPRESS_LEVEL = 1  # textures barely compress better at 6, which is 2-3x slower


@dataclass(frozen=True)
class _Photo:
    loader: str  # function name in skimage.data
    rotations: bool  # whether 90-degree rotations keep the texture "normal"
    source: str  # where the photograph comes from, for the README
    vanishing_point: tuple[float, float] | None = None  # (x, y) in pixels, for photos taken in perspective


CATEGORIES: dict[str, _Photo] = {
    "brick": _Photo(
        "brick",
        rotations=False,
        source="brick wall, CC0Textures 'Bricks25' (https://cc0textures.com/view.php?tex=Bricks25), "
        "perspective-transformed, rotated and cropped by scikit-image",
        # The courses converge towards a point above the photo: brick width grows from 30 px (top) to 41 px
        # (bottom) and the courses tilt by up to 10 degrees. Measured from the mortar lines' positions in
        # 32-row bands (a straight-line fit of their spacing against the row, and the one line that stays
        # at x = 219.5 in every band).
        vanishing_point=(219.5, -1166.0),
    ),
    "grass": _Photo(
        "grass",
        rotations=True,
        source="grass, 'Grass 01' by linolafett on DeviantArt "
        "(https://www.deviantart.com/linolafett/art/Grass-01-434853879), cropped and converted to "
        "grayscale by scikit-image",
    ),
    "gravel": _Photo(
        "gravel",
        rotations=True,
        source="gravel, CC0Textures 'Gravel04' (https://cc0textures.com/view.php?tex=Gravel04), rescaled, "
        "cropped and converted to grayscale by scikit-image",
    ),
}
"""Category name -> photograph. All are CC0 and ship inside the scikit-image wheel (no download)."""


def build_textures(
    root: Path,
    seed: int = 0,
    image_size: int = 256,
    n_train: int = 60,
    n_test_good: int = 20,
    n_test_defect: int = 6,
    defect_scale: float = 1.0,
    n_validation: int = 20,
) -> Path:
    """Build (or reuse) the ``textures`` dataset under ``root`` in the MVTec AD layout.

    Args:
        root: Folder to hold the dataset. It must not exist, be empty, or hold an earlier textures build
            (which is replaced); any other folder is refused so a wrong path never deletes user data.
        seed: Seed of every random choice; the same seed gives byte-identical files.
        image_size: Side of the square images, in pixels (at least 32).
        n_train: Normal training images per category (at least 1).
        n_test_good: Normal test images per category.
        n_test_defect: Test images per category and defect kind.
        n_validation: Normal validation images per category (``validation/good``), on which the evaluate
            stage chooses the decision threshold; 0 writes none (it then holds out training images).
        defect_scale: Linear size of the defects relative to the reference design (1: scratches of a few
            pixels and holes of 2-4 % of the side at 256 px). A working size far below the build size
            shrinks thin defects below a pixel; scaling them up keeps them visible to a small model.

    Returns:
        ``root``, holding a complete build.

    Raises:
        DatasetError: ``root`` is a file, or a non-empty folder that is not a textures build.
        ValueError: A count or size is out of range.
        OSError: The build cannot be written (disk full, permissions); nothing half-written is left.
    """
    root = Path(root)
    params = _check_params(seed, image_size, n_train, n_test_good, n_test_defect, defect_scale, n_validation)
    wanted = {"generator": "cutswap.data.builtin.textures", "version": GENERATOR_VERSION, **params}

    def write(tmp: Path) -> dict:
        provenance = _write_dataset(tmp, **params)
        _write_readme(tmp / "README.md", params, provenance)
        return provenance

    return build_once(root, "textures", MARKER, wanted, write, defaults={"defect_scale": 1.0})


@dataclass(frozen=True)
class CategoryCounts:
    """The image counts of one category of a counted build (``build_counted_textures``).

    ``defects`` maps each defect folder (``test/<name>``, with masks in ``ground_truth/<name>``) to its
    number of test images, in the order their random streams are numbered; ``validation`` normal images go
    to ``validation/good`` (MVTec AD has none: 0 writes no folder).
    """

    train: int
    test_good: int
    defects: Mapping[str, int] = field(default_factory=dict)
    validation: int = 0

    def as_json(self) -> dict[str, Any]:
        """The counts as the build marker holds them: defects as ``[name, count]`` pairs, whose order
        numbers the random streams (a JSON object would not keep it)."""
        defects = [[str(name), int(n)] for name, n in self.defects.items()]
        return {
            "train": self.train,
            "test_good": self.test_good,
            "validation": self.validation,
            "defects": defects,
        }


def build_counted_textures(
    root: Path,
    counts: Mapping[str, CategoryCounts],
    seed: int = 0,
    image_size: int = 256,
    defect_scale: float = 1.0,
) -> Path:
    """Build (or reuse) a textures dataset with any categories and image counts, in the MVTec AD layout.

    The demo's ``build_textures`` has three categories (one per photograph) and four defect kinds of equal
    count; a dataset of another's shape (MVTec AD's 15 categories and their counts,
    ``cutswap.data.builtin.mvtec_counts``) is what a benchmark of that dataset's cost needs, with no
    download. Categories are cut from the photographs in turn (``CATEGORIES``: brick, grass, gravel,
    brick, ...) and differ by their random streams; a defect folder named like a ``DEFECT_KINDS`` entry gets
    that drawer, any other the kinds in turn by its position. The images are as ``build_textures`` makes
    them (same crops, defects, masks, grayscale PNGs); the build is as deterministic and atomic.

    Args:
        root: Folder to hold the dataset: absent, empty, or an earlier textures build (replaced).
        counts: Category folder -> its counts, in the order their random streams are numbered.
        seed: Seed of every random choice; the same seed and counts give byte-identical files.
        image_size: Side of the square images, in pixels (at least 32).
        defect_scale: Linear size of the defects relative to the reference design (0.25 to 2).

    Returns:
        ``root``, holding a complete build.

    Raises:
        DatasetError: ``root`` is a file, or a non-empty folder that is not a textures build.
        ValueError: no category, a bad folder name, a count or size out of range, or a category without
            training or test images.
        OSError: The build cannot be written; nothing half-written is left.
    """
    root = Path(root)
    params = _check_params(seed, image_size, 1, 1, 0, defect_scale, 0)
    plan = _check_counts(counts)
    wanted = {
        "generator": "cutswap.data.builtin.textures.build_counted_textures",
        "version": GENERATOR_VERSION,
        "seed": params["seed"],
        "image_size": params["image_size"],
        "defect_scale": params["defect_scale"],
        "categories": [{"name": p.name, "photo": p.photo, **p.counts.as_json()} for p in plan],
    }

    def write(tmp: Path) -> dict:
        provenance = _write_categories(
            tmp, plan, params["seed"], params["image_size"], params["defect_scale"]
        )
        _write_counted_readme(tmp / "README.md", wanted, plan, provenance)
        return provenance

    return build_once(root, "textures", MARKER, wanted, write)


def _check_counts(counts: Mapping[str, CategoryCounts]) -> list[_Planned]:
    """The categories as planned (each with its photograph), or ValueError naming what is wrong."""
    if not counts:
        raise ValueError("counts names no category")
    photos = list(CATEGORIES)
    plan = []
    for position, (name, c) in enumerate(counts.items()):
        if not isinstance(c, CategoryCounts):
            raise ValueError(f"category {name!r}: expected CategoryCounts, got {type(c).__name__}")
        for folder in (name, *c.defects):
            if not folder or folder in {".", "..", "good"} or "/" in folder or folder.startswith("."):
                raise ValueError(f"category {name!r}: {folder!r} is not a usable folder name")
        numbers = {"train": c.train, "test_good": c.test_good, "validation": c.validation, **c.defects}
        for what, n in numbers.items():
            if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
                raise ValueError(f"category {name!r}: {what} must be an integer >= 0, got {n!r}")
        if c.train < 1 or c.test_good + sum(c.defects.values()) == 0:
            raise ValueError(f"category {name!r} needs training images and test images, got {c}")
        plan.append(_Planned(str(name), photos[position % len(photos)], c))
    return plan


def _check_params(
    seed: int,
    image_size: int,
    n_train: int,
    n_test_good: int,
    n_test_defect: int,
    defect_scale: float,
    n_validation: int,
) -> dict:
    def whole(name: str, value: object, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        return int(value)

    params = {
        "seed": whole("seed", seed, 0),
        "image_size": whole("image_size", image_size, 32),
        "n_train": whole("n_train", n_train, 1),
        "n_test_good": whole("n_test_good", n_test_good, 0),
        "n_test_defect": whole("n_test_defect", n_test_defect, 0),
        "defect_scale": float(defect_scale),
        "n_validation": whole("n_validation", n_validation, 0),
    }
    if not 0.25 <= params["defect_scale"] <= 2.0:  # larger cracks no longer fit clear of the border
        raise ValueError(f"defect_scale must be between 0.25 and 2, got {defect_scale!r}")
    if params["n_test_good"] + params["n_test_defect"] == 0:
        raise ValueError("n_test_good and n_test_defect are both 0: the dataset would have no test images")
    return params


def _write_dataset(
    out: Path,
    seed: int,
    image_size: int,
    n_train: int,
    n_test_good: int,
    n_test_defect: int,
    defect_scale: float,
    n_validation: int,
) -> dict:
    """Write every category into ``out``; returns provenance (library versions, photo checksums).

    The demo's build is the counted build with one photograph per category and ``n_test_defect`` images of
    each defect kind, so both share one writer (and the demo's files stay what they were)."""
    plan = [
        _Planned(
            name,
            name,
            CategoryCounts(
                n_train, n_test_good, {kind: n_test_defect for kind in DEFECT_KINDS}, n_validation
            ),
        )
        for name in CATEGORIES
    ]
    return _write_categories(out, plan, seed, image_size, defect_scale)


@dataclass(frozen=True)
class _Planned:
    name: str  # the category's folder
    photo: str  # key of CATEGORIES whose photograph it is cut from
    counts: CategoryCounts


def _drawers_of(counts: CategoryCounts) -> dict[str, str]:
    """Defect folder -> its drawer (a ``DEFECT_KINDS`` entry): the one of that name, else cycled by
    position."""
    return {
        name: name if name in DEFECT_KINDS else DEFECT_KINDS[position % len(DEFECT_KINDS)]
        for position, name in enumerate(counts.defects)
    }


def _write_categories(
    out: Path, plan: list[_Planned], seed: int, image_size: int, defect_scale: float
) -> dict:
    """Write each planned category into ``out``; returns provenance (library versions, photo checksums).

    Every image has a random stream of its own, ``SeedSequence([seed, category position, split, defect
    position + 1 (0: normal), index])``, so changing one count never changes the other images."""
    import skimage
    import skimage.data

    digests: dict[str, str] = {}
    photos: dict[str, np.ndarray] = {}
    largest = max(
        max(p.counts.train, p.counts.test_good, p.counts.validation, *p.counts.defects.values(), 0)
        for p in plan
    )
    width = max(3, len(str(largest - 1)))
    for cat_index, planned in enumerate(plan):
        spec = CATEGORIES[planned.photo]
        if planned.photo not in photos:
            raw = getattr(skimage.data, spec.loader)()
            digests[planned.photo] = hashlib.sha256(np.ascontiguousarray(raw).tobytes()).hexdigest()
            photo = _to_gray(raw)
            if spec.vanishing_point is not None:
                photo = _rectify(photo, spec.vanishing_point)
            photos[planned.photo] = _flatten_illumination(photo)
        cat_dir = out / planned.name

        def rng_for(split: int, kind: int, index: int, cat_index: int = cat_index) -> np.random.Generator:
            # One independent stream per image: changing a count never changes the other images.
            return np.random.default_rng(np.random.SeedSequence([seed, cat_index, split, kind, index]))

        crop = _Cropper(photos[planned.photo], spec.rotations, image_size)
        counts = planned.counts
        for i in range(counts.train):
            _save_png(cat_dir / "train" / "good" / f"{i:0{width}d}.png", crop.train(rng_for(0, 0, i)))
        for i in range(counts.test_good):
            _save_png(cat_dir / "test" / "good" / f"{i:0{width}d}.png", crop.test(rng_for(1, 0, i)))
        for i in range(counts.validation):  # cut as the normal test crops are, from streams of their own
            _save_png(cat_dir / "validation" / "good" / f"{i:0{width}d}.png", crop.test(rng_for(2, 0, i)))
        drawers = _drawers_of(counts)
        for kind_index, (folder, n) in enumerate(counts.defects.items(), start=1):
            for i in range(n):
                rng = rng_for(1, kind_index, i)
                image, mask = add_defect(crop.test(rng), drawers[folder], rng, defect_scale)
                stem = f"{i:0{width}d}"
                _save_png(cat_dir / "test" / folder / f"{stem}.png", image)
                _save_png(cat_dir / "ground_truth" / folder / f"{stem}_mask.png", mask.astype(np.uint8) * 255)
    return {
        "photo_sha256": digests,
        "scikit_image_version": skimage.__version__,
        "pillow_version": Image.__version__,
        "numpy_version": np.__version__,
    }


def _to_gray(raw: np.ndarray) -> np.ndarray:
    photo = raw.astype(np.float32)
    if photo.ndim == 3:  # not the case for the shipped photographs; kept so a colour one would still work
        photo = photo[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return photo


def _rectify(photo: np.ndarray, vanishing_point: tuple[float, float]) -> np.ndarray:
    """Undo the perspective of a photo whose vertical lines meet at ``vanishing_point`` above it.

    Without this, brick width and tilt depend on where a crop is taken, so held-out test crops would look
    unlike every training crop. The map sends the lines through the vanishing point to vertical lines and
    gives every point the same local scale in both directions (a pixel at distance ``w`` below the
    vanishing point is magnified by ``w_bottom / w``), so the bottom row keeps its resolution and nothing is
    shrunk. Output rows follow ``Y = k ln(w / w_top)``, the integral of that scale.
    """
    height, width = photo.shape
    xv, yv = vanishing_point
    w_top, w_bottom = -yv, (height - 1) - yv
    k = w_bottom
    out_h = int(np.floor(k * np.log(w_bottom / w_top))) + 1
    rows, cols = np.mgrid[0:out_h, 0:width].astype(np.float64)
    w = w_top * np.exp(rows / k)
    src_y = w + yv
    src_x = xv + (cols - xv) * w / k  # the bottom row maps onto itself, so every output pixel is inside
    out = ndimage.map_coordinates(photo, [src_y, src_x], order=3, mode="reflect")
    return np.clip(out, 0.0, 255.0).astype(np.float32)


def _flatten_illumination(photo: np.ndarray) -> np.ndarray:
    # Blur a 1/8 scale copy and scale it back up: the same low-pass for an illumination field, ~50x faster.
    factor = 8
    small = ndimage.zoom(photo, 1 / factor, order=1, grid_mode=True, mode="reflect")
    small = ndimage.gaussian_filter(small, _ILLUMINATION_SIGMA / factor, mode="reflect")
    low = ndimage.zoom(small, np.array(photo.shape) / small.shape, order=1, grid_mode=True, mode="reflect")
    return np.clip(photo * (low.mean() / np.maximum(low, 1.0)), 0.0, 255.0)


class _Cropper:
    """Cuts normal crops: training ones from the left of the photo, test ones from the disjoint right."""

    def __init__(self, photo: np.ndarray, rotations: bool, image_size: int) -> None:
        height, width = photo.shape
        self.photo = photo
        self.rotations = rotations
        self.size = image_size
        self.crop = int(round(min(height, width) * _CROP_FRACTION))
        self.max_y = height - self.crop
        self.train_max_x = width - 2 * self.crop  # training windows end where the test strip begins
        self.test_x = width - self.crop

    def train(self, rng: np.random.Generator) -> np.ndarray:
        return self._cut(rng, int(rng.integers(0, self.train_max_x + 1)))

    def test(self, rng: np.random.Generator) -> np.ndarray:
        return self._cut(rng, self.test_x)

    def _cut(self, rng: np.random.Generator, x: int) -> np.ndarray:
        y = int(rng.integers(0, self.max_y + 1))
        window = self.photo[y : y + self.crop, x : x + self.crop]
        if self.rotations:
            window = np.rot90(window, int(rng.integers(0, 4)))
        if rng.random() < 0.5:
            window = window[:, ::-1]
        if rng.random() < 0.5:
            window = window[::-1, :]
        gain, offset = rng.uniform(0.92, 1.08), rng.uniform(-6.0, 6.0)
        window = np.ascontiguousarray(window, dtype=np.float32)
        if self.crop != self.size:
            window = np.asarray(
                Image.fromarray(window).resize((self.size, self.size), Image.Resampling.BICUBIC)
            )
        return np.clip(window * gain + offset, 0.0, 255.0).astype(np.float32)


def add_defect(
    image: np.ndarray, kind: str, rng: np.random.Generator, defect_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect of ``kind`` on a float grayscale image (values 0..255).

    Args:
        image: ``(S, S)`` float array, the defect-free crop; not modified.
        kind: One of ``DEFECT_KINDS``.
        rng: Source of every random choice.
        defect_scale: Linear size of the defect relative to the reference design.

    Returns:
        The defective image (``uint8``) and its ``bool`` mask: the defect's core plus every pixel changed by
        at least ``VISIBLE_CHANGE`` grey levels. Outside the mask the change is below that.
    """
    draw = _DRAWERS.get(kind)
    if draw is None:
        raise ValueError(f"unknown defect kind {kind!r}; expected one of {DEFECT_KINDS}")
    size = image.shape[0]
    scale = size / _REFERENCE_SIZE * defect_scale
    margin = max(2, int(round(4 * scale)))
    best = None
    for _ in range(30):
        result = draw(image, rng, scale)
        if result is None:  # the drawer's geometry left the image; draw again
            continue
        out, core = result
        out = np.clip(np.rint(out), 0, 255)
        change = np.abs(out - np.rint(image))
        mask = _fill_holes(core | (change >= VISIBLE_CHANGE))
        border = np.ones_like(mask)
        border[margin:-margin, margin:-margin] = False
        if (mask & border).any():
            continue
        visible = float((change[mask] >= VISIBLE_CHANGE).mean()) if mask.any() else 0.0
        if best is None or visible > best[0]:
            best = (visible, out, mask)
        if visible >= 0.6 and mask.sum() >= max(6, 40 * scale * scale):
            break
    if best is None:  # pragma: no cover - needs 30 unlucky draws in a row
        raise RuntimeError(f"could not place a {kind} defect on a {size} px image")
    _, out, mask = best
    return out.astype(np.uint8), mask


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes, working on the mask's bounding box only (defects are small)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return mask
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    filled = mask.copy()
    filled[box] = ndimage.binary_fill_holes(mask[box])
    return filled


def _point_inside(points: np.ndarray, size: int, margin: float) -> bool:
    return bool((points >= margin).all() and (points <= size - 1 - margin).all())


def _stroke(
    shape: tuple[int, int], starts: np.ndarray, ends: np.ndarray, widths: np.ndarray, strengths: np.ndarray
) -> np.ndarray:
    """Anti-aliased coverage of line segments (x, y coordinates), each with its width and strength.

    Coverage falls linearly from 1 to 0 over one pixel around the segment's edge, which is what makes thin
    lines look drawn rather than stair-stepped; overlapping segments take the maximum, not the sum.
    """
    height, width = shape
    alpha = np.zeros(shape, dtype=np.float32)
    for (ax, ay), (bx, by), w, s in zip(starts, ends, widths, strengths, strict=True):
        reach = w / 2 + 1.0
        x0, x1 = max(int(np.floor(min(ax, bx) - reach)), 0), min(int(np.ceil(max(ax, bx) + reach)) + 1, width)
        y0, y1 = (
            max(int(np.floor(min(ay, by) - reach)), 0),
            min(int(np.ceil(max(ay, by) + reach)) + 1, height),
        )
        if x0 >= x1 or y0 >= y1:
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / length2, 0.0, 1.0) if length2 > 0 else 0.0
        dist = np.hypot(xs - (ax + t * dx), ys - (ay + t * dy))
        cover = np.clip(w / 2 + 0.5 - dist, 0.0, 1.0) * s
        np.maximum(alpha[y0:y1, x0:x1], cover, out=alpha[y0:y1, x0:x1])
    return alpha


def _scratch(image: np.ndarray, rng: np.random.Generator, scale: float):
    size = image.shape[0]
    length = rng.uniform(0.3, 0.65) * size
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    start = rng.uniform(0.1 * size, 0.9 * size, 2)
    end = start + direction * length
    control = (start + end) / 2 + normal * rng.uniform(-0.35, 0.35) * length
    t = np.linspace(0.0, 1.0, 33)[:, None]
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
    if not _point_inside(points, size, 6 * scale + 2):
        return None
    width = max(rng.uniform(1.3, 2.6) * scale, 1.1)
    fade = 0.55 + 0.45 * np.sin(np.pi * (t[:-1, 0] + t[1:, 0]) / 2)  # fainter towards the ends
    alpha = _stroke(image.shape, points[:-1], points[1:], np.full(32, width), fade * rng.uniform(0.65, 0.9))
    under = image[alpha > 0.3].mean() if (alpha > 0.3).any() else image.mean()
    target = rng.uniform(225, 250) if under < 135 else rng.uniform(10, 35)
    return image * (1 - alpha) + target * alpha, alpha >= 0.5


def _stain(image: np.ndarray, rng: np.random.Generator, scale: float):
    size = image.shape[0]
    radius = rng.uniform(14, 40) * scale
    soft = rng.uniform(0.15, 0.35)
    reach = radius * 1.4 * (1 + soft) + 6 * scale  # 1.4: the wobble can push the edge out by 40 %
    if reach >= size - reach:
        return None
    centre = rng.uniform(reach, size - reach, 2)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xs - centre[0], ys - centre[1]
    theta = np.arctan2(dy, dx)
    wobble = np.ones_like(theta)
    for k in range(2, 6):  # a few low angular harmonics make the blob irregular but smooth
        wobble += rng.uniform(0, 0.22) / (k - 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    stretch = rng.uniform(0.7, 1.0)
    rot = rng.uniform(0, np.pi)
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = (-dx * np.sin(rot) + dy * np.cos(rot)) / stretch
    r = np.hypot(u, v) / (radius * wobble)
    edge = np.clip((1 + soft - r) / (2 * soft), 0.0, 1.0)
    alpha = edge * edge * (3 - 2 * edge)  # smoothstep: no visible step at the blob's border
    local = ndimage.uniform_filter(image, size=max(3, int(radius)))
    flat = local + (image - local) * rng.uniform(0.45, 0.8)  # stains fill in and flatten the texture
    gain = rng.uniform(0.55, 0.72) if rng.random() < 0.75 else rng.uniform(1.3, 1.5)
    tide = 1 - rng.uniform(0.0, 0.15) * np.exp(-(((r - 1) / 0.08) ** 2))
    stained = flat * gain * tide
    return image * (1 - alpha) + stained * alpha, r < 1


def _hole(image: np.ndarray, rng: np.random.Generator, scale: float):
    size = image.shape[0]
    a = rng.uniform(8, 20) * scale
    b = a * rng.uniform(0.55, 1.0)
    rim = rng.uniform(0.3, 0.5)
    reach = a * (1 + rim) + 6 * scale
    centre = rng.uniform(reach, size - reach, 2)
    rot = rng.uniform(0, np.pi)
    light = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xs - centre[0], ys - centre[1]
    u = (dx * np.cos(rot) + dy * np.sin(rot)) / a
    v = (-dx * np.sin(rot) + dy * np.cos(rot)) / b
    r = np.hypot(u, v)
    facing = np.cos(np.arctan2(dy, dx) - light)  # +1 on the side facing the light
    inside = np.clip((1 - r) * min(a, b) + 0.5, 0.0, 1.0)  # one-pixel anti-aliased edge
    # The floor: dark, in the shadow of the wall on the light's side and lit on the far side (a linear
    # gradient across the hole, so there is no singular point at its centre), with a trace of texture.
    across = (dx * np.cos(light) + dy * np.sin(light)) / a
    floor = rng.uniform(12, 32) * (1 - 0.5 * np.clip(across, -1, 1)) + 0.12 * (image - image.mean())
    # The rim: raised material, brighter where it faces the light and darker where it turns away.
    ring = np.clip(1 - (r - 1) / rim, 0.0, 1.0) * (r >= 1)
    rim_shift = rng.uniform(50, 90) * ring * ring * (3 - 2 * ring) * facing
    out = (image + rim_shift) * (1 - inside) + floor * inside
    return out, r <= 1 + rim / 2


def _crack(image: np.ndarray, rng: np.random.Generator, scale: float):
    size = image.shape[0]
    steps = int(rng.integers(12, 26))
    heading = rng.uniform(0, 2 * np.pi)
    point = rng.uniform(0.15 * size, 0.85 * size, 2)
    main = [point]
    headings = []
    drift = 0.0
    for _ in range(steps):
        drift += rng.normal(0, 0.12)  # slow bend of the whole crack
        h = heading + drift + rng.normal(0, 0.45)  # jagged zig-zag around it
        headings.append(h)
        point = point + rng.uniform(3, 6.5) * scale * np.array([np.cos(h), np.sin(h)])
        main.append(point)
    main = np.array(main)
    width0 = rng.uniform(1.8, 3.0) * scale
    widths = width0 * (1 - 0.6 * np.arange(steps) / steps)
    starts, ends, seg_widths = [main[:-1]], [main[1:]], [widths]
    for _ in range(int(rng.integers(1, 4))):
        node = int(rng.integers(2, steps - 2))
        h = headings[node] + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
        branch = [main[node]]
        for _ in range(int(rng.integers(4, 10))):
            h += rng.normal(0, 0.4)
            branch.append(branch[-1] + rng.uniform(2.5, 5.5) * scale * np.array([np.cos(h), np.sin(h)]))
        branch = np.array(branch)
        n = len(branch) - 1
        starts.append(branch[:-1])
        ends.append(branch[1:])
        seg_widths.append(np.maximum(widths[node] * 0.7 * (1 - 0.5 * np.arange(n) / n), 1.0))
    starts_all, ends_all = np.concatenate(starts), np.concatenate(ends)
    if not _point_inside(np.concatenate([starts_all, ends_all]), size, 6 * scale + 2):
        return None
    seg_widths_all = np.maximum(np.concatenate(seg_widths), 1.0)
    alpha = _stroke(image.shape, starts_all, ends_all, seg_widths_all, np.ones(len(starts_all)))
    darkness = rng.uniform(0.15, 0.35)
    return image * (1 - alpha * (1 - darkness)), alpha >= 0.5


_DRAWERS: dict[
    str, Callable[[np.ndarray, np.random.Generator, float], tuple[np.ndarray, np.ndarray] | None]
] = {
    "crack": _crack,
    "hole": _hole,
    "scratch": _scratch,
    "stain": _stain,
}


def _save_png(path: Path, array: np.ndarray) -> None:
    """Write a PNG with no timestamp or other varying metadata, so equal pixels give equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    image.save(path, format="PNG", compress_level=_PNG_COMPRESS_LEVEL, optimize=False)


def _write_readme(path: Path, params: dict, provenance: dict) -> None:
    size = params["image_size"]
    sources = "\n".join(
        f"- `{name}`: `skimage.data.{spec.loader}()`: {spec.source}. "
        f"sha256 of its pixels: `{provenance['photo_sha256'][name][:16]}...`"
        for name, spec in CATEGORIES.items()
    )
    lines = [
        "# textures: cutswap's embedded anomaly-detection dataset",
        "",
        "Generated by `cutswap.data.builtin.textures.build_textures`, "
        f"generator version {GENERATOR_VERSION}. Do not edit it; rebuild it instead. It is in the MVTec AD "
        "layout, so any MVTec AD reader (cutswap's, anomalib's) reads it.",
        "",
        "**Real photographs, synthetic defects.** The normal images are crops of real texture photographs, "
        "released under CC0 (public domain) and shipped inside scikit-image "
        f"{provenance['scikit_image_version']}, so nothing is downloaded. The defects are drawn by the "
        "generator: they are not real defects, and their masks are exact. Like its sources, this dataset "
        "may be used without restriction.",
        "",
        "## Sources",
        sources,
        "",
        "## How it was built",
        f"- Seed: {params['seed']}. Images: {size} x {size} px, 8-bit grayscale PNG.",
        f"- Per category ({', '.join(CATEGORIES)}): {params['n_train']} training images (`train/good`), "
        f"{params['n_test_good']} normal test images (`test/good`) and {params['n_test_defect']} test images "
        f"per defect kind (`test/<kind>`, kinds: {', '.join(DEFECT_KINDS)}), each with its mask "
        "(`ground_truth/<kind>/<stem>_mask.png`, 0/255); "
        f"{params['n_validation']} normal validation images (`validation/good`), on which the decision "
        "threshold is chosen.",
        f"- Defect scale: {params['defect_scale']:g} (linear size relative to the reference design).",
        "- The brick photograph is in perspective (its courses converge above it); it is first rectified "
        "so that brick width and tilt are the same everywhere "
        "(`_rectify` in `cutswap/data/builtin/textures.py`).",
        "- Each photograph's slow illumination gradient is divided out (Gaussian low-pass, sigma "
        f"{_ILLUMINATION_SIGMA:g} px).",
        "- Normal images: 224 x 224 px windows at random positions, randomly flipped (grass and gravel also "
        "rotated by multiples of 90 degrees; brick only flipped, to keep its courses vertical), with a mild "
        f"brightness jitter (gain 0.92-1.08, offset +-6 grey levels), resized to {size} px.",
        "- Train and test never share pixels: training windows lie in the left 288 columns of each 512 px "
        "wide photograph, test windows (normal and defective) in the right 224 columns. Validation "
        "windows are cut as normal test windows are (same strip, own random draws), so a threshold chosen "
        "on them holds its false-positive rate on the normal test images.",
        "- Defects are drawn on test windows, never pasted or swapped patches:",
        "  - `scratch`: thin curved anti-aliased line, bright on dark areas and dark on bright ones;",
        "  - `stain`: soft-edged irregular blob that darkens (sometimes lightens) and flattens the texture;",
        "  - `hole`: dark elliptical pit with a shaded floor and a rim lit from one side;",
        "  - `crack`: jagged, tapering, branching dark polyline.",
        f"- Masks hold the defect's core plus every pixel it changed by at least {VISIBLE_CHANGE:g} grey "
        "levels, with enclosed holes filled.",
        "- Deterministic: the same parameters and library versions (here Pillow "
        f"{provenance['pillow_version']}, NumPy {provenance['numpy_version']}) give byte-identical files.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def _write_counted_readme(path: Path, wanted: dict, plan: list[_Planned], provenance: dict) -> None:
    size = wanted["image_size"]
    rows = [
        f"| {p.name} | {p.photo} | {p.counts.train} | {p.counts.validation} | {p.counts.test_good} | "
        + ", ".join(
            f"{folder} {n} ({drawer})"
            for (folder, n), drawer in zip(
                p.counts.defects.items(), _drawers_of(p.counts).values(), strict=True
            )
        )
        + " |"
        for p in plan
    ]
    total = {
        "train": sum(p.counts.train for p in plan),
        "test": sum(p.counts.test_good + sum(p.counts.defects.values()) for p in plan),
    }
    lines = [
        "# textures (counted): cutswap's synthetic dataset in another dataset's shape",
        "",
        "Generated by `cutswap.data.builtin.textures.build_counted_textures`, generator version "
        f"{GENERATOR_VERSION}. Do not edit it; rebuild it instead. MVTec AD layout. The images are the "
        "embedded `textures` dataset's (real CC0 photographs inside scikit-image "
        f"{provenance['scikit_image_version']}, synthetic defects with exact masks; see that build's "
        "README): "
        "only the categories and their counts differ. It stands in for a dataset of this shape where its "
        "cost is measured, not its accuracy.",
        "",
        f"Seed: {wanted['seed']}. Images: {size} x {size} px, 8-bit grayscale PNG. Defect scale: "
        f"{wanted['defect_scale']:g}. {total['train']} training and {total['test']} test images.",
        "",
        "| category | photograph | train/good | validation/good | test/good "
        "| test defects: folder count (drawer) |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Deterministic: the same parameters and library versions (here Pillow "
        f"{provenance['pillow_version']}, NumPy {provenance['numpy_version']}) give byte-identical files.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
