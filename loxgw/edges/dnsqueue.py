"""Adapter: the inline DNS path (NFLOG copies, NFQUEUE holds) on its own thread, verdict always given.

Where the kernel has nfnetlink_log, DNS arrives as NFLOG copies
(nflog.CopyLog) and is never delayed for devices zones: what waits instead
is a device's first packet to an address it has no grant for (the hold
queue). Before a held packet or a held answer goes on, the copies already
delivered are read and their grants inserted, so a query is always known
before its answer, and an answer's grants are in the kernel before the
device's first packet meets the allow rules. Without NFLOG, queries and
answers are queued, and an answer goes on only once its grants are in.
Copies are read as they come while they come at most EAGER_READS a second:
an answer's grants are then usually in, or going in, when the device's first
packet arrives. Faster than that, they are read in batches (COPY_DELAY).

Why a thread: the daemon's event loop also runs nft and iptables when the
ruleset changes, for tens to hundreds of milliseconds; a held packet must not
wait for that. The thread sleeps in poll() without the GIL. Everything it
shares with the event loop (inspector, writer, ledger, counters) is touched
only under GrantPath.lock. Whatever goes wrong, a held packet is accepted
unchanged: loxgw must never break DNS, and holding never decides. For the
same reason the queues fail open: what no longer fits goes on unheld.
"""

from __future__ import annotations

import functools
import logging
import os
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from netfilterqueue import NetfilterQueue

from loxgw.core.config import ZoneRole
from loxgw.core.dns import Grant
from loxgw.core.dnsinspect import DnsInspector
from loxgw.core.dnsledger import GrantLedger
from loxgw.core.errors import KernelError
from loxgw.core.firewall import COPY_PREFIX, HOLD_MARK
from loxgw.core.relaylimit import TokenBucket
from loxgw.daemon.grantpath import GrantPath
from loxgw.edges.nflog import CopyLog
from loxgw.edges.nft import NETLINK_NETFILTER, NLM_F_REQUEST, attr, message
from loxgw.edges.nftset import SetWriter

log = logging.getLogger("loxgw")

MAX_PACKET = 4096 + 60 + 60  # DNS cap plus IPv6 and TCP headers
# A thread waking from poll() waits for the GIL up to the switch interval (5 ms by default)
# if the event loop is busy in Python code; held packets should not.
GIL_SWITCH_INTERVAL = 0.0005
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_CONFIG = 2
NFQA_CFG_MASK, NFQA_CFG_FLAGS = 4, 5
NFQA_CFG_F_FAIL_OPEN = 1
# Seconds DNS copies may wait to be read when they come too fast to read each at once. Measured
# with bench.dns_latency: 5 ms batches raised p99 at 2,000 answers/s to 1.2 ms, 20 ms to 2 ms;
# 1-2 ms kept it near 0.7 ms with the same p50.
COPY_DELAY = 0.002
# Wake-ups a second that read copies as they come. Read at once, an answer's grants are usually in
# (or being put in) when the device's first packet arrives, which then waits only for its verdict
# (bench.dns_latency, 500 names/s: first connection p50 0.50 -> 0.32 ms); past this rate, reading
# in batches keeps a flood of DNS from costing a wake-up per copy.
EAGER_READS = 2000.0


def fail_open(fd: int, queue_num: int) -> None:
    """Let the kernel accept, not drop, what no longer fits in the queue (NFQA_CFG_F_FAIL_OPEN).

    Holding never decides and DNS must never break, so a full queue (a stuck
    or overloaded loxgw) lets packets go on. netfilterqueue has no call for
    it; the flag must come from the socket that owns the queue, so it is sent
    on a duplicate of that socket's descriptor.
    """
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER, fileno=os.dup(fd)) as sock:
        sock.send(fail_open_message(queue_num))


def fail_open_message(queue_num: int) -> bytes:
    """NFQNL_MSG_CONFIG setting NFQA_CFG_F_FAIL_OPEN (linux/netfilter/nfnetlink_queue.h), unacknowledged;
    tests/unit/edges/test_dnsqueue.py compares it with pyroute2's encoding."""
    flag = struct.pack(">I", NFQA_CFG_F_FAIL_OPEN)
    return message((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG, NLM_F_REQUEST, 0, socket.AF_UNSPEC, queue_num,
                   attr(NFQA_CFG_MASK, flag) + attr(NFQA_CFG_FLAGS, flag))


class DnsQueue(GrantPath):
    """NFQUEUEs (hold, answers) and the NFLOG copies, served by one thread."""

    def __init__(self, inspector: DnsInspector, writer: SetWriter, ledger: GrantLedger,
                 clock: Callable[[], float], copies: CopyLog | None = None,
                 lock: threading.Lock | None = None, copy_delay: float = COPY_DELAY,
                 eager_reads: TokenBucket | None = None) -> None:
        super().__init__(inspector, writer, ledger, clock, lock)
        self.copy_delay = copy_delay
        self.eager_reads = eager_reads or TokenBucket(EAGER_READS, EAGER_READS / 20)  # 50 ms of them at once
        self.queues: list[NetfilterQueue] = []
        self.copies = copies
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()

    def bind(self, queue_num: int, role: ZoneRole) -> None:
        """Serve a queue of DNS packets of zones with `role`: answers are held until granted."""
        self._bind(queue_num, lambda pkt: self._handle(pkt, role))

    def bind_hold(self, queue_num: int) -> None:
        """Serve the hold queue: first packets wait until the copies before them are handled."""
        self._bind(queue_num, self._release)

    def _bind(self, queue_num: int, handler: Callable[[Any], None]) -> None:
        nfq = NetfilterQueue()
        nfq.bind(queue_num, handler, max_len=4096, range=MAX_PACKET)
        self.queues.append(nfq)
        fail_open(nfq.get_fd(), queue_num)

    def start(self) -> None:
        """Start serving (after bind and bind_hold)."""
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self._thread = threading.Thread(target=self._serve, name="loxgw-dns", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        poller = select.poll()
        runners: dict[int, Callable[[], object]] = {}
        for nfq in self.queues:
            runners[nfq.get_fd()] = functools.partial(nfq.run, block=False)
        for fd in (*runners, self._wake_r):
            poller.register(fd, select.POLLIN)
        copies_fd = self.copies.fileno() if self.copies is not None else -1
        if copies_fd >= 0:
            poller.register(copies_fd, select.POLLIN)
            runners[copies_fd] = self.read_copies  # with no copy_delay: read at once
        deadline: float | None = None  # when copies that arrived are read at the latest
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
            events = poller.poll(timeout)
            if deadline is not None and time.monotonic() >= deadline:
                with self.lock:
                    self._guarded(self.read_copies)
                poller.register(copies_fd, select.POLLIN)
                deadline = None
            for fd, _ in events:
                if fd == self._wake_r:
                    return
                if fd == copies_fd and self.copy_delay > 0 and not self.eager_reads.take(time.monotonic()):
                    # Too many to read each at once: copies are read in batches, copy_delay after
                    # the first one (or at once when a held packet needs them). A batch costs less
                    # than its copies one by one, and DNS in flight then shares less CPU with loxgw.
                    poller.unregister(copies_fd)
                    deadline = time.monotonic() + self.copy_delay
                    continue
                with self.lock:
                    self._guarded(runners[fd])

    def _guarded(self, run: Callable[[], object]) -> None:
        try:
            run()
        except Exception as exc:  # the thread must live on: count, log, carry on
            self._failed(exc)

    def read_copies(self, settle: bool = True) -> list[Grant]:
        """Handle every DNS copy the kernel has delivered (NFLOG); a no-op without NFLOG. `settle=False`:
        the grants returned are settled by the caller (after the held packet went on)."""
        if self.copies is None:
            return []
        try:
            copies = self.copies.read()
        except KernelError as exc:
            self._failed(exc)
            return []
        return self.process_all(((packet, "clients" if prefix == COPY_PREFIX["clients"] else "devices")
                                 for prefix, packet in copies), settle)

    def _release(self, pkt: Any) -> None:
        """A held first packet: the grants of every answer copied so far go in, then it goes on.

        The kernel took the grants when their batch was sent (nfnetlink runs a batch inside the
        send): reading its acknowledgements waits until the packet has gone on.
        """
        grants: list[Grant] = []
        try:
            grants = self.read_copies(settle=False)
        finally:
            pkt.set_mark(pkt.get_mark() & ~HOLD_MARK)
            pkt.accept()
            self.held += 1
        if grants:
            self.settle(grants)

    def _handle(self, pkt: Any, role: ZoneRole) -> None:
        grants: list[Grant] = []
        try:
            grants = self.read_copies(settle=False)
            grants += self.grant(pkt.get_payload(), role)
        finally:
            pkt.accept()  # the grants are in the kernel by now; the rest is bookkeeping
            self.held_dns += 1
        if grants:
            self.settle(grants)

    def close(self, loop: object = None) -> None:
        """Stop the thread, unbind the queues, close the copy log (`loop`: unused, as DnsSniffer's)."""
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
            self._thread = None
        for nfq in self.queues:
            nfq.unbind()
        self.queues.clear()
        if self.copies is not None:
            self.copies.close()
            self.copies = None
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1
