"""Glue from a DNS packet to the firewall: inspector, then set writer, then ledger.

Shared by the inline (NFLOG copies, NFQUEUE) and passive (packet socket) paths. This is the
one boundary where an unexpected error is caught: counted, each distinct
failure logged once with its traceback (daemon.logs), never allowed to stop DNS.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from loxgw.core.config import ZoneRole
from loxgw.core.dns import Grant
from loxgw.core.dnsinspect import DnsInspector
from loxgw.core.dnsledger import GrantLedger
from loxgw.daemon.logs import log_failure

log = logging.getLogger("loxgw")


class GrantPath:
    """Turns DNS packets into set elements; counts what it inserted and what went wrong."""

    def __init__(self, inspector: DnsInspector, writer: Any, ledger: GrantLedger,
                 clock: Callable[[], float], lock: threading.Lock | None = None) -> None:
        self.inspector = inspector
        self.writer = writer
        self.ledger = ledger
        self.clock = clock
        self.inserted = 0
        self.handler_errors = 0
        self.held = 0  # first packets held until the copies before them were read (inline only)
        self.held_dns = 0  # DNS packets held until loxgw was done with them (answers; queries in `queued`)
        self.refused_device_cap = 0  # grants not given: the device had its GrantLedger.per_device
        # Held by whoever touches the inspector, writer or ledger: the DNS thread per wake-up,
        # the event loop for status, restores and relay pinholes.
        self.lock = lock or threading.Lock()

    def process(self, packet: bytes, role: ZoneRole) -> None:
        """Everything for one packet at once (the passive path, where nothing waits)."""
        grants = self.grant(packet, role)
        if grants:
            self.settle(grants)

    def grant(self, packet: bytes, role: ZoneRole) -> list[Grant]:
        """Inspect the packet and put its grants in the kernel: the part the held answer must wait for."""
        return self._insert(self._inspect(packet, role))

    def process_all(self, packets: Iterable[tuple[bytes, ZoneRole]], settle: bool = True) -> list[Grant]:
        """Packets read together (NFLOG copies), in order; their grants go in as one netlink batch.

        One batch costs the kernel one commit instead of one per answer. A
        grant for the same entry twice keeps the later one: an element may
        appear only once in a batch. `settle=False`: the caller settles the
        grants returned, once what waits for them has gone on.
        """
        pending: dict[tuple[object, object, object], Grant] = {}
        for packet, role in packets:
            for grant in self._inspect(packet, role):
                pending.pop(grant[:3], None)
                pending[grant[:3]] = grant
        grants = self._insert(list(pending.values()))
        if grants and settle:
            self.settle(grants)
        return grants

    def _inspect(self, packet: bytes, role: ZoneRole) -> list[Grant]:
        try:
            now = self.clock()
            grants = self.inspector.on_packet(packet, role, now)
            if grants:
                admitted = self.ledger.admit(grants, now)
                if len(admitted) < len(grants):
                    self.refused_device_cap += len(grants) - len(admitted)
                    grants = admitted
            return grants
        except Exception as exc:  # the boundary: count, log, carry on
            self._failed(exc)
            return []

    def _insert(self, grants: list[Grant]) -> list[Grant]:
        if not grants:
            return grants
        try:
            self.inserted += self.writer.add(grants, drain=False)
            return grants
        except Exception as exc:
            self.ledger.forget(grants)  # admitted (and counted) but never in the kernel
            self._failed(exc)
            return []

    def settle(self, grants: list[Grant]) -> None:
        """Bookkeeping that need not delay the answer: netlink errors (the ledger was written on admission)."""
        try:
            self.writer.drain_errors()
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.handler_errors += 1
        log_failure(log, "DNS packet handling", exc)
