"""Keyed, crash-safe stage outputs under a local folder or an object-storage URL: keys (``keys``), publication
(``publish``, with the backends ``posix`` and ``objects``), array layout (``arrays``), the guard on code
versions (``code_identity``). Folders and URLs themselves are ``cutswap.roots``, a floor below.

See ``cutswap.pipeline.stores.publish`` for the protocol and ``storage/README.md`` for each stage's layout.
"""

from cutswap.pipeline.stores.arrays import empty_array, write_array
from cutswap.pipeline.stores.keys import CODE_VERSIONS, StoreRef, library_versions, stage_key, store_path
from cutswap.pipeline.stores.publish import (
    build_store,
    get_file,
    is_complete,
    open_store,
    publishing,
    put_file,
    record_digests,
)
from cutswap.roots import location_of, open_group

__all__ = [
    "CODE_VERSIONS",
    "StoreRef",
    "build_store",
    "empty_array",
    "get_file",
    "is_complete",
    "library_versions",
    "location_of",
    "open_group",
    "open_store",
    "publishing",
    "put_file",
    "record_digests",
    "stage_key",
    "store_path",
    "write_array",
]
