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


# --- which tables lost something ------------------------------------------------------------------


def attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)


def message(kind: int, family: int, *attributes: bytes) -> bytes:
    body = bytes([family, 0, 0, 0]) + b"".join(attributes)
    return struct.pack("=IHHII", 16 + len(body), nft(kind), 0, 0, 0) + body


def deletion(kind: int, family: int, table: str, *more: bytes) -> bytes:
    return message(kind, family, attribute(1, table.encode() + b"\0"), *more)


def test_each_deletion_names_its_family_and_table() -> None:
    buffer = (deletion(nftwatch.NFT_MSG_DELTABLE, nftwatch.NFPROTO_INET, "loxgw")
              + deletion(nftwatch.NFT_MSG_DELRULE, nftwatch.NFPROTO_IPV4, "mangle", attribute(2, b"FORWARD\0"))
              + deletion(nftwatch.NFT_MSG_DELCHAIN, nftwatch.NFPROTO_NETDEV, "loxgw_relay")
              + deletion(nftwatch.NFT_MSG_DELSET, nftwatch.NFPROTO_INET, "fw4")
              + deletion(0, nftwatch.NFPROTO_INET, "added")  # NEWTABLE: not a deletion
              + message(nftwatch.NFT_MSG_NEWSETELEM, nftwatch.NFPROTO_INET))
    assert nftwatch.deleted_tables(buffer) == {
        (nftwatch.NFPROTO_INET, "loxgw"), (nftwatch.NFPROTO_IPV4, "mangle"),
        (nftwatch.NFPROTO_NETDEV, "loxgw_relay"), (nftwatch.NFPROTO_INET, "fw4")}
    # Attribute flags (NLA_F_NESTED, NLA_F_NET_BYTEORDER) do not hide the table.
    flagged = message(nftwatch.NFT_MSG_DELRULE, nftwatch.NFPROTO_IPV6, attribute(0x4001, b"mangle\0"))
    assert nftwatch.deleted_tables(flagged) == {(nftwatch.NFPROTO_IPV6, "mangle")}
    assert nftwatch.deleted_tables(b"") == set()


@pytest.mark.parametrize("buffer", [
    message(nftwatch.NFT_MSG_DELRULE, nftwatch.NFPROTO_IPV4),  # no table attribute
    message(nftwatch.NFT_MSG_DELRULE, nftwatch.NFPROTO_IPV4, attribute(1, b"\0")),  # an empty name
    message(nftwatch.NFT_MSG_DELRULE, nftwatch.NFPROTO_IPV4, struct.pack("=HH", 200, 1) + b"mangle\0\0"),  # overlong
    deletion(nftwatch.NFT_MSG_DELTABLE, nftwatch.NFPROTO_INET, "loxgw")[:-4],  # cut short
    struct.pack("=IHHII", 8, nft(nftwatch.NFT_MSG_DELTABLE), 0, 0, 0),  # a length below the header's
])
def test_a_deletion_whose_table_cannot_be_read_may_have_touched_any(buffer: bytes) -> None:
    deleted = nftwatch.deleted_tables(buffer)
    assert nftwatch.ANY_TABLE in deleted
    assert nftwatch.to_check(deleted, "loxgw") == (True, True)


def test_what_loxgw_checks_after_deletions_is_what_they_could_have_touched() -> None:
    inet, ipv4, ipv6 = nftwatch.NFPROTO_INET, nftwatch.NFPROTO_IPV4, nftwatch.NFPROTO_IPV6
    netdev = nftwatch.NFPROTO_NETDEV
    assert nftwatch.to_check({(inet, "loxgw")}, "loxgw") == (True, False)
    assert nftwatch.to_check({(ipv4, "mangle")}, "loxgw") == (False, True)
    assert nftwatch.to_check({(ipv6, "mangle"), (inet, "loxgw")}, "loxgw") == (True, True)
    # Somebody else's tables, a relay's own netdev table replaced, a table of another name or family:
    assert nftwatch.to_check({(inet, "fw4"), (netdev, "loxgw_relay"), (inet, "loxgw2"), (ipv4, "loxgw"),
                              (ipv4, "filter"), (inet, "mangle")}, "loxgw") == (False, False)
    assert nftwatch.to_check(set(), "loxgw") == (False, False)
    # Legacy iptables' changes come as no notification: any deletion is a reason to look.
    assert nftwatch.to_check({(inet, "fw4")}, "loxgw", xtables_notified=False) == (False, True)
    assert nftwatch.to_check(set(), "loxgw", xtables_notified=False) == (False, False)
    assert nftwatch.touched({nftwatch.ANY_TABLE}, (netdev, "loxgw_relay"))
