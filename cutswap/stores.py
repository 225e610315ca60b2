"""Keyed, crash-safe stage outputs.

Every stage writes one directory per output, named by what it holds and by a key::

    <storage_root>/<stage>/<name>-<key>/        a Zarr v3 group (zarr.json + arrays), plus any extra files
        zarr.json  attrs: {"complete": true, "stage", "key", "code_version", "settings", "inputs",
                           "provenance": {...versions, timings...}, ...stage-specific attrs}
    <storage_root>/<stage>/.<name>-<key>.tmp-<token>/       a write in progress (or a crashed one's leftover)
    <storage_root>/<stage>/.<name>-<key>.tmp-<token>.lock   held (flock) by that writer while it runs

The key is a hash of the stage name, its code version, its own settings and its inputs' keys, so a
changed setting yields a new directory and leaves the old one intact.

How a store is published (``publishing``), and why each step is there:

1. It is written under the hidden temporary name, whose lock file the writer holds for its whole life.
2. ``complete: true`` is written last, every file is fsynced, and the directory is renamed into place in
   one ``rename``. Readers only accept a directory whose attrs say ``complete``, and only a finished
   directory ever gets the final name, so a crash (SIGKILL, power loss) at any moment leaves at worst a
   hidden temporary directory that nothing reads.
3. If another writer of the same key published first (two runs of the same stage at once), the rename
   fails because the target exists; ours is discarded and theirs kept: stages are deterministic, so both
   are equal and either is correct. Each writer fills its own directory, whole shards at a time, so two
   writers never share a Zarr shard (Zarr loses data silently when they do).
4. Leftovers of crashed writers are removed by the next writer in the same stage folder: a temporary
   directory whose lock can be taken has no live writer. Where the filesystem offers no locks, leftovers
   are left alone (they are hidden and never read) rather than risk deleting a live write.

Disk-full and permission errors surface as ``StoreError`` naming the path, never as a traceback deep in
Zarr, and leave nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import time
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
    "saliency": "2",  # 2: saliency.input_size (default 224) resizes images before the backbone
    "cluster": "2",  # 2: the rank array (cluster ranks by centroid) beside top
    "pairs": "2",  # 2: the ladder (smaller patch, next cluster) before random locations; step array
    "train": "1",
    "evaluate": "3",  # 3: normal training images held out for the threshold; densities stored
    "report": "3",  # 3: comparisons.csv and the Comparisons section (cutswap.compare)
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
def publishing(final: Path, attrs: dict[str, Any], replace: bool = False) -> Iterator[zarr.Group]:
    """Yield a new group at a temporary path; publish it at ``final`` only if the body succeeds.

    The attrs are written first, ``complete`` last, and then the directory is renamed into place (see the
    module docstring for the protocol). On any error the temporary directory is removed and nothing is
    published.

    Args:
        final: Where the store is published.
        attrs: Attributes written before the body runs (the body may add more).
        replace: Replace a complete store already at ``final`` (a forced recompute). Otherwise a complete
            store that appeared there meanwhile (a concurrent writer of the same key) is kept and ours is
            discarded.

    Raises:
        StoreError: The storage cannot be written (permissions, disk full, read-only filesystem), naming
            the path.
    """
    final = Path(final)
    parent = final.parent
    tmp = parent / f".{final.name}.tmp-{uuid.uuid4().hex[:12]}"
    lock: _WriterLock | None = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        collect_garbage(parent)
        lock = _WriterLock(Path(f"{tmp}.lock"))
        tmp.mkdir()  # at once: a lock file without its directory is only collected once it is old
        group = zarr.open_group(str(tmp), mode="w-")
        group.attrs.update(_jsonable({**attrs, "complete": False}))
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if lock is not None:
            lock.release()
        raise StoreError(f"cannot write under {parent}: {_explain(exc, parent)}") from exc
    try:
        yield group
        group.attrs["complete"] = True
        _sync_tree(tmp)
        _publish(tmp, final, replace)
    except OSError as exc:
        if not _is_storage_error(exc, parent):
            raise
        raise StoreError(f"writing {final} failed: {_explain(exc, parent)}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        lock.release()


#: errno values that always mean "the storage cannot take this write", whichever file raised them.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def _is_storage_error(exc: OSError, parent: Path) -> bool:
    """Whether an OSError raised while a store was written is about the storage (not, say, an input)."""
    if exc.errno in _STORAGE_ERRNOS:
        return True
    filename = exc.filename
    if filename is None:
        return False
    try:
        return Path(os.path.abspath(filename)).is_relative_to(os.path.abspath(parent))
    except (TypeError, ValueError):
        return False


def _explain(exc: OSError, parent: Path) -> str:
    """A one-line reason with what to do, for the errno values people actually meet."""
    what = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = f"the disk or quota is full: free space under {parent}, or point storage_root elsewhere"
    elif exc.errno == errno.EFBIG:
        advice = f"a file-size limit (filesystem, or ulimit -f) stopped the write under {parent}"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = f"make {parent} writable for this user, or point storage_root elsewhere"
    else:
        advice = "check space and permissions"
    return f"{what}{where}; {advice}"


def _publish(tmp: Path, final: Path, replace: bool) -> None:
    """Rename the finished ``tmp`` to ``final`` atomically, resolving a race with another writer."""
    aside: list[Path] = []  # what stood at the final name and is deleted once ours is in place

    def set_aside() -> None:
        target = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(final, target)
            aside.append(target)

    try:
        if replace:
            set_aside()
        for _ in range(3):
            try:
                os.rename(tmp, final)
                break
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                    raise
                if is_complete(final):
                    return  # a concurrent writer of the same key won; its store equals ours
                set_aside()  # something incomplete squats the name (a half-deleted store, a partial copy)
        else:
            raise StoreError(f"cannot publish {final}: something keeps recreating it; remove it and rerun")
        _fsync_dir(final.parent)
    finally:
        for path in aside:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()


def _sync_tree(path: Path) -> None:
    """fsync every file and folder under ``path``, so the rename never publishes data still in flight.

    A SIGKILL loses nothing the kernel already accepted, but a power cut can: without this, the rename
    could reach the disk before the arrays it publishes.
    """
    for folder, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the files themselves were synced
        pass
    finally:
        os.close(fd)


class _WriterLock:
    """An exclusive ``flock`` on a lock file beside a temporary store, held while its writer lives.

    The kernel drops the lock when the process dies, however it dies, which is what lets a later writer
    tell a crashed write's leftovers from a live one. The file records pid and host for people.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        _try_lock(self.fd)
        with contextlib.suppress(OSError):
            os.write(self.fd, f"{os.getpid()} {socket.gethostname()}\n".encode())

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # before unlocking, so nobody mistakes the file for a dead writer's
        os.close(self.fd)
        self.fd = None


def _try_lock(fd: int) -> bool | None:
    """Take an exclusive lock without waiting: True taken, False held elsewhere, None unsupported here."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP: the filesystem has no locks


#: A lock file with no temporary store beside it is removed only once older than this (seconds): a
#: writer creates the file an instant before it locks it and creates its directory.
_ORPHAN_LOCK_AGE = 60.0


def collect_garbage(stage_dir: Path) -> list[Path]:
    """Remove what crashed writers left in a stage folder; returns what was removed.

    A temporary store (``.<name>.tmp-<token>``) is a leftover when its lock file is gone or its lock can
    be taken (its writer is dead); ``.<name>.old-<token>`` folders are stores replaced by a forced
    recompute whose writer died before deleting them. Live writes and anything on a filesystem without
    locks are left alone.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(stage_dir))
    except OSError:
        return removed
    names = {e.name for e in entries}
    for entry in entries:
        name = entry.name
        if not name.startswith("."):
            continue
        path = Path(stage_dir) / name
        if ".old-" in name and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        elif ".tmp-" in name and entry.is_dir(follow_symlinks=False):
            if _writer_is_dead(Path(f"{path}.lock"), path):
                removed.append(path)
        elif ".tmp-" in name and name.endswith(".lock") and name[: -len(".lock")] not in names:
            with contextlib.suppress(OSError):
                if time.time() - entry.stat().st_mtime > _ORPHAN_LOCK_AGE and _writer_is_dead(path, None):
                    removed.append(path)
    return removed


def _writer_is_dead(lock_path: Path, tmp: Path | None) -> bool:
    """If the writer owning ``lock_path`` is dead, remove its temporary store and lock file; say so."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        # A temporary store always has its lock file while its writer lives (created before, removed
        # after it); without one it is a leftover, e.g. of an older version of this code.
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        return tmp is not None
    except OSError:
        return False
    try:
        if not _try_lock(fd):
            return False
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        return True
    finally:
        os.close(fd)


def library_versions() -> dict[str, str]:
    """Versions of what shaped the numbers, for provenance."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for dist in ("cutswap", "torch", "torchvision", "numpy", "zarr", "scikit-learn", "timm"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


def empty_array(
    group: zarr.Group, name: str, shape: tuple[int, ...], dtype: Any, per_chunk: int = 1, per_shard: int = 128
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
    group: zarr.Group, name: str, data: Any, per_chunk: int = 1, per_shard: int = 128
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
    with publishing(path, attrs, replace=mode == "force") as group:
        write(group)
        prov = dict(group.attrs["provenance"])
        prov["seconds"] = round(time.perf_counter() - start, 3)
        group.attrs["provenance"] = prov
    return ref, True
