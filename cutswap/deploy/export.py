"""A detector as one graph: uint8 images in, image scores and anomaly maps out (``cutswap export``).

Everything between the pixels and the numbers is inside the graph, because an exported model that
disagrees with its checkpoint is almost always one whose preprocessing was left to the caller:

1. uint8 (N, S, S, 3) -> float (N, 3, S, S) / 255, then the trunk's own normalisation (``model.embed``);
2. the trunk's pooled embedding and its Mahalanobis distance under the image density (float64);
3. the ``patch`` route's map (``cutswap.score.localization``) with fixed-shape tensor ops: the crops are two
   ``index_select`` gathers of precomputed row and column indices (the positions, including the last one
   flush with the edge, are known at export time), each crop's distance under the crop density, then the
   receptive-field mean and the Gaussian blur (scipy's ``mode="nearest"``, ``truncate=4``) as matrix
   products ``R^T s R / count`` and ``B m B^T``, which are exact rewrites of the loops and the filter.

PatchCore detectors (``cutswap.score.patchcore``) run the same steps as one graph too: the trunk's
``layer2`` and ``layer3`` maps, their 3 x 3 averages and concatenation (the very ``aggregate`` function
the evaluation uses), each patch's nearest-neighbour distance to the memory bank, the largest one as the
score, and the patch distances upsampled and blurred (the blur as the matrix products above).

The ``gradcam`` route needs a backward pass and ``none`` has no maps, so only ``patch`` and ``patchcore``
detectors are exported: the file's contract is both outputs.

The ONNX file's ``metadata_props`` hold ``cutswap.threshold`` (the decision threshold: anomalous when the
score is above it), ``cutswap.threshold_info`` (how it was chosen, JSON), ``cutswap.image_size``,
``cutswap.map_scale``, ``cutswap.normal_map_max`` (largest map value on held-out normal images) and
``cutswap.provenance`` (run, row, category, method, seed, store keys, versions, JSON; ``row`` is the run's
row the detector is: a variant's name, or its method's).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cutswap.errors import CutswapError
from cutswap.learn.models import ProjectionNet
from cutswap.score.density import GaussianDensity
from cutswap.score.detector import Detector
from cutswap.score.localization import patch_positions
from cutswap.score.patchcore import LAYERS, PatchCore, aggregate, nearest_block

#: Names of the graph's input and outputs.
INPUT, SCORE, MAP = "images", "score", "anomaly_map"


def coverage_matrix(offsets: np.ndarray, patch_size: int, image_size: int) -> np.ndarray:
    """(G, S) float64: ``R[g, y] = 1`` when the crop at ``offsets[g]`` covers pixel ``y`` along one axis.

    The crops of the patch route form a grid, so crop (gy, gx) covers pixel (y, x) exactly when
    ``R[gy, y] R[gx, x] = 1``: the sum of crop scores over the crops covering each pixel is
    ``R^T s R`` and their count ``R^T 1 R`` (``cutswap.score.localization.spread_patch_scores``).
    """
    cover = np.zeros((len(offsets), image_size))
    for g, start in enumerate(offsets):
        cover[g, start : start + patch_size] = 1
    return cover


def blur_matrix(sigma: float, size: int, truncate: float = 4.0) -> np.ndarray:
    """(S, S) float64 ``B`` with ``B @ v`` = ``scipy.ndimage.gaussian_filter1d(v, sigma, mode="nearest")``.

    The same kernel as scipy (radius ``int(truncate * sigma + 0.5)``, weights ``exp(-x^2 / 2 sigma^2)``
    normalised to sum 1); ``nearest`` repeats the edge pixel, which folds the kernel's overhang onto the
    first and last columns.
    """
    if sigma <= 0:
        return np.eye(size)
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * x**2 / sigma**2)
    weights /= weights.sum()
    out = np.zeros((size, size))
    for y in range(size):
        np.add.at(out[y], np.clip(y + x, 0, size - 1), weights)
    return out


class Mahalanobis(nn.Module):
    """Mahalanobis distance (float64) of (B, D) embeddings under a fixed Gaussian density (unit-length
    embeddings first when the density was fitted on them)."""

    def __init__(self, density: GaussianDensity) -> None:
        super().__init__()
        self.l2_normalize = density.l2_normalize
        self.register_buffer("mean", torch.from_numpy(np.asarray(density.mean, np.float64)))
        self.register_buffer("precision", torch.from_numpy(np.asarray(density.precision, np.float64)))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        x = embeddings.double()
        if self.l2_normalize:
            norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
            x = x / torch.where(norms > 0, norms, torch.ones_like(norms))
        d = x - self.mean
        return torch.sqrt(torch.relu(((d @ self.precision) * d).sum(dim=1)))


class PatchCoreGraph(nn.Module):
    """PatchCore's score and maps with fixed-shape tensor ops (module docstring).

    Args:
        model: the frozen trunk's classifier wrapper.
        core: the fitted memory bank and blur.
        image_size: the working size S.
    """

    def __init__(self, model: ProjectionNet, core: PatchCore, image_size: int) -> None:
        super().__init__()
        self.model, self.s = model, image_size
        blur = blur_matrix(core.sigma, image_size)
        self.register_buffer("bank", torch.from_numpy(np.asarray(core.memory_bank, np.float32)))
        self.register_buffer("blur", torch.from_numpy(blur))
        self.register_buffer("blur_t", torch.from_numpy(np.ascontiguousarray(blur.T)))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, S, S) float in [0, 1] -> (scores float64 (N,), maps float32 (N, S, S))."""
        features = aggregate(self.model.stage_features(images, LAYERS))
        n, h, w, d = features.shape
        patches = nearest_block(features.reshape(n * h * w, d), self.bank).reshape(n, 1, h, w)
        scores = patches.reshape(n, h * w).amax(dim=1).double()
        up = F.interpolate(patches, size=(self.s, self.s), mode="bilinear", align_corners=False)[:, 0]
        return scores, (self.blur @ up.double() @ self.blur_t).float()


class PatchMaps(nn.Module):
    """The ``patch`` route's maps with fixed-shape tensor ops (module docstring, step 3).

    Args:
        model: the classifier whose trunk embeds the crops.
        density: the crop density (``Detector.patch_density``).
        image_size, patch_size, stride, sigma: the route's settings, as the evaluate stage used them.
    """

    def __init__(
        self,
        model: ProjectionNet,
        density: GaussianDensity,
        image_size: int,
        patch_size: int,
        stride: int,
        sigma: float,
    ) -> None:
        super().__init__()
        self.model = model
        self.distance = Mahalanobis(density)
        offsets = patch_positions(image_size, patch_size, stride)
        self.g, self.p, self.s = len(offsets), patch_size, image_size
        pixels = (offsets[:, None] + np.arange(patch_size)[None, :]).reshape(-1)
        cover = coverage_matrix(offsets, patch_size, image_size)
        blur = blur_matrix(sigma, image_size)
        self.register_buffer("pixels", torch.from_numpy(pixels.astype(np.int64)))
        self.register_buffer("cover", torch.from_numpy(cover))
        self.register_buffer("cover_t", torch.from_numpy(np.ascontiguousarray(cover.T)))
        self.register_buffer("count", torch.from_numpy(cover.T @ np.ones((len(offsets),) * 2) @ cover))
        self.register_buffer("blur", torch.from_numpy(blur))
        self.register_buffer("blur_t", torch.from_numpy(np.ascontiguousarray(blur.T)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) float in [0, 1] -> (N, S, S) float32 maps."""
        n, g, p = images.shape[0], self.g, self.p
        crops = images.index_select(2, self.pixels).index_select(3, self.pixels)  # (N, 3, G p, G p)
        crops = crops.reshape(n, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(n * g * g, 3, p, p)
        scores = self.distance(self.model.embed(crops)).reshape(n, g, g)
        maps = (self.cover_t @ scores @ self.cover) / self.count
        return (self.blur @ maps @ self.blur_t).float()


class ExportedDetector(nn.Module):
    """uint8 (N, S, S, 3) images -> (score float64 (N,), anomaly map float32 (N, S, S))."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        route = detector.route
        model = detector.model.cpu().eval()
        self.model = model
        self.patchcore = None
        if route.get("localization") == "patchcore" and detector.patchcore is not None:
            self.patchcore = PatchCoreGraph(model, detector.patchcore, detector.image_size)
            return
        if route.get("localization") != "patch" or detector.patch_density is None:
            raise CutswapError(
                f"only detectors evaluated with maps (evaluate.localization=patch, or patchcore) can be "
                f"exported (maps inside the graph); this one used {route.get('localization')!r}. Rerun the "
                "evaluate stage with --set evaluate.localization=patch"
            )
        self.distance = Mahalanobis(detector.density)
        self.maps = PatchMaps(
            model,
            detector.patch_density,
            detector.image_size,
            route["patch_size"],
            route["patch_stride"],
            route["sigma"],
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.permute(0, 3, 1, 2).float() / 255
        if self.patchcore is not None:
            return self.patchcore(x)
        return self.distance(self.model.embed(x)), self.maps(x)


def _score_words(detector: Detector) -> str:
    if detector.patchcore is not None:
        return "PatchCore: largest patch distance to the memory bank"
    return "Mahalanobis distance"


def metadata(detector: Detector, run: str | None = None, row: str | None = None) -> dict[str, str]:
    """The ONNX ``metadata_props`` of an exported detector (module docstring). ``row``: the run's row it
    is (a variant's name; default its method)."""
    provenance = {"run": run, **detector.provenance}
    provenance["row"] = row or provenance.get("method")
    return {
        "cutswap.threshold": repr(float(detector.threshold.get("value", math.nan))),
        "cutswap.threshold_info": json.dumps(detector.threshold, default=float, sort_keys=True),
        "cutswap.image_size": str(detector.image_size),
        "cutswap.map_scale": repr(float(detector.map_scale)),
        "cutswap.normal_map_max": repr(float(detector.normal_map_max or math.nan)),
        "cutswap.provenance": json.dumps(provenance, default=str, sort_keys=True),
        "cutswap.contract": (
            f"input {INPUT}: uint8 (N, {detector.image_size}, {detector.image_size}, 3) RGB at the working "
            f"size; outputs {SCORE}: float64 (N,) anomaly score ({_score_words(detector)}), anomalous when "
            f"above cutswap.threshold; {MAP}: float32 (N, S, S) anomaly map"
        ),
    }


def export_onnx(
    detector: Detector, path: Path, run: str | None = None, opset: int = 18, row: str | None = None
) -> Path:
    """Write the detector as one ONNX file with a dynamic batch axis and its metadata.

    Raises:
        CutswapError: the detector has no exportable map route.
    """
    import onnx

    module = ExportedDetector(detector).eval()
    size = detector.image_size
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
            input_names=[INPUT],
            output_names=[SCORE, MAP],
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    model = program.model_proto
    for key, value in metadata(detector, run, row).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    model.doc_string = "cutswap anomaly detector: " + metadata(detector, run, row)["cutswap.contract"]
    onnx.save_model(model, str(path))
    return path


def export_program(detector: Detector, path: Path, run: str | None = None, row: str | None = None) -> Path:
    """Write the same module as a ``torch.export`` program (``.pt2``), its metadata in ``extra_files``.

    This stands in for TorchScript, which torch 2.14 deprecates (``torch.jit.trace`` warns); load it with
    ``torch.export.load(path).module()`` and call it on uint8 images like the ONNX graph.
    """
    module = ExportedDetector(detector).eval()
    size = detector.image_size
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    with torch.no_grad():
        program = torch.export.export(
            module, (example,), dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}}
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"cutswap.json": json.dumps(metadata(detector, run, row), sort_keys=True)}
    torch.export.save(program, str(path), extra_files=extra)
    return path


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``cutswap.*`` metadata of an exported ONNX file, JSON values decoded."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    out: dict[str, Any] = {}
    for key, value in props.items():
        if key.startswith("cutswap."):
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
    return out
