"""Array layout inside a store: one item (image, map) per inner chunk, ``per_shard`` items per shard.

One item per chunk keeps random access to a single image cheap; shards keep the file count low. Arrays
are filled whole shards at a time: several writers in one Zarr 3 shard lose data silently.
"""

from __future__ import annotations

from typing import Any

import zarr

#: Items per shard of every sharded array, and so per parallel task of the precompute stages
#: (``cutswap.pipeline.parallel.run_sharded``): a task writes whole shards only.
SHARD = 128


def empty_array(
    group: zarr.Group,
    name: str,
    shape: tuple[int, ...],
    dtype: Any,
    per_chunk: int = 1,
    per_shard: int = SHARD,
) -> zarr.Array:
    """Create a sharded array with one item (image, map) per inner chunk and ``per_shard`` items per shard.

    One item per chunk keeps random access to a single image cheap; shards keep the file count low. Fill
    it shard by shard: several writers in one shard lose data silently in Zarr 3.
    """
    from zarr.codecs import BloscCodec

    if len(shape) == 0 or shape[0] == 0:
        return group.create_array(name, shape=shape, dtype=dtype)
    shard = min(per_shard, shape[0])
    shard -= shard % per_chunk
    return group.create_array(
        name,
        shape=shape,
        dtype=dtype,
        chunks=(per_chunk, *shape[1:]),
        shards=(shard, *shape[1:]),
        compressors=BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
    )


def write_array(
    group: zarr.Group, name: str, data: Any, per_chunk: int = 1, per_shard: int = SHARD
) -> zarr.Array:
    """Store ``data`` in a new array laid out by :func:`empty_array`, writing whole shards."""
    import numpy as np

    data = np.asarray(data)
    arr = empty_array(group, name, data.shape, data.dtype, per_chunk, per_shard)
    if data.ndim == 0:
        arr[...] = data
        return arr
    shard = arr.shards[0] if arr.shards else max(len(data), 1)
    for start in range(0, data.shape[0], shard):
        arr[start : start + shard] = data[start : start + shard]
    return arr
