"""The nf_tables netlink requests: the bytes sent, and answers read back (kernel replies built by hand)."""

from __future__ import annotations

import errno
import struct

import pytest

from loxgw.core import nftwatch
from loxgw.core.errors import KernelError
from loxgw.edges import nft
from loxgw.edges.nft import NetfilterRequests, attr, attributes, netlink_errors, replies


def reply(kind: int, seq: int, payload: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), kind, 0, seq, 0) + payload + b"\0" * (-len(payload) % 4)


def error(seq: int, code: int) -> bytes:
    return reply(nft.NLMSG_ERROR, seq, struct.pack("=i", -code) + b"\0" * 16)


class FakeSocket:
    """Answers each send with the next scripted reads."""

    def __init__(self, answers: list[list[bytes]]) -> None:
        self.answers = answers
        self.reads: list[bytes] = []
        self.sent: list[bytes] = []

    def settimeout(self, timeout: float) -> None:
        pass

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        self.reads = self.answers.pop(0)
        return len(data)

    def recv(self, size: int) -> bytes:
        if not self.reads:
            raise TimeoutError("no answer")
        return self.reads.pop(0)

    def close(self) -> None:
        pass


def requests(answers: list[list[bytes]]) -> tuple[NetfilterRequests, FakeSocket]:
    sock = FakeSocket(answers)
    return NetfilterRequests(sock=sock), sock  # type: ignore[arg-type]


def test_attributes_walk_stops_at_a_truncated_attribute() -> None:
    data = attr(1, b"loxgw\0") + attr(2, b"\x01\x02\x03\x04", nested=True) + struct.pack("=HH", 40, 3) + b"xx"
    assert list(attributes(data)) == [(1, b"loxgw\0"), (2, b"\x01\x02\x03\x04")]


def test_replies_and_errors_skip_acknowledgements_and_truncation() -> None:
    data = error(5, 0) + error(6, errno.ENOENT) + struct.pack("=IHHII", 400, 2, 0, 7, 0)
    assert [(kind, seq) for kind, seq, _ in replies(data)] == [(nft.NLMSG_ERROR, 5), (nft.NLMSG_ERROR, 6)]
    assert netlink_errors(data) == [errno.ENOENT]


def test_table_exists_asks_once_and_reads_enoent_as_absent() -> None:
    found = reply((10 << 8) | 0, 1, b"\x01\x00\x00\x00" + attr(1, b"loxgw\0"))
    req, sock = requests([[found + error(1, 0)], [error(2, errno.ENOENT)]])
    assert (req.table_exists("loxgw"), req.table_exists("other")) == (True, False)
    kind, flags, seq = struct.unpack_from("=HHI", sock.sent[0], 4)
    assert (kind, flags, seq) == ((10 << 8) | nft.NFT_MSG_GETTABLE, nft.NLM_F_REQUEST | nft.NLM_F_ACK, 1)
    assert sock.sent[0][16:] == bytes([1, 0, 0, 0]) + attr(nft.NFTA_TABLE_NAME, b"loxgw\0")


def test_table_exists_names_other_refusals() -> None:
    req, _ = requests([[error(1, errno.EPERM)]])
    with pytest.raises(KernelError) as refused:
        req.table_exists("loxgw")
    assert refused.value.errno == errno.EPERM


def element(key: bytes, expiration_ms: int | None) -> bytes:
    fields = attr(nft.NFTA_SET_ELEM_KEY, attr(nft.NFTA_DATA_VALUE, key), nested=True)
    if expiration_ms is not None:
        fields += attr(nft.NFTA_SET_ELEM_TIMEOUT, struct.pack(">Q", 1_000_000))
        fields += attr(nft.NFTA_SET_ELEM_EXPIRATION, struct.pack(">Q", expiration_ms))
    return attr(nft.NFTA_LIST_ELEM, fields, nested=True)


def test_set_expirations_reads_every_part_of_the_dump() -> None:
    names = attr(1, b"loxgw_probe\0") + attr(2, b"s\0")
    first = reply((10 << 8) | 12, 1, b"\x01\x00\x00\x00" + names
                  + attr(3, element(b"\xc0\x00\x02\x01", 99_500) + element(b"\xc0\x00\x02\x02", None), nested=True))
    second = reply((10 << 8) | 12, 1,
                   b"\x01\x00\x00\x00" + names + attr(3, element(b"\x0a\x00\x00\x01", 5), nested=True))
    stale = reply((10 << 8) | 12, 99, b"\x01\x00\x00\x00" + names + attr(3, element(b"\xff" * 4, 1), nested=True))
    req, sock = requests([[stale + first, second + reply(nft.NLMSG_DONE, 1, b"\0\0\0\0")]])
    assert req.set_expirations("loxgw_probe", "s") == [(b"\xc0\x00\x02\x01", 99_500), (b"\xc0\x00\x02\x02", 0),
                                                       (b"\x0a\x00\x00\x01", 5)]
    assert struct.unpack_from("=H", sock.sent[0], 6)[0] == nft.NLM_F_REQUEST | nft.NLM_F_DUMP


def test_a_transaction_is_one_batch_and_fails_on_the_first_refusal() -> None:
    req, sock = requests([[error(2, 0), error(3, errno.EEXIST)]])
    with pytest.raises(KernelError) as refused:
        req.transact([(nft.NFT_MSG_NEWTABLE, nft.NLM_F_CREATE, attr(1, b"t\0")),
                      (nft.NFT_MSG_DELTABLE, 0, attr(1, b"u\0"))], "create t")
    assert refused.value.errno == errno.EEXIST
    assert [(kind, seq) for kind, seq, _ in replies(sock.sent[0])] == [
        (nft.NFNL_MSG_BATCH_BEGIN, 1), ((10 << 8) | nft.NFT_MSG_NEWTABLE, 2), ((10 << 8) | nft.NFT_MSG_DELTABLE, 3),
        (nft.NFNL_MSG_BATCH_END, 4)]
    flags, offset = [], 0
    while offset < len(sock.sent[0]):
        length, _, flag = struct.unpack_from("=IHH", sock.sent[0], offset)
        flags.append(flag)
        offset += length
    ack = nft.NLM_F_REQUEST | nft.NLM_F_ACK
    assert flags == [nft.NLM_F_REQUEST, ack | nft.NLM_F_CREATE, ack, nft.NLM_F_REQUEST]


def test_a_transaction_returns_once_its_last_message_is_acknowledged() -> None:
    req, _ = requests([[error(2, 0) + error(3, 0)]])
    req.transact([(nft.NFT_MSG_NEWTABLE, 0, attr(1, b"t\0")), (nft.NFT_MSG_DELTABLE, 0, attr(1, b"t\0"))], "t")
    assert req.seq == 4


def test_a_kernel_that_never_answers_is_a_kernel_error() -> None:
    req, _ = requests([[]])
    with pytest.raises(KernelError) as silent:
        req.table_exists("loxgw")
    assert silent.value.what == "nft get table"


class Notifications:
    """A netlink socket's reads, one per recv: bytes, or an errno to raise."""

    def __init__(self, *reads: bytes | int) -> None:
        self.reads = list(reads)

    def recv(self, size: int) -> bytes:
        read = self.reads.pop(0) if self.reads else errno.EAGAIN
        if isinstance(read, int):
            raise BlockingIOError(read, "again") if read == errno.EAGAIN else OSError(read, "refused")
        return read


def notification(command: int) -> bytes:
    return nft.nft_message(command, 0, 0, b"")


def watch_reading(*reads: bytes | int) -> nft.RulesetWatch:
    watch = nft.RulesetWatch.__new__(nft.RulesetWatch)
    watch.sock = Notifications(*reads)  # type: ignore[assignment]
    return watch


def test_the_watch_reports_the_tables_of_deletions_not_element_changes() -> None:
    elements = notification(nft.NFT_MSG_NEWSETELEM) + notification(nft.NFT_MSG_DELSETELEM)
    assert watch_reading(elements).drain() == set()
    rule = nft.nft_message(8, 0, 0, attr(1, b"mangle\0"), family=nftwatch.NFPROTO_IPV4)  # NFT_MSG_DELRULE
    table = nft.nft_message(2, 0, 0, attr(1, b"fw4\0"))  # NFT_MSG_DELTABLE, inet
    assert watch_reading(elements, rule, table).drain() == {(nftwatch.NFPROTO_IPV4, "mangle"),
                                                            (nftwatch.NFPROTO_INET, "fw4")}


def test_lost_notifications_may_have_touched_any_table_and_a_closed_socket_ends_the_drain() -> None:
    assert watch_reading(errno.ENOBUFS).drain() == {nftwatch.ANY_TABLE}
    # Closed while a drain ran in a thread (the daemon stopping): the drain ends, it does not spin.
    assert watch_reading(errno.EBADF, notification(8)).drain() == set()
