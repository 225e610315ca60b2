"""Keyed, crash-safe stage outputs: keys (``keys``), publication (``publish``), array layout (``arrays``).

See ``cutswap.pipeline.stores.publish`` for the on-disk protocol and ``storage/README.md`` for each stage's layout.
"""

from cutswap.pipeline.stores.arrays import empty_array, store_dir, write_array
from cutswap.pipeline.stores.keys import CODE_VERSIONS, StoreRef, library_versions, stage_key, store_path
from cutswap.pipeline.stores.publish import build_store, is_complete, open_store, publishing

__all__ = [
    "CODE_VERSIONS",
    "StoreRef",
    "build_store",
    "empty_array",
    "is_complete",
    "library_versions",
    "open_store",
    "publishing",
    "stage_key",
    "store_dir",
    "store_path",
    "write_array",
]
