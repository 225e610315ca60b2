"""Object storage that stops answering, said in one line when a call has waited ``stall_seconds()`` (30 s)
for it, and in one more when the storage answers again.

Why: obstore waits 30 s for an answer to a request, then retries it with backoff for minutes, and meanwhile
a training waiting on its checkpoint, or a stage on its shards, shows nothing: its progress line just
stops. So every call to an object store (``cutswap.roots``, ``cutswap.pipeline.stores.objects``, and Zarr's
through ``roots.zarr_store``) runs inside ``waiting(url)``, which records it as in flight, and one daemon
thread per process looks every second at how long each storage has been silent while calls wait on it
(since its last answer, or the oldest waiting call's start). A stall is said once, however many calls wait
through it::

    storage s3://bucket has not answered for 30 s (since 12:03:04; still waiting)
    storage s3://bucket answers again after 62 s

On a Dask worker the lines come back to the run's console like its other ``cutswap`` records, naming the
worker (``cutswap.pipeline.parallel.worker_logs``); the run's log has them all. A storage is named by its
scheme and bucket, since the calls of one bucket stall together. Local folders, ``file://`` and
``memory://`` roots are not watched.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from typing import Any

from zarr.storage import WrapperStore

log = logging.getLogger(__name__)

#: Seconds a call may wait before the stall is said (the environment variable, for tests and slow links).
STALL_ENV = "CUTSWAP_STORAGE_STALL_SECONDS"

_WATCHED = ("s3", "gs", "az")


def stall_seconds() -> float:
    """How long a call to object storage may wait before the stall is said (default 30 s)."""
    try:
        seconds = float(os.environ.get(STALL_ENV, 30.0))
    except ValueError:
        return 30.0
    return max(seconds, 0.1) if math.isfinite(seconds) else 30.0


def storage_of(url: str) -> str | None:
    """The storage a URL is on, as the lines name it (``s3://bucket``); None when it is not watched."""
    kind, sep, rest = url.partition("://")
    if not sep or kind.lower() not in _WATCHED:
        return None
    return f"{kind.lower()}://{rest.split('/', 1)[0]}"


def _answered(exc: BaseException) -> bool:
    """Whether a call that raised got its answer from the storage (no such object, one exists already)."""
    return isinstance(exc, FileNotFoundError | FileExistsError) or type(exc).__name__ in (
        "AlreadyExistsError",
        "PreconditionError",
        "NotModifiedError",
    )


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


class _Watch:
    """The calls in flight in this process, by storage, each storage's last answer, and the stalls said.

    A storage is silent since its last answer or since the oldest call now waiting on it, whichever is
    later: calls that waited through a stall and get their answers one after the other are one stall.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[int, tuple[str, float]] = {}  # token -> (storage, monotonic start)
        self._answered: dict[str, float] = {}  # storage -> when it last answered (monotonic)
        self._stalled: dict[str, float] = {}  # storage -> since when it is silent, once said
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def begin(self, storage: str) -> int:
        with self._lock:
            token = next(self._tokens)
            self._calls[token] = (storage, time.monotonic())
            if self._thread is None or not self._thread.is_alive():  # first call, or a forked child
                self._thread = threading.Thread(target=self._run, daemon=True, name="cutswap-storage-watch")
                self._thread.start()
        return token

    def end(self, token: int, answered: bool) -> None:
        now = time.monotonic()
        with self._lock:
            storage, _ = self._calls.pop(token)
            if answered:
                self._answered[storage] = now
            since = self._stalled.get(storage)
            if since is None:
                return
            if not answered and any(s == storage for s, _ in self._calls.values()):
                return
            # Answered: the stall is over. Or the last waiting call gave up (a timeout after obstore's
            # retries) and its caller reports its own error: the next call to wait that long is a new stall.
            del self._stalled[storage]
        if answered:
            log.info("storage %s answers again after %s s", storage, _seconds(now - since))

    def check(self) -> None:
        """Say each storage silent for ``stall_seconds()`` while a call waits on it, once per stall."""
        limit, now = stall_seconds(), time.monotonic()
        said = []
        with self._lock:
            silent: dict[str, float] = {}
            for storage, start in self._calls.values():
                silent[storage] = min(start, silent.get(storage, start))
            for storage, start in silent.items():
                since = max(start, self._answered.get(storage, start))
                if storage not in self._stalled and now - since >= limit:
                    self._stalled[storage] = since
                    said.append((storage, now - since, time.time() - (now - since)))
        for storage, waited, since in said:
            clock = time.strftime("%H:%M:%S", time.localtime(since))
            log.warning(
                "storage %s has not answered for %s s (since %s; still waiting)",
                storage,
                _seconds(waited),
                clock,
            )

    def _run(self) -> None:
        while True:
            time.sleep(min(max(stall_seconds() / 10, 0.05), 1.0))
            with contextlib.suppress(Exception):  # a watcher must never end: the next check tries again
                self.check()


_WATCH = _Watch()


@contextlib.contextmanager
def waiting(url: str) -> Iterator[None]:
    """Around one call to the storage at ``url``: recorded as in flight while it runs (see the module)."""
    storage = storage_of(url)
    if storage is None:
        yield
        return
    watch = _WATCH  # one watch for the whole call, even if the module's is replaced meanwhile
    token = watch.begin(storage)
    answered = False
    try:
        yield
        answered = True
    except BaseException as exc:
        answered = _answered(exc)
        raise
    finally:
        watch.end(token, answered)


class WatchedStore(WrapperStore):
    """A Zarr store whose every call to the storage runs inside ``waiting`` (Zarr's reads and writes of
    chunks and metadata, on object storage, are most of a stage's calls)."""

    def __init__(self, store: Any, url: str = "") -> None:
        super().__init__(store)
        self.url = url

    def _with_store(self, store: Any) -> WatchedStore:
        return type(self)(store, self.url)

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        with waiting(self.url):
            return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(self, prototype: Any, key_ranges: Iterable[tuple[str, Any]]) -> list[Any]:
        with waiting(self.url):
            return await self._store.get_partial_values(prototype, key_ranges)

    async def exists(self, key: str) -> bool:
        with waiting(self.url):
            return await self._store.exists(key)

    async def is_empty(self, prefix: str) -> bool:
        with waiting(self.url):
            return await self._store.is_empty(prefix)

    async def set(self, key: str, value: Any) -> None:
        with waiting(self.url):
            await self._store.set(key, value)

    async def set_if_not_exists(self, key: str, value: Any) -> None:
        with waiting(self.url):
            await self._store.set_if_not_exists(key, value)

    async def _set_many(self, values: Iterable[tuple[str, Any]]) -> None:
        with waiting(self.url):
            await self._store._set_many(values)

    async def delete(self, key: str) -> None:
        with waiting(self.url):
            await self._store.delete(key)

    async def delete_dir(self, prefix: str) -> None:
        with waiting(self.url):
            await self._store.delete_dir(prefix)

    async def clear(self) -> None:
        with waiting(self.url):
            await self._store.clear()

    def list(self) -> AsyncIterator[str]:
        return self._listed(self._store.list())

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        return self._listed(self._store.list_prefix(prefix))

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        return self._listed(self._store.list_dir(prefix))

    async def _listed(self, items: AsyncIterator[str]) -> AsyncGenerator[str, None]:
        with waiting(self.url):
            async for item in items:
                yield item

    async def _get_many(
        self, requests: Iterable[tuple[str, Any, Any]]
    ) -> AsyncGenerator[tuple[str, Any], None]:
        with waiting(self.url):
            async for item in self._store._get_many(requests):
                yield item
