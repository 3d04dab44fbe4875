"""The catalogue covers the seed document, and its JSON keeps the public field names."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest

from loxgw.core import catalog
from loxgw.core.catalog import PortRange

SEED_COPY = Path(__file__).parents[1] / "data" / "loxone-ports-seed.txt"
SHARED_SEED = Path(__file__).parents[4] / "shared" / "seeds" / "000_81df9916fcd8fbe8.txt"

DOMAIN = re.compile(r"(?<![\w.-])(\*\.)?(?:[A-Za-z0-9-]+\.)+(?:com|org|gov)\b")
IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
IPV6 = re.compile(r"\b[0-9a-f]{1,4}(?::[0-9a-f]{0,4}){2,7}\b")
# Numbers in the seed that are not ports: versions (16.3, 17.0, V16.3), "Gen.1", a year,
# "PTPv2"; removed before ports are read.
NOT_PORTS = re.compile(r"V?\d+\.\d+(?=\D)|Gen\.1|\b2023\b|PTPv2|eu-central-1")
NUMBER = re.compile(r"(\d+)(?:\s*[-–]\s*(\d+))?")


def seed_text() -> str:
    return SEED_COPY.read_text(encoding="utf-8")


def all_hosts() -> set[str]:
    return {h for e in catalog.load() for h in e.hosts}


def covered_by_wildcard(name: str, hosts: set[str]) -> bool:
    return any(h.startswith("*.") and name.endswith(h[1:]) for h in hosts)


def test_seed_copy_matches_shared_seed() -> None:
    if not SHARED_SEED.exists():
        pytest.skip(f"shared seed not beside this checkout ({SHARED_SEED})")
    assert SEED_COPY.read_bytes() == SHARED_SEED.read_bytes()


def test_every_seed_domain_is_in_the_catalogue() -> None:
    hosts = all_hosts()
    found = {m.group(0).lower() for m in DOMAIN.finditer(seed_text())}
    assert len(found) >= 35  # the extraction itself works
    # "which loxonecloud.com datacenter" names the company's domain in prose, not an endpoint.
    found.discard("loxonecloud.com")
    missing = sorted(
        d for d in found
        if d not in hosts and not (not d.startswith("*.") and covered_by_wildcard(d, hosts))
    )
    assert missing == []


def test_every_seed_wildcard_is_listed_exactly() -> None:
    hosts = all_hosts()
    wildcards = {m.group(0).lower() for m in DOMAIN.finditer(seed_text()) if m.group(1)}
    assert wildcards == {
        "*.pool.ntp.org", "*.ccbroker.loxonecloud.com", "*.loxonecloud.com",
        "*.dyndns.loxonecloud.com", "*.remcov3.loxonecloud.com",
    }
    assert wildcards <= hosts


def test_every_seed_ip_literal_is_in_the_catalogue() -> None:
    text = seed_text()
    literals = {ipaddress.ip_address(m) for m in IPV4.findall(text)}
    literals |= {ipaddress.ip_address(m) for m in IPV6.findall(text)}
    assert len(literals) == 10  # 8 relay addresses, 224.0.0.251, 255.255.255.255
    in_catalogue = set()
    for host in all_hosts():
        try:
            in_catalogue.add(ipaddress.ip_address(host))
        except ValueError:
            continue
    assert literals - in_catalogue == set()


def seed_ports() -> tuple[set[PortRange], set[int]]:
    text = DOMAIN.sub(" ", seed_text())
    text = IPV6.sub(" ", IPV4.sub(" ", text))
    text = NOT_PORTS.sub(" ", text)
    ranges: set[PortRange] = set()
    singles: set[int] = set()
    for first, last in NUMBER.findall(text):
        if last:
            ranges.add(PortRange(int(first), int(last)))
        else:
            singles.add(int(first))
    return ranges, singles


def test_every_seed_port_range_is_in_the_catalogue() -> None:
    ranges, _ = seed_ports()
    assert PortRange(20000, 65000) in ranges and PortRange(14000, 14999) in ranges
    listed = {p for e in catalog.load() for p in e.ports}
    assert sorted(ranges - listed) == []


def test_every_seed_port_is_covered_by_the_catalogue() -> None:
    _, singles = seed_ports()
    assert {53, 443, 7700, 7707, 47808, 5060, 7091, 7095, 57621, 4070, 19302} <= singles
    listed = [p for e in catalog.load() for p in e.ports]
    uncovered = sorted(port for port in singles if not any(port in r for r in listed))
    assert uncovered == []


def test_json_has_exactly_the_public_fields() -> None:
    for entry in catalog.load():
        data = entry.as_json()
        assert list(data) == list(catalog.FIELDS)
        json.dumps(data)


def test_products_and_directions_are_the_documented_ones() -> None:
    entries = catalog.load()
    assert {e.product for e in entries} == set(catalog.PRODUCTS)
    assert {e.direction for e in entries} <= set(catalog.DIRECTIONS)


def test_remote_connect_v3_entries_carry_their_version() -> None:
    by_id = {e.id: e for e in catalog.load()}
    assert by_id["ms-remcov3-ssh"].since == "17.0"
    assert by_id["ms-remcov3-ssh"].ports == (PortRange(22, 22),)
    assert by_id["app-remcov3-relay"].ports == (PortRange(20000, 49000),)
    assert by_id["config-remcov3-relay"].hosts == ("*.remcov3.loxonecloud.com",)
    assert by_id["config-remote-legacy"].until == "16.3"


def test_version_filter() -> None:
    by_id = {e.id: e for e in catalog.load()}
    assert catalog.applies_to_version(by_id["ms-remcov3-ssh"], (16, 5)) is False
    assert catalog.applies_to_version(by_id["ms-remcov3-ssh"], (17, 0)) is True
    assert catalog.applies_to_version(by_id["config-remote-legacy"], (16, 3)) is False
    assert catalog.applies_to_version(by_id["config-remote-legacy"], None) is True


@pytest.mark.parametrize("text,expected", [("80", (80, 80)), ("7070-7077", (7070, 7077))])
def test_port_range_parse(text: str, expected: tuple[int, int]) -> None:
    parsed = PortRange.parse(text)
    assert (parsed.first, parsed.last) == expected
    assert str(parsed) == text


@pytest.mark.parametrize("text", ["0", "65536", "10-5", "a", "1-", "-1", " ", "1-2-3"])
def test_port_range_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        PortRange.parse(text)


@pytest.mark.parametrize(
    "raw",
    [
        [{"id": "x", "product": "toaster", "service": "s", "direction": "cloud", "proto": "tcp"}],
        [{"id": "x", "product": "app", "service": "s", "direction": "sideways", "proto": "tcp"}],
        [{"id": "x", "product": "app", "service": "s", "direction": "cloud", "proto": "icmp",
          "ports": ["1"]}],
        [{"id": "x", "product": "app", "service": "s", "direction": "cloud", "proto": "tcp",
          "hosts": ["Bad_Host"]}],
        [{"id": "x", "product": "app", "service": "s", "direction": "cloud", "proto": "tcp",
          "colour": "red"}],
    ],
)
def test_malformed_catalogue_data_is_refused(raw: list[dict[str, object]]) -> None:
    with pytest.raises(catalog.CatalogDataError):
        catalog.parse_entries(raw)
