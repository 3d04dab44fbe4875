"""Bytes captured from the kernel, beside what they mean (tests/unit/data/captures.json says how each was taken)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

from loxgw.core import dnswire
from loxgw.edges.nflog import payloads
from loxgw.edges.nftset import netlink_errors

CAPTURES = json.loads((Path(__file__).parents[1] / "data" / "captures.json").read_text(encoding="utf-8"))


def test_a_captured_nflog_copy_reads_as_the_query_it_copied() -> None:
    capture = CAPTURES["nflog_dns_query"]
    meaning = capture["meaning"]
    (prefix, packet), = payloads(bytes.fromhex(capture["hex"]))[0]
    segment = dnswire.parse_packet(packet)
    assert prefix == meaning["prefix"]
    assert (segment.src, segment.sport, segment.dst, segment.dport) == (
        bytes(map(int, meaning["src"].split("."))), meaning["sport"],
        bytes(map(int, meaning["dst"].split("."))), meaning["dport"])
    assert int.from_bytes(segment.payload[:2], "big") == meaning["dns_id"]
    assert dnswire.read_name(segment.payload, 12)[0] == meaning["qname"]


def test_a_captured_netlink_error_names_its_errno() -> None:
    capture = CAPTURES["netlink_error_no_table"]
    assert netlink_errors(bytes.fromhex(capture["hex"])) == [getattr(errno, capture["meaning"]["errno"])]


def test_nflog_copy_cut_anywhere_is_counted_not_read() -> None:
    data = bytes.fromhex(CAPTURES["nflog_dns_query"]["hex"])
    for cut in range(1, len(data)):
        found, malformed = payloads(data[:cut])
        assert (found, malformed) in (([], 0), ([], 1)), cut
