"""The relay's bytes: a received datagram's header, the copy's frame, the socket filters, answer keys.

Everything here works on packed bytes and ints, never on address objects or
strings: it runs once per datagram (the header) or once per copy (the
frame), at rates where an `IPv4Address` or an f-string per packet was a
measured fifth of the relay's time.

Checksums use one identity: a byte string read as a big-endian integer is
congruent, modulo 0xFFFF, to the one's-complement sum of its 16-bit words
(2**16 = 1 mod 0xFFFF). So `int.from_bytes(payload) % 0xFFFF` is the UDP
sum of the payload in one C call, and the pseudo-header's and IP header's
words are added as ints (RFC 1071's end-around carry is the modulus).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from loxgw.core.bpf import (
    ACCEPT,
    AND_K,
    JEQ_K,
    JGE_K,
    JGT_K,
    LD_B_ABS,
    LD_H_IND,
    LD_W_ABS,
    LDX_B_MSH,
    PKTTYPE,
    RET_K,
    Instruction,
    run,
)
from loxgw.core.catalog import PortRange, merge_ranges

# DSCP 0x05 ("loxgw relayed"): an otherwise unused codepoint, in the top six TOS bits.
RELAY_DSCP = 0x05
RELAY_TOS = RELAY_DSCP << 2
DSCP_MASK = 0xFC
MAX_RELAY_PAYLOAD = 1472  # one Ethernet frame; Loxone discovery datagrams are far smaller
# The edge's read size: more than any datagram the relay copies (headers with options included),
# so a datagram that fills it was cut short and is too large anyway.
RECEIVE_SIZE = 1600
IP_DF = 0x4000
UDP = 17
ALL_ONES = 0xFFFFFFFF  # 255.255.255.255

# version/IHL, TOS, total length, id, flags/fragment, TTL, protocol, checksum, source, destination,
# then the UDP header: source port, destination port, length, checksum. Addresses as ints.
HEADERS = struct.Struct("!BBHHHBBHIIHHHH")
_IP_OPTIONS_HEADER = struct.Struct("!BBHHHBBHII")
_UDP_HEADER = struct.Struct("!HHHH")

Header = tuple[int, int, int, int, int, int, int, int, bytes]
"""tos, ip id, ttl, source, destination, source port, destination port, udp checksum, payload."""


def parse(data: bytes) -> Header | None:
    """An IPv4/UDP datagram as a raw socket delivers it (IP header first), or None if it is not one.

    Never raises: any bytes give a header or None.
    """
    if len(data) >= 28 and data[0] == 0x45:  # no IP options: the common case, one unpack
        _, tos, _, ident, frag, ttl, proto, _, src, dst, sport, dport, udp_len, csum = HEADERS.unpack_from(data)
        offset = 20
    else:
        if len(data) < 20 or data[0] >> 4 != 4 or (data[0] & 15) < 5 or len(data) < (data[0] & 15) * 4 + 8:
            return None
        _, tos, _, ident, frag, ttl, proto, _, src, dst = _IP_OPTIONS_HEADER.unpack_from(data)
        offset = (data[0] & 15) * 4
        sport, dport, udp_len, csum = _UDP_HEADER.unpack_from(data, offset)
    if proto != UDP or frag & 0x3FFF or udp_len < 8 or offset + udp_len > len(data):
        return None
    return tos, ident, ttl, src, dst, sport, dport, csum, data[offset + 8 : offset + udp_len]


def words(value: int) -> int:
    """The one's-complement sum of a 32-bit value's two 16-bit words (not yet folded)."""
    return (value >> 16) + (value & 0xFFFF)


def udp_sum(src: int, sport: int, dport: int, payload: bytes) -> int:
    """The UDP checksum sum of everything but the destination address, modulo 0xFFFF.

    The copy differs per egress segment only in its destination (the
    segment's broadcast address), so this part is computed once per
    received datagram and finished per copy by `finish`.
    """
    body = int.from_bytes(payload, "big")
    if len(payload) & 1:
        body <<= 8  # padded with one zero byte (RFC 768)
    length = 8 + len(payload)
    return (body % 0xFFFF + words(src) + sport + dport + 2 * length + UDP) % 0xFFFF


def finish(partial: int) -> int:
    """The checksum field from a sum modulo 0xFFFF: its complement, with 0 sent as 0xFFFF (RFC 768)."""
    folded = partial % 0xFFFF or 0xFFFF  # the sum is never zero: it holds the protocol number
    return 0xFFFF - folded or 0xFFFF


class CopyTemplate:
    """What every copy out of one egress segment shares: link header, IP id, broadcast, partial sums.

    The IP id is the relay's tag on this segment: the low 16 bits of its own
    address there. Copies carry DF and are never fragmented, so the id has
    no other use (RFC 6864, section 4.1); a peer relay reads it to tell
    which relay sent a copy (see core.relaypeers).
    """

    __slots__ = ("broadcast", "dst_words", "ip_const", "link", "tag")

    def __init__(self, address: int, broadcast: int, mac: bytes) -> None:
        self.tag = address & 0xFFFF
        self.broadcast = broadcast
        self.dst_words = words(broadcast)
        # Ethernet: broadcast destination, our source, IPv4. Without a MAC the copy goes at the IP layer.
        self.link = b"\xff" * 6 + mac + b"\x08\x00" if len(mac) == 6 else b""
        self.ip_const = (0x4500 | RELAY_TOS) + self.tag + IP_DF + UDP + self.dst_words

    def frame(self, src: int, sport: int, dport: int, ttl: int, payload: bytes, udp_partial: int | None) -> bytes:
        """The copy: link header (if any), IPv4 header with the relay mark, UDP header, payload.

        `udp_partial` None: the original carried no UDP checksum, and neither does the copy.
        """
        udp_len = 8 + len(payload)
        total = 20 + udp_len
        ip_sum = finish(self.ip_const + total + (ttl << 8) + words(src))
        udp_check = 0 if udp_partial is None else finish(udp_partial + self.dst_words)
        return self.link + HEADERS.pack(0x45, RELAY_TOS, total, self.tag, IP_DF, ttl, UDP, ip_sum, src,
                                         self.broadcast, sport, dport, udp_len, udp_check) + payload


# --- socket filters (classic BPF, attached with SO_ATTACH_FILTER) ----------------------------

PACKET_HOST, PACKET_BROADCAST, PACKET_LOOPBACK = 0, 1, 5
MAX_FILTER_RANGES = 100  # jump offsets are 8 bits; beyond this the core alone checks ports


def merged(ports: Iterable[PortRange]) -> list[tuple[int, int]]:
    """Sorted, disjoint (first, last) ranges."""
    return [(r.first, r.last) for r in merge_ranges(ports)]


def receive_filter(ports: Iterable[PortRange], ethernet: bool, peer_copies_only: bool = False) -> list[Instruction]:
    """For a raw IPPROTO_UDP socket on one segment: broadcasts to a relayed port, never our own copies.

    The relay's own copies never reach it: on Ethernet they leave through a
    packet socket, which the kernel does not loop back; elsewhere they leave
    at the IP layer and loop back as PACKET_LOOPBACK. So on Ethernet only
    link-layer broadcasts pass (originals, and copies from peer relays,
    which arrive from the wire like any broadcast); on other links all but
    looped-back packets. Destination port in the configured ranges.

    `peer_copies_only`: while the kernel copies (core.relaykernel), only
    other relays' copies (DSCP 5), so the arbiter still learns its peers and
    no original reaches Python.
    """
    ranges = merged(ports)
    tos: list[Instruction] = []
    if peer_copies_only:
        tos = [(LD_B_ABS, 0, 0, 1), (AND_K, 0, 0, DSCP_MASK), (JEQ_K, 0, 0, RELAY_TOS)]  # jf filled in below
    if len(ranges) > MAX_FILTER_RANGES:  # jump offsets would not fit: the core checks ports alone
        kind = (JEQ_K, 0, 1 + len(tos), PACKET_BROADCAST) if ethernet else (JEQ_K, 1 + len(tos), 0, PACKET_LOOPBACK)
        if tos:
            tos[-1] = (JEQ_K, 0, 1, RELAY_TOS)
        return [(LD_W_ABS, 0, 0, PKTTYPE), kind, *tos, (RET_K, 0, 0, ACCEPT), (RET_K, 0, 0, 0)]
    n = len(ranges)
    drop = 2 + 2 * n + len(tos)  # from instruction 1 to the drop at 4 + 2n + len(tos)
    if tos:
        tos[-1] = (JEQ_K, 0, 2 + 2 * n, RELAY_TOS)
    prog: list[Instruction] = [
        (LD_W_ABS, 0, 0, PKTTYPE),
        (JEQ_K, 0, drop, PACKET_BROADCAST) if ethernet else (JEQ_K, drop, 0, PACKET_LOOPBACK),
        *tos,
        (LDX_B_MSH, 0, 0, 0),  # X = IP header length
        (LD_H_IND, 0, 0, 2),  # A = UDP destination port
    ]
    for i, (first, last) in enumerate(ranges):
        rest = 2 * (n - i) - 1
        prog.append((JGE_K, 0, rest, first))  # below this range: below every later one, drop
        prog.append((JGT_K, 0, rest, last))  # above it: the next range; within it: accept
    return [*prog, (RET_K, 0, 0, 0), (RET_K, 0, 0, ACCEPT)]


def answer_filter() -> list[Instruction]:
    """For the UDP socket on the answer port: only datagrams addressed to this host (not broadcasts)."""
    return [(LD_W_ABS, 0, 0, PKTTYPE), (JEQ_K, 0, 1, PACKET_HOST), (RET_K, 0, 0, ACCEPT), (RET_K, 0, 0, 0)]


def run_filter(prog: list[Instruction], packet: bytes, pkttype: int) -> bool:
    """Interpret `prog` over an IPv4 packet (tests: the filter as the kernel would run it)."""
    return run(prog, packet, pkttype)


# --- answer-window set elements --------------------------------------------------------------

# The answer window's element, as core.ruleset must declare and match it: the interface the
# answer comes in on (the segment the copy went out of), the asker, the asker's port; the
# answer's own source port is not part of it (an Audioserver answers from 7091, a Miniserver
# from a port nobody documents). Fields padded to 4 bytes, as nftables concatenates them.
ANSWER_SET_TYPE = "ifname . ipv4_addr . inet_service"
ANSWER_SET_MATCH = "iifname . ip daddr . udp dport"
ANSWER_KEY_LENGTH = 16 + 4 + 4
# The layout the renderer declared before (asker . port, the answer's source port matched
# against the relay's ports in the rule); written while the kernel's set still has it.
LEGACY_ANSWER_KEY_LENGTH = 4 + 4


def answer_key(segment: str, asker: int, port: int, length: int = ANSWER_KEY_LENGTH) -> bytes:
    """The set element key of an answer window, for a set whose key is `length` bytes long."""
    tail = struct.pack("!IH2x", asker, port)
    if length == LEGACY_ANSWER_KEY_LENGTH:
        return tail
    return segment.encode()[:15].ljust(16, b"\0") + tail
