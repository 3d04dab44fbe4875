"""Adapter: the relay's sockets and the kernel's view of interfaces; bytes in and out, no decisions.

Receiving: one raw IPPROTO_UDP socket per relayed interface, bound to it,
so a datagram arrives with its IP header (source, destination, TOS, id,
TTL as bytes: no address strings, no ancillary data to parse) and the
interface is the socket's. A classic BPF filter (core.relaywire) lets
through only broadcasts to the relayed ports, so the kernel drops
everything else, the relay's own copies included, before Python sees it.
A thread per interface blocks in recv() on it: a datagram costs one
system call, and datagrams that queue up while one is handled are read
without sleeping in between (Python's socket API has no recvmmsg; this is
the batching it allows).

Sending: on Ethernet a packet socket per egress interface sends the
finished frame (link header included) with send(): no route lookup, no
conntrack entry per copy (a raw IP socket's spoofed-source copies each made
one), no netfilter, and no looped-back copy to filter again. Other links
get a raw IP socket (IP_HDRINCL) bound to the device and connected to its
broadcast address; its looped-back copies stop at the filter.

The UDP socket on the answer port (7071, when relayed) holds the port for
LoxLIVE answers to loxgw's own searches; its filter passes only datagrams
addressed to this host.

Interfaces come from rtnetlink dumps (edges.rtnl) in a worker thread, repeated whenever
the kernel announces a link, address or route change (rtnetlink multicast
groups), so interfaces that appear, go or change address are picked up
without polling: a periodic dump would hold the GIL for milliseconds and show
up in the relay's and the DNS path's p99.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from loxgw.core import relaywire
from loxgw.core.bpf import Instruction
from loxgw.core.relay import ANSWER_PORT, Relay, RelayInterface, Transmit
from loxgw.edges import rtnl, socketfilter

log = logging.getLogger("loxgw")

SO_BINDTODEVICE = 25
SO_RCVBUFFORCE = 33
ARPHRD_ETHER = 1
IFF_UP = 1
REFRESH_DEBOUNCE = 0.05  # seconds: one dump for a burst of change events
BATCH = 256  # datagrams per socket that drain() reads at most, so a flood cannot hold the loop
RECEIVE_BUFFER = 4 << 20  # about 4,000 small datagrams: 0.2 s of a 20,000/s flood
RECEIVE_SIZE = relaywire.RECEIVE_SIZE
ANSWER_SIZE = 4096  # LoxLIVE answers listing many extensions run past 512 bytes


def dump_interfaces(names: Iterable[str], roles: dict[str, str]) -> list[RelayInterface]:
    """The named interfaces that are up and have an IPv4 address (first address wins)."""
    wanted = set(names)
    links = {link.index: link for link in rtnl.links() if link.name in wanted and link.flags & IFF_UP}
    upstream = {route.oif for route in rtnl.routes(socket.AF_INET) if route.dst_len == 0}
    found: dict[int, RelayInterface] = {}
    for addr in rtnl.addresses(socket.AF_INET):
        link = links.get(addr.index)
        if link is None or addr.index in found:
            continue
        iface = ipaddress.IPv4Interface(f"{addr.address}/{addr.prefixlen}")
        broadcast = ipaddress.IPv4Address(addr.broadcast) if addr.broadcast else iface.network.broadcast_address
        mac = link.address if link.type == ARPHRD_ETHER and len(link.address) == 6 else b""
        found[addr.index] = RelayInterface(link.name, addr.index, iface.ip, broadcast, addr.index in upstream,
                                           roles.get(link.name, ""), mac)
    return sorted(found.values(), key=lambda i: i.name)


attach_filter = socketfilter.attach  # SO_ATTACH_FILTER: the kernel drops what the program refuses


def _receiver(iface: RelayInterface, program: list[Instruction]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    try:
        attach_filter(sock, program)  # first: nothing unfiltered may queue up
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, iface.name.encode())
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.setblocking(False)
        while True:  # what arrived on other interfaces before the device binding
            sock.recv(RECEIVE_SIZE)
    except BlockingIOError:
        return sock
    except OSError:
        sock.close()
        raise


def _sender(iface: RelayInterface) -> socket.socket:
    if iface.mac:
        # Protocol 0: a send-only packet socket (the kernel takes the protocol from the frame, Linux 5.1+).
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.bind((iface.name, 0))
        except OSError:
            sock.close()
            raise
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, iface.name.encode())
            sock.connect((str(iface.broadcast), 0))
        except OSError:
            sock.close()
            raise
    sock.setblocking(False)  # a full queue drops the copy (counted); the loop never waits
    return sock


class _Reader:
    """One interface's receive socket and the thread that blocks in recv() on it."""

    def __init__(self, iface: RelayInterface, sock: socket.socket, run: Callable[[_Reader], None]) -> None:
        self.iface = iface
        self.sock = sock
        self.stopping = False
        self.thread = threading.Thread(target=run, args=(self,), name=f"loxgw-relay-{iface.name}", daemon=True)

    def stop(self) -> None:
        """Wake the thread (shutdown makes its recv() return b""), wait for it, close the socket."""
        self.stopping = True
        with contextlib.suppress(OSError):  # ENOTCONN on raw sockets, yet the waiting recv wakes
            self.sock.shutdown(socket.SHUT_RDWR)
        if self.thread.ident is not None:  # started
            self.thread.join(timeout=1)
        self.sock.close()


class RelaySockets:
    """One relay's sockets: reads datagrams into the core, sends what it returns.

    The core is shared between the reader threads and the event loop (its
    timer, the answer socket, status); every call into it holds `lock`, and
    `on_core` runs right after each, under the lock, before any copy is
    sent: there the service takes the core's events (an answer window must
    be in the kernel before the copy that may draw the answer leaves) and
    re-arms the core's timer.
    """

    def __init__(self, core: Relay, roles: dict[str, str], lock: threading.Lock, on_core: Callable[[], None],
                 clock: Callable[[], float], on_interfaces: Callable[[], None] | None = None) -> None:
        self.core = core
        self.on_interfaces = on_interfaces  # on the loop, after the core took a change of interfaces
        self.peer_copies_only = False  # while the kernel copies: the receive filters pass peers' copies only
        self.roles = roles
        self.lock = lock
        self.on_core = on_core
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._readers: dict[int, _Reader] = {}
        self._senders: dict[int, tuple[RelayInterface, socket.socket, Callable[[bytes], int]]] = {}
        self._answers: socket.socket | None = None
        self._watch = rtnl.ChangeWatch(rtnl.RTMGRP_LINK | rtnl.RTMGRP_IPV4_IFADDR | rtnl.RTMGRP_IPV4_ROUTE,
                                       self._refresh_counted, REFRESH_DEBOUNCE, self.counters, "interface")

    def holds_port(self, port: int) -> bool:
        """Whether this relay holds a UDP socket on `port` (the answer port, when it relays it)."""
        return self._answers is not None and port == ANSWER_PORT

    # --- lifecycle -----------------------------------------------------------

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open every socket; OSError if the kernel refuses one (the service reports it)."""
        self.loop = loop
        self._watch.start(loop)
        if any(ANSWER_PORT in r for r in self.core.policy.ports):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._answers = sock
            attach_filter(sock, relaywire.answer_filter())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", ANSWER_PORT))
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._on_answer, sock)
        interfaces = await asyncio.to_thread(dump_interfaces, self.core.policy.interfaces, self.roles)
        self._apply(interfaces, strict=True)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watch.close(loop)
        for reader in self._readers.values():
            reader.stop()
        self._readers.clear()
        for _, sock, _ in self._senders.values():
            sock.close()
        self._senders.clear()
        if self._answers is not None:
            loop.remove_reader(self._answers.fileno())
            self._answers.close()
            self._answers = None

    async def refresh(self) -> None:
        """Re-read the interfaces from the kernel (in a thread: netlink dumps block)."""
        try:
            interfaces = await asyncio.to_thread(dump_interfaces, self.core.policy.interfaces, self.roles)
        except OSError as exc:
            self.counters["interface_refresh_errors"] += 1
            log.error("relay: reading interfaces failed: %s", exc)
            return
        self._apply(interfaces, strict=False)

    async def _refresh_counted(self) -> None:
        await self.refresh()
        self.counters["interface_refreshes"] += 1

    def _apply(self, interfaces: Sequence[RelayInterface], strict: bool) -> None:
        """Hand the core the interfaces, then open and close sockets to match its choice."""
        with self.lock:
            self.core.set_interfaces(interfaces)
            chosen = {i.index: i for i in self.core.interfaces}
        for index in [i for i, r in self._readers.items() if chosen.get(i) != r.iface]:
            self._readers.pop(index).stop()
        for index in [i for i in self._senders if chosen.get(i) != self._senders[i][0]]:
            self._senders.pop(index)[1].close()
        for index, iface in chosen.items():
            try:
                if index not in self._senders:
                    sock = _sender(iface)
                    self._senders[index] = (iface, sock, sock.send)
                if index not in self._readers:
                    sock = _receiver(iface, self._filter(iface))
                    sock.setblocking(True)
                    reader = self._readers[index] = _Reader(iface, sock, self._read_forever)
                    reader.thread.start()
            except OSError as exc:
                if strict:
                    raise
                self.counters["socket_errors"] += 1
                log.error("relay: sockets on %s: %s", iface.name, exc)
        if self.on_interfaces is not None:
            self.on_interfaces()

    def set_peer_copies_only(self, only: bool) -> None:
        """Swap every receive filter: other relays' copies only (the kernel copies) or every broadcast.

        SO_ATTACH_FILTER replaces a socket's filter at once; datagrams the old
        filter passed and that are still queued are read as before.
        """
        if only == self.peer_copies_only:
            return
        self.peer_copies_only = only
        for reader in list(self._readers.values()):
            try:
                attach_filter(reader.sock, self._filter(reader.iface))
            except OSError as exc:
                self.counters["socket_errors"] += 1
                log.error("relay: receive filter on %s: %s", reader.iface.name, exc)

    def _filter(self, iface: RelayInterface) -> list[Instruction]:
        return relaywire.receive_filter(self.core.policy.ports, ethernet=bool(iface.mac),
                                        peer_copies_only=self.peer_copies_only)

    # --- datagrams -----------------------------------------------------------

    def _read_forever(self, reader: _Reader) -> None:
        """A reader thread: blocking recv(), so a datagram costs one system call and one wake-up.

        Measured on the project's 2-core machine: a wake-up through the event
        loop (epoll, callbacks, the EAGAIN that ends each read) cost ~60 µs of
        CPU, a blocking recv() in a thread ~17 µs; the rest of a copy (parse,
        decide, build, send) costs ~20 µs.
        """
        recv, ifindex = reader.sock.recv, reader.iface.index
        core, lock, on_core, clock, send = self.core, self.lock, self.on_core, self.clock, self.send
        receive, events = core.receive, core.events
        while not reader.stopping:
            try:
                datagram = recv(RECEIVE_SIZE)
            except InterruptedError:
                continue
            except OSError as exc:  # ENOBUFS and the like: the kernel dropped some; go on
                if reader.stopping:
                    return
                self.counters["receive_errors"] += 1
                log.debug("relay receive on %s failed: %s", reader.iface.name, exc)
                continue
            if not datagram:  # stop() shut the socket down
                return
            with lock:
                copies = receive(ifindex, datagram, clock())
                if events or core.timer_changed or core.peers_changed:
                    on_core()
            if copies:
                send(copies)

    def drain(self) -> None:
        """Read what every socket holds now (bounded), so a peer's copy counts before a hold-off ends."""
        for index, reader in list(self._readers.items()):
            for _ in range(BATCH):
                try:
                    datagram = reader.sock.recv(RECEIVE_SIZE, socket.MSG_DONTWAIT)
                except OSError:
                    break
                if not datagram:
                    break
                with self.lock:
                    copies = self.core.receive(index, datagram, self.clock())
                    self.on_core()
                if copies:
                    self.send(copies)

    def send(self, copies: Iterable[Transmit]) -> None:
        senders = self._senders
        for ifindex, frame in copies:
            sender = senders.get(ifindex)
            try:
                if sender is None:
                    raise BrokenPipeError
                sender[2](frame)
            except OSError as exc:
                with self.lock:
                    self.core.transmit_failed(ifindex, frame)
                log.debug("relay send on %s failed: %s", ifindex, exc)

    def _on_answer(self, sock: socket.socket) -> None:
        for _ in range(64):
            try:
                data, (host, _port) = sock.recvfrom(ANSWER_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.counters["receive_errors"] += 1
                log.debug("relay answer receive failed: %s", exc)
                break
            with self.lock:
                self.core.receive_answer(int.from_bytes(socket.inet_aton(host), "big"), data)
                self.on_core()
