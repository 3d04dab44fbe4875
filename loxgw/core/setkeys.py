"""Set elements as the kernel stores them: nft element text in, key bytes out.

The netlink set writer (edges.nftset) sends what `nft` would send for the
same `add element` / `delete element` line, so both ways leave the same set.
The layout is the kernel's, as `nft --debug=mnl` shows it (captured in
tests/unit/core/test_setkeys.py):

- each field in network byte order, of its type's length (ipv4_addr 4,
  inet_proto 1, inet_service 2, ifname 16, zero-padded);
- in a concatenation each field is padded to a multiple of 4 bytes (one
  32-bit register per field); a single field is not padded;
- a concatenated `flags interval` set (pipapo) takes one element with
  NFTA_SET_ELEM_KEY (the lower ends) and NFTA_SET_ELEM_KEY_END (the upper
  ends), a single value having both equal;
- a single-field `flags interval` set (rbtree) takes a range as two elements:
  its first value, and the value after its last flagged
  NFT_SET_ELEM_INTERVAL_END (left out when the range ends at the type's top).
  nft also writes an end element at 0 into such a set when it is empty; the
  kernel lists the same set without it (tests/lab/test_firewall_netlink.py).

No set loxgw writes at run time holds intervals today: ranges live in the
rules (core.ruleset), so that a device coming or going touches hash sets
only. The interval encodings stay, checked against nft, for a set that
needs ranges again.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from loxgw.core import firewall
from loxgw.core.record import record

NFT_SET_ELEM_INTERVAL_END = 1
IFNAMSIZ = 16

FIELD_LENGTHS = {"ipv4_addr": 4, "ipv6_addr": 16, "inet_proto": 1, "inet_service": 2, "ifname": IFNAMSIZ,
                 "mark": 4}
PROTOCOLS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "icmpv6": 58}


@record
class KeyLayout:
    """A set's key type (its fields, in order) and whether it holds intervals."""

    fields: tuple[str, ...]
    interval: bool = False

    @classmethod
    def parse(cls, key_type: str, interval: bool = False) -> KeyLayout:
        """From nft's spelling, `ipv4_addr . inet_proto . inet_service`; ValueError for an unknown type."""
        fields = tuple(part.strip() for part in key_type.split("."))
        unknown = [f for f in fields if f not in FIELD_LENGTHS]
        if unknown:
            raise ValueError(f"no key encoding for set type {unknown[0]!r} (loxgw bug: add it to FIELD_LENGTHS)")
        return cls(fields, interval)

    @property
    def concatenated(self) -> bool:
        return len(self.fields) > 1


@record
class KernelElement:
    """One element of a netlink set message: key, key end (concatenated intervals), flags."""

    key: bytes
    key_end: bytes | None = None
    flags: int = 0


def encode_value(field: str, value: int | str) -> bytes:
    """One field's bytes, unpadded; `value` is an integer (ports, protocols) or nft's text."""
    if field in ("ipv4_addr", "ipv6_addr"):
        return ipaddress.ip_address(value).packed if isinstance(value, str) else \
            value.to_bytes(FIELD_LENGTHS[field], "big")
    if field == "ifname":
        name = str(value).strip('"').encode()
        if not name or len(name) >= IFNAMSIZ:
            raise ValueError(f"not an interface name: {value!r}")
        return name.ljust(IFNAMSIZ, b"\0")
    number = value if isinstance(value, int) else _number(field, value)
    return number.to_bytes(FIELD_LENGTHS[field], "big")


def _number(field: str, text: str) -> int:
    if field == "inet_proto" and text in PROTOCOLS:
        return PROTOCOLS[text]
    if not text.isdigit():
        raise ValueError(f"not a {field}: {text!r}")
    return int(text)


def _bounds(field: str, text: str) -> tuple[int | str, int | str]:
    """(lowest, highest) value a field's text stands for: a range `a-b` of a numeric field, or one value."""
    if field in ("ipv4_addr", "ipv6_addr") and "/" in text:
        network = ipaddress.ip_network(text)
        return int(network.network_address), int(network.broadcast_address)
    head, sep, tail = text.partition("-")
    if not sep or field == "ifname":  # interface names may hold a dash
        return text, text
    if field in ("ipv4_addr", "ipv6_addr"):
        low, high = int(ipaddress.ip_address(head)), int(ipaddress.ip_address(tail))
    else:
        low, high = _number(field, head), _number(field, tail)
    if low > high:
        raise ValueError(f"range out of order: {text!r}")
    return low, high


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def encode(layout: KeyLayout, text: str) -> tuple[KernelElement, ...]:
    """The kernel elements that stand for one element in nft syntax (`192.168.20.5 . tcp . 7070-7071`)."""
    parts = [part.strip() for part in text.split(" . ")]
    if len(parts) != len(layout.fields):
        raise ValueError(f"element {text!r} does not have the {len(layout.fields)} fields of its set")
    bounds = [_bounds(field, part) for field, part in zip(layout.fields, parts, strict=True)]
    if layout.concatenated:
        low = b"".join(_padded(encode_value(f, b[0])) for f, b in zip(layout.fields, bounds, strict=True))
        if not layout.interval:
            if any(b[0] != b[1] for b in bounds):
                raise ValueError(f"a range in {text!r}, but the set holds no intervals")
            return (KernelElement(low),)
        high = b"".join(_padded(encode_value(f, b[1])) for f, b in zip(layout.fields, bounds, strict=True))
        return (KernelElement(low, high),)
    (field,), ((first, last),) = layout.fields, bounds
    start = encode_value(field, first)
    if not layout.interval:
        if first != last:
            raise ValueError(f"a range in {text!r}, but the set holds no intervals")
        return (KernelElement(start),)
    after = int.from_bytes(encode_value(field, last), "big") + 1
    if after >> (8 * len(start)):  # the range reaches the top: no end element
        return (KernelElement(start),)
    return (KernelElement(start), KernelElement(after.to_bytes(len(start), "big"), None, NFT_SET_ELEM_INTERVAL_END))


def _declared_layouts() -> dict[str, KeyLayout]:
    layouts = {name: KeyLayout.parse(key_type) for name, key_type, _ in firewall.PIN_SETS}
    layouts.update((name, KeyLayout(("ipv4_addr",))) for name, _ in firewall.ADDRESS_SETS)
    return layouts


# The sets whose elements are desired state (core.firewall.DESIRED_SETS), as the renderer declares them.
DESIRED_LAYOUTS: dict[str, KeyLayout] = _declared_layouts()


def kernel_changes(changes: Mapping[str, Iterable[str]],
                   layouts: Mapping[str, KeyLayout] = DESIRED_LAYOUTS) -> dict[str, list[KernelElement]]:
    """Elements in nft syntax per set, as kernel elements per set (sorted, as render_element_changes sorts them).

    ValueError for a set without a known layout or an element that does not fit it (a loxgw bug).
    """
    out: dict[str, list[KernelElement]] = {}
    for name, found in changes.items():
        layout = layouts.get(name)
        if layout is None:
            raise ValueError(f"no key layout for set {name!r}")
        elements = [kernel for text in sorted(found) for kernel in encode(layout, text)]
        if elements:
            out[name] = elements
    return out
