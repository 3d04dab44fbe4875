"""What survives a full collection is frozen; the next full collection walks only what came since."""

from __future__ import annotations

import gc

from loxgw.daemon import gcpause


def test_a_full_collection_freezes_its_survivors_and_uninstall_thaws_them() -> None:
    gcpause.uninstall()  # a daemon run earlier in this process (tests/unit/daemon/test_app.py) installed it
    kept = [[i] for i in range(10_000)]  # long-lived state: tracked containers
    gcpause.install()
    try:
        gcpause.install()  # once only
        assert gc.callbacks.count(gcpause._after_collection) == 1
        gc.collect(1)
        assert gc.get_freeze_count() == 0  # a young collection freezes nothing
        gc.collect(2)
        assert gc.get_freeze_count() >= len(kept)
    finally:
        gcpause.uninstall()
    assert gc.get_freeze_count() == 0
    assert gcpause._after_collection not in gc.callbacks


def test_no_collection_during_start_up_then_what_it_made_is_frozen_without_a_walk() -> None:
    gcpause.uninstall()
    assert gc.isenabled()
    gcpause.pause_start_up()
    try:
        assert not gc.isenabled()
        gcpause.install()  # as Daemon.run does, while paused
        young, collected = gc.get_stats()[0]["collections"], gc.get_stats()[2]["collections"]
        kept = [[i] for i in range(10_000)]  # far past the threshold of a young collection...
        assert gc.get_stats()[0]["collections"] == young  # ...yet none ran
    finally:
        gcpause.start_up_done()
    try:
        assert gc.isenabled()
        assert gc.get_stats()[2]["collections"] == collected  # no full collection on the way out either
        assert gc.get_freeze_count() >= len(kept)  # what start-up made is never walked
        gcpause.start_up_done()  # once only
        assert gc.isenabled() and gc.get_stats()[2]["collections"] == collected
    finally:
        gcpause.uninstall()


def test_a_process_that_turned_collection_off_itself_keeps_it_off() -> None:
    gc.disable()
    try:
        gcpause.pause_start_up()
        gcpause.start_up_done()
        assert not gc.isenabled()
    finally:
        gc.enable()
