"""The netlink batch the set writer sends decodes to exactly the grants it was given."""

from __future__ import annotations

import ipaddress
import struct

from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_NFTABLES
from pyroute2.netlink.nfnetlink.nftsocket import NFT_MSG_NEWSETELEM, nft_set_elem_list_msg

from loxgw.core import catalog
from loxgw.core.catalog import PortRange
from loxgw.core.dns import Grant, Profile, all_profiles
from loxgw.core.firewall import cloud_set_name
from loxgw.edges.nftset import NFT_MSG_DESTROYSETELEM, SetWriter

PROFILES = all_profiles(catalog.load())
TCP22 = Profile("tcp", (PortRange(22, 22),))


def split(batch: bytes) -> list[bytes]:
    messages, offset = [], 0
    while offset < len(batch):
        (length,) = struct.unpack_from("=I", batch, offset)
        messages.append(batch[offset : offset + length])
        offset += (length + 3) & ~3
    return messages


def test_batch_decodes_to_the_grants() -> None:
    writer = SetWriter("loxgw", PROFILES)
    try:
        grants = [
            Grant(ipaddress.ip_address("192.168.20.10"), ipaddress.ip_address("203.0.113.7"),
                  TCP22, 300, "a7.remcov3.loxonecloud.com"),
            Grant(ipaddress.ip_address("2001:db8::10"), ipaddress.ip_address("2001:db8:1::7"),
                  TCP22, 61, "a7.remcov3.loxonecloud.com"),
        ]
        batch, count = writer.encode_batch(writer.grant_elements(grants))
    finally:
        writer.close()
    assert count == 2
    begin, first, second, end = split(batch)
    assert struct.unpack_from("=H", begin, 4)[0] == 0x10
    assert struct.unpack_from("=H", end, 4)[0] == 0x11
    seqs = [struct.unpack_from("=I", m, 8)[0] for m in (begin, first, second, end)]
    assert seqs == sorted(set(seqs))
    index = PROFILES.index(TCP22)
    decoded = []
    for raw in (first, second):
        msg = nft_set_elem_list_msg(raw)
        msg.decode()
        assert msg["header"]["type"] == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM
        (element,) = msg.get_attr("NFTA_SET_ELEM_LIST_ELEMENTS")
        key = element.get_attr("NFTA_SET_ELEM_KEY").get_attr("NFTA_DATA_VALUE")
        decoded.append((msg.get_attr("NFTA_SET_ELEM_LIST_TABLE"), msg.get_attr("NFTA_SET_ELEM_LIST_SET"),
                        bytes(key), element.get_attr("NFTA_SET_ELEM_TIMEOUT")))
    assert decoded == [
        ("loxgw", cloud_set_name(index, 4),
         ipaddress.ip_address("192.168.20.10").packed + ipaddress.ip_address("203.0.113.7").packed, 300_000),
        ("loxgw", cloud_set_name(index, 6),
         ipaddress.ip_address("2001:db8::10").packed + ipaddress.ip_address("2001:db8:1::7").packed, 61_000),
    ]


def test_unknown_profile_sends_nothing() -> None:
    writer = SetWriter("loxgw", PROFILES)
    try:
        grant = Grant(ipaddress.ip_address("192.168.20.10"), ipaddress.ip_address("203.0.113.7"),
                      Profile("tcp", (PortRange(1, 2),)), 300, "x")
        assert writer.encode_batch(writer.grant_elements([grant]))[1] == 0
        assert writer.add([grant]) == 0
    finally:
        writer.close()


def decode_all(batch: bytes) -> list[tuple[int, bytes, int | None, int | None]]:
    """(message type, key, timeout ms, expiration ms) of each element message in a batch."""
    out = []
    for raw in split(batch)[1:-1]:
        msg = nft_set_elem_list_msg(raw)
        msg.decode()
        (element,) = msg.get_attr("NFTA_SET_ELEM_LIST_ELEMENTS")
        key = bytes(element.get_attr("NFTA_SET_ELEM_KEY").get_attr("NFTA_DATA_VALUE"))
        out.append((msg["header"]["type"] & 0xFF, key, element.get_attr("NFTA_SET_ELEM_TIMEOUT"),
                    element.get_attr("NFTA_SET_ELEM_EXPIRATION")))
    return out


KEY = bytes([192, 168, 20, 10, 203, 0, 113, 7])


def test_refresh_modes_shape_the_batch() -> None:
    """expiration: the add carries it; replace: destroy, then add; none: a plain add."""
    expected = {
        "expiration": [(NFT_MSG_NEWSETELEM, KEY, 300_000, 300_000)],
        "replace": [(NFT_MSG_DESTROYSETELEM, KEY, None, None), (NFT_MSG_NEWSETELEM, KEY, 300_000, None)],
        "none": [(NFT_MSG_NEWSETELEM, KEY, 300_000, None)],
    }
    for mode, messages in expected.items():
        writer = SetWriter("loxgw", PROFILES, mode)  # type: ignore[arg-type]
        try:
            batch, count = writer.encode_batch([("cloud4_0", KEY, 300)])
        finally:
            writer.close()
        assert count == 1
        assert decode_all(batch) == messages, mode


def test_probe_can_set_expiration_apart_from_timeout() -> None:
    writer = SetWriter("loxgw_probe", (), "expiration")
    try:
        batch, _ = writer.encode_batch([("s", KEY, 1000)], expires=100)
    finally:
        writer.close()
    assert decode_all(batch) == [(NFT_MSG_NEWSETELEM, KEY, 1_000_000, 100_000)]
