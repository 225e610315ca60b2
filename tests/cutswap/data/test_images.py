"""Tests of cutswap.data.images: decoding quirks of images in the wild, and errors naming the file."""

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutswap.data import images
from cutswap.data.images import read_mask, read_rgb
from cutswap.errors import DatasetError

ORIENTATION = 0x0112


def save(path: Path, array: np.ndarray, **kwargs) -> Path:
    Image.fromarray(array).save(path, **kwargs)
    return path


def rgb_pattern(height: int = 20, width: int = 40) -> np.ndarray:
    """Distinct colours in each corner, so rotations and flips are detectable exactly."""
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    arr[: height // 2, : width // 2] = (255, 0, 0)  # top-left red
    arr[: height // 2, width // 2 :] = (0, 255, 0)  # top-right green
    arr[height // 2 :, : width // 2] = (0, 0, 255)  # bottom-left blue
    arr[height // 2 :, width // 2 :] = (255, 255, 255)  # bottom-right white
    return arr


def test_rgb_png_round_trips_exactly(tmp_path):
    arr = rgb_pattern()
    out = read_rgb(save(tmp_path / "a.png", arr))
    assert out.dtype == np.uint8 and out.shape == (20, 40, 3)
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable and out.flags.c_contiguous


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    out = read_rgb(save(tmp_path / "g.png", gray))
    assert out.shape == (8, 8, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], gray)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 1000, 32896, 65535]], dtype=np.uint16)
    path = save(tmp_path / "deep.png", values)
    assert Image.open(path).mode.startswith("I")  # really stored as 16-bit
    out = read_rgb(path)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 4, 128, 255])


def test_palette_and_alpha_become_rgb(tmp_path):
    arr = rgb_pattern()
    Image.fromarray(arr).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "p.png"), arr)
    rgba = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 10, np.uint8)], axis=-1)
    # Alpha is dropped, not composited: the stored colour is what the dataset recorded.
    np.testing.assert_array_equal(read_rgb(save(tmp_path / "rgba.png", rgba)), arr)


@pytest.mark.parametrize(
    ("orientation", "corner_colour"), [(6, (0, 0, 255)), (3, (255, 255, 255)), (8, (0, 255, 0))]
)
def test_exif_orientation_is_applied(tmp_path, orientation, corner_colour):
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    path = tmp_path / "rotated.png"
    Image.fromarray(rgb_pattern()).save(path, exif=exif)
    out = read_rgb(path)
    expected_shape = (20, 40, 3) if orientation == 3 else (40, 20, 3)
    assert out.shape == expected_shape
    assert tuple(out[0, 0]) == corner_colour  # what the top-left corner shows once displayed upright


def test_exif_rotated_jpeg(tmp_path):
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored landscape, displayed portrait (phone camera held upright)
    path = tmp_path / "photo.JPG"
    Image.fromarray(rgb_pattern(64, 128)).save(path, exif=exif, quality=95)
    out = read_rgb(path)
    assert out.shape == (128, 64, 3)
    assert np.abs(out[5, 5].astype(int) - (0, 0, 255)).max() < 40  # blue, the stored bottom-left
    assert read_rgb(path, size=32).shape == (32, 32, 3)


def test_resize_is_antialiased(tmp_path):
    checker = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = read_rgb(save(tmp_path / "checker.png", checker), size=16)
    assert out.shape == (16, 16, 3)
    # Nearest-neighbour would return pure 0 or 255; an antialiasing filter averages to mid-grey.
    assert abs(float(out.mean()) - 127.5) < 3 and out.std() < 3


def test_mask_binarised_with_nonzero(tmp_path):
    raw = np.array([[0, 1, 236], [255, 0, 2]], dtype=np.uint8)  # VisA / MVTec LOCO-style values
    mask = read_mask(save(tmp_path / "m.png", raw))
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, raw != 0)


def test_mask_rgb_palette_and_sixteen_bit(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[1, 2] = (0, 0, 7)
    np.testing.assert_array_equal(read_mask(save(tmp_path / "rgb.png", rgb)), rgb.any(axis=-1))
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    pal.putpixel((3, 0), 1)
    pal.save(tmp_path / "pal.png")
    expected = np.zeros((4, 4), bool)
    expected[0, 3] = True
    np.testing.assert_array_equal(read_mask(tmp_path / "pal.png"), expected)
    deep = np.zeros((4, 4), np.uint16)
    deep[2, 2] = 3
    np.testing.assert_array_equal(read_mask(save(tmp_path / "deep.png", deep)), deep != 0)


def test_mask_resize_is_nearest_and_binary(tmp_path):
    raw = np.zeros((40, 40), np.uint8)
    raw[10:30, 10:30] = 1
    mask = read_mask(save(tmp_path / "m.png", raw), size=20)
    assert mask.shape == (20, 20) and mask.dtype == bool
    assert mask.sum() == 100  # the 20 x 20 square becomes exactly 10 x 10


@pytest.mark.parametrize("reader", [read_rgb, read_mask])
def test_zero_byte_file(tmp_path, reader):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match="empty") as info:
        reader(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("reader", [read_rgb, read_mask])
def test_truncated_file(tmp_path, reader, suffix):
    rng = np.random.default_rng(0)
    path = tmp_path / f"cut{suffix}"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError) as info:
        reader(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("reader", [read_rgb, read_mask])
def test_flipped_bytes_inside_the_image_data_are_an_error_not_a_black_image(tmp_path, reader):
    """The file is whole (every chunk present), only its compressed pixel data is damaged."""
    rng = np.random.default_rng(0)
    path = save(tmp_path / "flipped.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(b ^ 0xFF for b in data[middle : middle + 200])
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="truncated or corrupt") as info:
        reader(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("reader", [read_rgb, read_mask])
def test_not_an_image(tmp_path, reader):
    path = tmp_path / "notes.png"
    path.write_text("this is not a PNG\n")
    with pytest.raises(DatasetError, match="not an image") as info:
        reader(path)
    assert str(path) in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DatasetError, match="not found") as info:
        read_rgb(tmp_path / "nope.png")
    assert str(tmp_path / "nope.png") in str(info.value)
    with pytest.raises(DatasetError, match="folder"):
        read_rgb(tmp_path)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = save(tmp_path / "big.png", np.zeros((20, 20), np.uint8))
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(DatasetError, match="decompression bomb") as info:
        read_rgb(path)
    assert str(path) in str(info.value)


def test_pillow_bomb_warning_becomes_error(tmp_path, monkeypatch):
    path = save(tmp_path / "big.png", np.zeros((20, 20), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # 400 px: above the warning, below Pillow's error
    with pytest.raises(DatasetError, match="decompression bomb"):
        read_mask(path)


def test_float_image_is_refused(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.zeros((4, 4), np.float32)).save(path)
    with pytest.raises(DatasetError, match="floating-point"):
        read_rgb(path)


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_bad_size_is_a_programming_error(tmp_path, size):
    path = save(tmp_path / "a.png", rgb_pattern())
    with pytest.raises(ValueError, match="size"):
        read_rgb(path, size=size)


def test_concurrent_reads_leave_warning_filters_alone(tmp_path):
    """Ingest reads from a thread pool; the bomb check must not scramble the process's warning filters."""
    paths = [save(tmp_path / f"{i}.png", rgb_pattern()) for i in range(8)]
    before = list(warnings.filters)
    with ThreadPoolExecutor(max_workers=4) as pool:
        outs = list(pool.map(lambda p: read_rgb(p, size=8), paths * 8))
    assert len(outs) == 64 and all(o.shape == (8, 8, 3) for o in outs)
    assert warnings.filters == before
