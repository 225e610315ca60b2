"""Where stores live: a local folder or an object-storage URL, and the Zarr stores opened on either.

A root is given as a string, in the settings (``storage_root``, ``reports_root``) and in every store
reference a task passes to a worker::

    /data/cutswap  or  storage          a local folder (relative ones are made absolute here)
    s3://bucket/prefix                  S3 or any S3-compatible server (MinIO, Ceph, moto)
    gs://bucket/prefix                  Google Cloud Storage
    az://container/prefix               Azure Blob Storage
    file:///shared/cutswap              a folder reached through the object protocol (``objects``), for
                                        shared filesystems whose locks cannot be trusted (NFS nolock)
    memory://name                       one process's memory (tests; refused with a remote cluster)

A local folder is published by rename and file locks (``cutswap.pipeline.stores.posix``); everything else
through obstore, with create-only commit markers (``cutswap.pipeline.stores.objects``). A call to object
storage that gets no answer for 30 s is said on the console, and so is the answer (``cutswap.stalls``).

Credentials and endpoints come from each process's environment, never from settings, attrs or logs:
obstore reads the standard variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``; ``GOOGLE_*``; ``AZURE_*``). An ``http://``
endpoint (a server on a private network) is allowed without ``AWS_ALLOW_HTTP``, since its owner chose it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import uuid
from pathlib import Path
from typing import Any

from cutswap.errors import StoreError, one_line

#: Schemes a root may have, and what they reach.
SCHEMES = {
    "s3": "S3 or an S3-compatible server",
    "gs": "Google Cloud Storage",
    "az": "Azure Blob Storage",
    "file": "a local or mounted folder, through the object protocol",
    "memory": "this process's memory",
}

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")


def scheme(root: str | Path) -> str | None:
    """The URL scheme of a root (``s3``), or None for a local folder."""
    match = _URL.match(str(root))
    return match.group(1).lower() if match else None


def normalize(root: str | Path) -> str:
    """A root as every process can use it: a URL without a trailing slash, or an absolute local path.

    Raises:
        StoreError: an unknown scheme, or a URL without a bucket.
    """
    text = str(root)
    kind = scheme(text)
    if kind is None:
        return str(Path(text).expanduser().absolute())
    if kind not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise StoreError(f"{text!r}: unknown scheme {kind}://; a root is a local folder or one of {known}")
    rest = _URL.match(text).group(2).strip("/")
    if kind == "file":
        return "file:///" + rest
    if not rest:
        raise StoreError(f"{text!r} names no bucket; give {kind}://BUCKET/PREFIX")
    return f"{kind}://{rest}"


def is_local(root: str) -> bool:
    """A plain local folder (the rename-and-lock protocol), as opposed to a URL."""
    return scheme(root) is None


def join(root: str, *parts: str) -> str:
    """``root/part/...`` for a folder or a URL alike."""
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts if p)])


def s3_endpoint() -> str:
    """The S3 endpoint this process's environment names ("" for AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""


def _client_options(url: str) -> dict[str, Any]:
    if scheme(url) == "s3" and s3_endpoint().startswith("http://"):
        return {"allow_http": True}
    return {}


@functools.lru_cache(maxsize=256)
def object_store(url: str) -> Any:
    """The obstore store at ``url`` (prefix included), built from this process's environment.

    Cached per URL: each carries its own connection pool, and a run opens the same stores many times.
    ``memory://`` roots share one in-memory store per name, so that every part of one process sees it.
    """
    import obstore.store

    kind = scheme(url)
    if kind == "memory":
        name, _, prefix = url[len("memory://") :].partition("/")
        store = obstore.store.PrefixStore(_memory(name), prefix) if prefix else _memory(name)
    elif kind == "file":
        store = obstore.store.LocalStore(url[len("file://") :], mkdir=True)
    else:
        store = obstore.store.from_url(url, client_options=_client_options(url))
    _URL_OF[id(store)] = (store, url)
    while len(_URL_OF) > _URLS_KEPT:
        del _URL_OF[next(iter(_URL_OF))]
    return store


#: The stores ``object_store`` built most recently, by id, with their URLs (``location_of``). Holding a
#: store keeps its id from naming another; the oldest go first, long after the cache above let them go.
_URL_OF: dict[int, tuple[Any, str]] = {}
_URLS_KEPT = 4096


@functools.cache
def _memory(name: str) -> Any:
    import obstore.store

    return obstore.store.MemoryStore()


def zarr_store(location: str, read_only: bool = False) -> Any:
    """The Zarr store for a store's folder or URL."""
    from zarr.storage import LocalStore, ObjectStore

    from cutswap.stalls import WatchedStore, storage_of

    if is_local(location):
        return LocalStore(location, read_only=read_only)
    store = ObjectStore(object_store(location), read_only=read_only)
    return WatchedStore(store, location) if storage_of(location) else store


def group_attrs(location: str) -> dict[str, Any] | None:
    """The attributes of the Zarr group at a folder or URL; None when it has no readable ``zarr.json``
    (absent, damaged, or a local file this user cannot read). A bucket that does not answer raises."""
    import json

    try:
        meta = read_bytes(join(location, "zarr.json"))
    except OSError:
        if not is_local(location):
            raise
        return None
    try:
        attrs = json.loads(meta).get("attributes", {}) if meta is not None else None
    except (ValueError, AttributeError):
        return None
    return attrs if isinstance(attrs, dict) else None


def open_group(location: str, mode: str) -> Any:
    """The Zarr group at a store's folder or URL (``mode`` as ``zarr.open_group``)."""
    import zarr

    return zarr.open_group(store=zarr_store(location, read_only=mode == "r"), mode=mode)


def location_of(group: Any) -> str:
    """The folder or URL a group was opened at, to hand to a worker that writes into it."""
    from zarr.storage import LocalStore

    store = group.store
    while hasattr(store, "_store"):  # a wrapper (cutswap.pipeline.stores.objects.HashingStore)
        store = store._store
    if isinstance(store, LocalStore):
        return str(store.root)
    try:
        return _URL_OF[id(store.store)][1]
    except (AttributeError, KeyError):
        raise StoreError("this group was not opened through cutswap.roots") from None


def _waiting(url: str) -> contextlib.AbstractContextManager[None]:
    """Around a call to object storage: said on the console when it waits too long (``cutswap.stalls``)."""
    from cutswap import stalls

    return stalls.waiting(url)


def read_bytes(url: str) -> bytes | None:
    """The object at a URL (a file under a local root), or None when there is none."""
    if is_local(url):
        try:
            return Path(url).read_bytes()
        except FileNotFoundError:
            return None
    import obstore

    parent, _, name = url.rpartition("/")
    try:
        with _waiting(url):
            return bytes(obstore.get(object_store(parent), name).bytes())
    except FileNotFoundError:
        return None


def write_bytes(url: str, data: bytes) -> None:
    """Put (replace) the object at a URL; a local file is replaced atomically."""
    if is_local(url):
        from cutswap.atomic import atomic_file

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(Path(url)) as tmp:
            Path(tmp).write_bytes(data)
        return
    import obstore

    parent, _, name = url.rpartition("/")
    with _waiting(url):
        obstore.put(object_store(parent), name, data)


def delete_tree(url: str) -> None:
    """Delete a folder or every object under a URL prefix; what is already gone is no error."""
    if is_local(url):
        from cutswap.atomic import remove

        remove(Path(url))
        return
    import obstore

    store = object_store(url)
    with _waiting(url):
        paths = [meta["path"] for meta in obstore.list(store).collect()]
        if paths:
            obstore.delete(store, paths)


def upload_tree(folder: Path, url: str, last: str) -> None:
    """Copy a local folder's files under a URL prefix, ``last`` (the folder's completion marker) last.

    What stood at the prefix is deleted first, marker first, so a reader never takes a mix of two
    versions for a complete one: without the marker the prefix is incomplete.
    """
    import obstore

    store = object_store(url)
    with contextlib.suppress(FileNotFoundError), _waiting(url):
        obstore.delete(store, last)
    delete_tree(url)
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    for path in files:
        relative = path.relative_to(folder).as_posix()
        if relative != last:
            with _waiting(url):
                obstore.put(store, relative, path.read_bytes())
    with _waiting(url):
        obstore.put(store, last, (Path(folder) / last).read_bytes())


def download_tree(url: str, folder: Path) -> None:
    """Copy every object under a URL prefix into a local folder (created; what was there is replaced)."""
    import shutil

    import obstore

    store = object_store(url)
    shutil.rmtree(folder, ignore_errors=True)
    with _waiting(url):
        metas = obstore.list(store).collect()
    for meta in metas:
        target = Path(folder) / meta["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        with _waiting(url):
            data = bytes(obstore.get(store, meta["path"]).bytes())
        target.write_bytes(data)


def local_folder(root: str) -> Path:
    """The local folder that stands for a root on this host: the root itself when it is a folder, else a
    cache folder named after the URL (``$XDG_CACHE_HOME/cutswap/roots/...``), where what must be built on
    disk first (a report, a built-in dataset, a run's log) is made before it is uploaded."""
    if is_local(root):
        return Path(root)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cutswap" / "roots"
    return cache / re.sub(r"[^A-Za-z0-9._-]+", "_", normalize(root))


def browser_url(url: str) -> str:
    """The https address at which a person opens an object of a URL root in a browser, with their own
    sign-in: for links that outlive the run (Prefect artifacts), which an ``s3://`` URL is not (browsers
    do not open it).

    ``s3://`` on an S3-compatible server (``AWS_ENDPOINT_URL``: MinIO, Ceph) is the server's path-style
    address; on AWS itself, the S3 console's page of the object (a private bucket's own https address
    answers AccessDenied to a browser). ``gs://`` is Cloud Storage's authenticated browser address;
    ``az://`` the blob's address when ``AZURE_STORAGE_ACCOUNT_NAME`` names the account. Never a presigned
    address: it expires within days while an artifact stays, and it would put a credential in Prefect's
    database. Anything else (``file://``, ``memory://``, a folder) is returned as it is.
    """
    from urllib.parse import quote

    kind = scheme(url)
    if kind not in ("s3", "gs", "az"):
        return url
    bucket, _, key = url[len(kind) + 3 :].partition("/")
    if kind == "s3" and s3_endpoint():
        return f"{s3_endpoint().rstrip('/')}/{bucket}/{quote(key)}"
    if kind == "s3":
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        where = f"region={region}&" if region else ""
        return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?{where}prefix={quote(key, safe='')}"
    if kind == "gs":
        return f"https://storage.cloud.google.com/{bucket}/{quote(key)}"
    account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") or os.environ.get("AZURE_STORAGE_ACCOUNT")
    return f"https://{account}.blob.core.windows.net/{bucket}/{quote(key)}" if account else url


def check_reachable(root: str, timeout: float = 5.0) -> None:
    """Create a probe object under a URL root twice, then delete it, with no retries and short timeouts.

    Raises:
        StoreError: the endpoint does not answer, the bucket is missing or the credentials are refused,
            or the second create-only write succeeded (``_check_create_only``); one line, without the
            client's debug dump.
    """
    from datetime import timedelta

    import obstore
    import obstore.store

    options = {
        **_client_options(root),
        "timeout": f"{timeout:g}s",
        "connect_timeout": f"{min(timeout, 3):g}s",
    }
    retry = {"max_retries": 0, "retry_timeout": timedelta(seconds=timeout)}
    try:
        if scheme(root) in ("memory", "file"):
            store = object_store(root)
        else:
            store = obstore.store.from_url(root, client_options=options, retry_config=retry)
        probe = f".cutswap-write-check-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        obstore.put(store, probe, b"", mode="create")
    except Exception as exc:  # noqa: BLE001 (obstore raises its own classes for every backend error)
        endpoint = s3_endpoint() if scheme(root) == "s3" else None
        raise StoreError(
            f"{root}{f' (endpoint {endpoint})' if endpoint else ''}: cannot write there: "
            f"{one_line(exc)[:300]}"
        ) from None
    try:
        _check_create_only(store, probe, root)
    finally:
        with contextlib.suppress(Exception):
            obstore.delete(store, probe)


def _check_create_only(store: Any, probe: str, root: str) -> None:
    """Refuse a storage that lets a create-only PUT (``If-None-Match: *``) overwrite an object.

    Every commit of the object protocol is such a PUT: on a server (or a gateway in front of one) that
    ignores the condition, two writers of one store would both "win", and a reader could take a marker
    that names an attempt its writer then deletes. Said up front, before any work.
    """
    import obstore

    try:
        obstore.put(store, probe, b"again", mode="create")
    except Exception as exc:  # noqa: BLE001
        if isinstance(exc, FileExistsError) or type(exc).__name__ == "AlreadyExistsError":
            return
        why = one_line(exc)[:300]
        raise StoreError(f"{root}: a second create-only write of a probe failed: {why}") from None
    raise StoreError(
        f"{root}: the storage accepted a second create-only write of one object (it ignores "
        "If-None-Match: *), so two writers of one store could both commit; use a server that honours "
        "conditional writes (AWS S3, GCS, Azure Blob, current MinIO and Ceph) and no proxy that drops "
        "the header"
    )


def delete(url: str) -> None:
    """Delete one file or object; one already gone is no error."""
    if is_local(url):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(url)
        return
    import obstore

    parent, _, name = url.rpartition("/")
    with contextlib.suppress(FileNotFoundError), _waiting(url):
        obstore.delete(object_store(parent), name)
