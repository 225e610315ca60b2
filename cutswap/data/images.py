"""Read images and masks from disk into the arrays the pipeline works on.

Every dataset reader goes through these two functions, so that the quirks of images in the wild are handled
in one place:

- ``read_rgb`` returns ``uint8`` arrays shaped ``(H, W, 3)``:

  - the EXIF orientation tag is applied (phone and camera JPEGs are often stored sideways);
  - grayscale (``L``, ``1``), palette (``P``), alpha (``LA``, ``RGBA``, ``PA``) and ``CMYK`` images become
    RGB; alpha is dropped, not composited, because datasets store the pixels under the alpha as-is;
  - 16-bit images (``I;16``, and ``I`` holding 16-bit values) are scaled by ``255 / 65535``, not clipped,
    so a dark-looking 16-bit PNG keeps its contrast;
  - with ``size`` given, the image is resized to ``size x size`` with Pillow's antialiased bilinear filter.

- ``read_mask`` returns ``bool`` arrays shaped ``(H, W)``: a pixel is anomalous when any channel is
  non-zero (``!= 0``), because masks in the wild are not always 0/255 (VisA, MVTec LOCO). With ``size``
  given it is resized with nearest-neighbour, so it stays binary.

A file that cannot be decoded (missing, empty, truncated, not an image, larger than ``MAX_PIXELS``) raises
``cutswap.errors.DatasetError`` naming the file and what to do.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cutswap.errors import DatasetError

__all__ = ["DECODE_THREADS", "MAX_PIXELS", "load_mask", "load_rgb", "read_mask", "read_rgb"]

#: Threads decoding images (ingest, ``cutswap predict``): decoding releases the GIL, and network filesystems
#: want reads in flight.
DECODE_THREADS = min(8, max(4, os.cpu_count() or 1))

MAX_PIXELS = 100_000_000
"""Largest image, in pixels, that is decoded. A larger one is almost certainly a decompression bomb (a tiny
file that expands to gigabytes) or an image nobody meant to feed to a patch-level detector. Pillow's own
bomb warning (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 megapixels by default) is also turned into an
error, so the effective cap is the lower of the two."""

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}

# ``warnings.catch_warnings`` swaps process-global state (before Python 3.14), so two threads using it at
# once can leave the wrong filters installed. Ingest reads images from a thread pool: serialize the short
# header parse where Pillow's bomb check runs; decoding itself stays parallel.
_WARNINGS_LOCK = threading.Lock()


def read_rgb(path: Path, size: int | None = None) -> np.ndarray:
    """Read an image as RGB ``uint8`` ``(H, W, 3)``, optionally resized to ``size x size``.

    Args:
        path: Image file (any format Pillow decodes: PNG, JPEG, BMP, TIFF, ...).
        size: Side of the square output; ``None`` keeps the stored size. Resizing uses an antialiased
            bilinear filter so that downscaling does not alias fine texture into moire, which a detector
            would otherwise learn as "normal".

    Returns:
        A writable, C-contiguous ``uint8`` array of shape ``(H, W, 3)`` (``(size, size, 3)`` when resized).

    Raises:
        DatasetError: The file is missing, empty, truncated, not an image, too large, or in a pixel format
            that has no meaningful RGB rendering (floating point).
        ValueError: ``size`` is not a positive integer (a programming error, not bad data).
    """
    return load_rgb(path, size)[0]


def load_rgb(path: Path, size: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """``read_rgb`` that also returns the source's ``(height, width)`` as displayed (EXIF applied).

    Ingest needs the source size to check that a mask matches its image, and the resized array alone
    cannot tell (nor can ``Image.size`` after a JPEG draft, which decodes at a reduced scale).
    """
    path = Path(path)
    _check_size(size)
    with _open(path) as im:
        height, width = im.height, im.width  # as stored, before a reduced-scale decode
        if size is not None and im.format == "JPEG":
            # Let libjpeg decode at a reduced scale (never below the requested size): much faster for
            # large photographs and the antialiased resize below still sets the final size exactly.
            im.draft("RGB", (size, size))
        # Decode before anything reads metadata: reading EXIF from a PNG loads its pixel data, and a
        # failure there must not be swallowed (Pillow then treats the image as loaded: a black image).
        decoded = _decode(im, path)
        source = (width, height) if decoded.size != im.size else (height, width)  # EXIF 5-8 turn it
        rgb = _to_rgb8(decoded, path)
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.array(rgb, dtype=np.uint8), source


def read_mask(path: Path, size: int | None = None) -> np.ndarray:
    """Read a ground-truth mask as ``bool`` ``(H, W)``, optionally resized to ``size x size``.

    Args:
        path: Mask file. Any non-zero value in any channel counts as anomalous, because annotation tools
            write 1, 255, a palette index, or a class-specific grey level (MVTec LOCO uses 236-255).
        size: Side of the square output; ``None`` keeps the stored size. Resizing uses nearest-neighbour so
            the mask stays binary and no anomalous region is invented by interpolation.

    Returns:
        A ``bool`` array of shape ``(H, W)`` (``(size, size)`` when resized).

    Raises:
        DatasetError: The file is missing, empty, truncated, not an image, or too large.
        ValueError: ``size`` is not a positive integer.
    """
    return load_mask(path, size)[0]


def load_mask(path: Path, size: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """``read_mask`` that also returns the source's ``(height, width)`` as displayed (EXIF applied)."""
    path = Path(path)
    _check_size(size)
    with _open(path) as im:
        im = _decode(im, path)
        source = (im.height, im.width)
        if im.mode == "P":
            # A palette index of 0 need not be black; judge the colour the index stands for.
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode == "PA":
            im = im.convert("RGBA")
        arr = np.asarray(im)
    if arr.ndim == 3:
        # Ignore alpha: it says where the mask is drawn, not which class a pixel has.
        channels = arr[..., :1] if im.mode == "LA" else arr[..., :3]
        mask = (channels != 0).any(axis=-1)
    else:
        mask = arr != 0
    if size is not None and mask.shape != (size, size):
        small = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
        mask = np.asarray(small) != 0
    return np.ascontiguousarray(mask, dtype=bool), source


def _check_size(size: int | None) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise ValueError(f"size must be a positive int or None, got {size!r}")


def _open(path: Path) -> Image.Image:
    """Open ``path`` lazily (header only), turning every failure into a DatasetError naming the file."""
    try:
        nbytes = path.stat().st_size
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; check the dataset path or rescan the dataset.") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc}); check its permissions.") from exc
    if path.is_dir():
        raise DatasetError(f"{path}: is a folder, expected an image file.")
    if nbytes == 0:
        raise DatasetError(f"{path}: file is empty (0 bytes); re-copy or re-download it, or delete it.")
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DatasetError(_bomb_message(path, str(exc))) from None
    except Image.UnidentifiedImageError:
        raise DatasetError(
            f"{path}: not an image Pillow can decode; convert it to PNG or remove it from the dataset."
        ) from None
    except Exception as exc:  # Pillow plugins raise OSError, SyntaxError, ValueError, struct.error, ...
        raise DatasetError(f"{path}: cannot be opened as an image ({exc}); re-copy it or remove it.") from exc
    width, height = im.size
    if width * height > MAX_PIXELS:
        im.close()
        raise DatasetError(_bomb_message(path, f"{width} x {height} = {width * height} pixels"))
    return im


def _bomb_message(path: Path, detail: str) -> str:
    return (
        f"{path}: image is too large to decode safely ({detail}; the limit is {MAX_PIXELS} pixels); "
        "it may be a decompression bomb. Downscale it before adding it to the dataset."
    )


def _decode(im: Image.Image, path: Path) -> Image.Image:
    """Decode the pixel data and apply the EXIF orientation, so truncation is caught here, not later."""
    try:
        im.load()
        return ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as exc:  # multi-frame formats (GIF, ICO) check again per frame
        raise DatasetError(_bomb_message(path, str(exc))) from None
    except Exception as exc:  # truncated streams raise OSError; corrupt chunks SyntaxError or ValueError
        raise DatasetError(
            f"{path}: image data is truncated or corrupt ({exc}); re-copy it or remove it from the dataset."
        ) from exc


def _to_rgb8(im: Image.Image, path: Path) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, scaling 16-bit data instead of clipping it."""
    if im.mode == "RGB":
        return im
    if im.mode in _SIXTEEN_BIT_MODES or im.mode == "I":
        values = np.asarray(im).astype(np.float64)
        if im.mode == "I" and (values.min(initial=0) < 0 or values.max(initial=0) > 65535):
            raise DatasetError(
                f"{path}: 32-bit integer image with values outside 0..65535; save it as 8-bit or 16-bit PNG."
            )
        gray = np.rint(values * (255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1))
    if im.mode == "F":
        raise DatasetError(
            f"{path}: floating-point image; its value range is unknown, so save it as 8-bit or 16-bit PNG."
        )
    if im.mode in ("P", "PA") and "transparency" in im.info:
        im = im.convert("RGBA")  # resolve the palette first so the transparent index keeps its colour
    return im.convert("RGB")
