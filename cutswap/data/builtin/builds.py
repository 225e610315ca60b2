"""Crash-safe builds of the datasets the project makes itself (``textures``, ``mnist``).

A build lies in one folder with a JSON marker naming its generator, version and parameters::

    <root>/
      <marker>          # written last, inside the temporary folder: a root whose marker exists is whole
      ...               # the dataset's files

It is written into a hidden temporary sibling and swapped into place (``cutswap.atomic``), and reused when the
marker names the same parameters. A folder that is neither empty nor an earlier build of the same dataset is
refused, so a wrong path never deletes user data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cutswap import atomic
from cutswap.errors import DatasetError


def read_marker(
    root: Path, marker: str, keys: Sequence[str], defaults: dict[str, Any] | None = None
) -> dict | None:
    """The marker's ``keys`` (``defaults`` for those older builds lack), or None without a readable one."""
    try:
        found = json.loads((root / marker).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict):
        return None
    return {key: found.get(key, (defaults or {}).get(key)) for key in keys}


def _check_replaceable(root: Path, marker: str, what: str) -> None:
    if not root.exists() and not root.is_symlink():
        return
    if not root.is_dir():
        raise DatasetError(f"{root}: exists and is not a folder; choose another path for the {what} dataset.")
    if (root / marker).is_file() or not any(root.iterdir()):
        return
    raise DatasetError(
        f"{root}: folder exists, is not empty and is not an earlier {what} build (no {marker}); "
        "refusing to replace it. Choose another path, or empty the folder yourself."
    )


def build_once(
    root: Path,
    what: str,
    marker: str,
    wanted: dict[str, Any],
    write: Callable[[Path], dict[str, Any]],
    defaults: dict[str, Any] | None = None,
) -> Path:
    """Reuse the build at ``root`` if its marker matches ``wanted``, else build it atomically.

    Args:
        root: where the dataset lies.
        what: the dataset's name, for messages.
        marker: the marker's file name.
        wanted: generator, version and parameters; the marker holds these plus ``write``'s provenance.
        write: fills a folder with the dataset and returns its provenance (versions, checksums).
        defaults: marker values to assume for keys that builds from before a parameter existed lack.

    Raises:
        DatasetError: ``root`` is a file, or a non-empty folder that is not a build of this dataset.
        OSError: the build cannot be written (disk full, permissions); nothing half-written is left.
    """
    root = Path(root)

    def same() -> bool:
        return read_marker(root, marker, list(wanted), defaults) == wanted

    if same():
        return root
    _check_replaceable(root, marker, what)
    with atomic.atomic_dir(root, keep_theirs=same) as tmp:
        provenance = write(tmp)
        text = json.dumps({**wanted, **provenance}, indent=2, sort_keys=True) + "\n"
        (tmp / marker).write_text(text, encoding="utf-8")
    return root
