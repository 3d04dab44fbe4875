"""UCI parsing and config validation: good files pass, each broken file names its file:line."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from loxgw import cli
from loxgw.core import uci
from loxgw.core.catalog import PortRange
from loxgw.core.config import Relay, load_config, parse_config
from loxgw.core.errors import ConfigError

HERE = Path(__file__).parents[1]
REPO = HERE.parents[1]
BAD = sorted((HERE / "configs" / "bad").glob("*.uci"))
GOOD = sorted((HERE / "configs" / "good").glob("*.uci")) + sorted((REPO / "etc").glob("*.config"))
EXPECT = re.compile(r"^# expect: (\d+): (.+)$", re.M)


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


def test_double_quote_escapes() -> None:
    _, sections = uci.parse('config a\n\toption b "x\\"y\\\\z"\n', "t")
    assert sections[0].options["b"].values == ['x"y\\z']


def test_list_after_option_becomes_list() -> None:
    _, sections = uci.parse("config a\n\toption p '1'\n\tlist p '2'\n", "t")
    option = sections[0].options["p"]
    assert (option.values, option.is_list, option.line) == (["1", "2"], True, 3)


def test_defaults() -> None:
    config = parse_config("", "empty")
    assert (config.main.firewall, config.main.dns_mode, config.main.enabled) == (
        "auto", "inline", True,
    )
    relay = parse_config("config relay\n", "r").relays[0]
    assert relay.ports == (PortRange(7070, 7077), PortRange(7079, 7079))
    assert relay.ports == Relay.ports


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing))
    assert str(info.value).startswith(f"{missing}:0: cannot read")


def test_binary_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bin"
    path.write_bytes(b"\xff\xfe\x00config")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert "not UTF-8" in str(info.value)
