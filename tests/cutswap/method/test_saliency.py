"""Multilevel LayerCAM, checked against an independent implementation (the grad-cam package).

How the comparison with ``pytorch_grad_cam.LayerCAM`` is made apples to apples: for one target layer,
grad-cam computes ``M = max(sum_k max(G_k, 0) * A_k, 0)`` at the layer's resolution, then
``scale_cam_image``: min-max normalise, then ``cv2.resize`` (INTER_LINEAR: half-pixel centres and clamped
borders, the same convention as PyTorch's ``align_corners=False``); then ``aggregate_multi_layers`` takes the
mean over its one layer and min-max normalises again. Bilinear resizing is linear and min-max normalisation
is invariant to a positive affine change of its input, so ``minmax(resize(minmax(M))) == minmax(resize(M))``,
which is exactly what we compute (upsample, then normalise), up to grad-cam's 1e-7 in the denominator. The two
therefore agree at the full image size to float32 rounding (about 1e-6 measured), hence ``atol=1e-5``.

With ``input_size`` the same comparison holds on the same resized input: the test resizes the batch to
``input_size`` itself (bilinear, antialiased when shrinking, as the extractor documents), runs grad-cam on
it, and has grad-cam resample its raw per-level map (``h x w`` of the resized input) straight to the
working size instead of to the input tensor's size (its ``get_target_width_height`` is the one place that
decides the target size). The extractor resizes the normalised image and the test the ``[0, 1]`` one, which
differ by float rounding only (normalisation is affine and the resampling weights sum to one).

grad-cam gets gradients from ``loss.backward()``, which needs trainable parameters, so it runs on a deep copy
of the frozen backbone with ``requires_grad`` turned back on; the copy has identical weights. One grad-cam
object per level, as its users would do to get separate per-level maps.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
import zarr
from pytorch_grad_cam import LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from skimage import data as skdata
from torch import nn

from cutswap.errors import SettingsError
from cutswap.method import saliency as saliency_module
from cutswap.method.backbones import RESNET18_MEAN, RESNET18_STD, Backbone, load_backbone
from cutswap.method.saliency import SaliencyExtractor, saliency_maps
from cutswap.pipeline.settings import SaliencySettings, load_settings

ATOL = 1e-5  # see the module docstring


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()


def _to_unit_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


class _LayerCAMToSize(LayerCAM):
    """grad-cam's LayerCAM, resampling its raw map to a given ``(width, height)`` instead of the input's."""

    def __init__(self, *args: object, size: tuple[int, int], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._size = size

    def get_target_width_height(self, input_tensor: torch.Tensor) -> tuple[int, int]:
        return self._size


def _resize_unit_float(x: torch.Tensor, size: int) -> torch.Tensor:
    """The extractor's documented input resize: bilinear, half-pixel, antialiased when a side shrinks."""
    shrinks = size < x.shape[-2] or size < x.shape[-1]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinks)


def gradcam_maps(
    backbone: Backbone, images: np.ndarray, target_class: int | None = None, input_size: int | None = None
) -> np.ndarray:
    """Reference maps (B, 4, H, W) from grad-cam, one LayerCAM per level (targets: top-1 unless given).

    With ``input_size``, grad-cam sees the batch resized to ``input_size`` squared and its maps are resampled
    from each level's resolution straight to the images' own ``H x W``.
    """
    model = copy.deepcopy(backbone.model).requires_grad_(True)
    names = {module: name for name, module in backbone.model.named_modules()}
    x = _to_unit_float(images)
    height, width = x.shape[-2:]
    if input_size is not None:
        x = _resize_unit_float(x, input_size)
    x = backbone.normalize(x)
    targets = None if target_class is None else [ClassifierOutputTarget(target_class)] * len(images)
    maps = []
    for module in backbone.levels.values():
        layer = model.get_submodule(names[module])
        with _LayerCAMToSize(model=model, target_layers=[layer], size=(width, height)) as cam:
            maps.append(cam(input_tensor=x, targets=targets))
    return np.stack(maps, axis=1)


@pytest.fixture(scope="module")
def effnet() -> Backbone:
    return load_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def random_resnet18() -> Backbone:
    """A random-init torchvision ResNet-18 (the paper's architecture, without its weights)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    return Backbone(
        name="resnet18",
        model=model,
        levels={f"level{i}": getattr(model, f"layer{i}") for i in range(1, 5)},
        mean=RESNET18_MEAN,
        std=RESNET18_STD,
        weights_sha256="",
        weights_source="random init (test)",
    )


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """chelsea (cat) and coffee (espresso), uint8 (2, 160, 192, 3): non-square, to catch H/W mix-ups."""
    return np.stack([_resize(skdata.chelsea(), 160, 192), _resize(skdata.coffee(), 160, 192)])


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    """Three random uint8 images (3, 96, 128, 3)."""
    return np.random.default_rng(0).integers(0, 256, size=(3, 96, 128, 3), dtype=np.uint8)


@pytest.fixture
def zero_backbone() -> Backbone:
    """A toy classifier whose level-2 output is identically zero, so both LayerCAM maps are all zero."""

    class Zero(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 0

    conv, zero = nn.Conv2d(3, 4, 3, padding=1), Zero()
    model = nn.Sequential(conv, zero, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    return Backbone("toy", model, {"level1": conv, "level2": zero}, (0.5,) * 3, (0.5,) * 3, "", "test")


def test_matches_gradcam_on_efficientnet_lite0(effnet: Backbone, photos: np.ndarray) -> None:
    with SaliencyExtractor(effnet) as extractor:
        maps, targets = extractor(torch.from_numpy(photos))
    assert targets[0].item() in range(281, 286)  # a cat class
    assert targets[1].item() == 967  # espresso
    reference = gradcam_maps(effnet, photos)  # grad-cam picks its own top-1 targets
    np.testing.assert_allclose(maps.numpy(), reference, rtol=0, atol=ATOL)


@pytest.mark.parametrize("target_class", [None, 7])
def test_matches_gradcam_on_random_resnet18(
    random_resnet18: Backbone, noise: np.ndarray, target_class: int | None
) -> None:
    with SaliencyExtractor(random_resnet18, target_class=target_class) as extractor:
        maps, targets = extractor(torch.from_numpy(noise))
    if target_class is not None:
        assert targets.tolist() == [target_class] * len(noise)
    reference = gradcam_maps(random_resnet18, noise, target_class)
    np.testing.assert_allclose(maps.numpy(), reference, rtol=0, atol=ATOL)


@pytest.fixture(scope="module")
def small_photos(photos: np.ndarray) -> np.ndarray:
    """The photos at a small, non-square working size, uint8 (2, 32, 40, 3)."""
    return np.stack([_resize(image, 32, 40) for image in photos])


@pytest.mark.parametrize("input_size", [64, 96])
def test_input_size_matches_gradcam_on_the_same_resized_input(
    effnet: Backbone, small_photos: np.ndarray, input_size: int
) -> None:
    with SaliencyExtractor(effnet, input_size=input_size) as extractor:
        maps, targets = extractor(torch.from_numpy(small_photos))
    assert maps.shape == (2, 4, 32, 40)  # the working size, not input_size
    reference = gradcam_maps(effnet, small_photos, input_size=input_size)
    np.testing.assert_allclose(maps.numpy(), reference, rtol=0, atol=ATOL)


@pytest.mark.parametrize("target_class", [None, 7])
def test_input_size_below_the_working_size_matches_gradcam(
    random_resnet18: Backbone, noise: np.ndarray, target_class: int | None
) -> None:
    # 96 x 128 down to 64 x 64: the antialiased shrink of the input, and levels upsampled back.
    with SaliencyExtractor(random_resnet18, target_class=target_class, input_size=64) as extractor:
        maps, _ = extractor(torch.from_numpy(noise))
    reference = gradcam_maps(random_resnet18, noise, target_class, input_size=64)
    np.testing.assert_allclose(maps.numpy(), reference, rtol=0, atol=ATOL)


def test_input_size_none_keeps_the_working_size_path(
    random_resnet18: Backbone, noise: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None runs exactly the code path of before (which the grad-cam comparisons above check at the working
    # size): the input is never resampled.
    images = torch.from_numpy(noise)
    with SaliencyExtractor(random_resnet18) as extractor:
        default, _ = extractor(images)

    def no_interpolate(*args: object, **kwargs: object) -> None:
        raise AssertionError("the input was resampled")

    monkeypatch.setattr(saliency_module.F, "interpolate", no_interpolate)
    with SaliencyExtractor(random_resnet18, input_size=None) as extractor:
        maps, _ = extractor(images)
    assert torch.equal(maps, default)


def test_input_size_equal_to_a_square_working_size_changes_nothing(
    random_resnet18: Backbone, noise: np.ndarray
) -> None:
    images = torch.from_numpy(noise[:, :, :96].copy())  # 96 x 96
    with (
        SaliencyExtractor(random_resnet18) as plain,
        SaliencyExtractor(random_resnet18, input_size=96) as sized,
    ):
        assert torch.equal(sized(images)[0], plain(images)[0])


def test_input_size_keeps_the_deep_level_from_collapsing(effnet: Backbone, photos: np.ndarray) -> None:
    # At 32 px the stride-32 level 4 is one cell: a constant map, normalised to all zero. At 96 it is 3 x 3.
    images = torch.from_numpy(np.stack([_resize(image, 32, 32) for image in photos]))
    with (
        SaliencyExtractor(effnet, levels=["level4"]) as plain,
        SaliencyExtractor(effnet, levels=["level4"], input_size=96) as sized,
    ):
        degenerate, _ = plain(images)
        resolved, _ = sized(images)
    assert degenerate.shape == resolved.shape == (2, 1, 32, 32)
    for i in range(len(images)):
        assert degenerate[i].unique().numel() == 1
        assert resolved[i].unique().numel() > 1


def test_maps_shape_dtype_and_range(effnet: Backbone, photos: np.ndarray) -> None:
    with SaliencyExtractor(effnet) as extractor:
        maps, targets = extractor(torch.from_numpy(photos))
    assert maps.shape == (2, 4, 160, 192)
    assert maps.dtype == torch.float32
    assert targets.shape == (2,)
    assert targets.dtype == torch.int64
    assert maps.min() >= 0 and maps.max() <= 1
    torch.testing.assert_close(maps.amax(dim=(2, 3)), torch.ones(2, 4))  # each map reaches 1
    torch.testing.assert_close(maps.amin(dim=(2, 3)), torch.zeros(2, 4))


def test_maps_at_the_working_size_with_input_size(effnet: Backbone, small_photos: np.ndarray) -> None:
    with SaliencyExtractor(effnet, input_size=64) as extractor:
        maps, targets = extractor(torch.from_numpy(small_photos))
    assert maps.shape == (2, 4, 32, 40)
    assert maps.dtype == torch.float32 and targets.shape == (2,)
    assert maps.min() >= 0 and maps.max() <= 1
    torch.testing.assert_close(maps.amax(dim=(2, 3)), torch.ones(2, 4))
    torch.testing.assert_close(maps.amin(dim=(2, 3)), torch.zeros(2, 4))


def _reordering_bound(model: nn.Module) -> float:
    """How far two float32 evaluations of one map may differ when only the order of summation changes.

    A batch of 4 and a batch of 1 run other convolution kernels, which add each output's ``fan_in`` products
    in another order. Reordering a sum of n float32 terms moves it by about ``sqrt(n)`` roundings of ``eps``
    relative to its magnitude (the errors are a random walk; ``n * eps`` is the adversarial worst case). The
    gradient that reaches the deepest level went forward through every weighted layer and back through
    them again, and to first order those relative errors add. Maps are min-max normalised to [0, 1], so the
    relative error is the absolute one.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    fan_in = max(m.weight[0].numel() for m in layers)
    return 2 * len(layers) * fan_in**0.5 * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("input_size", [None, 64])
def test_batch_equals_per_sample(effnet: Backbone, photos: np.ndarray, input_size: int | None) -> None:
    # eval-mode BatchNorm: samples must not interact through the shared backward pass. An interaction shows
    # at the maps' own scale (0.1 and up); reordered sums stay within the bound, which is far below it.
    bound = _reordering_bound(effnet.model)
    assert bound < 1e-2, f"the rounding bound {bound:.1e} would hide an interaction between samples"
    with SaliencyExtractor(effnet, input_size=input_size) as extractor:
        batch_maps, batch_targets = extractor(torch.from_numpy(photos))
        for i in range(len(photos)):
            maps, targets = extractor(torch.from_numpy(photos[i : i + 1]))
            assert targets.item() == batch_targets[i].item()
            torch.testing.assert_close(maps[0], batch_maps[i], rtol=0, atol=bound)


@pytest.mark.parametrize("input_size", [None, 64, 160])
def test_uint8_nhwc_and_float_nchw_inputs_agree(
    random_resnet18: Backbone, noise: np.ndarray, input_size: int | None
) -> None:
    with SaliencyExtractor(random_resnet18, input_size=input_size) as extractor:
        from_uint8, targets_uint8 = extractor(torch.from_numpy(noise))
        from_float, targets_float = extractor(_to_unit_float(noise))
    assert torch.equal(targets_uint8, targets_float)
    torch.testing.assert_close(from_uint8, from_float, rtol=0, atol=ATOL)


@pytest.mark.parametrize("input_size", [None, 64])
@pytest.mark.parametrize("layout", ["uint8", "float"])
def test_one_forward_one_backward_and_no_parameter_grads(
    random_resnet18: Backbone,
    noise: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
    input_size: int | None,
    layout: str,
) -> None:
    forwards: list[int] = []
    model_inputs: list[torch.Tensor] = []
    grad_calls: list[int] = []
    real_grad = torch.autograd.grad

    def counting_grad(*args: object, **kwargs: object) -> object:
        grad_calls.append(1)
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    handle = random_resnet18.model.register_forward_hook(lambda *_: forwards.append(1))
    pre = random_resnet18.model.register_forward_pre_hook(lambda _, args: model_inputs.append(args[0]))
    images = torch.from_numpy(noise) if layout == "uint8" else _to_unit_float(noise)
    try:
        with SaliencyExtractor(random_resnet18, input_size=input_size) as extractor:
            maps, _ = extractor(images)
    finally:
        handle.remove()
        pre.remove()
    assert len(forwards) == 1
    assert len(grad_calls) == 1
    assert maps.shape == (3, 4, 96, 128)
    (x,) = model_inputs
    assert x.shape[-2:] == ((96, 128) if input_size is None else (input_size, input_size))
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert not images.requires_grad and images.grad is None
    assert all(p.grad is None and not p.requires_grad for p in random_resnet18.model.parameters())
    assert not random_resnet18.model.training


def test_works_inside_inference_mode(random_resnet18: Backbone, noise: np.ndarray) -> None:
    # Callers often wrap data work in inference_mode; LayerCAM needs autograd, so it must opt out itself.
    with SaliencyExtractor(random_resnet18) as extractor:
        expected, _ = extractor(torch.from_numpy(noise))
        with torch.inference_mode():
            images = torch.from_numpy(noise).clone()  # an inference tensor
            maps, _ = extractor(images)
    torch.testing.assert_close(maps, expected, rtol=0, atol=ATOL)


def test_all_zero_maps_stay_zero(zero_backbone: Backbone) -> None:
    with SaliencyExtractor(zero_backbone) as extractor:
        maps, _ = extractor(torch.rand(2, 3, 16, 20))
    assert maps.shape == (2, 2, 16, 20)
    assert not maps.isnan().any()
    assert torch.equal(maps, torch.zeros_like(maps))


def test_level_subset_in_requested_order(random_resnet18: Backbone, noise: np.ndarray) -> None:
    images = torch.from_numpy(noise)
    with SaliencyExtractor(random_resnet18) as full:
        all_maps, all_targets = full(images)
    with SaliencyExtractor(random_resnet18, levels=["level3", "level2"]) as subset:
        maps, targets = subset(images)
    assert torch.equal(targets, all_targets)
    torch.testing.assert_close(maps, all_maps[:, [2, 1]], rtol=0, atol=ATOL)


def test_shallow_tanh_lifts_maps_and_stays_in_range(random_resnet18: Backbone, noise: np.ndarray) -> None:
    images = torch.from_numpy(noise)
    with (
        SaliencyExtractor(random_resnet18) as plain,
        SaliencyExtractor(random_resnet18, shallow_tanh=True) as tanh,
    ):
        plain_maps, _ = plain(images)
        tanh_maps, _ = tanh(images)
    assert tanh_maps.min() >= 0 and tanh_maps.max() <= 1
    # tanh(2 M / max M) is concave on [0, max]: it raises every value relative to the peak.
    assert (tanh_maps.mean(dim=(2, 3)) > plain_maps.mean(dim=(2, 3))).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"levels": ["level5"]}, "level5"),
        ({"levels": []}, "non-empty"),
        ({"levels": ["level1", "level1"]}, "without repeats"),
        ({"target_class": -1}, "target_class"),
    ],
)
def test_invalid_settings_are_rejected(random_resnet18: Backbone, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SaliencyExtractor(random_resnet18, **kwargs)


@pytest.mark.parametrize("input_size", [0, -32, True, 64.0, "224"])
def test_invalid_input_size_is_rejected(random_resnet18: Backbone, input_size: object) -> None:
    with pytest.raises(ValueError, match="input_size"):
        SaliencyExtractor(random_resnet18, input_size=input_size)  # type: ignore[arg-type]


def test_input_size_setting_defaults_to_224_and_is_bounded() -> None:
    assert SaliencySettings().input_size == 224
    assert load_settings(overrides={"saliency.input_size": "null"}).saliency.input_size is None
    assert load_settings(overrides={"saliency.input_size": "96"}).saliency.input_size == 96
    for bad in ("16", "2048", "big"):
        with pytest.raises(SettingsError, match="input_size"):
            load_settings(overrides={"saliency.input_size": bad})


def test_target_class_out_of_range_is_rejected(random_resnet18: Backbone, noise: np.ndarray) -> None:
    with (
        SaliencyExtractor(random_resnet18, target_class=1000) as extractor,
        pytest.raises(ValueError, match="1000 classes"),
    ):
        extractor(torch.from_numpy(noise[:1]))


def test_bad_image_layout_is_rejected(random_resnet18: Backbone) -> None:
    with SaliencyExtractor(random_resnet18) as extractor:
        with pytest.raises(ValueError, match="uint8"):
            extractor(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))  # NCHW uint8
        with pytest.raises(ValueError, match="float"):
            extractor(torch.zeros(1, 32, 32, 3))  # NHWC float


def test_close_removes_hooks(random_resnet18: Backbone, noise: np.ndarray) -> None:
    modules = list(random_resnet18.levels.values())
    before = [len(m._forward_hooks) for m in modules]
    extractor = SaliencyExtractor(random_resnet18)
    assert [len(m._forward_hooks) for m in modules] == [n + 1 for n in before]
    extractor.close()
    extractor.close()  # idempotent
    assert [len(m._forward_hooks) for m in modules] == before
    with pytest.raises(RuntimeError, match="closed"):
        extractor(torch.from_numpy(noise))


def test_saliency_maps_over_numpy_batches(random_resnet18: Backbone, noise: np.ndarray) -> None:
    with SaliencyExtractor(random_resnet18) as extractor:
        expected, expected_targets = extractor(torch.from_numpy(noise))
        maps, targets = saliency_maps(extractor, noise, batch_size=2)  # 2 + 1: a ragged last batch
        empty_maps, empty_targets = saliency_maps(extractor, noise[:0])
    assert maps.dtype == np.float16 and maps.shape == (3, 4, 96, 128)
    assert targets.dtype == np.int64 and targets.tolist() == expected_targets.tolist()
    np.testing.assert_allclose(
        maps.astype(np.float32), expected.numpy(), rtol=0, atol=1e-3
    )  # float16 rounding
    assert empty_maps.shape == (0, 4, 96, 128) and empty_targets.shape == (0,)


def test_saliency_maps_rejects_bad_arguments(random_resnet18: Backbone, noise: np.ndarray) -> None:
    with SaliencyExtractor(random_resnet18) as extractor:
        with pytest.raises(ValueError, match="batch_size"):
            saliency_maps(extractor, noise, batch_size=0)
        with pytest.raises(ValueError, match="uint8"):
            saliency_maps(extractor, noise.astype(np.float32))


def test_stage_keys_and_records_input_size(tmp_path, make_stripes, ingest_store) -> None:
    from cutswap.pipeline.stages.saliency import saliency_category

    images = make_stripes(32, 3)
    ingest = ingest_store(tmp_path, images)
    refs = {}
    for input_size in (64, None):
        settings = load_settings(
            overrides={
                "storage_root": str(tmp_path),
                "dataset.image_size": 32,
                "saliency.backbone": "efficientnet_lite0",
                "saliency.input_size": input_size,
                "train.device": "cpu",
                "parallel.workers": 0,
            }
        )
        ref, computed = saliency_category(settings, ingest)
        assert computed
        refs[input_size] = ref
        group = zarr.open_group(ref.path, mode="r")
        assert group.attrs["input_size"] == input_size
        assert group.attrs["settings"]["input_size"] == input_size  # keyed
        assert group["maps"].shape == (3, 4, 32, 32)  # the working size either way
        with SaliencyExtractor(load_backbone("efficientnet_lite0"), input_size=input_size) as extractor:
            expected, _ = saliency_maps(extractor, images)
        np.testing.assert_array_equal(group["maps"][:], expected)
    assert refs[64].key != refs[None].key
