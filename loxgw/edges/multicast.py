"""Adapter: the IPv4 multicast socket the reflector and the KNX router share, and its per-packet metadata.

One socket per group and port, joined per interface by index (struct ip_mreqn),
never looped back, with IP_MULTICAST_ALL off so it hears only the groups it
joined; IP_PKTINFO says which interface a datagram came in on and picks the one
a copy leaves by; IP_RECVTOS shows the TOS mark of another relay's copies.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from ipaddress import IPv4Address

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
IP_MULTICAST_ALL = 49
ANCILLARY = socket.CMSG_SPACE(12) + socket.CMSG_SPACE(4)  # in_pktinfo and the TOS byte


def open_socket(port: int, ttl: int, tos: int) -> socket.socket:
    """A non-blocking UDP socket on `port` for multicast; copies it sends carry `ttl` and `tos`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def membership(group: str, ifindex: int) -> bytes:
    """struct ip_mreqn: the group, any local address, the interface by index."""
    return socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("@i", ifindex)


def received_on(ancillary: Iterable[tuple[int, int, bytes]]) -> tuple[int, bytes, int]:
    """From recvmsg's ancillary data: the interface index, the destination address (4 bytes) and the TOS."""
    ifindex, dst, tos = 0, bytes(4), 0
    for level, kind, value in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 12:
            ifindex = struct.unpack_from("@i", value)[0]
            dst = value[8:12]
        elif level == socket.IPPROTO_IP and kind == socket.IP_TOS and value:
            tos = value[0]
    return ifindex, dst, tos


def leave_by(ifindex: int, address: IPv4Address) -> list[tuple[int, int, bytes]]:
    """sendmsg's ancillary data that sends a copy out of this interface, from this address."""
    return [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("@i4s4s", ifindex, address.packed, bytes(4)))]
