"""Checks on the PNG files the report draws, shared by the figure tests."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, max_kb: int = 400, min_kb: int = 5) -> tuple[int, int]:
    """Assert ``path`` is a PNG between ``min_kb`` (not blank) and ``max_kb``; return its (width, height)."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG
    assert min_kb * 1024 < len(data) < max_kb * 1024, len(data)
    with Image.open(path) as im:
        return im.size
