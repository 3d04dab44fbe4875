"""Adapter: NFQUEUE sockets for DNS packets, handed to the pure inspector, verdict always given.

The answer is accepted only after its grants are in the kernel's sets, so the
device's first connection never races the set. Whatever goes wrong, the
packet is accepted unchanged: loxgw must never break DNS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from netfilterqueue import NetfilterQueue

from loxgw.config import ZoneRole
from loxgw.dns import DnsInspector, GrantLedger
from loxgw.nftset import SetWriter

log = logging.getLogger("loxgw")

MAX_PACKET = 4096 + 60 + 8  # DNS cap plus IPv6 and UDP headers
ERROR_LOG_EVERY = 1000  # log the 1st, 1001st, ... handler error: attackers choose how many


class DnsQueue:
    """One NFQUEUE per zone role, wired to the inspector and the set writer."""

    def __init__(self, inspector: DnsInspector, writer: SetWriter, ledger: GrantLedger,
                 clock: Callable[[], float]) -> None:
        self.inspector = inspector
        self.writer = writer
        self.ledger = ledger
        self.clock = clock
        self.queues: list[tuple[NetfilterQueue, int]] = []
        self.handler_errors = 0
        self.inserted = 0

    def bind(self, queue_num: int, role: ZoneRole, loop: asyncio.AbstractEventLoop) -> None:
        nfq = NetfilterQueue()
        nfq.bind(queue_num, lambda pkt: self._handle(pkt, role), max_len=4096, range=MAX_PACKET)
        fd = nfq.get_fd()
        loop.add_reader(fd, lambda: nfq.run(block=False))
        self.queues.append((nfq, fd))

    def _handle(self, pkt: Any, role: ZoneRole) -> None:
        try:
            grants = self.inspector.on_packet(pkt.get_payload(), role, self.clock())
            if grants:
                self.inserted += self.writer.add(grants)
                self.ledger.record(grants, self.clock())
        except Exception as exc:  # the one boundary: count, log, and still give a verdict
            self.handler_errors += 1
            if self.handler_errors % ERROR_LOG_EVERY == 1:
                log.error("DNS packet handling failed (%d so far): %s", self.handler_errors, exc)
        finally:
            pkt.accept()

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        for nfq, fd in self.queues:
            loop.remove_reader(fd)
            nfq.unbind()
        self.queues.clear()
