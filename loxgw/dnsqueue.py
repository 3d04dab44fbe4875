"""Adapter: NFQUEUE sockets for DNS packets, handed to the pure inspector, verdict always given.

The answer is accepted only after its grants are in the kernel's sets, so the
device's first connection never races the set. Whatever goes wrong, the
packet is accepted unchanged: loxgw must never break DNS.

Queries arrive as NFLOG copies (nflog.QueryLog) where the kernel has
nfnetlink_log, and are then never delayed; before an answer is judged, the
copies already delivered are read, so its query is always known by then.
Without NFLOG, queries are queued like answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from netfilterqueue import NetfilterQueue

from loxgw.config import ZoneRole
from loxgw.dns import DnsInspector, GrantLedger
from loxgw.errors import KernelError
from loxgw.grantpath import GrantPath
from loxgw.nflog import QueryLog
from loxgw.nftset import SetWriter

log = logging.getLogger("loxgw")

MAX_PACKET = 4096 + 60 + 60  # DNS cap plus IPv6 and TCP headers


class DnsQueue(GrantPath):
    """One NFQUEUE per zone role; every packet gets its verdict (accept), whatever happened."""

    def __init__(self, inspector: DnsInspector, writer: SetWriter, ledger: GrantLedger,
                 clock: Callable[[], float], query_log: QueryLog | None = None) -> None:
        super().__init__(inspector, writer, ledger, clock)
        self.queues: list[tuple[NetfilterQueue, int]] = []
        self.query_log = query_log
        self._log_reader = False

    def read_queries(self) -> None:
        """Note every query copy the kernel has delivered (NFLOG); a no-op without NFLOG."""
        if self.query_log is None:
            return
        try:
            copies = self.query_log.read()
        except KernelError as exc:
            self.handler_errors += 1
            log.error("%s", exc)
            return
        for packet in copies:
            self.process(packet, "devices")  # a query's role is irrelevant: it is only noted

    def bind(self, queue_num: int, role: ZoneRole, loop: asyncio.AbstractEventLoop) -> None:
        nfq = NetfilterQueue()
        nfq.bind(queue_num, lambda pkt: self._handle(pkt, role), max_len=4096, range=MAX_PACKET)
        fd = nfq.get_fd()
        loop.add_reader(fd, lambda: nfq.run(block=False))
        self.queues.append((nfq, fd))
        if self.query_log is not None and not self._log_reader:
            loop.add_reader(self.query_log.fileno(), self.read_queries)
            self._log_reader = True

    def _handle(self, pkt: Any, role: ZoneRole) -> None:
        grants = []
        try:
            self.read_queries()
            grants = self.grant(pkt.get_payload(), role)
        finally:
            pkt.accept()  # the grants are in the kernel by now; the rest is bookkeeping
        if grants:
            self.settle(grants)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        for nfq, fd in self.queues:
            loop.remove_reader(fd)
            nfq.unbind()
        self.queues.clear()
        if self.query_log is not None:
            if self._log_reader:
                loop.remove_reader(self.query_log.fileno())
            self.query_log.close()
            self.query_log = None
            self._log_reader = False
