"""The process's stop flag and its last calls (``flows.launch`` sets the one and runs the other)."""

from __future__ import annotations

import threading

from cutswap.app import stopping


def test_last_calls_run_newest_first_and_one_failing_does_not_stop_the_others(monkeypatch):
    monkeypatch.setattr(stopping, "_LAST_CALLS", [])
    ran = []
    stopping.at_exit_now(lambda: ran.append("first registered"))
    stopping.at_exit_now(lambda: 1 / 0)
    stopping.at_exit_now(lambda: ran.append("last registered"))
    stopping.last_calls()
    assert ran == ["last registered", "first registered"]


def test_a_stop_asked_for_is_seen_from_every_thread(monkeypatch):
    monkeypatch.setattr(stopping, "_REQUESTED", threading.Event())
    seen = []
    assert not stopping.requested()
    stopping.request()
    thread = threading.Thread(target=lambda: seen.append(stopping.requested()))
    thread.start()
    thread.join()
    assert seen == [True]
