"""The DNS service's classification: which policy each host of a devices zone gets."""

from __future__ import annotations

import ipaddress

from loxgw.core.config import parse_config
from loxgw.core.devices import Device
from loxgw.daemon.dns import DnsPorts, DnsService

IP = ipaddress.IPv4Address
CONFIG = """
config loxgw 'main'
\toption egress_intercom 'open'
config zone 'iot'
\toption role 'devices'
\tlist interface 'br-iot'
\toption cloud '1'
"""


def service(text: str = CONFIG) -> DnsService:
    return DnsService(parse_config(text, "t"), DnsPorts(lambda mode: "off", lambda table, prefix: {}))


def device(ip: str, product: str | None) -> Device:
    return Device(f"ip:{ip}", None, IP(ip), product)  # type: ignore[arg-type]


def test_devices_get_their_product_or_egress_mode() -> None:
    dns = service()
    dns.update_devices([device("192.168.20.10", "miniserver"), device("192.168.20.11", "audioserver"),
                        device("192.168.20.12", "intercom"), device("192.168.20.13", None)])
    assert [dns.classify(IP(f"192.168.20.{i}").packed) for i in (10, 11, 12, 13, 99)] == [
        "miniserver", "resolved", "open", "miniserver", None]


def test_other_hosts_of_an_open_zone_get_the_devices_entries() -> None:
    dns = service()
    dns.set_other_hosts([ipaddress.ip_network("192.168.20.0/24")])
    assert dns.classify(IP("192.168.20.99").packed) == "devices"
    assert dns.classify(IP("192.168.30.99").packed) is None
