"""The DNS service: which policy each host of a devices zone gets; entries saved, restored, put back."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from loxgw.core.config import parse_config
from loxgw.core.devices import Device
from loxgw.core.dns import Grant
from loxgw.core.errors import KernelError
from loxgw.core.firewall import CLOUD_SET_SIZE
from loxgw.daemon.dns import DnsPorts, DnsService
from loxgw.edges import clock
from tests.unit.daemon.test_dnsentries import REFUSED_DEVICE, FakeWriter
from tests.unit.daemon.test_dnsentries import grants as entries

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


def restoring_service(tmp_path: Path, writer: FakeWriter) -> DnsService:
    text = CONFIG.replace("config loxgw 'main'\n",
                          f"config loxgw 'main'\n\toption status_socket '{tmp_path}/loxgw.sock'\n")
    return DnsService(parse_config(text, "t"), DnsPorts(lambda mode: "off", lambda table, prefix: {},
                                                        probe_set_refresh=lambda: "expiration",
                                                        open_writer=lambda table, profiles, refresh: writer))


def save(tmp_path: Path, grants: list[Grant]) -> DnsService:
    dns = restoring_service(tmp_path, FakeWriter())
    dns.ledger.record(grants, clock.now())
    dns.save_entries()
    return dns


def test_the_state_file_goes_only_once_every_entry_is_back(tmp_path: Path) -> None:
    saved = save(tmp_path, entries(300) + entries(5, str(REFUSED_DEVICE)))
    dns = restoring_service(tmp_path, FakeWriter())
    assert (dns.restore_saved_entries(), os.path.exists(saved.state_path)) == (256, True)  # the kernel refused a batch
    assert (dns.status()["dns_entries_total"], dns.status()["dns_restore"]["refused"]) == (256, 49)

    save(tmp_path, entries(300))
    dns = restoring_service(tmp_path, FakeWriter())
    assert (dns.restore_saved_entries(), os.path.exists(saved.state_path)) == (300, False)
    status = dns.status()
    assert (status["dns_entries_total"], status["dns_entries_capacity"], status["dns_restore"]["restored"],
            status["dns_restore"]["refused"]) == (300, CLOUD_SET_SIZE, 300, 0)


def test_a_rebuilt_table_gets_every_live_entry_back(tmp_path: Path) -> None:
    writer = FakeWriter()
    dns = restoring_service(tmp_path, writer)
    dns.ledger.record(entries(600), clock.now())
    dns.reinsert_live()
    assert ([len(b) for b in writer.batches], len(writer.kernel), dns.status()["dns_restore"]["source"]) == (
        [256, 256, 88], 600, "rebuilt table")


def test_the_kernel_is_asked_once_how_set_elements_are_refreshed() -> None:
    asked: list[str] = []
    opened: list[str] = []

    def probe() -> str:
        asked.append("probe")
        return "replace"

    def open_writer(table: str, profiles: object, refresh: str) -> FakeWriter:
        opened.append(refresh)
        return FakeWriter()

    dns = DnsService(parse_config(CONFIG, "t"), DnsPorts(lambda mode: "off", lambda table, prefix: {},
                                                         probe_set_refresh=probe, open_writer=open_writer))
    assert dns.set_refresh == "-"
    assert dns.probe_set_refresh() == "replace"  # start-up asks it in a thread, before the writer is opened
    dns.open_writer()
    dns.close(None)  # type: ignore[arg-type]  # a rebuild of the DNS path opens a writer again
    dns.open_writer()
    assert (asked, opened, dns.set_refresh) == (["probe"], ["replace", "replace"], "replace")


def test_a_refresh_probe_the_kernel_refuses_means_none() -> None:
    def probe() -> str:
        raise KernelError("creating table inet loxgw_probe", 1, "Operation not permitted")

    dns = DnsService(parse_config(CONFIG, "t"), DnsPorts(lambda mode: "off", lambda table, prefix: {},
                                                         probe_set_refresh=probe,
                                                         open_writer=lambda table, profiles, refresh: FakeWriter()))
    assert (dns.probe_set_refresh(), dns.set_refresh) == ("none", "none")
