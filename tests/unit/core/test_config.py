"""UCI parsing and config validation: good files pass, each broken file names its file:line."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw import cli
from loxgw.core import configschema, uci
from loxgw.core.catalog import PortRange
from loxgw.core.config import (
    MAX_BYTES,
    SECTIONS,
    MainConfig,
    Reflector,
    Relay,
    Upnp,
    Zone,
    load_config,
    parse_config,
)
from loxgw.core.configdoc import HEADINGS, option_table
from loxgw.core.errors import ConfigError

HERE = Path(__file__).parents[1]
REPO = HERE.parents[1]
README = REPO / "README.md"
BAD = sorted((HERE / "configs" / "bad").glob("*.uci"))
GOOD = sorted((HERE / "configs" / "good").glob("*.uci")) + sorted((REPO / "etc").glob("*.config"))
EXPECT = re.compile(r"^# expect: (\d+): (.+)$", re.M)
TABLE_HEADING = "### Configuration (`/etc/config/loxgw`, UCI syntax)"


def test_corpus_is_present() -> None:
    assert len(BAD) >= 25
    assert len(GOOD) >= 3


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_configs_pass_check(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-c", str(path), "check"]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: ok")


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_configs_fail_with_file_and_line(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = EXPECT.findall(path.read_text())
    assert expected, f"{path.name} has no '# expect:' line"
    assert cli.main(["-c", str(path), "check"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(expected), lines
    for (line_no, message), printed in zip(expected, lines, strict=True):
        assert printed.startswith(f"{path}:{line_no}: "), printed
        assert message in printed, printed


def test_quoting_corners() -> None:
    config = load_config(str(HERE / "configs" / "good" / "quoting.uci"))
    assert config.main.log_level == "debug"
    assert config.main.table == "loxgw"
    assert config.main.trusted_resolvers == (
        ipaddress.ip_address("192.0.2.53"),
        ipaddress.ip_address("2001:db8::53"),
    )
    assert config.zones[0].interfaces == ("br-iot", "eth1.20")
    audio, intercom = config.devices
    assert audio.label == "Living room audio"  # a repeated option: the last one wins
    assert intercom.mac == "50:4f:94:00:00:0a"
    assert intercom.label == "two\nlines"


def test_defaults() -> None:
    config = parse_config("", "empty")
    assert config.main == MainConfig()
    assert (config.main.firewall, config.main.dns_mode, config.main.enabled) == ("auto", "inline", True)
    relay = parse_config("config relay\n", "r").relays[0]
    assert relay.ports == (PortRange(7070, 7077), PortRange(7079, 7079))
    assert relay == Relay("relay0")


def test_a_section_without_options_takes_every_schema_default() -> None:
    config = parse_config("config zone 'z'\n\toption role 'clients'\n\tlist network 'lan'\n"
                          "config upnp 'u'\n", "t")
    assert config.zones == (Zone("z", "clients", networks=("lan",)),)
    assert config.upnp == (Upnp("u"),)
    assert (config.upnp[0].internal_port, config.upnp[0].lease, config.upnp[0].check_interval) == (443, 3600, 60)


def test_every_option_is_one_schema_row() -> None:
    for section_type, kind in SECTIONS.items():
        schema = configschema.rows(kind)
        names = [row.uci for row in schema]
        assert len(names) == len(set(names)), section_type
        options = {f.name for f in dataclasses.fields(kind)} - {"name"}
        assert {row.attr for row in schema} == options, section_type
        assert [row.uci for row in schema if not row.doc or "\n" in row.doc] == [], section_type


def test_rebind_exception() -> None:
    assert parse_config("", "t").main.rebind_exception is True
    text = "config loxgw 'main'\n\toption rebind_exception '0'\n"
    assert parse_config(text, "t").main.rebind_exception is False
    with pytest.raises(ConfigError) as info:
        parse_config("config loxgw 'main'\n\toption rebind_exception 'maybe'\n", "t")
    assert [(p.line, p.message) for p in info.value.problems] == [
        (2, "rebind_exception: expected a boolean (1/0, yes/no, on/off, true/false), got 'maybe'")
    ]


# --- the README's option table is the schema's ---


def _readme_table(text: str) -> tuple[int, int]:
    """Start and end offsets of the option table under the Configuration heading."""
    start = text.index("\n|", text.index(TABLE_HEADING)) + 1
    end = start
    while text.startswith("|", end):
        end = text.index("\n", end) + 1
    return start, end


def test_readme_table_has_every_option_with_its_default() -> None:
    text = README.read_text(encoding="utf-8")
    start, end = _readme_table(text)
    stated: dict[tuple[str, str], str] = {}
    section = ""
    for line in text[start:end].splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        section = cells[0] or section
        stated[(section, cells[1].strip("`").removeprefix("list "))] = cells[2]
    for section_type, kind in SECTIONS.items():
        for row in configschema.rows(kind):
            key = (f"`{HEADINGS[section_type]}`", row.uci)
            assert key in stated, f"README's option table lacks {key}"
            assert stated[key] == configschema.shown(row.default), key


def test_readme_table_is_generated_from_the_schema() -> None:
    """LOXGW_REGENERATE=1 rewrites the table on purpose; otherwise a difference fails."""
    text = README.read_text(encoding="utf-8")
    start, end = _readme_table(text)
    if os.environ.get("LOXGW_REGENERATE") == "1":
        text = text[:start] + option_table() + text[end:]
        README.write_text(text, encoding="utf-8")
        start, end = _readme_table(text)
    assert text[start:end] == option_table()


# --- reading the file: regular files only, bounded ---


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Turn a read that would block for good into a failure instead of a hung test run."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError("blocked")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _load_error(path: str) -> list[str]:
    with _deadline(5), pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert _load_error(str(missing)) == [f"{missing}:0: cannot read: No such file or directory"]


def test_fifo_directory_and_device_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    expected = "; loxgw reads its config only from a regular file"
    assert _load_error(str(fifo)) == [f"{fifo}:0: not a regular file but a FIFO{expected}"]
    assert _load_error(str(tmp_path)) == [f"{tmp_path}:0: not a regular file but a directory{expected}"]
    assert _load_error("/dev/zero") == [f"/dev/zero:0: not a regular file but a character device{expected}"]


def test_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "big"
    with open(path, "wb") as handle:
        handle.truncate(MAX_BYTES + 1)
    assert _load_error(str(path)) == [
        f"{path}:0: {MAX_BYTES + 1} bytes, more than the {MAX_BYTES}-byte limit of a config file"
    ]
    path.write_bytes(b"#" * MAX_BYTES)
    assert load_config(str(path)).main == MainConfig()


def test_binary_file_is_a_config_error_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bin"
    path.write_bytes(b"config loxgw\n\toption table '\xff\xfe'\n")
    assert _load_error(str(path)) == [f"{path}:2: not UTF-8 text: invalid start byte at byte 28"]


def test_a_long_value_is_shortened_in_its_message() -> None:
    value = "x" * 10_000_000
    with pytest.raises(ConfigError) as info:
        parse_config(f"config loxgw 'main'\n\toption log_level '{value}'\n", "t")
    (problem,) = info.value.problems
    assert str(problem) == (
        "t:2: log_level: expected one of debug, info, notice, warning, error, "
        f"got '{'x' * 40}…' (10000000 characters)"
    )


def test_long_names_are_shortened_everywhere() -> None:
    long = "n" * 100_000
    text = (f"config zone '{long}'\n\toption role 'devices'\n\tlist interface 'a'\n"
            f"config zone '{long}'\n\toption role 'devices'\n\tlist interface 'b'\n"
            f"config relay\n\tlist zone 'z{long}'\n\toption {long} '1'\n")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t")
    n40, zn39 = f"'{'n' * 40}…' (100000 characters)", f"'z{'n' * 39}…' (100001 characters)"
    assert [(p.line, p.message) for p in info.value.problems] == [
        (4, f"duplicate zone name {n40} (first at line 1)"),
        (9, f"unknown option {n40} in anonymous relay"),
        (8, f"zone {zn39} is not defined (no config zone {zn39})"),
    ]


# --- one promise: any text gives a Config or a ConfigError with every line in range ---


def _line_count(text: str) -> int:
    """Lines as libuci counts them: `\\n`-terminated, plus an unterminated last one."""
    return text.count("\n") + (1 if text and not text.endswith("\n") else 0)


def _holds_the_promise(text: str) -> None:
    try:
        config = parse_config(text, "p")
    except ConfigError as exc:
        assert 1 <= len(exc.problems) <= uci.MAX_PROBLEMS + 1, text
        for problem in exc.problems[:uci.MAX_PROBLEMS]:
            assert problem.path == "p"
            assert 1 <= problem.line <= _line_count(text), (problem, text)
        # Line 0 is the whole file: only the count of problems past the cap.
        assert [p.line for p in exc.problems[uci.MAX_PROBLEMS:]] in ([], [0])
        assert all(len(p.message) <= 1000 for p in exc.problems), exc.problems
    else:
        assert config.path == "p"


TOKENS = st.sampled_from([
    "config", "option", "list", "package", "loxgw", "zone", "device", "relay", "upnp", "'main'", "'iot'",
    "enabled", "role", "interface", "network", "type", "ip", "mac", "zone", "port", "min_timeout", "device",
    "external_port", "devices", "clients", "miniserver", "br-iot", "192.0.2.1", "7070-7077", "50:4f:94:0:0:1",
    "1", "0", "99999999999999", "'", '"', "\\", "#", ";", " ", "\t", "\n", "\n", "\r", "\x0b", "\x0c", "\x1c",
    "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00", "…",
])
UCI_LIKE = st.lists(TOKENS | st.text(max_size=3), max_size=60).map("".join)
GOOD_TEXTS = [path.read_text(encoding="utf-8") for path in GOOD]


@settings(max_examples=300, deadline=None)
@given(st.text() | UCI_LIKE)
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    _holds_the_promise(text)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(GOOD_TEXTS), st.data())
def test_mutated_good_configs_keep_the_promise(text: str, data: st.DataObject) -> None:
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(text)), st.integers(0, 8), TOKENS | st.text(max_size=4)),
                               min_size=1, max_size=6))
    for position, cut, insert in edits:
        position = min(position, len(text))
        text = text[:position] + insert + text[position + cut:]
    _holds_the_promise(text)


# --- the ports a relay carries ---

GEN1_RELAY = "config relay\n\tlist interface 'a'\n\tlist interface 'b'\n"
GEN1_DEVICE = "config device 'door'\n\toption type 'intercom_gen1'\n\toption ip '192.168.20.30'\n"


def test_gen1_ports_are_relayed_only_with_a_gen1_intercom_configured() -> None:
    without = parse_config(GEN1_RELAY + "config device 'ms'\n\toption type 'miniserver'\n\toption ip '10.0.0.2'\n",
                           "t")
    assert without.relay_ports(without.relays[0]) == (PortRange(7070, 7077), PortRange(7079, 7079))
    config = parse_config(GEN1_RELAY + GEN1_DEVICE, "t")
    # The catalogue's icg1-search (5000, 8110, 8112) and icg1-status (8112-8113), merged.
    assert [str(p) for p in config.relay_ports(config.relays[0])] == ["7070-7077", "7079", "5000", "8110",
                                                                       "8112-8113"]


def test_gen1_ports_a_relay_lists_itself_are_not_added_twice() -> None:
    config = parse_config(GEN1_RELAY + "\tlist port '8110-8112'\n\tlist port '5000'\n" + GEN1_DEVICE, "t")
    assert [str(p) for p in config.relay_ports(config.relays[0])] == ["8110-8112", "5000", "8113"]


# --- config knx ---

KNX_ZONES = ("config zone 'iot'\n\toption role 'devices'\n\tlist interface 'br-iot'\n"
             "config zone 'lan'\n\toption role 'clients'\n\tlist interface 'br-lan'\n")


def test_knx_is_off_by_default_and_copies_between_its_zones_when_enabled() -> None:
    config = parse_config(KNX_ZONES, "t")
    assert (config.knx.enabled, config.knx.ttl, config.knx.rate_limit, config.knx_interfaces()) == \
        (False, 16, 50, ())
    config = parse_config(KNX_ZONES + "config knx\n\toption enabled '1'\n\tlist zone 'iot'\n\tlist zone 'lan'\n"
                          "\toption ttl '8'\n", "t")
    assert (config.knx.ttl, config.knx_interfaces()) == (8, ("br-iot", "br-lan"))


@pytest.mark.parametrize(("text", "line", "message"), [
    ("config knx\n\toption enabled '1'\n\tlist zone 'iot'\n", 7,
     "enabled config knx needs two zones or more (list zone) to copy between"),
    ("config knx\n\tlist zone 'iot'\n\tlist zone 'garden'\n", 9, "zone 'garden' is not defined (no config zone "
     "'garden')"),
    ("config knx\nconfig knx\n", 8, "only one 'config knx' section is allowed"),
    ("config knx\n\toption ttl '0'\n", 8, "ttl: expected a number from 1 to 255, got 0"),
])
def test_knx_problems_name_their_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(KNX_ZONES + text, "t")
    assert [(p.line, p.message) for p in caught.value.problems] == [(line, message)]


# --- config reflector ---


def test_reflector_defaults_and_allowed_hosts() -> None:
    assert parse_config("", "t").reflector == Reflector()
    assert (Reflector().enabled, Reflector().mdns, Reflector().ssdp, Reflector().rate_limit) == (True, True, True, 20)
    config = parse_config("config reflector\n\tlist allow_host '192.168.20.50'\n\toption ssdp 'off'\n", "t")
    assert (config.reflector.allow_hosts, config.reflector.ssdp) == ((ipaddress.IPv4Address("192.168.20.50"),), False)


@pytest.mark.parametrize(("text", "line", "message"), [
    ("config reflector\n\tlist allow_host 'fd00::5'\n", 2, "allow_host: not an IPv4 address: 'fd00::5'"),
    ("config reflector\nconfig reflector\n", 2, "only one 'config reflector' section is allowed"),
    ("config reflector\n\toption rate_limit '0'\n", 2, "rate_limit: expected a number from 1 to 10000, got 0"),
])
def test_reflector_problems_name_their_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t")
    assert [(p.line, p.message) for p in caught.value.problems] == [(line, message)]
