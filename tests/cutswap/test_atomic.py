"""Atomic publication: temporaries, their writers' locks, and what killed writers leave behind."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from cutswap import atomic
from cutswap.atomic import remove_leftovers


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_garbage_of_dead_writers_is_collected_live_writes_are_not(tmp_path):
    stage = tmp_path / "cluster"
    stage.mkdir()
    dead = stage / ".a-1.tmp-dead"
    dead.mkdir()
    (stage / ".a-1.tmp-dead.lock").write_text("123 host\n")  # nobody holds it: its writer died
    unlocked = stage / ".a-1.tmp-nolock"  # no lock file at all (an older version's leftover)
    unlocked.mkdir()
    live = stage / ".a-1.tmp-live"
    live.mkdir()
    held = os.open(stage / ".a-1.tmp-live.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # a live writer (another open file description, so it counts)
    (stage / ".a-1.old-123").mkdir()  # a replaced store whose writer died before deleting it
    young = stage / ".b-2.tmp-young.lock"  # a writer about to create its directory
    young.write_text("")
    old = stage / ".b-2.tmp-old.lock"  # a writer that died before creating its directory
    old.write_text("")
    past = time.time() - 3600
    os.utime(old, (past, past))
    (stage / "a-1").mkdir()  # a published store is never touched
    dead_file = stage / ".run.log.tmp-9-dead"  # a file whose writer (a killed run's log) died
    dead_file.write_text("partial")
    (stage / ".run.log.tmp-9-dead.lock").write_text("9 host\n")
    # An unlocked writer whose heartbeat (its lock file's time) is recent: on NFS mounted nolock or
    # local_lock every host gets the lock, so the lock alone proves nothing; it waits its silence out.
    quiet = stage / ".c-3.tmp-quiet"
    quiet.mkdir()
    (stage / ".c-3.tmp-quiet.lock").write_text("7 otherhost\n")
    for lock in (".a-1.tmp-dead.lock", ".run.log.tmp-9-dead.lock"):  # silent for an hour
        os.utime(stage / lock, (past, past))
    try:
        removed = {p.name for p in remove_leftovers(stage)}
    finally:
        os.close(held)
    assert removed == {
        ".a-1.tmp-dead",
        ".a-1.tmp-nolock",
        ".a-1.old-123",
        ".b-2.tmp-old.lock",
        ".run.log.tmp-9-dead",
    }
    assert _entries(stage) == [
        ".a-1.tmp-live",
        ".a-1.tmp-live.lock",
        ".b-2.tmp-young.lock",
        ".c-3.tmp-quiet",
        ".c-3.tmp-quiet.lock",
        "a-1",
    ]


def test_a_live_writer_keeps_its_heartbeat_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "HEARTBEAT_SECONDS", 0.05)
    lock = atomic.WriterLock(tmp_path / ".x.tmp-1.lock")
    try:
        past = time.time() - 3600
        os.utime(lock.path, (past, past))
        time.sleep(0.3)
        assert time.time() - lock.path.stat().st_mtime < 1
    finally:
        lock.release()
    assert not lock.path.exists()


def test_temporaries_hold_their_writer_lock_and_leave_nothing(tmp_path):
    final = tmp_path / "reports" / "run"
    with atomic.atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("x")
        assert remove_leftovers(final.parent) == []  # a live write is left alone
        assert Path(f"{tmp}.lock").is_file()
    with atomic.atomic_file(final.parent / "index.html") as tmp:
        tmp.write_text("<html>")
        assert remove_leftovers(final.parent) == []
    assert _entries(final.parent) == ["index.html", "run"]


def _hold(lock_target: str, seconds: float, ready) -> None:
    with atomic.locked(Path(lock_target), "writing"):
        ready.set()
        time.sleep(seconds)


def test_a_second_holder_waits_is_told_who_holds_it_and_nothing_is_left(tmp_path):
    target = tmp_path / "store-abc"
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(target), 2.0, ready))
    holder.start()
    try:
        assert ready.wait(60)
        told: list[str] = []
        start = time.monotonic()
        with atomic.locked(target, "writing", told.append):
            waited = time.monotonic() - start
    finally:
        holder.join(30)
    assert waited > 0.5  # it waited for the holder's release, not just its start
    assert told and told[0].split()[0] == str(holder.pid)
    assert _entries(tmp_path) == []


@pytest.mark.parametrize("kind", ["lock", "writing"])
def test_a_lock_file_deleted_under_a_waiter_is_not_trusted(tmp_path, kind):
    """A waiter that opened the file its holder then deleted locks a new file, not the deleted one."""
    target = tmp_path / "x"
    lock = tmp_path / f".x.{kind}"
    fd = os.open(lock, os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.unlink(lock)  # the holder releases the way `locked` does: delete, then unlock
    os.close(fd)
    with atomic.locked(target, kind):
        assert lock.is_file()
    assert not lock.exists()
