"""Adapter: NFQUEUE sockets for DNS packets, handed to the pure inspector, verdict always given.

The answer is accepted only after its grants are in the kernel's sets, so the
device's first connection never races the set. Whatever goes wrong, the
packet is accepted unchanged: loxgw must never break DNS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from netfilterqueue import NetfilterQueue

from loxgw.config import ZoneRole
from loxgw.dns import DnsInspector, GrantLedger
from loxgw.grantpath import GrantPath
from loxgw.nftset import SetWriter

MAX_PACKET = 4096 + 60 + 60  # DNS cap plus IPv6 and TCP headers


class DnsQueue(GrantPath):
    """One NFQUEUE per zone role; every packet gets its verdict (accept), whatever happened."""

    def __init__(self, inspector: DnsInspector, writer: SetWriter, ledger: GrantLedger,
                 clock: Callable[[], float]) -> None:
        super().__init__(inspector, writer, ledger, clock)
        self.queues: list[tuple[NetfilterQueue, int]] = []

    def bind(self, queue_num: int, role: ZoneRole, loop: asyncio.AbstractEventLoop) -> None:
        nfq = NetfilterQueue()
        nfq.bind(queue_num, lambda pkt: self._handle(pkt, role), max_len=4096, range=MAX_PACKET)
        fd = nfq.get_fd()
        loop.add_reader(fd, lambda: nfq.run(block=False))
        self.queues.append((nfq, fd))

    def _handle(self, pkt: Any, role: ZoneRole) -> None:
        try:
            self.process(pkt.get_payload(), role)
        finally:
            pkt.accept()

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        for nfq, fd in self.queues:
            loop.remove_reader(fd)
            nfq.unbind()
        self.queues.clear()
