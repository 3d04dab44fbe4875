"""`loxgw explain`'s words: the question as typed, the device it names, the answer as text."""

from __future__ import annotations

from ipaddress import IPv4Address as IPv4

import pytest

from loxgw.core.devices import Device
from loxgw.core.question import Question, find_device, format_answer, parse_question

MS = Device("50:4f:94:a0:00:01", "50:4f:94:a0:00:01", IPv4("192.168.20.10"), "miniserver", "ms")
AUDIO = Device("50:4f:94:a0:00:02", "50:4f:94:a0:00:02", IPv4("192.168.21.11"), "audioserver", "Kitchen")
UNKNOWN = Device("50:4f:94:a0:00:03", "50:4f:94:a0:00:03", IPv4("192.168.20.12"), None)
DEVICES = (MS, AUDIO, UNKNOWN)


def test_questions_as_typed() -> None:
    assert parse_question(["ms", "Weather.Loxone.com.", "443"]) == Question("ms", "weather.loxone.com", "tcp", 443)
    assert parse_question(["ms", "dns.loxonecloud.com", "7700/UDP"]) == Question(
        "ms", "dns.loxonecloud.com", "udp", 7700)
    assert parse_question(["ms", "icann.org", "ping"]) == Question("ms", "icann.org", "icmp", None)
    for words in (["ms", "x", "0"], ["ms", "x", "443/sctp"], ["ms", "x", "https"], ["ms", "x"], ["", "x", "1"],
                  ["ms", "x" * 254, "1"]):
        with pytest.raises(ValueError):
            parse_question(words)


def test_devices_by_name_mac_address_or_section() -> None:
    assert find_device(DEVICES, "KITCHEN") is AUDIO
    assert find_device(DEVICES, "50-4F-94-A0-00-01") is MS
    assert find_device(DEVICES, "192.168.20.12") is UNKNOWN
    assert find_device(DEVICES, "living", {"living": MS.key}) is MS
    assert find_device(DEVICES, "nobody") is None


def test_answers_as_text() -> None:
    answer = {"device": "192.168.20.10", "device_name": "ms", "host": "weather.loxone.com", "address": None,
              "flow": "TCP 443", "passes": False, "why": "why", "rule": "rule", "entries": ["ms-weather"]}
    assert format_answer(answer) == ("ms -> weather.loxone.com TCP 443: blocked\n  why:  why\n  rule: rule\n"
                                     "  catalogue: ms-weather")
    assert format_answer(answer | {"grants_synced": True}) == format_answer(answer)
    assert format_answer(answer | {"grants_synced": False}).endswith(
        "\n  note: loxgw's DNS thread was busy; its DNS entries as last looked at (ask again)")
