"""The ruleset watch's socket filter: element and generation notifications dropped, the rest kept."""

from __future__ import annotations

import struct

import pytest

from loxgw.core import nftwatch


def buffer(*types: int, byteorder: str = "little") -> bytes:
    """Netlink messages (header and an nfgen header) of these nlmsg_types, in one buffer."""
    order = "<" if byteorder == "little" else ">"
    return b"".join(struct.pack(f"{order}IHHII", 20, kind, 0, 0, 0) + b"\0" * 4 for kind in types)


def nft(kind: int) -> int:
    return nftwatch.NFNL_SUBSYS_NFTABLES << 8 | kind


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_elements_and_generations_are_dropped_and_deletions_kept(byteorder: str) -> None:
    program = nftwatch.notification_filter(byteorder)
    for kind in nftwatch.IGNORED:
        assert not nftwatch.kept(program, buffer(nft(kind), byteorder=byteorder)), kind
    for kind in (0, 2, 5, 8, 9, 11):  # NEWTABLE, DELTABLE, DELCHAIN, DELRULE, NEWSET, DELSET
        assert nftwatch.kept(program, buffer(nft(kind), byteorder=byteorder)), kind
    assert nftwatch.kept(program, buffer(12 << 8 | 12, byteorder=byteorder))  # another subsystem's 12
    # A buffer is judged by its first message (see the module): the limit, pinned.
    assert nftwatch.kept(program, buffer(nft(8), nft(12), byteorder=byteorder))
    assert not nftwatch.kept(program, buffer(nft(12), nft(8), byteorder=byteorder))


def test_a_buffer_too_short_for_a_header_is_dropped() -> None:
    assert not nftwatch.kept(nftwatch.notification_filter("little"), b"\x14\0\0\0")
