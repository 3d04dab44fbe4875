"""edges.rtnl's dumps, held against pyroute2's IPRoute (the reference reader) on this namespace's kernel state."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import Counter

from pyroute2.iproute.linux import IPRoute

from loxgw.edges import rtnl


def test_links_addresses_routes_and_neighbours_read_as_pyroute2_reads_them() -> None:
    with IPRoute() as ipr:
        links = [(m["index"], m.get_attr("IFLA_IFNAME"), m["flags"], m["ifi_type"], m.get_attr("IFLA_ADDRESS"))
                 for m in ipr.get_links()]
        addresses = [(m["index"], m["family"], m["prefixlen"], m.get_attr("IFA_ADDRESS"), m.get_attr("IFA_LOCAL"),
                      m.get_attr("IFA_BROADCAST")) for m in ipr.get_addr()]
        routes = [(m["family"], m["dst_len"], m["table"], m.get_attr("RTA_OIF"))
                  for m in ipr.get_routes(family=socket.AF_INET)]
        neighbours = [(m["ifindex"], m["state"], m.get_attr("NDA_DST"), m.get_attr("NDA_LLADDR"))
                      for m in ipr.get_neighbours(family=socket.AF_INET)]
    assert [(m.index, m.name, m.flags, m.type, m.address.hex(":") or None) for m in rtnl.links()] == links
    assert [(m.index, m.family, m.prefixlen, m.address, m.local, m.broadcast) for m in rtnl.addresses()] == addresses
    assert [(m.family, m.dst_len, m.table, m.oif) for m in rtnl.routes(socket.AF_INET)] == routes
    assert [(m.index, m.state, m.address, m.mac) for m in rtnl.neighbours(socket.AF_INET)] == neighbours
    assert any(link.name == "lo" for link in rtnl.links())


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + bytes(-length % 4)


def test_attributes_stop_at_a_truncated_one_and_keep_the_first_of_a_type() -> None:
    header = bytes(16)  # an ifinfomsg
    body = header + attr(3, b"eth0\0") + attr(3, b"eth1\0") + attr(0x8000 | 1, b"\x02\x00\x00\x00\x00\x01")
    assert rtnl._attributes(body, 16) == {3: b"eth0\0", 1: b"\x02\x00\x00\x00\x00\x01"}
    truncated = header + attr(3, b"wan\0") + struct.pack("=HH", 40, 1) + b"short"
    assert rtnl._attributes(truncated, 16) == {3: b"wan\0"}
    assert rtnl._attributes(header + struct.pack("=HH", 2, 1), 16) == {}


def test_an_address_reads_as_text_and_its_interface() -> None:
    address = rtnl.Address(4, socket.AF_INET, 24, "192.168.20.1", "192.168.20.1", "192.168.20.255")
    assert str(address.interface().network) == "192.168.20.0/24"
    assert rtnl._ip(bytes([192, 168, 20, 1])) == "192.168.20.1"
    assert rtnl._ip(bytes(16)) == "::"
    assert rtnl._ip(b"\x01\x02") is None


def test_a_change_notified_while_the_reread_runs_gets_another_reread() -> None:
    calls: list[str] = []

    async def scenario() -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        started, release = asyncio.Event(), asyncio.Event()

        async def on_change() -> None:
            calls.append("read")
            started.set()
            if len(calls) == 1:
                await release.wait()

        watch = rtnl.ChangeWatch(0, on_change, 0.0, Counter(), "test")
        watch._sock = ours  # as start() would have bound it, without a netlink socket
        theirs.send(b"x")
        watch._on_readable()
        await started.wait()
        theirs.send(b"y")  # a device arrives while the first re-read runs
        watch._on_readable()
        theirs.send(b"z")
        watch._on_readable()  # and another: still one more round, not two
        release.set()
        assert watch._pending is not None
        await watch._pending
        ours.close()
        theirs.close()

    asyncio.run(scenario())
    assert calls == ["read", "read"]
