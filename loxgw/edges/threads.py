"""Adapter: blocking work on a thread of its own, its result or error in a concurrent future.

For start-up work that waits on the kernel while no event loop runs yet (the
set-refresh probe, the nft-queue check): a waiter may give up (a stop during
start-up cancels its future), and the work then ends without a result to
hand over, quietly.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def in_thread(work: Callable[[], T], name: str) -> concurrent.futures.Future[T]:
    """`work` in a thread named `name`; its result or error in the future returned."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            result = work()
        except BaseException as exc:  # handed to whoever waits for it
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # a waiter that gave up
                future.set_exception(exc)
            return
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            future.set_result(result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
