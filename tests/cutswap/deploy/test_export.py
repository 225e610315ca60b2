"""``cutswap export``: the graph's fixed-shape patch route equals the stage's maps, and the ONNX file run by
onnxruntime, and the ``torch.export`` program, on the run's test images give the checkpoint's scores and
maps, for every row of the demo that can export (``ROWS``) on both trunks (``TRUNKS``).

Tolerances: scores 1e-4 relative (the issue's contract; float32 trunk, float64 density in both), maps
1e-4 of the map scale (the largest test map value), both far above the ~1e-6 that float32 convolution
order differences between PyTorch and onnxruntime give."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from scipy import ndimage

from cutswap.app.cli import main
from cutswap.deploy.export import (
    MAP,
    SCORE,
    ExportedDetector,
    PatchMaps,
    blur_matrix,
    coverage_matrix,
    export_onnx,
    export_program,
    read_metadata,
)
from cutswap.errors import CutswapError
from cutswap.learn.models import TRUNKS
from cutswap.method.registry import get_method
from cutswap.pipeline.readers import load_detector
from cutswap.pipeline.stores import open_store
from cutswap.score.localization import patch_positions, spread_patch_scores
from tests.support.runs import TinyRun

SCORE_RTOL = 1e-4
MAP_TOL = 1e-4  # of the map scale
#: The demo's rows (``configs/demo.yaml``); each has maps inside the graph (the patch route, or PatchCore's
#: own), which is what exports. Grad-CAM maps need a backward pass and are refused, by design.
ROWS = ("cutswap", "random-swap", "cutpaste", "imagenet-gde", "patchcore")
DEMO = Path(__file__).resolve().parents[3] / "configs" / "demo.yaml"


def _test_images(tiny_run, method: str) -> np.ndarray:
    index = open_store(tiny_run.evaluations[method])["index"][:]
    return open_store(tiny_run.ingest)["images"][:][index]


@pytest.mark.parametrize(
    ("size", "patch", "stride", "sigma"), [(37, 16, 8, 2.0), (32, 16, 8, 0.0), (20, 7, 3, 1.3)]
)
def test_matrix_forms_equal_the_loops_and_scipy(size, patch, stride, sigma):
    """The last crop sits flush with the edge (37 = 21 + 16, not a multiple of the stride)."""
    rng = np.random.default_rng(0)
    offsets = patch_positions(size, patch, stride)
    g = len(offsets)
    scores = rng.random((3, g, g))
    cover = coverage_matrix(offsets, patch, size)
    count = cover.T @ np.ones((g, g)) @ cover
    spread = np.einsum("gy,ngh,hx->nyx", cover, scores, cover) / count
    np.testing.assert_allclose(spread, spread_patch_scores(scores, offsets, patch, size), rtol=1e-12)
    blur = blur_matrix(sigma, size)
    expected = ndimage.gaussian_filter(spread, sigma=(0, sigma, sigma), mode="nearest") if sigma else spread
    np.testing.assert_allclose(blur @ spread @ blur.T, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", ["cutpaste", pytest.param("imagenet-gde", marks=pytest.mark.slow)])
def test_graph_module_equals_the_checkpoint_path(tiny_run, method):
    detector = load_detector(tiny_run.evaluations[method])
    images = _test_images(tiny_run, method)
    scores, maps = detector.score(images)
    module = ExportedDetector(detector).eval()
    with torch.no_grad():
        got_scores, got_maps = module(torch.from_numpy(images))
        patch_only = PatchMaps(
            detector.model,
            detector.patch_density,
            detector.image_size,
            detector.route["patch_size"],
            detector.route["patch_stride"],
            detector.route["sigma"],
        )(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    np.testing.assert_allclose(got_scores.numpy(), scores, rtol=1e-9)
    np.testing.assert_allclose(got_maps.numpy(), maps, rtol=0, atol=1e-5 * maps.max())
    np.testing.assert_allclose(patch_only.numpy(), got_maps.numpy(), rtol=0, atol=0)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    code = main(
        [
            "--reports",
            str(tiny_run.reports),
            "export",
            tiny_run.run,
            "--method",
            "cutpaste",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out


def test_onnx_file_matches_the_checkpoint_on_the_runs_test_images(tiny_run, exported):
    detector = load_detector(tiny_run.evaluations["cutpaste"])
    images = _test_images(tiny_run, "cutpaste")
    scores, maps = detector.score(images)
    session = ort.InferenceSession(str(exported / "detector.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [SCORE, MAP]
    got_scores, got_maps = session.run(None, {"images": images})
    assert got_scores.shape == scores.shape and got_maps.shape == maps.shape
    score_err = float(np.max(np.abs(got_scores - scores) / np.abs(scores)))
    map_err = float(np.max(np.abs(got_maps - maps)) / detector.map_scale)
    print(
        f"ONNX parity on {len(images)} test images: scores {score_err:.2e} relative, "
        f"maps {map_err:.2e} of scale"
    )
    assert score_err <= SCORE_RTOL and map_err <= MAP_TOL
    # The batch axis is dynamic: one image alone gives its score in the batch.
    alone = session.run(None, {"images": images[2:3]})
    np.testing.assert_allclose(alone[0], got_scores[2:3], rtol=SCORE_RTOL)


def test_onnx_metadata_hold_threshold_and_provenance(tiny_run, exported):
    attrs = open_store(tiny_run.evaluations["cutpaste"]).attrs
    meta = read_metadata(exported / "detector.onnx")
    assert meta["cutswap.threshold"] == attrs["threshold"]["value"]
    assert meta["cutswap.threshold_info"]["n_holdout"] == attrs["n_holdout"]
    assert meta["cutswap.image_size"] == attrs["metric_resolution"][0]
    prov = meta["cutswap.provenance"]
    assert (prov["run"], prov["method"], prov["category"]) == (tiny_run.run, "cutpaste", "brick")
    assert prov["evaluate_key"] == tiny_run.evaluations["cutpaste"].key


def test_torch_export_program_gives_the_same_outputs(tiny_run, exported):
    images = torch.from_numpy(_test_images(tiny_run, "cutpaste"))
    extra = {"cutswap.json": ""}
    program = torch.export.load(str(exported / "detector.pt2"), extra_files=extra)
    scores, maps = load_detector(tiny_run.evaluations["cutpaste"]).score(images.numpy())
    with torch.no_grad():
        got_scores, got_maps = program.module()(images)
    # The program runs the default memory layout, the detector channels-last: float32 convolution order
    # differences (the ~1e-6 of the module docstring), nothing else.
    np.testing.assert_allclose(got_scores.numpy(), scores, rtol=1e-6)
    np.testing.assert_allclose(got_maps.numpy(), maps, rtol=0, atol=1e-5 * maps.max())
    assert "cutswap.threshold" in extra["cutswap.json"]


def test_patchcore_exports_with_onnx_parity(tiny_run, tmp_path):
    """The coreset search, the largest patch distance and the upsampled, blurred maps, inside one graph."""
    detector = load_detector(tiny_run.evaluations["patchcore"])
    assert detector.patchcore is not None and detector.density is None
    images = _test_images(tiny_run, "patchcore")
    scores, maps = detector.score(images)
    with torch.no_grad():
        got_scores, got_maps = ExportedDetector(detector).eval()(torch.from_numpy(images))
    np.testing.assert_allclose(got_scores.numpy(), scores, rtol=1e-6)
    np.testing.assert_allclose(got_maps.numpy(), maps, rtol=0, atol=1e-5 * maps.max())
    path = export_onnx(detector, tmp_path / "patchcore.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_scores, onnx_maps = session.run(None, {"images": images})
    np.testing.assert_allclose(onnx_scores, scores, rtol=SCORE_RTOL)
    assert np.max(np.abs(onnx_maps - maps)) <= MAP_TOL * detector.map_scale
    assert "PatchCore" in read_metadata(path)["cutswap.contract"]


def test_detectors_without_patch_maps_are_refused(tiny_run):
    detector = load_detector(tiny_run.evaluations["cutpaste"])
    detector.route = {"localization": "none"}
    with pytest.raises(CutswapError, match="evaluate.localization=patch"):
        ExportedDetector(detector)


def test_patchcore_program_on_the_demos_baseline_trunk(tiny_run, tmp_path):
    """The issue's traceback, quickly: ``torch.export`` of PatchCore on EfficientNet-Lite0 (the demo's
    baseline trunk) raised ``KeyError: 'layer2'``; the program now gives the checkpoint's outputs."""
    assert tiny_run.trunk_of("patchcore") == "efficientnet_lite0"
    detector = load_detector(tiny_run.evaluations["patchcore"])
    images = _test_images(tiny_run, "patchcore")
    scores, maps = detector.score(images)
    program = torch.export.load(str(export_program(detector, tmp_path / "detector.pt2")))
    with torch.no_grad():
        got_scores, got_maps = program.module()(torch.from_numpy(images))
    np.testing.assert_allclose(got_scores.numpy(), scores, rtol=1e-6)
    np.testing.assert_allclose(got_maps.numpy(), maps, rtol=0, atol=1e-5 * maps.max())


def test_rows_are_the_demos():
    """The matrix below follows the demo: a row added to it is exported here too (or this says why not)."""
    assert set(yaml.safe_load(DEMO.read_text())["train"]["methods"]) == set(ROWS)


def _row_run(request: pytest.FixtureRequest, method: str, trunk: str) -> TinyRun:
    """The run holding ``method`` on ``trunk``: ``demo_run`` has the classifiers on ResNet-18 and the
    no-training rows on EfficientNet-Lite0, ``swapped_run`` the other way round (only the one needed is
    built). The trunk is checked in the train store, so no case tests another trunk than its name says."""
    on_demo = (trunk == "resnet18") == get_method(method).trains
    run = request.getfixturevalue("demo_run" if on_demo else "swapped_run")
    assert run.trunk_of(method) == trunk
    return run


def _row_detector(request, method: str, trunk: str):
    """The row's run, its loaded detector, its test images and the detector's (scores, maps) of them."""
    run = _row_run(request, method, trunk)
    detector = load_detector(run.evaluations[method])
    images = _test_images(run, method)
    return run, detector, images, detector.score(images)


@pytest.mark.slow
@pytest.mark.parametrize("trunk", TRUNKS)
@pytest.mark.parametrize("method", ROWS)
def test_onnx_parity_of_every_row_on_both_trunks(request, tmp_path, method, trunk):
    run, detector, images, (scores, maps) = _row_detector(request, method, trunk)
    path = export_onnx(detector, tmp_path / "detector.onnx", run=run.run)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_scores, got_maps = session.run(None, {"images": images})
    assert got_scores.shape == scores.shape and got_maps.shape == maps.shape
    score_err = float(np.max(np.abs(got_scores - scores) / np.abs(scores)))
    map_err = float(np.max(np.abs(got_maps - maps)) / detector.map_scale)
    print(f"{method} on {trunk}, ONNX: scores {score_err:.2e} relative, maps {map_err:.2e} of scale")
    assert score_err <= SCORE_RTOL and map_err <= MAP_TOL
    alone = session.run(None, {"images": images[1:2]})  # the batch axis is dynamic
    np.testing.assert_allclose(alone[0], got_scores[1:2], rtol=SCORE_RTOL)
    provenance = read_metadata(path)["cutswap.provenance"]
    assert (provenance["run"], provenance["method"], provenance["trunk"]["name"]) == (run.run, method, trunk)


@pytest.mark.slow
@pytest.mark.parametrize("trunk", TRUNKS)
@pytest.mark.parametrize("method", ROWS)
def test_program_parity_of_every_row_on_both_trunks(request, tmp_path, method, trunk):
    run, detector, images, (scores, maps) = _row_detector(request, method, trunk)
    extra = {"cutswap.json": ""}
    path = export_program(detector, tmp_path / "detector.pt2", run=run.run)
    program = torch.export.load(str(path), extra_files=extra)
    with torch.no_grad():
        got_scores, got_maps = program.module()(torch.from_numpy(images))
    # The program runs the default memory layout, the detector channels-last: float32 convolution order
    # differences (the ~1e-6 of the module docstring), nothing else.
    np.testing.assert_allclose(got_scores.numpy(), scores, rtol=1e-6)
    np.testing.assert_allclose(got_maps.numpy(), maps, rtol=0, atol=1e-5 * maps.max())
    provenance = json.loads(json.loads(extra["cutswap.json"])["cutswap.provenance"])
    assert (provenance["run"], provenance["method"], provenance["trunk"]["name"]) == (run.run, method, trunk)
