"""The writer's side of ``record_digests``: a process writing shards into a store being published by
another process (a Dask worker running a precompute stage's range) hashes what it writes.

Why: under a URL root a store's commit records the sha256 of every object (its content identity). The
publishing process hashes what it writes itself; objects written by other processes it would otherwise
read back from the bucket, which at MVTec AD size is gigabytes per precompute stage, through the flow
host. The worker that wrote a shard has its bytes at hand, so it hashes them and returns::

    {path relative to the store's group: sha256 hex}   e.g. {"maps/c/1/0/0/0": "9f2c..."}

and the publishing process hands that to ``record_digests``. Under a local root the dict stays empty:
publication hashes the files on its own disk.
"""

from __future__ import annotations

from typing import Any

from cutswap import roots
from cutswap.pipeline.stores.objects import HashingStore


def open_for_shards(location: str) -> tuple[Any, dict[str, str]]:
    """The group at ``location`` (a store being published: ``location_of(group)``), opened for writing
    whole shards, and the digests of every object written through it (filled as it writes).

    Returns:
        ``(group, digests)``: ``digests`` maps each object's path relative to the group to its sha256,
        empty under a local root.
    """
    if roots.is_local(location):
        return roots.open_group(location, mode="r+"), {}
    import zarr

    digests: dict[str, str] = {}
    group = zarr.open_group(store=HashingStore(roots.zarr_store(location), digests), mode="r+")
    return group, digests
