"""Atomic publication of files and folders: a reader sees the old version or the new one, never a mix.

Everything the project writes for a later run or a reader to trust goes through here: stores
(``cutswap.stores``), generated datasets (``cutswap.data.builds``), reports, checkpoints and job results.
The protocol, for a file or a folder at ``final``::

    .<name>.tmp-<token>     written first, every byte fsynced (a power cut cannot publish data in flight)
    .<name>.lock            flock held while the old version is swapped out and the new one in (folders),
                            deleted after
    .<name>.old-<token>     the previous version, renamed aside and deleted once the new one is in place

``os.replace`` swaps a file atomically; POSIX cannot swap two folders, so a folder's old version is
renamed aside first: readers see it, then no folder for an instant, then the new one. On any error the
temporary copy is removed and nothing is published.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync a folder's entry list, so a rename inside it is durable; a no-op where refused."""
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


def sync_tree(path: Path) -> None:
    """fsync every file and folder under ``path`` (or the file ``path``) before it is renamed into place.

    A SIGKILL loses nothing the kernel already accepted, but a power cut can: without this, the rename
    could reach the disk before the data it publishes.
    """
    path = Path(path)
    if path.is_file():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    for folder, _dirs, files in os.walk(path):
        for name in files:
            sync_tree(Path(folder) / name)
        fsync_dir(Path(folder))


def temporary_sibling(final: Path, kind: str = "tmp") -> Path:
    """A hidden, unique name beside ``final`` (``.<name>.<kind>-<token>``) that no reader trusts."""
    return final.parent / f".{final.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def remove(path: Path) -> None:
    """Delete a file or a folder, whichever it is; missing is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def locked(final: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``final`` (flock), so two writers do not interleave their swaps.

    The lock file is deleted before it is released, so nothing is left beside ``final``; a writer that
    opened it just before then locks a deleted file and may swap at the same time as the next one. Each
    swap stays atomic on its own (renames), so the worst case is the last writer's version winning.
    """
    lock = final.parent / f".{final.name}.lock"
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        with contextlib.suppress(OSError):  # filesystems without locks: the swap is still atomic per rename
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


def swap_into_place(tmp: Path, final: Path, keep_theirs: Callable[[], bool] | None = None) -> None:
    """Rename the finished ``tmp`` folder to ``final``, setting aside (then deleting) what stood there.

    Args:
        tmp: the finished, synced folder.
        final: where it is published.
        keep_theirs: called when ``final`` reappears between our set-aside and our rename (another
            writer won a race); True keeps theirs and drops ours (deterministic outputs: theirs equals
            ours), False raises.

    Raises:
        OSError: the rename failed for another reason; the previous version is restored when possible.
    """
    old = temporary_sibling(final, "old") if final.exists() or final.is_symlink() else None
    if old is not None:
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        if keep_theirs is not None and final.exists() and keep_theirs():
            remove(tmp)
            return
        if old is not None and not final.exists():
            os.rename(old, final)
            old = None
        raise
    finally:
        if old is not None:
            remove(old)
    fsync_dir(final.parent)


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and replaces ``final`` atomically."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(final)
    try:
        yield tmp
        sync_tree(tmp)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(final: Path, text: str) -> None:
    """``Path.write_text``, atomically (``atomic_file``)."""
    with atomic_file(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a new temporary folder to fill; on success it is synced and swapped in for ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
        sync_tree(tmp)
        with locked(final):
            swap_into_place(tmp, final)
    finally:
        if tmp.exists():
            remove(tmp)
