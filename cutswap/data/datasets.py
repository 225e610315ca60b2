"""Resolve the dataset a benchmark names into a root on disk and its sample table.

``textures`` is built by the project itself (``cutswap.data.textures``) under
``<storage_root>/datasets/textures`` unless a root is given; ``mvtec`` needs ``dataset.root`` pointing
at a folder in the MVTec AD layout.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cutswap.data.mvtec import scan_mvtec
from cutswap.data.textures import build_textures
from cutswap.errors import SettingsError
from cutswap.settings import Settings


def resolve_dataset(settings: Settings) -> tuple[Path, pd.DataFrame]:
    """Return the dataset root and its validated sample table (one row per image)."""
    cfg = settings.dataset
    if cfg.name == "textures":
        root = Path(cfg.root) if cfg.root else Path(settings.storage_root) / "datasets" / "textures"
        build_textures(root, seed=cfg.textures_seed)
    else:
        if cfg.root is None:
            raise SettingsError(
                f"dataset.root is not set: point it at your {cfg.name} folder "
                "(e.g. --set dataset.root=/data/MVTecAD), which holds one folder per category"
            )
        root = Path(cfg.root)
    return root.resolve(), scan_mvtec(root.resolve(), cfg.categories)
