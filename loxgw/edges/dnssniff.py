"""Adapter: passive DNS, the last resort where the kernel has no NFQUEUE at all.

A packet socket on each cloud-zone interface sees DNS queries and answers as
they pass; the same inspector reads them and the same writer inserts the
grants. Nothing is delayed, so the device's first connection can race the
insert (its TCP retransmission then gets through): `loxgw status` says
"passive" so nobody mistakes it for the inline mode.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from loxgw.core.config import ZoneRole
from loxgw.core.dnsinspect import DnsInspector
from loxgw.core.dnsledger import GrantLedger
from loxgw.daemon.grantpath import GrantPath

log = logging.getLogger("loxgw")

ETH_P_ALL = 0x0003
MAX_FRAME = 4096 + 60 + 60
_DNS = (53).to_bytes(2, "big")


def looks_like_dns(packet: bytes) -> bool:
    """A cheap pre-check before the inspector: IPv4 or IPv6, UDP or TCP, port 53 on either side."""
    if not packet:
        return False
    if packet[0] >> 4 == 4 and len(packet) >= 24:
        if packet[9] not in (6, 17):
            return False
        offset = (packet[0] & 0x0F) * 4
    elif packet[0] >> 4 == 6 and len(packet) >= 44:
        if packet[6] not in (6, 17):
            return False
        offset = 40
    else:
        return False
    return packet[offset:offset + 2] == _DNS or packet[offset + 2:offset + 4] == _DNS


class DnsSniffer(GrantPath):
    """Packet sockets on the cloud zones' interfaces, feeding the inspector."""

    def __init__(self, inspector: DnsInspector, writer: Any, ledger: GrantLedger,
                 clock: Callable[[], float], lock: threading.Lock | None = None) -> None:
        super().__init__(inspector, writer, ledger, clock, lock)
        self.sockets: list[socket.socket] = []

    def bind(self, ifname: str, role: ZoneRole, loop: asyncio.AbstractEventLoop) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        sock.bind((ifname, 0))
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._on_readable, sock, role)
        self.sockets.append(sock)

    def _on_readable(self, sock: socket.socket, role: ZoneRole) -> None:
        for _ in range(64):
            try:
                packet = sock.recv(MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.handler_errors += 1
                log.debug("passive DNS: %s", exc)
                return
            if looks_like_dns(packet):
                with self.lock:
                    self.process(packet, role)

    def start(self) -> None:
        """Nothing to start: the event loop serves the packet sockets."""

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        for sock in self.sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets.clear()
