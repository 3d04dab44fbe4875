"""Evidence before trust: solicitations, answer evidence, admission into the inventory."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.core import discovery, ssdp
from loxgw.core.config import StaticDevice
from loxgw.core.devices import DISCOVERY, LOXONE_MAC, Inventory, LoxLive, evidence_rank
from loxgw.core.discovery import Answer, Solicitations, admit, answer_evidence

IP = ipaddress.IPv4Address
MS_IP, MS_MAC, MS_SERIAL = IP("192.168.20.10"), "50:4f:94:a0:00:01", "504F94A00001"
TV_MAC = "02:00:00:00:00:0c"


def loxlive(ip: IP = MS_IP, serial: str = MS_SERIAL, name: str = "Haus") -> LoxLive:
    return LoxLive(name, ip, 80, serial, "15.1.10.2")


def test_answers_count_only_within_the_window_after_a_search_on_their_segment() -> None:
    sent = Solicitations(window=3.0)
    assert sent.solicited("br-iot", 10.0) is False
    sent.record("br-iot", 10.0)
    assert [sent.solicited("br-iot", t) for t in (9.9, 10.0, 12.9, 13.0, 13.1)] == [False, True, True, True, False]
    assert (sent.solicited("br-lan", 11.0), sent.solicited(None, 11.0), sent.solicited(None, 14.0)) == (
        False, True, False)


def test_solicitations_are_bounded() -> None:
    sent = Solicitations(capacity=4)
    for i in range(10):
        sent.record(f"if{i}", float(i))
    assert [sent.solicited(f"if{i}", 9.0) for i in range(10)] == [False] * 6 + [True] * 4


@pytest.mark.parametrize("claimed,neighbour,solicited,claimed_mac,reason", [
    (MS_IP, MS_MAC, True, MS_MAC, None),
    (MS_IP, None, True, MS_MAC, None),  # no neighbour entry: discovery alone, ranked lowest
    (MS_IP, MS_MAC.upper(), True, MS_MAC, None),
    (None, MS_MAC, True, None, None),  # SSDP: no claimed address, no serial-as-MAC
    (MS_IP, MS_MAC, False, MS_MAC, "unsolicited"),
    (IP("192.168.20.99"), MS_MAC, True, MS_MAC, "spoofed"),  # claims another address
    (MS_IP, "50:4f:94:a0:00:02", True, MS_MAC, "spoofed"),  # a serial that is not the sender's MAC
    (MS_IP, TV_MAC, True, MS_MAC, "not_loxone_mac"),
    (None, TV_MAC, True, None, "not_loxone_mac"),
])
def test_answer_evidence(claimed: IP | None, neighbour: str | None, solicited: bool, claimed_mac: str | None,
                         reason: str | None) -> None:
    assert answer_evidence(MS_IP, claimed, neighbour, solicited, claimed_mac=claimed_mac) == reason


def test_a_sender_without_a_neighbour_entry_can_be_required_to_have_one() -> None:
    assert answer_evidence(MS_IP, MS_IP, None, True, neighbour_required=True) == "no_neighbour"
    assert answer_evidence(MS_IP, MS_IP, MS_MAC, True, neighbour_required=True) is None
    assert answer_evidence(MS_IP, MS_IP, None, False, neighbour_required=True) == "unsolicited"
    inv = Inventory()
    assert admit(inv, Answer(MS_IP, loxlive(), True), 1.0, neighbour_required=True) is False
    assert (inv.devices(), dict(inv.refusals)) == ([], {"refused_no_neighbour": 1})


def test_admitted_answer_with_a_loxone_neighbour_ranks_as_loxone_mac() -> None:
    inv = Inventory()
    assert admit(inv, Answer(MS_IP, loxlive(), True, MS_MAC, "br-iot"), 1.0) is True
    (dev,) = inv.devices()
    assert (dev.mac, str(dev.ip), dev.product, dev.name, sorted(dev.sources), evidence_rank(dev)) == (
        MS_MAC, "192.168.20.10", "miniserver", "Haus", ["loxlive", "neighbour"], LOXONE_MAC)


def test_admitted_answer_without_a_neighbour_entry_ranks_as_discovery() -> None:
    inv = Inventory()
    assert admit(inv, Answer(MS_IP, loxlive(), True), 1.0) is True
    (dev,) = inv.devices()
    assert (dev.mac, sorted(dev.sources), evidence_rank(dev)) == (MS_MAC, ["loxlive"], DISCOVERY)


def test_refused_answers_are_counted_by_reason_and_change_nothing() -> None:
    inv = Inventory()
    answers = [
        Answer(MS_IP, loxlive(), False, MS_MAC),
        Answer(MS_IP, loxlive(ip=IP("192.168.20.99")), True, MS_MAC),
        Answer(MS_IP, loxlive(serial="504F94A00099"), True, MS_MAC),
        Answer(MS_IP, loxlive(), True, TV_MAC),
        Answer(MS_IP, ssdp.Description("Samsung", "TV", "", "Living room TV"), True, TV_MAC),
        Answer(MS_IP, ssdp.Description("Samsung", "TV", "", "Living room TV"), True, MS_MAC),
    ]
    assert [admit(inv, a, 1.0) for a in answers] == [False] * 6
    assert (inv.devices(), dict(inv.refusals)) == ([], {
        "refused_unsolicited": 1, "refused_spoofed": 2, "refused_not_loxone_mac": 2, "refused_not_loxone": 1})


def test_audioserver_answer_names_its_product_and_keeps_the_default_http_port() -> None:
    inv = Inventory()
    audio = LoxLive("Audio", IP("192.168.20.11"), 7091, "504F94B00002", "2.5.1", "audioserver")
    admit(inv, Answer(IP("192.168.20.11"), audio, True, "50:4f:94:b0:00:02"), 1.0)
    (dev,) = inv.devices()
    assert (dev.product, dev.http_port, dev.firmware, dev.mac) == ("audioserver", 80, "2.5.1", "50:4f:94:b0:00:02")


def test_ssdp_answer_keys_on_the_neighbour_mac_not_the_serial() -> None:
    inv = Inventory()
    description = ssdp.Description("Loxone Electronics GmbH", "Loxone Intercom", "SN-12345", "Door")
    admit(inv, Answer(IP("192.168.20.12"), description, True, "50:4f:94:c0:00:03"), 1.0)
    (dev,) = inv.devices()
    assert (dev.key, dev.product, dev.name, dev.serial) == ("50:4f:94:c0:00:03", "intercom", "Door", "SN-12345")


def test_forged_answers_never_push_out_a_real_miniserver() -> None:
    """300 solicited answers with distinct serials from addresses the neighbour table does not know."""
    inv = Inventory(capacity=256)
    for i in range(300):
        src = IP(0xC0A81400 + 100 + i)
        admit(inv, Answer(src, loxlive(ip=src, serial=f"504F94F{i:05X}", name=f"fake {i}"), True), 1.0)
    assert (len(inv.devices()), inv.refusals["refused_cap"]) == (256, 44)
    assert admit(inv, Answer(MS_IP, loxlive(), True, MS_MAC), 2.0) is True
    assert (len(inv.devices()), inv.evicted) == (256, 1)
    assert [(d.name, evidence_rank(d)) for d in inv.devices() if d.mac == MS_MAC] == [("Haus", LOXONE_MAC)]


def test_static_devices_stay_whatever_answers_say() -> None:
    inv = Inventory((StaticDevice("ms", "miniserver", MS_MAC, None, label="Static"),), capacity=1)
    admit(inv, Answer(MS_IP, loxlive(name="Forged"), True, MS_MAC), 1.0)
    (dev,) = inv.devices()
    assert (dev.name, str(dev.ip), dev.static) == ("Static", "192.168.20.10", True)


def test_answer_limiter_per_source() -> None:
    limiter = discovery.answer_limiter()
    results = [limiter.allow(MS_IP, 0.0) for _ in range(7)]
    assert results == [""] * 5 + ["rate_source"] * 2
    assert (limiter.allow(IP("192.168.20.11"), 0.0), limiter.allow(MS_IP, 1.0)) == ("", "")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.one_of(st.none(), st.integers(0, 2**32 - 1)),
       st.one_of(st.none(), st.sampled_from([MS_MAC, TV_MAC, "50:4f:94:00:00:00"])), st.booleans())
def test_evidence_is_a_reason_or_none(src: int, claimed: int | None, neighbour: str | None, solicited: bool) -> None:
    reason = answer_evidence(IP(src), None if claimed is None else IP(claimed), neighbour, solicited)
    assert reason in (None, "unsolicited", "spoofed", "not_loxone_mac")  # never "no_neighbour" unless asked
    assert (reason is None) == (solicited and (claimed is None or claimed == src) and neighbour != TV_MAC)
