"""Keyed, crash-safe stage outputs.

Every stage writes one directory per output, named by what it holds and by a key::

    <storage_root>/<stage>/<name>-<key>/        a Zarr v3 group (zarr.json + arrays), plus any extra files
        zarr.json  attrs: {"complete": true, "stage", "key", "code_version", "settings", "inputs",
                           "provenance": {...versions, timings...}, ...stage-specific attrs}

The key is a hash of the stage name, its code version, its own settings and its inputs' keys, so a
changed setting yields a new directory and leaves the old one intact. A store is written under a
hidden temporary name (``.<name>-<key>.tmp-<uuid>``), marked ``complete`` last, and renamed into place;
readers only ever accept a directory whose attrs say ``complete``. A crash at any moment therefore
leaves at worst a hidden temporary directory that nothing reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import zarr

from cutswap.errors import StoreError

#: Bumped whenever a stage's output would change for the same settings and inputs.
CODE_VERSIONS = {
    "ingest": "1",
    "saliency": "1",
    "cluster": "1",
    "pairs": "1",
    "train": "1",
    "evaluate": "1",
    "report": "1",
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def stage_key(stage: str, settings: dict[str, Any], inputs: dict[str, str]) -> str:
    """Hash of everything that determines a stage's output; 16 hex digits."""
    payload = {
        "stage": stage,
        "code_version": CODE_VERSIONS[stage],
        "settings": _jsonable(settings),
        "inputs": dict(sorted(inputs.items())),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StoreRef:
    """A published store: small and JSON-friendly, passed between tasks instead of arrays."""

    stage: str
    name: str
    key: str
    path: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def store_path(storage_root: Path, stage: str, name: str, key: str) -> Path:
    """Where a stage output lives; ``name`` must be a plain folder name."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise StoreError(f"store name {name!r} must be a plain folder name")
    return Path(storage_root) / stage / f"{name}-{key}"


def is_complete(path: Path) -> bool:
    """True when ``path`` holds a store whose writer finished."""
    meta = Path(path) / "zarr.json"
    if not meta.is_file():
        return False
    try:
        return bool(json.loads(meta.read_text()).get("attributes", {}).get("complete", False))
    except (OSError, json.JSONDecodeError):
        return False


def open_store(ref: StoreRef | Path | str) -> zarr.Group:
    """Open a complete store read-only.

    Raises:
        StoreError: the store is missing or was never completed (a crashed writer, a deleted file).
    """
    path = Path(ref.path if isinstance(ref, StoreRef) else ref)
    if not is_complete(path):
        raise StoreError(
            f"store {path} is missing or incomplete; rerun its stage (or run with force=[<stage>])"
        )
    return zarr.open_group(str(path), mode="r")


@contextlib.contextmanager
def publishing(final: Path, attrs: dict[str, Any]) -> Iterator[zarr.Group]:
    """Yield a new group at a temporary path; publish it at ``final`` only if the body succeeds.

    The attrs are written first, ``complete`` last, and then the directory is renamed into place. If
    another writer published the same key meanwhile, its store is replaced by ours only when ours is
    forced; both are complete and equal for deterministic stages, so either is correct. On any error the
    temporary directory is removed and nothing is published.

    Raises:
        StoreError: the storage root cannot be written (permissions, disk full), naming the path.
    """
    final = Path(final)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(tmp), mode="w")
        group.attrs.update(_jsonable({**attrs, "complete": False}))
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StoreError(
            f"cannot write under {final.parent}: {exc.strerror or exc}; check space and permissions"
        ) from exc
    try:
        yield group
        group.attrs["complete"] = True
        _swap_into_place(tmp, final)
    except OSError as exc:
        raise StoreError(
            f"writing {final} failed: {exc.strerror or exc}; check space and permissions"
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_into_place(tmp: Path, final: Path) -> None:
    if final.exists():
        aside = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            aside = None
        os.rename(tmp, final)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    else:
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final):  # lost a race to a writer that left nothing usable
                raise


def library_versions() -> dict[str, str]:
    """Versions of what shaped the numbers, for provenance."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for dist in ("cutswap", "torch", "torchvision", "numpy", "zarr", "scikit-learn", "timm"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


def write_array(
    group: zarr.Group, name: str, data: Any, per_chunk: int = 1, per_shard: int = 128
) -> zarr.Array:
    """Store ``data`` with one item (image, map) per inner chunk and ``per_shard`` items per shard file.

    One item per chunk keeps random access to a single image cheap; shards keep the file count low.
    Writing goes shard by shard, so a writer only ever touches whole shards (several writers in one shard
    lose data silently in Zarr 3).
    """
    import numpy as np
    from zarr.codecs import BloscCodec

    data = np.asarray(data)
    if data.ndim == 0 or data.shape[0] == 0:
        arr = group.create_array(name, shape=data.shape, dtype=data.dtype)
        if data.ndim == 0:
            arr[...] = data
        return arr
    shard = min(per_shard, data.shape[0])
    shard -= shard % per_chunk
    arr = group.create_array(
        name,
        shape=data.shape,
        dtype=data.dtype,
        chunks=(per_chunk, *data.shape[1:]),
        shards=(shard, *data.shape[1:]),
        compressors=BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
    )
    for start in range(0, data.shape[0], shard):
        arr[start : start + shard] = data[start : start + shard]
    return arr


def store_dir(group: zarr.Group) -> Path:
    """The directory behind a local group, for files that live beside the arrays (checkpoints)."""
    return Path(str(group.store.root))


def build_store(
    storage_root: Path,
    stage: str,
    name: str,
    settings: dict[str, Any],
    inputs: dict[str, StoreRef],
    write: Any,
    mode: str = "run",
    extra_attrs: dict[str, Any] | None = None,
) -> tuple[StoreRef, bool]:
    """Return the keyed store of a stage, computing it with ``write(group)`` only when needed.

    Args:
        mode: ``run`` computes a missing store and reuses a complete one; ``force`` recomputes it anyway;
            ``reuse`` only accepts a complete store (a stage the user did not ask to run).

    Returns:
        The reference and whether it was computed now (False: a complete store was reused).

    Raises:
        StoreError: ``mode="reuse"`` and there is no complete store for these settings and inputs.
    """
    import time
    from datetime import UTC, datetime

    key = stage_key(stage, settings, {k: v.key for k, v in inputs.items()})
    path = store_path(storage_root, stage, name, key)
    ref = StoreRef(stage, name, key, str(path))
    if mode not in ("run", "force", "reuse"):
        raise ValueError(f"mode must be run, force or reuse, got {mode!r}")
    if is_complete(path) and mode != "force":
        return ref, False
    if mode == "reuse":
        raise StoreError(
            f"stage {stage} has no complete output for {name} with these settings (expected {path}); "
            f"include {stage!r} in the stages to run"
        )
    attrs = {
        "stage": stage,
        "name": name,
        "key": key,
        "code_version": CODE_VERSIONS[stage],
        "settings": settings,
        "inputs": {k: v.to_dict() for k, v in inputs.items()},
        "provenance": {"versions": library_versions(), "started": datetime.now(UTC).isoformat()},
        **(extra_attrs or {}),
    }
    start = time.perf_counter()
    with publishing(path, attrs) as group:
        write(group)
        prov = dict(group.attrs["provenance"])
        prov["seconds"] = round(time.perf_counter() - start, 3)
        group.attrs["provenance"] = prov
    return ref, True
