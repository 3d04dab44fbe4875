"""Adapter: conntrack over ctnetlink: change events, filtered dumps and deletes, on raw netlink sockets.

Messages are encoded and parsed by hand (the layout is small and fixed;
pyroute2's NFCTSocket would cost a full attribute tree per event). Events
arrive on the multicast groups NEW, UPDATE (TCP state changes among them)
and DESTROY; a classic BPF filter on the socket drops every event but IPv4
TCP to the ports asked for before it is queued, so a flood of other
connections through the router never reaches Python nor fills the buffer.
Dumps and deletes block: callers run them off the event loop.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from loxgw.core import bpf
from loxgw.core.bpf import Instruction
from loxgw.core.errors import KernelError
from loxgw.edges import socketfilter
from loxgw.edges.nft import NETLINK_NETFILTER

NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY = 1, 2, 3
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_CREATE = 0x400
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
# Attributes (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
CTA_TUPLE_ORIG, CTA_PROTOINFO, CTA_ID, CTA_ZONE, CTA_FILTER = 1, 4, 12, 18, 25
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTOINFO_TCP, CTA_PROTOINFO_TCP_STATE = 1, 1
CTA_FILTER_ORIG_FLAGS, CTA_FILTER_REPLY_FLAGS = 1, 2
FILTER_IP_SRC, FILTER_IP_DST, FILTER_PROTO_NUM, FILTER_DST_PORT = 1 << 0, 1 << 1, 1 << 3, 1 << 5
TCP, UDP = socket.IPPROTO_TCP, socket.IPPROTO_UDP
RECEIVE_BUFFER = 1 << 20  # events queued while the loop is busy (~300 bytes each with overhead)
DUMP_TIMEOUT = 5.0  # seconds a dump or delete may take before it counts as failed
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_NLA = struct.Struct("=HH")


class Conn(NamedTuple):
    """One IPv4 conntrack entry as a message reports it (original direction)."""

    kind: str  # "new", "update", "destroy" (events) or "entry" (a dump)
    proto: int
    src: ipaddress.IPv4Address
    sport: int
    dst: ipaddress.IPv4Address
    dport: int
    tcp_state: int | None  # enum tcp_conntrack; None when the message carries no TCP state
    ct_id: int | None
    zone: int


# --- parsing --------------------------------------------------------------------------------------


def _attrs(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each attribute in data[start:end]; stops at a bad length."""
    while start + 4 <= end:
        length, kind = _NLA.unpack_from(data, start)
        if length < 4 or start + length > end:
            return
        yield kind & NLA_TYPE_MASK, start + 4, start + length
        start += (length + 3) & ~3


def _tuple(data: bytes, start: int, end: int) -> tuple[int, bytes, int, bytes, int] | None:
    """(proto, src, sport, dst, dport) of a CTA_TUPLE_*; None unless IPv4 with ports."""
    src = dst = b""
    proto = sport = dport = -1
    for kind, a, b in _attrs(data, start, end):
        if kind == CTA_TUPLE_IP:
            for ip_kind, c, d in _attrs(data, a, b):
                if ip_kind == CTA_IP_V4_SRC and d - c == 4:
                    src = data[c:d]
                elif ip_kind == CTA_IP_V4_DST and d - c == 4:
                    dst = data[c:d]
        elif kind == CTA_TUPLE_PROTO:
            for p_kind, c, d in _attrs(data, a, b):
                if p_kind == CTA_PROTO_NUM and d > c:
                    proto = data[c]
                elif p_kind == CTA_PROTO_SRC_PORT and d - c == 2:
                    sport = int.from_bytes(data[c:d], "big")
                elif p_kind == CTA_PROTO_DST_PORT and d - c == 2:
                    dport = int.from_bytes(data[c:d], "big")
    if not src or not dst or min(proto, sport, dport) < 0:
        return None
    return proto, src, sport, dst, dport


def parse_message(data: bytes, offset: int = 0) -> Conn | None:
    """The entry one ctnetlink message (at `offset`) describes; None for anything but IPv4 with ports."""
    if offset < 0 or offset + 20 > len(data):
        return None
    length, kind, flags = _HEADER.unpack_from(data, offset)[:3]
    end = offset + length
    if kind >> 8 != NFNL_SUBSYS_CTNETLINK or end > len(data) or length < 20 or data[offset + 16] != socket.AF_INET:
        return None
    message = kind & 0xFF
    if message == IPCTNL_MSG_CT_DELETE:
        what = "destroy"
    elif message == IPCTNL_MSG_CT_NEW:
        what = "new" if flags & NLM_F_CREATE else "update"
    else:
        return None
    found = None
    state = ct_id = None
    zone = 0
    for attr, a, b in _attrs(data, offset + 20, end):
        if attr == CTA_TUPLE_ORIG:
            found = _tuple(data, a, b)
        elif attr == CTA_PROTOINFO:
            for info, c, d in _attrs(data, a, b):
                if info == CTA_PROTOINFO_TCP:
                    for tcp, e, f in _attrs(data, c, d):
                        if tcp == CTA_PROTOINFO_TCP_STATE and f > e:
                            state = data[e]
        elif attr == CTA_ID and b - a == 4:
            ct_id = int.from_bytes(data[a:b], "big")
        elif attr == CTA_ZONE and b - a == 2:
            zone = int.from_bytes(data[a:b], "big")
    if found is None:
        return None
    proto, src, sport, dst, dport = found
    return Conn(what, proto, ipaddress.IPv4Address(src), sport, ipaddress.IPv4Address(dst), dport, state, ct_id,
                zone)


def messages(data: bytes) -> Iterator[tuple[int, int]]:
    """(offset, type) of each netlink message in one read."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16 or offset + length > len(data):
            return
        yield offset, kind
        offset += (length + 3) & ~3


# --- the event filter -------------------------------------------------------------------------------



def _be(fmt: str, *values: int) -> int:
    """What a BPF load (big-endian) reads where the kernel wrote `values` in native order."""
    return int.from_bytes(struct.pack("=" + fmt, *values), "big")


# Where an IPv4 event's original tuple sits: the kernel always puts CTA_TUPLE_ORIG first, IP
# before proto, source before destination. Offsets from the netlink header. Each step loads
# (size, offset) and compares with a value; on a mismatch a "layout" step lets the message
# through for Python to read (never lose an event to a layout this filter did not expect),
# a "need" step drops it.
_STEPS: tuple[tuple[int, int, str, int], ...] = (
    (1, 16, "need", socket.AF_INET),  # nfgenmsg family
    (2, 22, "layout", _be("H", CTA_TUPLE_ORIG | NLA_F_NESTED)),
    (2, 26, "layout", _be("H", CTA_TUPLE_IP | NLA_F_NESTED)),
    (4, 28, "layout", _be("HH", 8, CTA_IP_V4_SRC)),
    (4, 36, "layout", _be("HH", 8, CTA_IP_V4_DST)),
    (2, 46, "layout", _be("H", CTA_TUPLE_PROTO | NLA_F_NESTED)),
    (4, 48, "layout", _be("HH", 5, CTA_PROTO_NUM)),
    (1, 52, "need", TCP),
    (4, 64, "layout", _be("HH", 6, CTA_PROTO_DST_PORT)),
)
_DPORT_AT = 68
MAX_FILTER_PORTS = 64  # jump offsets are 8 bits


def event_filter(ports: Iterable[int]) -> list[Instruction]:
    """Pass IPv4 TCP events to `ports`, and anything laid out unexpectedly; drop the rest."""
    wanted = sorted(set(ports))[:MAX_FILTER_PORTS]
    drop = 2 * len(_STEPS) + 1 + len(wanted)
    accept = drop + 1
    load = {1: bpf.LD_B_ABS, 2: bpf.LD_H_ABS, 4: bpf.LD_W_ABS}
    prog: list[Instruction] = []
    for size, offset, kind, value in _STEPS:
        prog.append((load[size], 0, 0, offset))
        target = drop if kind == "need" else accept
        prog.append((bpf.JEQ_K, 0, target - len(prog) - 1, value))
    prog.append((bpf.LD_H_ABS, 0, 0, _DPORT_AT))
    for port in wanted:
        prog.append((bpf.JEQ_K, accept - len(prog) - 1, 0, port))
    return [*prog, (bpf.RET_K, 0, 0, 0), (bpf.RET_K, 0, 0, bpf.ACCEPT)]


run_filter = bpf.run  # the program as the kernel runs it (tests)
attach_filter = socketfilter.attach


# --- requests --------------------------------------------------------------------------------------


def _nla(kind: int, payload: bytes) -> bytes:
    data = _NLA.pack(4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _request(message: int, flags: int, attrs: bytes, seq: int) -> bytes:
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + attrs
    return _HEADER.pack(16 + len(body), (NFNL_SUBSYS_CTNETLINK << 8) | message, NLM_F_REQUEST | flags, seq, 0) + body


def _orig(proto: int, src: ipaddress.IPv4Address | None = None, dst: ipaddress.IPv4Address | None = None,
          sport: int | None = None, dport: int | None = None) -> bytes:
    ips = b""
    if src is not None:
        ips += _nla(CTA_IP_V4_SRC, src.packed)
    if dst is not None:
        ips += _nla(CTA_IP_V4_DST, dst.packed)
    ports = _nla(CTA_PROTO_NUM, bytes([proto]))
    if sport is not None:
        ports += _nla(CTA_PROTO_SRC_PORT, sport.to_bytes(2, "big"))
    if dport is not None:
        ports += _nla(CTA_PROTO_DST_PORT, dport.to_bytes(2, "big"))
    inner = (_nla(CTA_TUPLE_IP | NLA_F_NESTED, ips) if ips else b"") + _nla(CTA_TUPLE_PROTO | NLA_F_NESTED, ports)
    return _nla(CTA_TUPLE_ORIG | NLA_F_NESTED, inner)


def dump_request(proto: int, src: ipaddress.IPv4Address | None = None, dst: ipaddress.IPv4Address | None = None,
                 dport: int | None = None, seq: int = 1) -> bytes:
    """A dump of IPv4 entries of `proto`, filtered in the kernel (Linux 5.8+; older ones dump all)."""
    flags = FILTER_PROTO_NUM | (FILTER_IP_SRC if src else 0) | (FILTER_IP_DST if dst else 0)
    flags |= FILTER_DST_PORT if dport is not None else 0
    attrs = _orig(proto, src, dst, None, dport) + _nla(CTA_FILTER | NLA_F_NESTED, _nla(
        CTA_FILTER_ORIG_FLAGS, struct.pack("=I", flags)) + _nla(CTA_FILTER_REPLY_FLAGS, struct.pack("=I", 0)))
    return _request(IPCTNL_MSG_CT_GET, NLM_F_DUMP, attrs, seq)


def delete_request(conn: Conn, seq: int = 1) -> bytes:
    """Delete exactly this entry: its original tuple, zone and id (a newer entry of the same tuple stays)."""
    attrs = _orig(conn.proto, conn.src, conn.dst, conn.sport, conn.dport)
    if conn.ct_id is not None:
        attrs += _nla(CTA_ID, conn.ct_id.to_bytes(4, "big"))
    if conn.zone:
        attrs += _nla(CTA_ZONE, conn.zone.to_bytes(2, "big"))
    return _request(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, attrs, seq)


def _socket(groups: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, groups))
    except OSError:
        sock.close()
        raise
    return sock


def dump(proto: int, src: ipaddress.IPv4Address | None = None, dst: ipaddress.IPv4Address | None = None,
         dport: int | None = None) -> list[Conn]:
    """Every IPv4 entry of `proto` (and the given addresses, destination port); blocking. KernelError."""
    found: list[Conn] = []
    try:
        with _socket() as sock:
            sock.settimeout(DUMP_TIMEOUT)
            sock.send(dump_request(proto, src, dst, dport))
            while True:
                data = sock.recv(1 << 16)
                for offset, kind in messages(data):
                    if kind == NLMSG_DONE:
                        return [c for c in found if (src is None or c.src == src) and (dst is None or c.dst == dst)
                                and (dport is None or c.dport == dport)]
                    if kind == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, offset + 16)[0]
                        raise KernelError("conntrack dump", code, errno.errorcode.get(code, ""))
                    conn = parse_message(data, offset)
                    if conn is not None and conn.proto == proto:
                        found.append(conn._replace(kind="entry"))
    except OSError as exc:
        raise KernelError("conntrack dump", exc.errno, exc.strerror or str(exc)) from exc


def delete(conns: Iterable[Conn]) -> int:
    """Delete the entries (one send, one acknowledgement each); how many the kernel deleted. KernelError."""
    batch = [delete_request(conn, seq) for seq, conn in enumerate(conns, 1)]
    if not batch:
        return 0
    deleted = 0
    try:
        with _socket() as sock:
            sock.settimeout(DUMP_TIMEOUT)
            sock.send(b"".join(batch))
            answered = 0
            while answered < len(batch):
                data = sock.recv(1 << 16)
                for offset, kind in messages(data):
                    if kind == NLMSG_ERROR:
                        answered += 1
                        deleted += struct.unpack_from("=i", data, offset + 16)[0] == 0  # ENOENT: gone already
    except OSError as exc:
        raise KernelError("conntrack delete", exc.errno, exc.strerror or str(exc)) from exc
    return deleted


def delete_between(proto: int, a: ipaddress.IPv4Address, b: ipaddress.IPv4Address) -> int:
    """Delete every entry of `proto` between two hosts, whichever of them opened it; how many went."""
    return delete([*dump(proto, a, b), *dump(proto, b, a)])


# --- events ---------------------------------------------------------------------------------------


class EventSocket:
    """Subscribed to conntrack NEW, UPDATE and DESTROY events; IPv4 TCP to `ports` only."""

    def __init__(self, ports: Iterable[int]) -> None:
        groups = (1 << (NFNLGRP_CONNTRACK_NEW - 1)) | (1 << (NFNLGRP_CONNTRACK_UPDATE - 1)) | (
            1 << (NFNLGRP_CONNTRACK_DESTROY - 1))
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            attach_filter(self.sock, event_filter(ports))  # first: nothing unfiltered may queue up
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, 33, RECEIVE_BUFFER)  # SO_RCVBUFFORCE (root)
            except PermissionError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            self.sock.bind((0, groups))
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self._buffer = bytearray(1 << 16)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def read(self, budget: int) -> tuple[list[Conn], bool]:
        """Up to `budget` queued events, and whether some were lost (ENOBUFS: the buffer overflowed)."""
        found: list[Conn] = []
        lost = False
        for _ in range(budget):
            try:
                size = self.sock.recv_into(self._buffer)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                lost = True
                continue
            data = bytes(self._buffer[:size])
            for offset, _ in messages(data):
                conn = parse_message(data, offset)
                if conn is not None:
                    found.append(conn)
        return found, lost
