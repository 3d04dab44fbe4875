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

During start-up no collection runs at all (pause_start_up): what is made then
(modules, classes, the config, the catalogue, restored DNS entries) lives as
long as the process, and the 40-50 young collections that walked it cost
`loxgw run` CPU before it was ready. Once running, all of it is frozen as it
is, without a walk: a full collection there found nothing unreachable (lab
config, 3 starts) and took 7-14 ms, on the loop, with the services running.
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


_paused = False


def pause_start_up() -> None:
    """No collection until start_up_done(): from `loxgw run`'s first line, before the imports."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def start_up_done() -> None:
    """Collect again (after pause_start_up); what start-up made is frozen, never walked."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def uninstall() -> None:
    """Stop freezing and put the frozen objects back under collection (tests)."""
    if _after_collection in gc.callbacks:
        gc.callbacks.remove(_after_collection)
    gc.unfreeze()
