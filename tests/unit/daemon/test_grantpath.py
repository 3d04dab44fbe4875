"""From DNS packets to set elements: copies read together go in as one batch, in order."""

from __future__ import annotations

from dnslib import QTYPE, RR, A

from loxgw.core.dns import Grant, Limits
from loxgw.core.dnsinspect import DnsInspector
from loxgw.core.dnsledger import GrantLedger
from loxgw.daemon.grantpath import GrantPath
from tests.unit.core.test_dns import DEVICE, POLICIES, RESOLVER, answer, query, udp_packet


class RecordingWriter:
    def __init__(self) -> None:
        self.batches: list[list[Grant]] = []

    def add(self, grants: list[Grant], drain: bool = True) -> int:
        self.batches.append(list(grants))
        return len(grants)

    def drain_errors(self) -> int:
        return 0


def exchange(name: str, qid: int, address: str) -> list[tuple[bytes, str]]:
    q = query(name, qid=qid)
    a = answer(q, RR(name, QTYPE.A, rdata=A(address), ttl=300))
    return [(udp_packet(str(DEVICE), str(RESOLVER), 40000, 53, q.pack()), "devices"),
            (udp_packet(str(RESOLVER), str(DEVICE), 53, 40000, a.pack()), "devices")]


def test_copies_read_together_make_one_batch_without_repeats() -> None:
    writer = RecordingWriter()
    ledger = GrantLedger()
    path = GrantPath(DnsInspector(POLICIES, Limits()), writer, ledger, lambda: 10.0)  # type: ignore[arg-type]
    packets = [*exchange("a7.remcov3.loxonecloud.com", 1, "203.0.113.7"),
               *exchange("w.remcov3.loxonecloud.com", 2, "203.0.113.8"),
               *exchange("a7.remcov3.loxonecloud.com", 3, "203.0.113.7")]  # asked again: the same entry
    path.process_all(packets)  # type: ignore[arg-type]
    assert len(writer.batches) == 1
    assert sorted(str(g.address) for g in writer.batches[0]) == ["203.0.113.7", "203.0.113.8"]
    assert path.inserted == 2
    assert sorted(e["address"] for e in ledger.live(10.0)) == ["203.0.113.7", "203.0.113.8"]


def test_an_answer_before_its_query_in_a_batch_grants_nothing() -> None:
    writer = RecordingWriter()
    path = GrantPath(DnsInspector(POLICIES, Limits()), writer, GrantLedger(), lambda: 10.0)  # type: ignore[arg-type]
    query_copy, answer_copy = exchange("a7.remcov3.loxonecloud.com", 1, "203.0.113.7")
    path.process_all([answer_copy, query_copy])  # type: ignore[list-item]
    assert writer.batches == [] and path.inspector.counters["refused_unsolicited"] == 1
