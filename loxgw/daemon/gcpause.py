"""Keeps Python's full garbage collections short: what survives one is frozen, never scanned again.

A full (generation 2) collection walks every tracked object, holding the GIL,
so it stops the event loop, the relay and the DNS thread alike. With 50,000
DNS entries the daemon holds several hundred thousand (a ledger of that size
alone took 47 ms to walk here), and the lab's 50,000-entry test saw loop
stalls of 100 ms with no callback to blame. Objects that survived a full
collection are long-lived (entries, grants, devices, the catalogue): after
each one they are moved to the permanent generation (gc.freeze), so the next
full collection walks only what came since. Their memory is still freed by
reference counting when they go; only a reference cycle among them would be
kept, and long-lived state holds none.
"""

from __future__ import annotations

import gc
from typing import Any


def _after_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()


def install() -> None:
    """Freeze what each full collection leaves (once per process)."""
    if _after_collection not in gc.callbacks:
        gc.callbacks.append(_after_collection)


def uninstall() -> None:
    """Stop freezing and put the frozen objects back under collection (tests)."""
    if _after_collection in gc.callbacks:
        gc.callbacks.remove(_after_collection)
    gc.unfreeze()
