"""Start-up work on a thread: its result or error reaches the future; a waiter that gave up breaks nothing."""

from __future__ import annotations

import threading
import time

import pytest

from loxgw.edges.threads import in_thread


def test_the_result_or_the_error_reaches_the_future() -> None:
    assert in_thread(lambda: 42, "t-result").result(timeout=5) == 42

    def fails() -> int:
        raise PermissionError(1, "Operation not permitted")

    with pytest.raises(PermissionError):
        in_thread(fails, "t-error").result(timeout=5)


def test_work_whose_waiter_gave_up_ends_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    raised: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))
    for outcome in ("result", "error"):
        release = threading.Event()

        def work(outcome: str = outcome, release: threading.Event = release) -> str:
            release.wait(5)
            if outcome == "error":
                raise OSError("late")
            return "late"

        future = in_thread(work, f"t-{outcome}")
        assert future.cancel()  # a stop during start-up: the waiter gives up
        release.set()
        deadline = time.monotonic() + 5
        while any(t.name == f"t-{outcome}" for t in threading.enumerate()) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert raised == []  # no InvalidStateError in the threads
