"""``cutswap gc ROOT [--yes]``: what under an object-storage root no reader can reach and no writer still
writes, listed with its size, and deleted only when asked.

A dry run by default: garbage is decided by the storage server's time and each writer's own limits
(``cutswap.pipeline.stores.collect``), and a listing lets an operator see what a lifecycle rule, or
``--yes``, would remove before anything is.
"""

from __future__ import annotations

import argparse

from cutswap.pipeline.stores import collect


def _size(n: int) -> str:
    """Bytes in decimal units, as storage providers bill them."""
    value = float(n)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def run(args: argparse.Namespace) -> int:
    """List (and with ``--yes`` delete) the root's garbage; one line per item, then the totals."""
    limits = {}
    if args.resume_days is not None:
        limits["resume_seconds"] = args.resume_days * 86400
    if args.upload_hours is not None:
        limits["upload_seconds"] = args.upload_hours * 3600
    found = []
    verb = "delete" if args.yes else "would delete"
    for item in collect.root_garbage(args.root, **limits):
        print(f"{verb}  {item.url}  {item.reason}  ({item.objects} objects, {_size(item.bytes)})", flush=True)
        if args.yes:
            collect.delete([item])
        found.append(item)
    if not collect.can_list_uploads(args.root):
        print("incomplete multipart uploads: not looked at (install boto3 to list and abort them)")
    total = f"{len(found)} items, {_size(sum(i.bytes for i in found))}"
    print(f"{total} deleted" if args.yes else f"{total}: a dry run, nothing deleted (--yes deletes)")
    return 0
