"""Publishing stores on object storage, where there is no rename and no lock.

One store (a stage output under one key) is a prefix of its own::

    <root>/<stage>/<name>-<key>/
        attempt-<id>/            everything one writer wrote: the Zarr group and its extra files
        attempt-<id>.alive       that writer's heartbeat, rewritten every 30 s while it writes
        commit-<generation>.json the commit marker of one generation (6 digits), created at most once:
                                 {"attempt", "generation", "digest", "objects": {path: [size, etag]},
                                  "committed", "host"}

How a store is published, and why:

1. A writer writes under a fresh attempt prefix (no writer ever shares another's objects, so two writers
   never share a Zarr shard), computes the content digests of what it wrote and records them in the
   group's attrs, ``complete: true`` last. What this process wrote through the group is hashed as it is
   written (``HashingStore``); objects written by other processes (the precompute stages' shards, by the
   Dask workers) are read back and hashed once.
2. It commits by creating the marker with a conditional PUT (``If-None-Match: *``): of any number of
   writers of one generation exactly one succeeds, on S3, GCS, Azure and a local folder alike. Readers
   only ever look through a marker, so an attempt that was never committed (a crash between upload and
   commit, a loser of the race) is invisible. Stages are deterministic, so the loser's store equals the
   winner's; the loser deletes its attempt and returns the winner's.
3. A forced recompute commits the next generation instead of overwriting: a reader that opened the old
   generation keeps reading consistent objects, and the next reader takes the highest generation.
4. Garbage (attempts never committed, older generations) is deleted by the next writer of the key, or by
   ``collect_garbage``, only once its heartbeat and its newest object are older than
   ``cutswap.atomic.stale_seconds``, and the latest commit too (a superseded generation stays readable
   that long): there is no lock to ask, and a slow live writer must never lose its attempt. A writer
   whose own heartbeat fell silent that long (paused, cut off) does not commit; nor does one whose
   objects are not all listed, and one that cannot tell whether its marker's PUT succeeded leaves its
   attempt for collection instead of deleting it.

A marker records every object's size and ETag, as listed after the upload: a store is verified on
reuse by one listing (an object replaced, removed or added after the commit is named), without
downloading it again. The sha256 digests in the attrs are the store's content identity (downstream keys
use it), as on a local root.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import zarr
from zarr.storage import WrapperStore

from cutswap import atomic, roots
from cutswap.errors import StoreError, one_line
from cutswap.pipeline.stores.checksums import content_digest, damage_of
from cutswap.stalls import waiting

log = logging.getLogger(__name__)

_COMMIT = "commit-"
_ATTEMPT = "attempt-"
_ALIVE = ".alive"


def _listing(folder: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The attempt prefixes and the objects directly under a store's prefix."""
    import obstore

    try:
        with waiting(folder):
            found = obstore.list_with_delimiter(roots.object_store(folder))
    except FileNotFoundError:
        return [], []
    except Exception as exc:  # noqa: BLE001 (obstore raises its own classes for every backend error)
        raise StoreError(f"cannot list {folder}: {one_line(exc)}") from exc
    return [p.rstrip("/") for p in found["common_prefixes"]], list(found["objects"])


def latest_commit(folder: str, objects: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The marker of a store's highest committed generation; None when nothing was committed.

    ``objects``: the store prefix's listing (``_listing``), when the caller has it already.
    """
    if objects is None:
        _, objects = _listing(folder)
    markers = sorted(m["path"] for m in objects if m["path"].startswith(_COMMIT))
    if not markers:
        return None
    marker = _marker(folder, markers[-1])
    if marker is None:
        raise StoreError(
            f"{roots.join(folder, markers[-1])} was listed but cannot be read; is another process deleting "
            f"{folder}? Rerun"
        )
    return marker


def _marker(folder: str, name: str) -> dict[str, Any] | None:
    """One commit marker; None when it does not exist."""
    data = roots.read_bytes(roots.join(folder, name))
    if data is None:
        return None
    try:
        marker = json.loads(data)
    except ValueError:
        marker = None
    if not isinstance(marker, dict) or not {"attempt", "generation", "objects"} <= marker.keys():
        raise StoreError(
            f"{roots.join(folder, name)} is not a commit marker (damaged); delete {folder} to recompute "
            "the store"
        )
    return marker


def attempt_url(folder: str, marker: dict[str, Any]) -> str:
    """Where a committed generation's objects are."""
    return roots.join(folder, _ATTEMPT + marker["attempt"])


def _objects(url: str) -> dict[str, list[Any]]:
    """Every object under ``url``: relative path -> [size, etag]."""
    import obstore

    with waiting(url):
        metas = obstore.list(roots.object_store(url)).collect()
    return {m["path"]: [m["size"], m["e_tag"]] for m in sorted(metas, key=lambda m: m["path"])}


def verify(folder: str, marker: dict[str, Any]) -> str | None:
    """What differs between a committed attempt's objects and those its marker recorded; None if nothing.

    One listing decides when sizes and ETags match. An ETag is not the content's identity everywhere: a
    copy of the tree (another bucket, ``aws s3 sync`` uploading in parts, a ``file://`` root, whose ETags
    derive from inodes) gives the same bytes other ETags. So when only ETags differ, the content decides,
    against the sha256 digests the store's attrs recorded (every object is read once).
    """
    url = attempt_url(folder, marker)
    actual = _objects(url)
    retagged = False
    for path, (size, etag) in marker["objects"].items():
        if path not in actual:
            return f"{path} is missing"
        if actual[path][0] != size:
            return f"{path} was replaced after its commit"
        retagged |= actual[path][1] != etag
    if extra := sorted(set(actual) - set(marker["objects"])):
        return f"{extra[0]} was added after its commit"
    if not retagged:
        return None
    if (attrs := roots.group_attrs(url)) is None:
        return "zarr.json is missing or damaged"
    return damage_of(file_digests(url), attrs.get("digests"))


def file_digests(url: str, known: dict[str, str] | None = None) -> dict[str, str]:
    """sha256 of every object under ``url`` but the root ``zarr.json``: from ``known`` (hashed as this
    process wrote them) where there, else read back from the server."""
    import obstore

    store = roots.object_store(url)
    known = known or {}
    digests = {}
    with waiting(url):
        paths = sorted(m["path"] for m in obstore.list(store).collect())
    for path in paths:
        if path == "zarr.json":
            continue
        if path in known:
            digests[path] = known[path]
            continue
        h = hashlib.sha256()
        with waiting(url):
            for chunk in obstore.get(store, path).stream():
                h.update(chunk)
        digests[path] = h.hexdigest()
    return digests


class HashingStore(WrapperStore):
    """A Zarr store that records the sha256 of every object it writes (``hashes``), so that a commit reads
    back only what other processes wrote. A key written only if absent, or deleted, is forgotten (then
    read back, or gone)."""

    def __init__(self, store: Any, hashes: dict[str, str]) -> None:
        super().__init__(store)
        self.hashes = hashes

    async def set(self, key: str, value: Any) -> None:
        await self._store.set(key, value)
        self.hashes[key] = hashlib.sha256(value.to_bytes()).hexdigest()

    async def _set_many(self, values: Any) -> None:
        for key, value in values:
            await self.set(key, value)

    async def set_if_not_exists(self, key: str, value: Any) -> None:
        await self._store.set_if_not_exists(key, value)
        self.hashes.pop(key, None)

    async def delete(self, key: str) -> None:
        await self._store.delete(key)
        self.hashes.pop(key, None)


@contextlib.contextmanager
def publishing(folder: str, attrs: dict[str, Any], replace: bool = False) -> Iterator[Any]:
    """Yield a new group under a fresh attempt prefix; commit it only if the body succeeds.

    Args:
        folder: The store's prefix (``<root>/<stage>/<name>-<key>``).
        attrs: Attributes written before the body runs (the body may add more).
        replace: Commit the next generation over a committed one (a forced recompute). Otherwise a
            generation committed meanwhile by another writer is kept and ours is deleted.

    Raises:
        StoreError: the storage refused a write, naming the store.
    """
    attempt = uuid.uuid4().hex[:16]
    url = roots.join(folder, _ATTEMPT + attempt)
    alive = roots.join(folder, _ATTEMPT + attempt + _ALIVE)
    try:
        collect_garbage(folder)
    except StoreError as exc:  # a role that may not delete, say: garbage stays, the write goes on
        log.warning("store %s: leftovers not collected: %s", folder, exc)
    hashes: dict[str, str] = {}
    heartbeat = None
    try:
        heartbeat = atomic.Heartbeat(lambda: roots.write_bytes(alive, _holder()))
        group = zarr.open_group(store=HashingStore(roots.zarr_store(url), hashes), mode="w-")
        group.attrs.update({**attrs, "complete": False})
    except Exception as exc:  # noqa: BLE001
        if heartbeat is not None:
            heartbeat.stop()
        _discard(url, alive)
        raise StoreError(f"cannot write {folder}: {one_line(exc)}") from exc
    committed: bool | None = False  # None: the commit's answer was lost, so the attempt may be in use
    try:
        yield group
        digests = file_digests(url, hashes)
        group.attrs.update({"digests": digests, "digest": content_digest(digests), "complete": True})
        _check_intact(folder, url, heartbeat, hashes)
        committed = _commit(folder, attempt, group.attrs["digest"], replace)
    except _CommitUnknown:
        committed = None
        raise
    except StoreError:
        raise
    except OSError as exc:
        raise StoreError(f"writing {folder} failed: {one_line(exc)}") from exc
    finally:
        heartbeat.stop()
        if committed:
            with contextlib.suppress(Exception):
                roots.delete(alive)
        elif committed is False:
            _discard(url, alive)


class _CommitUnknown(StoreError):
    """The commit marker's PUT failed and its result cannot be read back: the attempt is left to
    ``collect_garbage``, which keeps it if the marker turns out to name it."""


def _check_intact(folder: str, url: str, heartbeat: atomic.Heartbeat, hashes: dict[str, str]) -> None:
    """Refuse to commit an attempt that another host's collection may have touched.

    Collection goes by heartbeats: a writer whose own heartbeat fell silent long enough (its process
    paused, its host cut off from the storage) cannot know that its objects are all still there, and an
    object it wrote that the listing lacks proves they are not.
    """
    silent = heartbeat.longest_silence()
    if silent >= atomic.silence_limit():
        raise StoreError(
            f"cannot commit {folder}: this writer's heartbeat was silent for {silent:.0f} s (a paused "
            "process, a host cut off from the storage), so its attempt may have been collected meanwhile; "
            "nothing was committed, rerun"
        )
    if lost := sorted(set(hashes) - set(_objects(url))):
        raise StoreError(
            f"cannot commit {folder}: {lost[0]} vanished from its attempt; nothing was committed, rerun"
        )


def _commit(folder: str, attempt: str, digest: str, replace: bool) -> bool:
    """Create the next generation's marker; False when another writer committed first (ours is dropped)."""
    import obstore

    latest = latest_commit(folder)
    if latest is not None and not replace:
        return False  # committed meanwhile by another writer of the key; its store equals ours
    generation = 0 if latest is None else latest["generation"] + 1
    marker = {
        "attempt": attempt,
        "generation": generation,
        "digest": digest,
        "objects": _objects(roots.join(folder, _ATTEMPT + attempt)),
        "committed": datetime.now(UTC).isoformat(),
        "host": socket.gethostname(),
    }
    name = f"{_COMMIT}{generation:06d}.json"
    try:
        with waiting(folder):
            obstore.put(roots.object_store(folder), name, json.dumps(marker).encode(), mode="create")
        return True
    except Exception as exc:  # noqa: BLE001 (obstore raises its own classes for every backend error)
        exists = isinstance(exc, FileExistsError) or type(exc).__name__ == "AlreadyExistsError"
        try:  # a request retried after a lost answer finds its own marker: the answer is in the marker
            theirs = _marker(folder, name)
        except Exception:  # noqa: BLE001
            theirs = None
        if theirs is None:
            why = "it exists but cannot be read" if exists else one_line(exc)
            raise _CommitUnknown(f"cannot commit {folder}/{name}: {why}; rerun") from exc
        if theirs["attempt"] == attempt:
            return True
        log.info(
            "store %s: generation %d was committed by another writer; keeping theirs", folder, generation
        )
        return False


def _discard(url: str, alive: str) -> None:
    """Delete an attempt and then its heartbeat (best effort: what is left is collected later)."""
    with contextlib.suppress(Exception):
        roots.delete_tree(url)
    with contextlib.suppress(Exception):
        roots.delete(alive)


def _holder() -> bytes:
    return json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "time": datetime.now(UTC).isoformat()}
    ).encode()


def collect_garbage(folder: str, stale: float | None = None) -> list[str]:
    """Delete the attempts of a store that no reader can reach and whose writer has gone silent.

    An attempt is garbage when it is not the latest generation's and its heartbeat (or, without one, its
    newest object) is older than ``stale`` seconds (default ``cutswap.atomic.stale_seconds``). Returns
    the attempt prefixes deleted.
    """
    stale = atomic.stale_seconds() if stale is None else stale
    prefixes, objects = _listing(folder)
    marker = latest_commit(folder, objects)
    latest = marker["attempt"] if marker else None
    current = f"{_ATTEMPT}{latest}"  # the latest generation's attempt, which readers use
    heartbeats = _heartbeats(objects)
    now = datetime.now(UTC)

    def recent(seen: datetime | None) -> bool:
        return seen is not None and (now - seen).total_seconds() < stale

    removed = _collect_attempts(folder, prefixes, current, heartbeats, objects, recent)
    attempts = {p.rsplit("/", 1)[-1] for p in prefixes}
    _collect_heartbeats(folder, heartbeats, attempts, current, recent)
    # Markers of older generations point at deleted attempts now; the latest one is all readers use.
    return removed


def _heartbeats(objects: list[dict[str, Any]]) -> dict[str, datetime]:
    """Attempt name -> when its heartbeat was last written, from the store prefix's listing.

    Why from that listing: a heartbeat (``<attempt>.alive``) lies beside its attempt's prefix, not under
    it, so the one listing that found the attempts holds every heartbeat; no request per attempt.
    """
    return {m["path"][: -len(_ALIVE)]: m["last_modified"] for m in objects if m["path"].endswith(_ALIVE)}


def _collect_attempts(
    folder: str,
    prefixes: list[str],
    current: str,
    heartbeats: dict[str, datetime],
    objects: list[dict[str, Any]],
    recent: Callable[[datetime | None], bool],
) -> list[str]:
    """Delete the attempts under ``prefixes`` but ``current`` (the latest generation's) that are not in use;
    return their names.

    Why in this order: the heartbeats and the time of the latest commit come from the listing at hand,
    while an attempt's newest object takes a listing of its own, so it is looked up only when they leave
    the attempt unclaimed.
    """
    # A generation superseded by the latest commit stays readable for ``stale`` after that commit.
    committed_at = max((m["last_modified"] for m in objects if m["path"].startswith(_COMMIT)), default=None)
    removed = []
    for prefix in prefixes:
        name = prefix.rsplit("/", 1)[-1]
        if not name.startswith(_ATTEMPT) or name == current:
            continue
        # The newest object too: a writer's workers may write on while its own heartbeat is late.
        if recent(heartbeats.get(name)) or recent(committed_at) or recent(_newest(roots.join(folder, name))):
            continue
        _discard(roots.join(folder, name), roots.join(folder, name + _ALIVE))
        removed.append(name)
    return removed


def _collect_heartbeats(
    folder: str,
    heartbeats: dict[str, datetime],
    attempts: set[str],
    current: str,
    recent: Callable[[datetime | None], bool],
) -> None:
    """Delete the heartbeats that no writer keeps (best effort): one killed before its first object, or the
    latest attempt's (``current``) after its commit's answer was lost.

    Why here: ``_collect_attempts`` deletes a heartbeat only with its attempt, and these belong to no
    attempt it deletes, so without this they would stay beside the store for good. One written within
    ``stale`` is kept: its writer may still be at work.
    """
    for name, seen in heartbeats.items():
        if (name not in attempts or name == current) and not recent(seen):
            with contextlib.suppress(Exception):
                roots.delete(roots.join(folder, name + _ALIVE))


def _newest(url: str) -> datetime | None:
    import obstore

    with waiting(url):
        metas = obstore.list(roots.object_store(url)).collect()
    return max((m["last_modified"] for m in metas), default=None)
