"""Publishing stores under a local root, crash-safely, by rename and file locks.

Every stage writes one directory per output, named by what it holds and by a key::

    <storage_root>/<stage>/<name>-<key>/        a Zarr v3 group (zarr.json + arrays), plus any extra files
        zarr.json  attrs: {"complete": true, "stage", "key", "code_version", "settings", "inputs",
                           "digests": {file: sha256}, "digest" (``cutswap.pipeline.stores.checksums``),
                           "provenance": {...versions, timings...}, ...stage-specific attrs}
    <storage_root>/<stage>/.<name>-<key>.tmp-<token>/       a write in progress (or a crashed one's leftover)
    <storage_root>/<stage>/.<name>-<key>.tmp-<token>.lock   held (flock) by that writer while it runs
    <storage_root>/<stage>/.<name>-<key>.writing            held (flock) by the one process computing the key

The key is a hash of the stage name, its code version, its own settings and its inputs' keys and content
digests, so a changed setting, or an input recomputed into other bytes, yields a new directory and leaves
the old one intact. A store is reused or opened only after its files match the checksums recorded when it
was published; a corrupt one is recomputed (``build_store``) or refused by name (``open_store``).

How a store is published (``publishing``), and why each step is there:

1. It is written under the hidden temporary name, whose lock file the writer holds for its whole life.
2. ``complete: true`` is written last, every file is fsynced, and the directory is renamed into place in
   one ``rename``. Readers only accept a directory whose attrs say ``complete``, and only a finished
   directory ever gets the final name, so a crash (SIGKILL, power loss) at any moment leaves at worst a
   hidden temporary directory that nothing reads.
3. One process computes a key at a time (``build_store`` holds ``.<name>-<key>.writing``): a second run
   that needs the same store waits for the first and reuses what it published. Should two writers of the
   same key still publish (a filesystem without locks, a forced recompute), the second rename fails
   because the target exists; ours is discarded and theirs kept: stages are deterministic, so both
   are equal and either is correct. Each writer fills its own directory, whole shards at a time, so two
   writers never share a Zarr shard (Zarr loses data silently when they do).
4. Leftovers of crashed writers are removed by the next writer in the same stage folder
   (``cutswap.atomic.remove_leftovers``): a temporary directory whose lock can be taken and whose writer's
   heartbeat (the lock file's time, refreshed every 30 s) has been silent for ``stale_seconds`` has no
   live writer. Where the filesystem offers no locks, leftovers are left alone (they are hidden and never
   read) rather than risk deleting a live write; roots on such filesystems are better given as
   ``file://`` URLs (``cutswap.pipeline.stores.objects``, no locks needed).

Disk-full and permission errors surface as ``StoreError`` naming the path, never as a traceback deep in
Zarr, and leave nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zarr

from cutswap import atomic, roots
from cutswap.errors import StoreError
from cutswap.pipeline.stores.checksums import content_digest, damage, file_digests
from cutswap.pipeline.stores.keys import jsonable


def is_complete(path: Path) -> bool:
    """True when ``path`` holds a store whose writer finished."""
    return bool((roots.group_attrs(str(path)) or {}).get("complete", False))


#: Stores this process has verified, by path and the time of their ``zarr.json``: opened many times (a
#: detector per batch, a report per figure), each is hashed once.
_VERIFIED: set[tuple[str, int]] = set()


def verify(path: Path) -> str | None:
    """What is wrong with a complete store's files (``cutswap.pipeline.stores.checksums.damage``); None
    when they are intact."""
    path = Path(path)
    try:
        seen = (str(path.resolve()), (path / "zarr.json").stat().st_mtime_ns)
    except OSError:
        return "its zarr.json cannot be read"
    if seen in _VERIFIED:
        return None
    problem = damage(path, (roots.group_attrs(str(path)) or {}).get("digests"))
    if problem is None:
        _VERIFIED.add(seen)
    return problem


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
    lock: atomic.WriterLock | None = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        atomic.remove_leftovers(parent)
        lock = atomic.WriterLock(Path(f"{tmp}.lock"))
        tmp.mkdir()  # at once: a lock file without its directory is only collected once it is old
        group = zarr.open_group(str(tmp), mode="w-")
        group.attrs.update(jsonable({**attrs, "complete": False}))
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if lock is not None:
            lock.release()
        if isinstance(exc, OSError):
            raise StoreError(f"cannot write under {parent}: {explain(exc, parent)}") from exc
        raise
    try:
        yield group
        digests = file_digests(tmp)
        group.attrs.update({"digests": digests, "digest": content_digest(digests)})
        group.attrs["complete"] = True
        atomic.sync_tree(tmp)
        if (silent := lock.longest_silence()) >= atomic.silence_limit():
            # On a filesystem whose locks lie (NFS nolock), another host may have collected part of tmp.
            raise StoreError(
                f"cannot publish {final}: this writer's heartbeat was silent for {silent:.0f} s (a paused "
                "process), so its temporary may have been collected meanwhile; nothing was published, rerun"
            )
        _publish(tmp, final, replace)
    except OSError as exc:
        if not _is_storage_error(exc, parent):
            raise
        raise StoreError(f"writing {final} failed: {explain(exc, parent)}") from exc
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


def explain(exc: OSError, parent: Path) -> str:
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
        target = atomic.temporary_sibling(final, "old")
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
        atomic.fsync_dir(final.parent)
    finally:
        for path in aside:
            atomic.remove(path)
