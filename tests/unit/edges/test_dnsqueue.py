"""The inline DNS path: its fail-open message (against pyroute2's encoding), a held packet's release."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from pyroute2.netlink import NLM_F_REQUEST
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_QUEUE, nfgen_msg

from loxgw.core.dns import Grant, Limits
from loxgw.core.dnsinspect import DnsInspector
from loxgw.core.dnsledger import GrantLedger
from loxgw.core.firewall import HOLD_MARK
from loxgw.core.relaylimit import TokenBucket
from loxgw.edges.dnsqueue import NFQA_CFG_F_FAIL_OPEN, NFQNL_MSG_CONFIG, DnsQueue, fail_open_message
from tests.unit.core.test_dns import POLICIES
from tests.unit.daemon.test_grantpath import exchange


class _QueueConfig(nfgen_msg):  # type: ignore[misc]  # pyroute2 is untyped
    """NFQNL_MSG_CONFIG as pyroute2 declares messages: the reference for the hand encoding."""

    nla_map = (("NFQA_CFG_UNSPEC", "none"), ("NFQA_CFG_CMD", "hex"), ("NFQA_CFG_PARAMS", "hex"),
               ("NFQA_CFG_QUEUE_MAXLEN", "be32"), ("NFQA_CFG_MASK", "be32"), ("NFQA_CFG_FLAGS", "be32"))


def test_the_fail_open_message_is_the_bytes_pyroute2_encodes() -> None:
    for queue_num in (0, 7053, 65535):
        msg = _QueueConfig()
        msg["nfgen_family"] = socket.AF_UNSPEC
        msg["res_id"] = queue_num
        msg["attrs"] = [("NFQA_CFG_MASK", NFQA_CFG_F_FAIL_OPEN), ("NFQA_CFG_FLAGS", NFQA_CFG_F_FAIL_OPEN)]
        msg["header"]["type"] = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG
        msg["header"]["flags"] = NLM_F_REQUEST
        msg.encode()
        assert fail_open_message(queue_num) == bytes(msg.data)


class _Events:
    """What the held packet's release did, in order: the writer's and the packet's calls."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def add(self, grants: list[Grant], drain: bool = True) -> int:
        self.seen.append(f"add {len(grants)} drain={drain}")
        return len(grants)

    def drain_errors(self) -> int:
        self.seen.append("drain")
        return 0


class _Copies:
    def __init__(self, copies: list[tuple[str, bytes]]) -> None:
        self.copies = copies

    def read(self) -> list[tuple[str, bytes]]:
        copies, self.copies = self.copies, []
        return copies


class _HeldPacket:
    def __init__(self, events: _Events) -> None:
        self.events = events
        self.mark = HOLD_MARK | 0x10

    def get_mark(self) -> int:
        return self.mark

    def set_mark(self, mark: int) -> None:
        self.mark = mark

    def accept(self) -> None:
        self.events.seen.append(f"accept mark={self.mark:#x}")


def test_a_held_packet_goes_on_once_its_grants_are_sent_and_their_acknowledgements_are_read_after() -> None:
    events = _Events()
    copies = [("loxgw-devices", packet) for packet, _ in exchange("dyndns.loxonecloud.com", 7, "198.51.100.7")]
    queue = DnsQueue(DnsInspector(POLICIES, Limits()), events, GrantLedger(), lambda: 10.0,  # type: ignore[arg-type]
                     _Copies(copies))  # type: ignore[arg-type]
    try:
        queue._release(_HeldPacket(events))
        grants = events.seen[0]
        assert grants.startswith("add ") and grants.endswith("drain=False") and grants != "add 0 drain=False"
        assert events.seen[1:] == ["accept mark=0x10", "drain"]  # the hold mark is cleared; acks read last
        assert queue.held == 1
        queue._release(_HeldPacket(events))  # nothing copied since: no batch, no acknowledgement to read
        assert events.seen[3:] == ["accept mark=0x10"]
    finally:
        queue.copies = None
        queue.close()


class _SignalledCopies:
    """Copies the test hands in through a pipe, as the kernel's NFLOG socket would signal them."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        self.read_at: list[float] = []

    def fileno(self) -> int:
        return self._r

    def arrive(self) -> None:
        os.write(self._w, b"c")

    def read(self) -> list[tuple[str, bytes]]:
        if os.read(self._r, 4096):
            self.read_at.append(time.monotonic())
        return []

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


def test_copies_are_read_as_they_come_until_the_eager_budget_is_spent_then_in_batches() -> None:
    """Two eager reads in the budget (no refill): the first two copies are read at once, the third only
    copy_delay after it came, together with a fourth that came meanwhile."""
    copies = _SignalledCopies()
    queue = DnsQueue(DnsInspector(POLICIES, Limits()), _Events(), GrantLedger(), lambda: 10.0,  # type: ignore[arg-type]
                     copies, copy_delay=0.5, eager_reads=TokenBucket(0.0, 2.0))  # type: ignore[arg-type]
    queue.start()
    try:
        for expected in (1, 2):
            came = time.monotonic()
            copies.arrive()
            wait_until(lambda n=expected: len(copies.read_at) == n)  # type: ignore[misc]
            assert copies.read_at[-1] - came < 0.4  # at once, not after copy_delay
        came = time.monotonic()
        copies.arrive()
        time.sleep(0.1)
        copies.arrive()
        wait_until(lambda: len(copies.read_at) == 3)
        assert copies.read_at[2] - came >= 0.5  # in a batch, copy_delay after the first of it
        time.sleep(0.3)
        assert len(copies.read_at) == 3  # the copy that came meanwhile was in the same read
    finally:
        queue.close()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)
