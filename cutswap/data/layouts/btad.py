"""Scan BTAD (beanTech Anomaly Detection, anomalib's "BTech") into the common sample table.

Layout, as the archive unpacks (``BTech_Dataset_transformed/``)::

    <root>/
      01/ 02/ 03/                      # categories
        train/ok/*.bmp|*.png           # normal training images
        test/ok/*.bmp|*.png            # normal test images
        test/ko/*.bmp|*.png            # anomalous test images
        ground_truth/ko/<stem>.png     # one mask per anomalous image, named like the image (no _mask)

It is the MVTec AD tree with ``ok`` for ``good``, so ``scan_mvtec_like`` does the work; normal images get
``defect_type="good"`` like every other layout. Images stay BMP or PNG as shipped (anomalib converts the
BMPs to PNG on first use; there is no need, Pillow reads both). Mask pairing also accepts ``<stem>_mask``
names, so a BTAD copy that went through an MVTec-style converter still reads.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cutswap.data.layouts.mvtec import scan_mvtec_like

__all__ = ["scan_btad"]

_LAYOUT = (
    "expected the BTAD layout: <root>/<category>/train/ok/*.bmp, <root>/<category>/test/ok/*.bmp, "
    "<root>/<category>/test/ko/*.bmp and <root>/<category>/ground_truth/ko/<stem>.png"
)


def scan_btad(root: Path, categories: list[str] | None = None) -> pd.DataFrame:
    """List the samples of a BTAD dataset and check the layout.

    Raises:
        DatasetError: Listing every problem found, as ``scan_mvtec`` does (with ``ok`` for ``good``).
    """
    return scan_mvtec_like(
        root, categories, normal="ok", layout="BTAD", layout_hint=_LAYOUT, mask_name="<stem>.png"
    )
