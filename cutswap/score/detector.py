"""A detector as one object: classifier, densities (or PatchCore's memory bank), threshold,
and what made them.

The evaluate stage builds a ``Detector`` from what it fits and scores the test images with it; ``cutswap
predict`` and ``cutswap export`` load the same object back from the stores
(``cutswap.pipeline.readers.load_detector``). So the scores of new images come from the very code that
produced the benchmark's numbers, not from a copy of it that could drift.

Threshold, chosen on normal data only (``calibration_split``, ``choose_threshold``)
    The calibration images are the category's normal *validation* images (split ``val``: the built-in
    ``textures``, MVTec LOCO, an MVTec AD-style ``validation/good``) when it has any; otherwise a fraction
    ``evaluate.threshold_holdout`` of its normal *training* images (a fixed permutation, seed
    ``HOLDOUT_SEED``), held out of every density fit. The guarantee below needs their scores to be
    exchangeable with those of new normal images. Held-out training images are so only for the rows that
    train nothing (imagenet-gde, patchcore), and only when training and test images come from one process
    (MVTec AD, VisA). A trained classifier saw them in training (only the densities leave them out), and
    training images may differ systematically from the test ones (another part of a photograph, another
    shift or lot): either way they score lower than new normal images and the threshold sits too low.
    ``operating_point_check`` measures that on the test set; validation images avoid it. Given
    exchangeable scores, the threshold is an order statistic of them: with ``n`` held-out scores and a
    target false-positive rate ``a``, the ``k``-th smallest, ``k = ceil((1 - a) (n + 1))``, is exceeded by
    a new normal image with probability at most ``a`` (the split-conformal bound). Few held-out images
    cannot resolve a small ``a``: when ``k > n`` the largest held-out score is used, and the expected
    false-positive rate it gives, ``(n + 1 - k) / (n + 1)`` with ``k`` capped at ``n``, is recorded beside
    the target (``expected_fpr``), so nobody reads 1 % where 5 % is what ``n`` allows. Test labels are
    never read: a category whose test set has no anomalies still gets its threshold.
    An image is anomalous when its score is *above* the threshold.

Checking the operating point on the test set (``operating_point_check``)
    Conditional on the calibration scores, the false-positive rate of the ``k``-th order statistic is a
    random variable, ``Beta(n + 1 - k, k)`` over calibration draws; the number of the ``m`` normal test
    images above the threshold is then beta-binomial, ``BetaBinom(m, n + 1 - k, k)``. Its upper
    ``1 - CHECK_LEVEL`` quantile is the most false positives the held-out sample allows; more than that
    says the calibration images were not exchangeable with the test's normal images, and the operating
    point is marked as not holding (the report and ``cutswap predict`` say so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cutswap.errors import SettingsError
from cutswap.learn.models import ProjectionNet
from cutswap.score.density import GaussianDensity
from cutswap.score.localization import embed_images, gradcam_maps, score_patch_maps
from cutswap.score.patchcore import PatchCore

#: Seed of the permutation that picks the held-out normal training images (part of the evaluate code).
HOLDOUT_SEED = 0

#: One-sided level of the operating-point check: a test false-positive count above the beta-binomial's
#: 1 - CHECK_LEVEL quantile marks the operating point. 1 %: a report holds tens of operating points.
CHECK_LEVEL = 0.01


@torch.inference_mode()
def threshold_split(indices: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split normal training ``indices`` into (fitted, held out), each sorted.

    ``round(fraction * n)`` images are held out, at least one when ``fraction > 0``, picked by a fixed
    permutation (``HOLDOUT_SEED``) so the split is the same on every run and machine.

    Raises:
        SettingsError: fewer than 2 images would be left for the density fit.
    """
    indices = np.asarray(indices)
    n = len(indices)
    held = 0 if fraction <= 0 else max(1, int(math.floor(fraction * n + 0.5)))
    if n - held < 2:
        raise SettingsError(
            f"evaluate.threshold_holdout={fraction} holds out {held} of {n} normal training images, leaving "
            f"{n - held} for the density fit, which needs at least 2; lower evaluate.threshold_holdout or "
            "add training images"
        )
    order = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    return np.sort(indices[order[held:]]), np.sort(indices[order[:held]])


def calibration_split(
    splits: np.ndarray, labels: np.ndarray, fraction: float
) -> tuple[np.ndarray, np.ndarray, str]:
    """Rows (fitted, calibration, source) of a category's sample table (module docstring).

    ``source`` is ``"validation"`` when the normal validation images (split ``val``) are the calibration
    set (every normal training image is then fitted), else ``"train holdout"`` (``threshold_split``).
    """
    splits, normal = np.asarray(splits), np.asarray(labels) == 0
    train = np.flatnonzero(splits == "train")
    validation = np.flatnonzero((splits == "val") & normal)
    if len(validation):
        return train, validation, "validation"
    fit, held = threshold_split(train, fraction)
    return fit, held, "train holdout"


def choose_threshold(holdout_scores: np.ndarray, fpr: float) -> dict[str, Any]:
    """The threshold at target false-positive rate ``fpr`` from held-out normal scores (module docstring).

    Returns:
        ``value`` (NaN without held-out scores), ``fpr_target``, ``n_holdout``, ``rank`` (1-based order
        statistic used), ``expected_fpr`` ((n + 1 - rank) / (n + 1)), ``holdout_fpr`` (fraction of the
        held-out scores above it), ``resolved`` (False: ``n`` is too small for ``fpr``, the maximum was
        used), ``rule``.
    """
    if not 0 < fpr < 1:
        raise ValueError(f"the target false-positive rate must be in (0, 1), got {fpr}")
    scores = np.sort(np.asarray(holdout_scores, dtype=np.float64))
    n = len(scores)
    rule = "k-th smallest held-out normal score, k = ceil((1 - fpr) (n + 1)) capped at n; anomalous if above"
    if n == 0:
        return {
            "value": float("nan"),
            "fpr_target": fpr,
            "n_holdout": 0,
            "rank": 0,
            "expected_fpr": float("nan"),
            "holdout_fpr": float("nan"),
            "resolved": False,
            "rule": rule,
        }
    wanted = math.ceil((1 - fpr) * (n + 1) - 1e-9)  # the epsilon absorbs (1 - 0.01) * 100 = 98.99999...
    rank = min(max(wanted, 1), n)
    value = float(scores[rank - 1])
    return {
        "value": value,
        "fpr_target": fpr,
        "n_holdout": n,
        "rank": rank,
        "expected_fpr": (n + 1 - rank) / (n + 1),
        "holdout_fpr": float(np.mean(scores > value)),
        "resolved": wanted <= n,
        "rule": rule,
    }


def operating_point(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """Precision, recall and false-positive rate of ``score > threshold`` on labelled images.

    Each is NaN where undefined or meaningless (no image flagged; no anomaly, for precision and recall;
    no normal image, for the false-positive rate), never 0 or 1 by convention: a test set without
    anomalies reports neither a perfect recall nor a precision of 0.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    flagged = scores > threshold
    tp = int((flagged & labels).sum())
    fp = int((flagged & ~labels).sum())
    fn = int((~flagged & labels).sum())
    tn = int((~flagged & ~labels).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    has_anomalies = bool(labels.any())
    return {
        "precision": ratio(tp, tp + fp) if has_anomalies else float("nan"),
        "recall": ratio(tp, tp + fn),
        "fpr": ratio(fp, fp + tn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def operating_point_check(threshold: dict[str, Any], false_positives: int, normals: int) -> dict[str, Any]:
    """Whether ``false_positives`` of ``normals`` normal test images above the threshold is within what
    its calibration sample allows (module docstring): ``allowed_fp`` (the beta-binomial's upper
    ``1 - CHECK_LEVEL`` quantile), ``p_value`` (the chance of at least this many under exchangeability),
    ``holds`` (None where nothing can be checked: no threshold or no normal test image).
    """
    n, rank = int(threshold.get("n_holdout", 0)), int(threshold.get("rank", 0))
    if n == 0 or rank == 0 or normals == 0:
        return {"allowed_fp": None, "p_value": None, "holds": None, "level": CHECK_LEVEL}
    from scipy.stats import betabinom  # scipy comes with scikit-learn; imported here, used once per job

    law = betabinom(normals, n + 1 - rank, rank)
    allowed = int(law.ppf(1 - CHECK_LEVEL))
    p_value = float(law.sf(false_positives - 1))
    return {
        "allowed_fp": allowed,
        "p_value": p_value,
        "holds": false_positives <= allowed,
        "level": CHECK_LEVEL,
    }


@dataclass
class Detector:
    """A classifier's trunk with its densities (or PatchCore's memory bank), threshold and route, scoring
    uint8 images.

    Attributes:
        model: the classifier (eval mode); only its trunk's embedding is used for scores and patch maps.
        density: the image-level Gaussian density (fitted on the non-held-out normal training images);
            None for PatchCore.
        route: the localization settings that made the maps
            (``cutswap.pipeline.stages.evaluate.localization_key``); ``localization`` is ``patchcore`` for a
            PatchCore detector with maps.
        patch_density: the crop-level density of the ``patch`` route (None for the other routes).
        patchcore: the PatchCore scorer (``cutswap.score.patchcore``), which replaces both densities.
        image_size: the working size S; ``score`` takes (N, S, S, 3) images.
        threshold: what ``choose_threshold`` returned (``value`` is the decision threshold).
        holdout_scores: the held-out normal scores the threshold came from (``--fpr`` re-chooses on them).
        map_scale: the largest map value on the evaluated test set.
        normal_map_max: the largest map value on the held-out normal images (None: no maps or none held
            out); overlays put it mid-scale, so what exceeds every normal image stands out.
        provenance: what made the detector (run, category, method, seed, store keys, versions).
    """

    model: ProjectionNet
    density: GaussianDensity | None
    route: dict[str, Any]
    image_size: int
    patch_density: GaussianDensity | None = None
    patchcore: PatchCore | None = None
    threshold: dict[str, Any] = field(default_factory=dict)
    holdout_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    map_scale: float = 1.0
    normal_map_max: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    patch_batch_size: int = 512
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def display_scale(self) -> float:
        """The map value shown as the top of the colour scale: twice the largest held-out normal value
        (a map's tail is long, so the test set's maximum would leave every other image dark), else
        ``map_scale``."""
        return 2 * self.normal_map_max if self.normal_map_max else self.map_scale

    def _check(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (*[self.image_size] * 2, 3):
            raise ValueError(
                f"images must be uint8 (N, {self.image_size}, {self.image_size}, 3), the detector's working "
                f"size; got {images.dtype} {images.shape} "
                f"(read files with cutswap.data.images.load_rgb(path, {self.image_size}))"
            )
        return images

    def _patchcore_scores(self, images: np.ndarray) -> np.ndarray:
        return self.patchcore.patch_scores(self.model, images, self.batch_size, self.device)

    def image_scores(self, images: np.ndarray) -> np.ndarray:
        """Float64 (N,) scores, larger = more anomalous: the Mahalanobis distance of each image's embedding,
        or PatchCore's largest patch distance."""
        images = self._check(images)
        if self.patchcore is not None:
            return self.patchcore.image_scores(self._patchcore_scores(images))
        return self.density.score(embed_images(self.model, images, self.batch_size, self.device))

    def anomaly_maps(self, images: np.ndarray) -> np.ndarray | None:
        """float32 (N, S, S) maps by the detector's route; None for ``none``, and for ``gradcam`` of a
        model without an anomaly logit (the no-training baseline)."""
        images = self._check(images)
        route = self.route.get("localization", "none")
        if route == "patchcore":
            return self.patchcore.maps(self._patchcore_scores(images), self.image_size)
        if route == "patch":
            if self.patch_density is None:
                raise ValueError("the patch route needs the detector's patch_density")
            return score_patch_maps(
                self.model,
                self.patch_density,
                images,
                self.route["patch_size"],
                self.route["patch_stride"],
                self.route["sigma"],
                self.patch_batch_size,
                self.device,
            )
        if route == "gradcam" and self.model.classifier.out_features > 1:
            return gradcam_maps(self.model, images, self.route["gradcam_layer"], self.batch_size, self.device)
        return None

    def score(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores float64 (N,), maps float32 (N, S, S) or None) of uint8 (N, S, S, 3) images; PatchCore's
        patch distances are searched once for both."""
        if self.patchcore is not None:
            patches = self._patchcore_scores(self._check(images))
            maps = None
            if self.route.get("localization") == "patchcore":
                maps = self.patchcore.maps(patches, self.image_size)
            return self.patchcore.image_scores(patches), maps
        return self.image_scores(images), self.anomaly_maps(images)
