"""The loop guard: a callback that holds the loop is reported; an idle loop is not."""

from __future__ import annotations

import asyncio
import time

from loxgw.daemon.loopguard import LoopGuard


def run_guarded(block: float) -> LoopGuard:
    async def scenario() -> LoopGuard:
        guard = LoopGuard(asyncio.get_running_loop(), 0.03)
        guard.start()
        await asyncio.sleep(0.05)
        if block:
            time.sleep(block)  # what an nft run on the loop used to do
        await asyncio.sleep(0.05)
        guard.close()
        return guard

    return asyncio.run(scenario())


def test_a_blocking_callback_is_reported() -> None:
    guard = run_guarded(0.12)
    assert guard.blocked >= 1
    assert guard.worst >= 0.08


def test_an_idle_loop_is_not() -> None:
    assert run_guarded(0).blocked == 0
