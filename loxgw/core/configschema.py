"""The config schema's building blocks: schema rows, value parsers, and typing a section by its rows.

Each option is one dataclass field in config.py: its attribute name and
default as the field, its UCI name, value parser and one-line doc in the
field's metadata (`option(...)`). `rows(kind)` reads them back, so the parser,
the defaults and the README's option table all come from that one line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from loxgw.core import uci
from loxgw.core.catalog import PortRange
from loxgw.core.errors import ConfigProblem
from loxgw.core.record import record
from loxgw.core.uci import quote

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_NAME = re.compile(r"[A-Za-z0-9_]+")
_TABLE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_PORTS = re.compile(r"[0-9]{1,5}(-[0-9]{1,5})?")
_DIGITS = re.compile(r"[0-9]+")

Parser = Callable[[str], object]


@record
class Row:
    """One option of one section type, as the schema states it."""

    uci: str  # the option's name in the file
    attr: str  # the dataclass attribute that holds its value
    parse: Parser  # text -> value; ValueError with a message for the user
    default: object  # dataclasses.MISSING: the option is required
    doc: str
    is_list: bool

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING


def option(uci: str, parse: Parser, doc: str, *, is_list: bool = False) -> Mapping[str, Any]:
    """A field's metadata naming its UCI option: `field(default=..., metadata=option(...))`."""
    return {"uci": uci, "parse": parse, "doc": doc, "is_list": is_list}


@cache
def rows(kind: type[DataclassInstance]) -> tuple[Row, ...]:
    """The schema rows of a section's dataclass, in field order."""
    return tuple(
        Row(f.metadata["uci"], f.name, f.metadata["parse"], f.default, f.metadata["doc"], f.metadata["is_list"])
        for f in dataclasses.fields(kind)
        if "uci" in f.metadata
    )


def shown(value: object) -> str:
    """A default as a user writes it in UCI: `1`/`0`, numbers, words, lists joined by commas."""
    if value is dataclasses.MISSING:
        return "required"
    if value is None or value == () or value == "":
        return "none"
    if isinstance(value, bool):
        return f"`{int(value)}`"
    if isinstance(value, tuple):
        return ", ".join(shown(item) for item in value)
    return f"`{value}`"


class Checker:
    """Collects problems while typing raw sections; never stops at the first."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[ConfigProblem] = []
        self.refs: list[tuple[int, str, str]] = []  # (line, kind, name) to resolve once all are read

    def problem(self, line: int, message: str) -> None:
        self.problems.append(ConfigProblem(self.path, line, message))

    def values(self, section: uci.RawSection, schema_rows: tuple[Row, ...]) -> dict[str, Any] | None:
        """Typed values by attribute name; None if a required option is missing or bad. Reports problems."""
        schema = {row.uci: row for row in schema_rows}
        typed: dict[str, Any] = {}
        for option_name, raw in section.options.items():
            row = schema.get(option_name)
            if row is None:
                self.problem(raw.line, f"unknown option {quote(option_name)} in {section.label}")
                continue
            if raw.is_list and not row.is_list:
                self.problem(raw.line, f"{option_name!r} takes one value: use 'option', not 'list'")
                continue
            parsed: list[object] = []
            for value in raw.values:
                try:
                    parsed.append(row.parse(value))
                except ValueError as exc:
                    self.problem(raw.line, f"{option_name}: {exc}")
            if len(parsed) == len(raw.values):
                typed[row.attr] = tuple(parsed) if row.is_list else parsed[-1]
        required = [row for row in schema.values() if row.required]
        for row in required:
            if row.uci not in section.options:
                self.problem(section.line, f"{section.label} needs option {row.uci!r}")
        return typed if all(row.attr in typed for row in required) else None


# --- value parsers: text -> value, ValueError with a message for the user ---


def boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "yes", "on", "true", "enabled"):
        return True
    if lowered in ("0", "no", "off", "false", "disabled"):
        return False
    raise ValueError(f"expected a boolean (1/0, yes/no, on/off, true/false), got {quote(text)}")


def choice(*allowed: str) -> Parser:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {quote(text)}")
        return text

    return parse


def int_range(low: int, high: int) -> Parser:
    def parse(text: str) -> int:
        if not _DIGITS.fullmatch(text):
            raise ValueError(f"expected a whole number, got {quote(text)}")
        # Never hand int() a number of thousands of digits.
        if len(text.lstrip("0")) > len(str(high)):
            raise ValueError(f"expected a number from {low} to {high}, got {quote(text)}")
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"expected a number from {low} to {high}, got {value}")
        return value

    return parse


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"not an IP address: {quote(text)}") from None


def ipv4(text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"not an IPv4 address: {quote(text)}") from None


def network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"not an IP network: {quote(text)}") from None


def ifname(text: str) -> str:
    if not _IFNAME.fullmatch(text):
        raise ValueError(f"not a Linux interface name: {quote(text)}")
    return text


def mac(text: str) -> str:
    lowered = text.lower().replace("-", ":")
    if not _MAC.fullmatch(lowered):
        raise ValueError(f"not a MAC address: {quote(text)}")
    return lowered


def name(text: str) -> str:
    if not _NAME.fullmatch(text):
        raise ValueError(f"not a name (letters, digits, _): {quote(text)}")
    return text


def text(value: str) -> str:
    return value


def port_range(text: str) -> PortRange:
    if not _PORTS.fullmatch(text.strip()):
        raise ValueError(f"not a port or port range (N or N-M): {quote(text)}")
    return PortRange.parse(text.strip())  # its message quotes at most 11 characters


def absolute_path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError(f"expected an absolute path, got {quote(text)}")
    return text


def table_name(text: str) -> str:
    if not _TABLE.fullmatch(text):
        raise ValueError(f"not an nftables table name: {quote(text)}")
    return text
