"""SSDP answers and UPnP device descriptions: which Loxone product answers at an address.

Why by hand: miniupnpc's Python binding discovers only Internet Gateway
Devices (it exposes selectigd, not the device list), and a Miniserver is not
one. The protocol parts are small: an HTTP-over-UDP answer with a LOCATION
header, and an XML description with manufacturer and model.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit
from xml.etree import ElementTree

from loxgw.core.catalog import Product
from loxgw.core.errors import RemoteDataError

MAX_ANSWER_BYTES = 2048
MAX_DESCRIPTION_BYTES = 64 * 1024  # expat (2.4+) also refuses entity-expansion bombs
SSDP_GROUP = "239.255.255.250"
SSDP_PORT = 1900
SEARCH = (
    "M-SEARCH * HTTP/1.1\r\n"
    f"HOST: {SSDP_GROUP}:{SSDP_PORT}\r\n"
    'MAN: "ssdp:discover"\r\n'
    "MX: 1\r\n"
    "ST: upnp:rootdevice\r\n\r\n"
).encode()

# modelName as Loxone devices report it, in lower case, to the catalogue's product.
_MODELS: tuple[tuple[str, Product], ...] = (
    ("intercom gen", "intercom_gen1"),
    ("intercom", "intercom"),
    ("audioserver", "audioserver"),
    ("stereo extension", "stereo_extension"),
    ("miniserver", "miniserver"),
)


@dataclass(frozen=True)
class Description:
    manufacturer: str
    model: str
    serial: str


def parse_answer(payload: bytes, src: ipaddress.IPv4Address) -> str:
    """The LOCATION of an SSDP answer; it must point at the address that answered."""
    if len(payload) > MAX_ANSWER_BYTES:
        raise RemoteDataError("oversized")
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        raise RemoteDataError("malformed", "not ASCII") from None
    lines = text.split("\r\n")
    if not lines[0].startswith("HTTP/1.1 200"):
        raise RemoteDataError("malformed", "not an SSDP answer")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    location = headers.get("location", "")
    parts = urlsplit(location)
    if parts.scheme != "http" or not parts.hostname:
        raise RemoteDataError("malformed", "no http LOCATION")
    try:
        host = ipaddress.ip_address(parts.hostname)
    except ValueError:
        raise RemoteDataError("malformed", "LOCATION is not an address") from None
    if host != src:
        # Fetching a URL the answer names elsewhere would let anyone point loxgw at any host.
        raise RemoteDataError("location_elsewhere")
    return location


def parse_description(xml: bytes) -> Description:
    """Manufacturer, model and serial of a UPnP root device description."""
    if len(xml) > MAX_DESCRIPTION_BYTES:
        raise RemoteDataError("oversized")
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise RemoteDataError("malformed", str(exc)[:80]) from None
    device = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "device"), None)
    if device is None:
        raise RemoteDataError("malformed", "no <device>")

    def text(tag: str) -> str:
        for child in device:
            if child.tag.rsplit("}", 1)[-1] == tag:
                return (child.text or "").strip()[:128]
        return ""

    return Description(text("manufacturer"), text("modelName"), text("serialNumber"))


def product_of(description: Description) -> Product | None:
    """The catalogue product of a Loxone description; None for other makers or unknown models."""
    if "loxone" not in description.manufacturer.lower():
        return None
    model = description.model.lower()
    return next((product for key, product in _MODELS if key in model), None)


def is_loxone(description: Description) -> bool:
    return "loxone" in description.manufacturer.lower()
