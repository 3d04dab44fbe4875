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
