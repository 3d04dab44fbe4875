"""SSDP answers and device descriptions."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.core import ssdp
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
    assert description == ssdp.Description("Loxone Electronics GmbH", "Loxone Miniserver", "504F94A00001")
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


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_random_answers_never_crash(payload: bytes) -> None:
    with contextlib.suppress(RemoteDataError):
        location = ssdp.parse_answer(payload, SRC)
        assert location.startswith("http://192.168.20.10")
