"""SSDP answers and device descriptions."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.core import ssdp
from loxgw.core.devices import clean_text
from loxgw.core.errors import RemoteDataError

SRC = ipaddress.IPv4Address("192.168.20.10")
ANSWER = (b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nST: upnp:rootdevice\r\n"
          b"USN: uuid:0e3b0b5e-0000-1000-8000-504f94a00001::upnp:rootdevice\r\n"
          b"Location: http://192.168.20.10:80/upnp.xml\r\nSERVER: Loxone UPnP/1.0\r\n\r\n")
DESCRIPTION = b"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><device>
<deviceType>urn:schemas-upnp-org:device:HomeAutomationServer:1</deviceType>
<friendlyName>Miniserver Home</friendlyName><manufacturer>Loxone Electronics GmbH</manufacturer>
<modelName>Loxone Miniserver</modelName><serialNumber>504F94A00001</serialNumber></device></root>"""


def test_answer_location() -> None:
    assert ssdp.parse_answer(ANSWER, SRC) == "http://192.168.20.10:80/upnp.xml"


@pytest.mark.parametrize("payload,reason", [
    (ANSWER.replace(b"192.168.20.10:80", b"10.9.9.9:80"), "location_elsewhere"),
    (ANSWER.replace(b"http://", b"file://"), "malformed"),
    (ANSWER.replace(b"HTTP/1.1 200 OK", b"NOTIFY * HTTP/1.1"), "malformed"),
    (ANSWER.replace(b"192.168.20.10:80", b"evil.example:80"), "malformed"),
    (b"\xff\xfe", "malformed"),
    (b"x" * 3000, "oversized"),
])
def test_bad_answers(payload: bytes, reason: str) -> None:
    with pytest.raises(RemoteDataError) as info:
        ssdp.parse_answer(payload, SRC)
    assert info.value.reason == reason


def test_description_names_the_product() -> None:
    description = ssdp.parse_description(DESCRIPTION)
    assert description == ssdp.Description("Loxone Electronics GmbH", "Loxone Miniserver", "504F94A00001",
                                           "Miniserver Home")
    assert ssdp.product_of(description) == "miniserver"


@pytest.mark.parametrize("maker,model,product", [
    ("Loxone Electronics GmbH", "Loxone Audioserver", "audioserver"),
    ("Loxone Electronics GmbH", "Loxone Intercom", "intercom"),
    ("Loxone Electronics GmbH", "Intercom Gen. 1", "intercom_gen1"),
    ("Loxone Electronics GmbH", "Stereo Extension", "stereo_extension"),
    ("Loxone Electronics GmbH", "Something New", None),
    ("Samsung", "Miniserver look-alike", None),
])
def test_products(maker: str, model: str, product: str | None) -> None:
    assert ssdp.product_of(ssdp.Description(maker, model, "")) == product


@pytest.mark.parametrize("xml", [b"<root>", b"<root/>", b"x" * 70000,
                                 b'<!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><root>&b;</root>'])
def test_bad_descriptions(xml: bytes) -> None:
    with pytest.raises(RemoteDataError):
        ssdp.parse_description(xml)


LAUGHS = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
          + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10))
          + ']>\n<root><device><manufacturer>&lol9;</manufacturer></device></root>')


@pytest.mark.parametrize("xml", [
    LAUGHS.encode(),
    LAUGHS.encode("utf-16"),  # a declared encoding must not hide the DTD from the check
    LAUGHS.replace("DOCTYPE", "doctype").encode(),
    b'<?xml version="1.0"?><!DOCTYPE root SYSTEM "http://192.168.10.20/x.dtd"><root/>',
    b'<root><!ENTITY x "y"></root>',
])
def test_dtds_and_entities_are_refused_before_parsing(xml: bytes) -> None:
    with pytest.raises(RemoteDataError) as info:
        ssdp.parse_description(xml)
    assert info.value.reason in ("dtd", "malformed")
    if b"<\x00" not in xml:
        assert info.value.reason == "dtd"


def test_description_fields_are_cleaned() -> None:
    xml = DESCRIPTION.replace(b"Miniserver Home", b"&lt;img src=x onerror=alert(1)&gt;\xe2\x80\xae")
    xml = xml.replace(b"Loxone Miniserver", b"Loxone Miniserver <![CDATA[<script>x</script>]]>" + b"y" * 100)
    description = ssdp.parse_description(xml)
    assert description.name == "img src=x onerror=alert(1)"
    assert description.model == ("Loxone Miniserver scriptx/script" + "y" * 100)[:64]
    assert ssdp.product_of(description) == "miniserver"


def test_latin1_description() -> None:
    xml = DESCRIPTION.replace(b"Miniserver Home", b"K\xfcche")
    assert ssdp.parse_description(xml).name == "Küche"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_random_descriptions_never_crash(xml: bytes) -> None:
    with contextlib.suppress(RemoteDataError):
        description = ssdp.parse_description(xml)
        assert all(f == clean_text(f) for f in (description.manufacturer, description.model, description.name))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"<root>", b"</root>", b"<device>", b"</device>", b"<modelName>", b"</modelName>",
                                 b"<friendlyName>", b"</friendlyName>", b"&lt;", b"&#0;", b"&amp;", b"<![CDATA[",
                                 b"]]>", b"<!--", b"-->", b"x", b"\xff", b"<?xml version='1.0'?>", b"<!DOCTYPE"]),
                max_size=40))
def test_xml_shaped_descriptions_never_crash(parts: list[bytes]) -> None:
    with contextlib.suppress(RemoteDataError):
        ssdp.parse_description(b"".join(parts))


def test_answers_with_bare_line_feeds() -> None:
    assert ssdp.parse_answer(ANSWER.replace(b"\r\n", b"\n"), SRC) == "http://192.168.20.10:80/upnp.xml"


@pytest.mark.parametrize("location", [
    b"http://192.168.20.10:99999/x.xml", b"http://user:pw@192.168.20.10/x.xml", b"http://192.168.20.10/a b",
    b"http://192.168.20.10/" + b"a" * 600,
])
def test_bad_locations(location: bytes) -> None:
    payload = ANSWER.replace(b"http://192.168.20.10:80/upnp.xml", location)
    with pytest.raises(RemoteDataError) as info:
        ssdp.parse_answer(payload, SRC)
    assert info.value.reason == "malformed"


# --- the description GET ------------------------------------------------------------


def test_description_request() -> None:
    assert ssdp.description_request("http://192.168.20.10:2869/desc.xml?x=1") == (
        "192.168.20.10", 2869,
        b"GET /desc.xml?x=1 HTTP/1.0\r\nHost: 192.168.20.10:2869\r\nConnection: close\r\n"
        b"User-Agent: loxgw\r\nAccept: text/xml\r\n\r\n")
    assert ssdp.description_request("http://192.168.20.10")[:2] == ("192.168.20.10", 80)


@pytest.mark.parametrize("head,expected", [
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 42", ssdp.Head(200, 42, False)),
    (b"HTTP/1.0 200 OK\nContent-Length: 42\nContent-Length: 42", ssdp.Head(200, 42, False)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9", ssdp.Head(200, None, True)),
    (b"HTTP/1.1 200", ssdp.Head(200, None, False)),
])
def test_heads(head: bytes, expected: ssdp.Head) -> None:
    assert ssdp.parse_head(head) == expected


@pytest.mark.parametrize("head,reason", [
    (b"HTTP/1.1 302 Found\r\nLocation: http://192.168.10.20/", "redirect"),
    (b"HTTP/1.1 301 Moved", "redirect"),
    (b"HTTP/1.1 307 Temporary Redirect", "redirect"),
    (b"HTTP/1.1 404 Not Found", "http_status"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2", "malformed"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1", "malformed"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100000", "oversized"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked", "malformed"),
    (b"HTTP/1.1 200 OK\r\nno colon", "malformed"),
    (b"SSH-2.0-OpenSSH", "malformed"),
])
def test_refused_heads(head: bytes, reason: str) -> None:
    with pytest.raises(RemoteDataError) as info:
        ssdp.parse_head(head)
    assert info.value.reason == reason


def test_split_head() -> None:
    assert ssdp.split_head(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n<root/>") == (b"HTTP/1.1 200 OK\r\nA: b", b"<root/>")
    assert ssdp.split_head(b"HTTP/1.1 200 OK\nA: b\n\n<root/>") == (b"HTTP/1.1 200 OK\nA: b", b"<root/>")
    assert ssdp.split_head(b"HTTP/1.1 200 OK\r\nA: b\r\n") is None
    with pytest.raises(RemoteDataError):
        ssdp.split_head(b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 2000)


@pytest.mark.parametrize("data,body", [
    (b"4\r\n<roo\r\n3;x=y\r\nt/>\r\n0\r\n\r\n", b"<root/>"),
    (b"4\n<roo\n3\nt/>\n0\n", b"<root/>"),
    (b"4\r\n<roo\r\n3\r\nt/", None),
    (b"4\r\n<roo", None),
    (b"", None),
])
def test_dechunk(data: bytes, body: bytes | None) -> None:
    assert ssdp.dechunk(data) == body


def test_bodies() -> None:
    sized, chunked, open_ended = ssdp.Head(200, 7, False), ssdp.Head(200, None, True), ssdp.Head(200, None, False)
    assert ssdp.body_of(sized, b"<root/>trailing", False) == b"<root/>"
    assert ssdp.body_of(sized, b"<roo", False) is None
    assert ssdp.body_of(chunked, b"7\r\n<root/>\r\n0\r\n\r\n", False) == b"<root/>"
    assert ssdp.body_of(open_ended, b"<root/>", False) is None
    assert ssdp.body_of(open_ended, b"<root/>", True) == b"<root/>"
    for head, data in ((sized, b"<roo"), (chunked, b"7\r\n<ro")):
        with pytest.raises(RemoteDataError):
            ssdp.body_of(head, data, True)
    with pytest.raises(RemoteDataError) as info:
        ssdp.body_of(open_ended, b"x" * (ssdp.MAX_DESCRIPTION_BYTES + 1), False)
    assert info.value.reason == "oversized"
    with pytest.raises(RemoteDataError) as info:
        ssdp.body_of(chunked, b"1\r\nx\r\n" * 25000, False)
    assert info.value.reason == "oversized"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_random_heads_never_crash(head: bytes) -> None:
    with contextlib.suppress(RemoteDataError):
        parsed = ssdp.parse_head(head)
        assert parsed.status == 200
        assert parsed.length is None or 0 <= parsed.length <= ssdp.MAX_DESCRIPTION_BYTES


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600), st.booleans(), st.booleans())
def test_random_bodies_never_crash(data: bytes, chunked: bool, eof: bool) -> None:
    for head in (ssdp.Head(200, 10, False), ssdp.Head(200, None, chunked)):
        with contextlib.suppress(RemoteDataError):
            body = ssdp.body_of(head, data, eof)
            assert body is None or len(body) <= len(data)
    with contextlib.suppress(RemoteDataError):
        ssdp.split_head(data)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"0", b"1", b"a", b"F", b";x", b"\r\n", b"\n", b"\r", b"xyz", b"\x00"]),
                max_size=40))
def test_chunk_shaped_bodies_never_crash(parts: list[bytes]) -> None:
    with contextlib.suppress(RemoteDataError):
        ssdp.dechunk(b"".join(parts))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_random_answers_never_crash(payload: bytes) -> None:
    with contextlib.suppress(RemoteDataError):
        location = ssdp.parse_answer(payload, SRC)
        assert location.startswith("http://192.168.20.10")
