"""The relay's edge without root: its socket filter attaches as struct sock_fprog, interfaces come from a dump."""

from __future__ import annotations

import ipaddress
import socket

from loxgw.core import relaywire
from loxgw.edges import relaynet


def test_the_answer_filter_attaches_and_lets_unicast_through() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        relaynet.attach_filter(receiver, relaywire.answer_filter())
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(2)
        sender.sendto(b"LoxLIVE: Home", receiver.getsockname())
        assert receiver.recv(100) == b"LoxLIVE: Home"
    finally:
        receiver.close()
        sender.close()


def test_a_filter_that_drops_everything_drops_everything() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        relaynet.attach_filter(receiver, [(0x06, 0, 0, 0)])  # ret #0
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(0.2)
        sender.sendto(b"x", receiver.getsockname())
        try:
            receiver.recv(100)
            raise AssertionError("the filter let a datagram through")
        except TimeoutError:
            pass
    finally:
        receiver.close()
        sender.close()


def test_dump_finds_the_loopback_interface_without_a_mac() -> None:
    (lo,) = relaynet.dump_interfaces(["lo"], {"lo": "clients"})
    assert (lo.name, lo.address, lo.role, lo.mac) == ("lo", ipaddress.IPv4Address("127.0.0.1"), "clients", b"")
