"""SSDP answers and UPnP device descriptions: which Loxone product answers at an address.

Why by hand: miniupnpc's Python binding discovers only Internet Gateway
Devices (it exposes selectigd, not the device list), and a Miniserver is not
one. The protocol parts are small: an HTTP-over-UDP answer with a LOCATION
header, one HTTP GET, and an XML description with manufacturer and model.

All of it comes from whatever answers the search, so: LOCATION must name the
answering address (or loxgw would fetch any URL a stranger names); the GET
follows no redirect (a 3xx is refused: a redirect is a request to another
host on the device's behalf); the description is capped, and refused if it
holds a DTD, before expat sees it (expat expands internal entities: a
billion-laughs document cost 44 MB before expat's amplification limit
stopped it); every field passes clean_text.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING

from loxgw.core.catalog import Product
from loxgw.core.devices import clean_text
from loxgw.core.errors import RemoteDataError
from loxgw.core.record import record

if TYPE_CHECKING:
    from urllib.parse import SplitResult

MAX_ANSWER_BYTES = 2048
MAX_DESCRIPTION_BYTES = 64 * 1024
MAX_HEAD_BYTES = 8 * 1024  # an HTTP response head
MAX_PATH = 512
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


@record
class Description:
    """The parts of a UPnP root device description loxgw reads; every field passed clean_text."""

    manufacturer: str
    model: str
    serial: str
    name: str = ""  # friendlyName


def parse_answer(payload: bytes, src: ipaddress.IPv4Address) -> str:
    """The LOCATION of an SSDP answer; it must point at the address that answered.

    Lines may end in CRLF or LF (what Loxone devices send is not documented).
    """
    if len(payload) > MAX_ANSWER_BYTES:
        raise RemoteDataError("oversized")
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        raise RemoteDataError("malformed", "not ASCII") from None
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if not lines[0].startswith("HTTP/1.1 200"):
        raise RemoteDataError("malformed", "not an SSDP answer")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    location = headers.get("location", "")
    parts = split_url(location)
    if parts.scheme != "http" or not parts.hostname:
        raise RemoteDataError("malformed", "no http LOCATION")
    try:
        host = ipaddress.ip_address(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise RemoteDataError("malformed", "LOCATION is not an address and port") from None
    if host != src:
        # Fetching a URL the answer names elsewhere would let anyone point loxgw at any host.
        raise RemoteDataError("location_elsewhere")
    if parts.username is not None or parts.password is not None:
        raise RemoteDataError("malformed", "credentials in LOCATION")
    if len(location) > MAX_PATH or not all("!" <= c <= "~" for c in location):
        raise RemoteDataError("malformed", "LOCATION is not one printable token")
    return location


def split_url(location: str) -> SplitResult:
    """urllib's split of a URL. urllib.parse and xml.etree are imported when a device first answers a
    search, not when the daemon starts: together they cost ~6 ms of start-up CPU here, ten times
    that on a router's."""
    from urllib.parse import urlsplit

    return urlsplit(location)


# --- the description GET -------------------------------------------------------


@record
class Head:
    """The head of the HTTP answer to a description GET."""

    status: int
    length: int | None  # Content-Length, if given
    chunked: bool


def description_request(location: str) -> tuple[str, int, bytes]:
    """(host, port, request bytes) of the GET for a LOCATION that parse_answer accepted.

    HTTP/1.0 with `Connection: close`: the server ends the body by closing,
    and needs no chunked encoding (loxgw still reads chunked bodies).
    """
    parts = split_url(location)
    try:
        host, port = str(ipaddress.IPv4Address(parts.hostname or "")), parts.port or 80
    except ValueError:
        raise RemoteDataError("malformed", "LOCATION is not an IPv4 address and port") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if len(target) > MAX_PATH or not all("!" <= c <= "~" for c in target):
        raise RemoteDataError("malformed", "bad path")
    request = (f"GET {target} HTTP/1.0\r\nHost: {host}:{port}\r\nConnection: close\r\n"
               "User-Agent: loxgw\r\nAccept: text/xml\r\n\r\n")
    return host, port, request.encode("ascii")


def split_head(data: bytes) -> tuple[bytes, bytes] | None:
    """(head, rest) once `data` holds the whole head (CRLF or LF line ends), else None."""
    ends = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := data.find(sep, 0, MAX_HEAD_BYTES + 4)) >= 0]
    if not ends:
        if len(data) > MAX_HEAD_BYTES:
            raise RemoteDataError("oversized", "HTTP head")
        return None
    index, size = min(ends)
    return data[:index], data[index + size:]


_STATUS = re.compile(r"HTTP/1\.[01] (\d{3})(?: [ -~\t]*)?")


def parse_head(head: bytes) -> Head:
    """Status and body framing of an answer head; a redirect or any status but 200 is refused."""
    if len(head) > MAX_HEAD_BYTES:
        raise RemoteDataError("oversized", "HTTP head")
    lines = [line.rstrip(b"\r").decode("latin-1") for line in head.split(b"\n")]
    match = _STATUS.fullmatch(lines[0])
    if match is None:
        raise RemoteDataError("malformed", "not an HTTP answer")
    status = int(match[1])
    if 300 <= status < 400:
        raise RemoteDataError("redirect")  # followed, it would make loxgw fetch what the device names
    if status != 200:
        raise RemoteDataError("http_status", str(status))
    lengths: set[str] = set()
    codings: list[str] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise RemoteDataError("malformed", "bad header line")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length":
            lengths.add(value)
        elif name == "transfer-encoding":
            codings.extend(c.strip().lower() for c in value.split(","))
    if codings and codings != ["chunked"]:
        raise RemoteDataError("malformed", "transfer coding")
    length = None
    if lengths and not codings:
        value = lengths.pop()
        if lengths or not value.isascii() or not value.isdigit() or len(value) > 9:
            raise RemoteDataError("malformed", "Content-Length")  # two different lengths: which body?
        length = int(value)
        if length > MAX_DESCRIPTION_BYTES:
            raise RemoteDataError("oversized")
    return Head(status, length, bool(codings))


def dechunk(data: bytes) -> bytes | None:
    """A chunked body (RFC 9112 7.1), None while incomplete; trailers are ignored."""
    out = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\n", pos, pos + 80)
        if eol < 0:
            if len(data) - pos >= 80:
                raise RemoteDataError("malformed", "chunk size line")
            return None
        size_text = data[pos:eol].rstrip(b"\r").split(b";", 1)[0].strip()
        if not 1 <= len(size_text) <= 8 or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            raise RemoteDataError("malformed", "chunk size")
        size = int(size_text, 16)
        pos = eol + 1
        if size == 0:
            return bytes(out)
        if len(out) + size > MAX_DESCRIPTION_BYTES:
            raise RemoteDataError("oversized")
        if len(data) < pos + size:
            return None
        out += data[pos:pos + size]
        pos += size
        if data.startswith(b"\r\n", pos):
            pos += 2
        elif data.startswith(b"\n", pos):
            pos += 1
        elif len(data) < pos + 2:
            return None
        else:
            raise RemoteDataError("malformed", "chunk end")


def body_of(head: Head, data: bytes, eof: bool) -> bytes | None:
    """The body once `data` (what followed the head so far) holds all of it; None while more is due."""
    if len(data) > 2 * MAX_DESCRIPTION_BYTES:
        raise RemoteDataError("oversized")
    if head.chunked:
        body = dechunk(data)
        if body is None and eof:
            raise RemoteDataError("malformed", "chunked body cut short")
        return body
    if head.length is not None:
        if len(data) >= head.length:
            return data[:head.length]
        if eof:
            raise RemoteDataError("malformed", "body cut short")
        return None
    if len(data) > MAX_DESCRIPTION_BYTES:
        raise RemoteDataError("oversized")
    return data if eof else None


# --- the description -------------------------------------------------------------


def parse_description(xml: bytes) -> Description:
    """Manufacturer, model, serial and friendly name of a UPnP root device description.

    The document is decoded here (UTF-8, else Latin-1) and handed to expat as
    text, so a declared encoding (UTF-16, say) cannot hide a DTD from the
    check before it.
    """
    if len(xml) > MAX_DESCRIPTION_BYTES:
        raise RemoteDataError("oversized")
    try:
        text = xml.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = xml.decode("latin-1")
    folded = text.lower()
    if "<!doctype" in folded or "<!entity" in folded:
        raise RemoteDataError("dtd")
    from xml.etree import ElementTree  # at first use: see split_url

    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise RemoteDataError("malformed", str(exc)[:80]) from None
    device = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "device"), None)
    if device is None:
        raise RemoteDataError("malformed", "no <device>")

    def field(tag: str) -> str:
        for child in device:
            if child.tag.rsplit("}", 1)[-1] == tag:
                return clean_text(child.text or "")
        return ""

    return Description(field("manufacturer"), field("modelName"), field("serialNumber"), field("friendlyName"))


def product_of(description: Description) -> Product | None:
    """The catalogue product of a Loxone description; None for other makers or unknown models."""
    if "loxone" not in description.manufacturer.lower():
        return None
    model = description.model.lower()
    return next((product for key, product in _MODELS if key in model), None)


def is_loxone(description: Description) -> bool:
    return "loxone" in description.manufacturer.lower()
