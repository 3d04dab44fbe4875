"""Set keys encode to the bytes nft itself sends for the same element.

Captured on Linux 6.18, nftables 1.0.6, in a scratch namespace holding
`table inet cap { set pin { type ipv4_addr . inet_proto . inet_service;
flags interval; } set addr { type ipv4_addr; } set iv { type inet_service;
flags interval; } set ra { type ifname . ipv4_addr . inet_service; flags
timeout; } }`, with `nft --debug=mnl add element inet cap ...`; the hex is
the NFTA_DATA_VALUE of each element's key (and key end) as the dump shows it.
"""

from __future__ import annotations

import pytest

from loxgw.core import firewall, setkeys
from loxgw.core.setkeys import NFT_SET_ELEM_INTERVAL_END, KernelElement, KeyLayout

PIN = KeyLayout.parse("ipv4_addr . inet_proto . inet_service", interval=True)
ADDRESS = KeyLayout(("ipv4_addr",))
PORTS = KeyLayout(("inet_service",), interval=True)
ANSWERS = KeyLayout.parse("ifname . ipv4_addr . inet_service")

CAPTURED = [
    # (layout, element as nft reads it, [(key hex, key end hex or None, flags)] as nft sent it)
    (PIN, "192.168.20.5 . tcp . 80", [("c0a81405" "06000000" "00500000", "c0a81405" "06000000" "00500000", 0)]),
    (PIN, "192.168.20.6 . udp . 7070-7071",
     [("c0a81406" "11000000" "1b9e0000", "c0a81406" "11000000" "1b9f0000", 0)]),
    (ADDRESS, "192.168.20.5", [("c0a81405", None, 0)]),
    # A single-field interval: the range's start, and the value after its end flagged INTERVAL_END.
    (PORTS, "7070-7071", [("1b9e", None, 0), ("1ba0", None, NFT_SET_ELEM_INTERVAL_END)]),
    (PORTS, "443", [("01bb", None, 0), ("01bc", None, NFT_SET_ELEM_INTERVAL_END)]),
    (ANSWERS, '"br-iot" . 192.168.20.5 . 7070',
     [("62722d696f7400000000000000000000" "c0a81405" "1b9e0000", None, 0)]),
]


@pytest.mark.parametrize(("layout", "text", "sent"), CAPTURED, ids=[c[1] for c in CAPTURED])
def test_keys_are_the_bytes_nft_sends(layout: KeyLayout, text: str, sent: list[tuple[str, str | None, int]]) -> None:
    assert setkeys.encode(layout, text) == tuple(
        KernelElement(bytes.fromhex(key), bytes.fromhex(end) if end else None, flags) for key, end, flags in sent)


def test_a_range_to_the_top_has_no_end_element() -> None:
    assert setkeys.encode(PORTS, "65000-65535") == (KernelElement((65000).to_bytes(2, "big")),)


def test_address_ranges_and_prefixes_in_a_concatenation() -> None:
    layout = KeyLayout.parse("ipv4_addr . inet_service", interval=True)
    (element,) = setkeys.encode(layout, "10.0.0.0/24 . 80")
    assert (element.key.hex(), element.key_end) == ("0a000000" "00500000", bytes.fromhex("0a0000ff" "00500000"))
    (element,) = setkeys.encode(layout, "10.0.0.1-10.0.0.9 . 80")
    assert (element.key.hex(), element.key_end) == ("0a000001" "00500000", bytes.fromhex("0a000009" "00500000"))


def test_an_interface_name_with_a_dash_is_not_a_range() -> None:
    (element,) = setkeys.encode(KeyLayout(("ifname",)), "br-iot")
    assert element.key == b"br-iot".ljust(16, b"\0")


@pytest.mark.parametrize(("layout", "text"), [
    (PIN, "192.168.20.5 . tcp"),  # a field missing
    (PIN, "192.168.20.5 . tcp . 90-80"),  # a range out of order
    (PIN, "192.168.20.5 . sctp . 80"),  # a protocol without a number here
    (ADDRESS, "192.168.20.5-192.168.20.9"),  # a range where the set holds none
    (ANSWERS, '"an-interface-name-too-long" . 192.168.20.5 . 7070'),
])
def test_elements_that_do_not_fit_their_set_are_refused(layout: KeyLayout, text: str) -> None:
    with pytest.raises(ValueError):
        setkeys.encode(layout, text)


def test_every_desired_set_has_the_layout_the_renderer_declares() -> None:
    assert set(setkeys.DESIRED_LAYOUTS) == set(firewall.DESIRED_SETS)
    assert {name: (" . ".join(layout.fields), layout.interval) for name, layout in setkeys.DESIRED_LAYOUTS.items()
            if name in {s[0] for s in firewall.PIN_SETS}} == {name: (key_type, False)
                                                               for name, key_type, _ in firewall.PIN_SETS}
    assert all(setkeys.DESIRED_LAYOUTS[name] == ADDRESS for name, _ in firewall.ADDRESS_SETS)


def test_kernel_changes_sorts_and_leaves_out_empty_sets() -> None:
    changes = setkeys.kernel_changes({firewall.PIN_PORT: {"192.168.20.6 . tcp . 80", "192.168.20.5 . tcp . 80"},
                                      firewall.ROUTER_PING: set()})
    assert [e.key[:4].hex() for e in changes[firewall.PIN_PORT]] == ["c0a81405", "c0a81406"]
    assert set(changes) == {firewall.PIN_PORT}


def test_a_set_without_a_layout_is_a_bug_said_plainly() -> None:
    with pytest.raises(ValueError, match="no key layout for set 'nosuch'"):
        setkeys.kernel_changes({"nosuch": {"192.168.20.5"}})
