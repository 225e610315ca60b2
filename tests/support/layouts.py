"""Tiny datasets on disk in each supported layout, built in tmp_path (nothing is downloaded).

Every image is random noise seeded by its own path, so no two images are equal by accident (the leakage
check would flag them), and sizes vary within a category, as they may in real data.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from cutswap.pipeline.settings import load_settings


def write_image(path: Path, height: int = 24, width: int = 32, gray: bool = False) -> Path:
    """Random image at ``path`` (format from the suffix), seeded by the path's last three parts."""
    seed = int(hashlib.sha256("/".join(path.parts[-3:]).encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    shape = (height, width) if gray else (height, width, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def write_mask(path: Path, height: int = 24, width: int = 32, value: int = 255, box=(4, 4, 12, 12)) -> Path:
    """A mask with one rectangle of ``value`` (not always 255: VisA and LOCO masks are not)."""
    arr = np.zeros((height, width), np.uint8)
    y1, x1, y2, x2 = box
    arr[y1:y2, x1:x2] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def write_bomb(path: Path, side: int = 40_000) -> Path:
    """A PNG whose header claims ``side x side`` pixels (1.6 gigapixels) in a few dozen bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(body)
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_mvtec(root: Path, category: str = "bottle") -> Path:
    for i in range(3):
        write_image(root / f"{category}/train/good/{i:03d}.png", 24 + i, 32)
    for i in range(2):
        write_image(root / f"{category}/test/good/{i:03d}.png")
        write_image(root / f"{category}/test/broken/{i:03d}.png", 20, 28)
        write_mask(root / f"{category}/ground_truth/broken/{i:03d}_mask.png", 20, 28)
    return root


def make_btad(root: Path, category: str = "01") -> Path:
    for i in range(3):
        write_image(root / f"{category}/train/ok/{i:04d}.bmp")
    write_image(root / f"{category}/test/ok/0000.bmp")
    for i in range(2):
        write_image(root / f"{category}/test/ko/{i:04d}.bmp", 30, 30)
        write_mask(root / f"{category}/ground_truth/ko/{i:04d}.png", 30, 30)
    return root


def make_loco(root: Path, category: str = "breakfast_box") -> Path:
    for i in range(3):
        write_image(root / f"{category}/train/good/{i:03d}.png")
    write_image(root / f"{category}/validation/good/000.png")
    write_image(root / f"{category}/test/good/000.png")
    write_image(root / f"{category}/test/logical_anomalies/000.png")
    # Two defects on one image, each in its own file, with LOCO's non-255 values.
    write_mask(root / f"{category}/ground_truth/logical_anomalies/000/000.png", value=236, box=(0, 0, 4, 4))
    write_mask(
        root / f"{category}/ground_truth/logical_anomalies/000/001.png", value=241, box=(20, 28, 24, 32)
    )
    write_image(root / f"{category}/test/structural_anomalies/000.png")
    write_mask(root / f"{category}/ground_truth/structural_anomalies/000/000.png", value=255)
    (root / category / "defects_config.json").write_text("[]\n")
    return root


def make_visa(root: Path, category: str = "candle") -> Path:
    rows = ["object,split,label,image,mask"]
    anno = ["image,label,mask"]
    for i in range(4):
        rel = f"{category}/Data/Images/Normal/{i:04d}.JPG"
        write_image(root / rel)
        rows.append(f"{category},{'train' if i < 3 else 'test'},normal,{rel},")
        anno.append(f"{rel},normal,")
    for i in range(2):
        rel = f"{category}/Data/Images/Anomaly/{i:03d}.JPG"
        mask = f"{category}/Data/Masks/Anomaly/{i:03d}.png"
        write_image(root / rel)
        write_mask(root / mask, value=1)  # raw VisA masks are not 0/255
        rows.append(f"{category},test,anomaly,{rel},{mask}")
        anno.append(f'{rel},"{"melt, scratch" if i else "bent"}",{mask}')
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with open(root / "split_csv" / "1cls.csv", "a") as handle:
        handle.write("\n".join(rows if handle.tell() == 0 else rows[1:]) + "\n")
    (root / category / "image_anno.csv").write_text("\n".join(anno) + "\n")
    return root


def make_folder(root: Path) -> Path:
    for i in range(5):
        write_image(root / f"good/{i:02d}.png", gray=i == 0)
    write_image(root / "bad/stray.png")
    write_mask(root / "masks/stray.png")
    for i in range(2):
        write_image(root / f"bad/scratch/{i:02d}.png")
        write_mask(root / f"masks/scratch/{i:02d}_mask.png")
    return root


BUILDERS = {
    "mvtec": make_mvtec,
    "btad": make_btad,
    "loco": make_loco,
    "visa": make_visa,
    "folder": make_folder,
}

FOLDER_OPTIONS = {"normal_dir": "good", "abnormal_dir": "bad", "mask_dir": "masks"}


def settings_for(name: str, root: Path, storage: Path, **overrides):
    """Settings for a layout at ``root``; ``overrides`` are dotted (``{"dataset.lenient": True}``)."""
    base = {
        "storage_root": str(storage),
        "dataset.name": name,
        "dataset.root": str(root),
        "dataset.image_size": 32,
    }
    if name == "folder":
        base["dataset.folder"] = FOLDER_OPTIONS
    return load_settings(None, {**base, **overrides})


def write_preset(path: Path, name: str, root: Path, storage: Path, **dataset) -> Path:
    """A YAML preset for the command line, running ingest on a layout."""
    cfg = {
        "run": "bad",
        "storage_root": str(storage),
        "reports_root": str(path.parent / "reports"),
        "dataset": {"name": name, "root": str(root), "image_size": 32, **dataset},
        # The default baseline trunk is ResNet-18, whose weights are not at hand offline (preflight refuses).
        # A batch no larger than the few training images of these datasets (preflight refuses larger ones).
        "train": {"baseline_trunk": "efficientnet_lite0", "batch_size": 2},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path
