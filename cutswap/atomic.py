"""Atomic publication of files and folders: a reader sees the old version or the new one, never a mix.

Everything the project writes for a later run or a reader to trust goes through here: stores
(``cutswap.pipeline.stores``), generated datasets (``cutswap.data.builtin.builds``), reports, checkpoints and
job results. The protocol, for a file or a folder at ``final``::

    .<name>.tmp-<token>       written first, every byte fsynced (a power cut cannot publish data in flight)
    .<name>.tmp-<token>.lock  flock held by its writer while it lives (``WriterLock``): the kernel drops it
                              when the writer dies, however it dies, so the next writer of the folder
                              knows a leftover from a live write (``remove_leftovers``)
    .<name>.lock            flock held while the old version is swapped out and the new one in (folders),
                            deleted after (``locked``)
    .<name>.old-<token>     the previous version, renamed aside and deleted once the new one is in place

``os.replace`` swaps a file atomically; POSIX cannot swap two folders, so a folder's old version is
renamed aside first: readers see it, then no folder for an instant, then the new one. On any error the
temporary copy is removed and nothing is published.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import socket
import threading
import time
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
def locked(final: Path, kind: str = "lock", waiting: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``.<name>.<kind>`` beside ``final`` (flock), waiting for it: two holders never overlap.

    The file records who holds it (pid and host, for ``waiting`` and for people) and is deleted before it
    is released, so nothing is left beside ``final``. A waiter that opened it just before then finds, once
    it has the lock, that the path names another file or none, and starts over on the current one.

    Args:
        waiting: called once, with the holder's record, when the lock is held elsewhere.
    """
    lock = final.parent / f".{final.name}.{kind}"
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        taken = try_lock(fd)
        if taken is None:  # a filesystem without locks: each rename is still atomic on its own
            break
        if not taken:
            if waiting is not None:
                with contextlib.suppress(OSError):
                    waiting(os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process")
                waiting = None
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, _holder(), 0)
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
    writer = WriterLock(Path(f"{tmp}.lock"))
    try:
        yield tmp
        sync_tree(tmp)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        writer.release()


def write_text(final: Path, text: str) -> None:
    """``Path.write_text``, atomically (``atomic_file``)."""
    with atomic_file(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_dir(final: Path, keep_theirs: Callable[[], bool] | None = None) -> Iterator[Path]:
    """Yield a new temporary folder to fill; on success it is synced and swapped in for ``final``
    (``keep_theirs``: see ``swap_into_place``)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(final)
    writer = WriterLock(Path(f"{tmp}.lock"))
    try:
        tmp.mkdir()
        yield tmp
        sync_tree(tmp)
        with locked(final):
            swap_into_place(tmp, final, keep_theirs)
    finally:
        if tmp.exists():
            remove(tmp)
        writer.release()


def _holder() -> bytes:
    return f"{os.getpid()} {socket.gethostname()}\n".encode()


#: Seconds between a live writer's heartbeats (``Heartbeat``).
HEARTBEAT_SECONDS = 30.0


def stale_seconds() -> float:
    """How long a writer's heartbeat must have been silent before its leftovers are collected.

    Ten heartbeats by default; ``CUTSWAP_GC_STALE_SECONDS`` sets it (tests that kill a writer, or a site
    whose clocks disagree by more than a few minutes).
    """
    return float(os.environ.get("CUTSWAP_GC_STALE_SECONDS", 10 * HEARTBEAT_SECONDS))


def silence_limit() -> float:
    """How long a live writer's own heartbeat may have been silent before it must not publish: half of
    ``stale_seconds`` (clocks of two hosts disagree), and never less than two beats (a site, or a test,
    that collects at once)."""
    return max(stale_seconds() / 2, 2 * HEARTBEAT_SECONDS)


class Heartbeat:
    """Call ``beat`` now and every ``HEARTBEAT_SECONDS`` from a daemon thread until ``stop``.

    A lock result alone never proves a writer dead (NFS mounted ``nolock`` or ``local_lock`` grants every
    host the same lock; object storage has none): leftovers are collected only once their writer's
    heartbeat has been silent for ``stale_seconds``. A failed beat is retried at the next one.
    """

    def __init__(self, beat: Callable[[], None]) -> None:
        self._beat, self._stop = beat, threading.Event()
        beat()
        self._last = time.monotonic()
        self._longest = 0.0
        self._thread = threading.Thread(target=self._run, name="cutswap-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):
                self._beat()
                now = time.monotonic()
                self._longest = max(self._longest, now - self._last)
                self._last = now

    def longest_silence(self) -> float:
        """The longest time, in seconds, between two successful beats, or since the last one until now.

        A writer whose heartbeat was silent for ``stale_seconds`` (its process paused, its host cut off
        from the storage) may have lost its leftovers to another host's collection: it must not publish.
        """
        return max(self._longest, time.monotonic() - self._last)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class WriterLock:
    """An exclusive ``flock`` on ``<temporary>.lock``, held while the temporary's writer lives.

    The kernel drops the lock when the process dies, however it dies, which is what lets a later writer
    tell a crashed write's leftovers from a live one; the file's time is the writer's heartbeat, for
    filesystems whose locks lie. The file records pid and host for people.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try_lock(self.fd)
        with contextlib.suppress(OSError):
            os.write(self.fd, _holder())
        self._heartbeat = Heartbeat(lambda: os.utime(self.fd))

    def longest_silence(self) -> float:
        """``Heartbeat.longest_silence`` of this writer's lock file."""
        return self._heartbeat.longest_silence()

    def release(self) -> None:
        if self.fd is None:
            return
        self._heartbeat.stop()
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # before unlocking, so nobody mistakes the file for a dead writer's
        os.close(self.fd)
        self.fd = None


def try_lock(fd: int) -> bool | None:
    """Take an exclusive lock without waiting: True taken, False held elsewhere, None unsupported here."""
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


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove what killed writers left in a folder; returns what was removed.

    A temporary file or folder (``.<name>.tmp-<token>``) is a leftover when its lock file is gone, or its
    lock can be taken (its writer is dead) and the lock file's heartbeat has been silent for
    ``stale_seconds`` (a lock that NFS grants to every host proves nothing alone); ``.<name>.old-<token>``
    folders are versions set aside by a writer that died before deleting them. Live writes and anything
    on a filesystem without locks are left alone. Every writer of a folder calls this first (stores,
    reports, a run's log).
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    names = {e.name for e in entries}
    for entry in entries:
        name = entry.name
        if not name.startswith("."):
            continue
        path = Path(folder) / name
        if ".old-" in name and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        elif ".tmp-" in name and not name.endswith(".lock"):
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
            remove(tmp)
        return tmp is not None
    except OSError:
        return False
    try:
        if time.time() - os.fstat(fd).st_mtime < stale_seconds() or not try_lock(fd):
            return False
        if tmp is not None:
            remove(tmp)
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        return True
    finally:
        os.close(fd)
