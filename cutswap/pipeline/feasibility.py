"""What a dataset's image counts let a run do and measure, checked from its sample table before any work.

The sample table (``cutswap.data.layouts.common.COLUMNS``: category, split, label, ...) is known the moment
the dataset is listed, so a category that cannot be evaluated, a batch that cannot be filled or a schedule
that cannot finish is refused then, with exit code 2, rather than after saliency, clustering and
training have run. What a test set cannot *measure* is not an error (a category without anomalies still
trains and gets its threshold): it is returned as warnings, and the values it leaves undefined are
``n/a`` in the report, never 0.

Light on purpose (no torch): ``cutswap run`` calls it before Prefect starts.
"""

from __future__ import annotations

import math

import pandas as pd

from cutswap.errors import DatasetError, SettingsError
from cutswap.method.registry import get_method
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.variants import run_rows

__all__ = ["TRAINING_CEILING", "check_feasible", "training_days_lower_bound"]

#: Images per second that no single device trains ResNet-18 faster than at 224 px (forward and backward,
#: mixed precision; an H100 does roughly half of it), scaled by pixel count to other sizes. Only a
#: *lower* bound on a run's time comes from it, so a run refused by ``train.max_days`` cannot finish in
#: that time on one device whatever it runs on.
TRAINING_CEILING = 20_000.0

#: Images the Gaussian density (and PatchCore's bank) needs to be fitted on.
MIN_FIT_IMAGES = 2


def check_feasible(settings: Settings, table: pd.DataFrame) -> list[str]:
    """Refuse a run its image counts or schedule make impossible; return what its test sets cannot measure.

    Raises:
        DatasetError: a category has too few normal training images for the threshold hold-out and the
            density fit (naming the category, the counts and the setting to change).
        SettingsError: ``train.batch_size`` exceeds a category's training images, or the training alone
            would take longer than ``train.max_days`` on one device even at ``TRAINING_CEILING``.

    Returns:
        One warning per category whose test set leaves a metric undefined.
    """
    counts = _counts(table)
    _check_fit(settings, counts)
    _check_batch(settings, counts)
    _check_duration(settings, counts)
    return [w for category, row in counts.iterrows() for w in _undefined(str(category), row)]


def _counts(table: pd.DataFrame) -> pd.DataFrame:
    """Per category: training, validation (normal), normal test and anomalous test images."""
    normal = table["label"] == 0
    parts = {
        "train": table["split"] == "train",
        "validation": (table["split"] == "val") & normal,
        "test_normal": (table["split"] == "test") & normal,
        "test_anomalous": (table["split"] == "test") & ~normal,
    }
    return pd.DataFrame({k: mask.groupby(table["category"]).sum() for k, mask in parts.items()}).astype(int)


def _held_out(n_train: int, fraction: float) -> int:
    """How many training images ``cutswap.score.detector.threshold_split`` holds out (same rounding)."""
    return 0 if fraction <= 0 else max(1, math.floor(fraction * n_train + 0.5))


def _check_fit(settings: Settings, counts: pd.DataFrame) -> None:
    fraction = settings.evaluate.threshold_holdout
    short = []
    for category, row in counts.iterrows():
        if row["validation"]:  # the threshold is chosen on them: every training image is fitted
            if row["train"] < MIN_FIT_IMAGES:
                short.append(f"{category} ({row['train']} training image(s); the threshold uses validation)")
            continue
        held = _held_out(row["train"], fraction)
        if row["train"] - held < MIN_FIT_IMAGES:
            short.append(f"{category} ({row['train']} training images, {held} held out)")
    if short:
        raise DatasetError(
            f"too few normal training images to fit the detector (at least {MIN_FIT_IMAGES}, after the "
            f"threshold hold-out evaluate.threshold_holdout={fraction} where there are no validation "
            f"images): {', '.join(short)}; add training images, or, for a category without validation "
            "images, lower evaluate.threshold_holdout or give it normal images to choose the threshold on "
            "(validation/good in the MVTec AD-style layouts)"
        )


def _check_batch(settings: Settings, counts: pd.DataFrame) -> None:
    smallest = counts["train"].idxmin()
    n = int(counts.loc[smallest, "train"])
    for row in run_rows(settings):
        batch = row.settings.train.batch_size
        if get_method(row.method).trains and batch > n:
            variant = row.control_of or row.name
            where = f"variants.{variant}: train.batch_size" if row.overrides else "train.batch_size"
            raise SettingsError(
                f"{where} {batch} is larger than the {n} training images of category {smallest!r}: each "
                f"step would repeat images within its batch; set it to at most {n}"
            )


def training_days_lower_bound(settings: Settings, n_categories: int) -> float:
    """Days the run's trainings take at least on one device: images processed over ``TRAINING_CEILING``
    (scaled to the working size). A step processes ``batch_size`` normal images and ``batch_size`` per
    negative kind (``TrainSettings``); every row counts, variants included."""
    images = 0
    for row in run_rows(settings):  # a variant may train longer than its method
        cfg, spec = row.settings.train, get_method(row.method)
        if spec.trains:
            images += cfg.steps * cfg.batch_size * spec.num_classes * len(settings.train.seeds)
    rate = TRAINING_CEILING * (224 / settings.dataset.image_size) ** 2
    return images * n_categories / rate / 86_400


def _check_duration(settings: Settings, counts: pd.DataFrame) -> None:
    days = training_days_lower_bound(settings, len(counts))
    limit = settings.train.max_days
    if days > limit:
        raise SettingsError(
            f"train.steps {settings.train.steps} x train.batch_size {settings.train.batch_size} over "
            f"{len(counts)} categories would train for at least {days:,.1f} days on one device (at "
            f"{TRAINING_CEILING:,.0f} images/s at 224 px, faster than any device trains), above "
            f"train.max_days {limit:g}; lower train.steps, or raise train.max_days if that is meant"
        )


def _undefined(category: str, row: pd.Series) -> list[str]:
    """What the category's test set cannot measure."""
    if row["test_anomalous"] == 0 and row["test_normal"] == 0:
        return [f"category {category!r}: its test set is empty, so no metric is measured (n/a)"]
    if row["test_anomalous"] == 0:
        return [
            f"category {category!r}: its test set has no anomalous image, so image and pixel AUROC, "
            "F1Max, AUPRO, precision and recall are undefined (n/a); only the false-positive rate is measured"
        ]
    if row["test_normal"] == 0:
        return [
            f"category {category!r}: its test set has no normal image, so image AUROC and the false-positive "
            "rate are undefined (n/a)"
        ]
    return []
