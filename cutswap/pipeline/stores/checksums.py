"""Checksums of a store's files, recorded at publication and verified on read.

Zarr chunks carry no checksum of their own: a flipped byte in a Blosc frame may still decode, into other
numbers. So every file of a store but its root ``zarr.json`` (which records them) is hashed when the
store is published, and the digests are compared whenever a store is reused or opened::

    <store>/zarr.json  attrs: {"digests": {"images/c/0/0/0/0": "<sha256>", "images/zarr.json": ..., ...},
                               "digest": "<16 hex digits: hash of the digests>", ...}

``digest`` is the store's content identity: ``build_store`` puts its inputs' digests into a store's key.
A store whose checksums disagree is reported by name and recomputed, never read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

#: Bytes read per ``update``: large enough for hashlib's fast path, small enough for any worker's memory.
_BLOCK = 1 << 20


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except the root ``zarr.json``, by POSIX relative path."""
    digests = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if relative != "zarr.json":
                digests[relative] = _sha256(path)
    return dict(sorted(digests.items()))


def content_digest(digests: dict[str, str]) -> str:
    """One hash for a store's content, from its file digests (16 hex digits, as store keys)."""
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16]


def damage(root: Path, recorded: dict[str, str] | None) -> str | None:
    """What is wrong with a store's files against the digests recorded at publication; None if nothing."""
    return damage_of(file_digests(root), recorded)


def damage_of(actual: dict[str, str], recorded: dict[str, str] | None) -> str | None:
    """What differs between the digests of a store's files now and those recorded; None if nothing."""
    if recorded is None:
        return "it records no checksums (written by an older cutswap)"
    for relative, digest in recorded.items():
        if relative not in actual:
            return f"{relative} is missing"
        if actual[relative] != digest:
            return f"{relative} does not match its checksum"
    if extra := sorted(set(actual) - set(recorded)):
        return f"{extra[0]} was added after publication"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()
