"""The command line: catalog, render, status without a daemon, help."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loxgw import cli
from loxgw.core import catalog

REPO = Path(__file__).parents[2]
SAMPLE = str(REPO / "etc" / "loxgw.config")


def test_catalog_json_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["catalog", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == len(catalog.load())
    assert all(list(item) == list(catalog.FIELDS) for item in data)
    remcov3 = next(d for d in data if d["id"] == "app-remcov3-relay")
    assert (remcov3["proto"], remcov3["ports"], remcov3["since"]) == ("tcp", ["20000-49000"], "17.0")


def test_catalog_table_lists_every_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["catalog"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(catalog.load()) + 1
    assert lines[0].split()[:3] == ["ID", "PRODUCT", "DIRECTION"]


def test_render_standalone(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-c", SAMPLE, "render", "--firewall", "standalone"]) == 0
    script = capsys.readouterr().out
    assert "type filter hook forward priority filter; policy accept;" in script
    assert 'iifname { "br-iot" } jump allow_from_devices' in script
    assert 'iifname { "br-lan" } oifname { "br-iot" } jump allow_into_devices' in script


def test_render_with_broken_config_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cfg"
    path.write_text("config loxgw 'main'\n\toption firewall 'maybe'\n")
    assert cli.main(["-c", str(path), "render"]) == 1
    assert capsys.readouterr().err.startswith(f"{path}:2: firewall:")


def test_status_without_daemon_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--socket", str(tmp_path / "none.sock")]) == 1
    assert "loxgw is not running" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "check", "catalog", "render", "status"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    assert f"usage: loxgw {command}" in capsys.readouterr().out


PLAIN_LINES = [
    ["status"], ["status", "--json"], ["status", "--full", "--json"], ["-c", "/etc/x", "status"],
    ["--config", "/etc/x", "status", "--socket", "/run/s.sock"], ["--config=/etc/x", "status", "--socket=/s"],
    ["-c=/etc/x", "--log-streams", "status", "--full"], ["-c", "a", "-c", "status", "status", "--json", "--json"],
    ["status", "--socket", "/a", "--socket", "/b"],
    ["run"], ["-c", "/etc/config/loxgw", "--log-streams", "run"], ["--log-streams", "--config=/x", "run"],
]
# Help, errors, abbreviations and other commands go to the parser.
PARSER_LINES = [
    [], ["status", "--help"], ["status", "-h"], ["--help"], ["status", "--js"], ["status", "--json=1"],
    ["status", "extra"], ["status", "--socket"], ["status", "--socket", "--json"], ["-c", "status"],
    ["status", "-c", "x"], ["--conf", "x", "status"], ["-cx", "status"], ["status", "--"], ["check"],
    ["--config=", "status"], ["doctor", "--json"], ["explain", "a", "status", "80"],
    ["run", "--json"], ["run", "--log-streams"], ["run", "status"], ["status", "run"], ["run", "-h"],
]


@pytest.mark.parametrize("argv", PLAIN_LINES)
def test_plain_status_and_run_lines_are_read_as_the_parser_reads_them(argv: list[str]) -> None:
    assert vars(cli._plain_args(argv) or {}) == vars(cli._parser().parse_args(argv))


@pytest.mark.parametrize("argv", PARSER_LINES)
def test_everything_else_is_left_to_the_parser(argv: list[str]) -> None:
    assert cli._plain_args(argv) is None


def test_a_status_line_the_parser_refuses_gets_its_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["status", "extra"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "loxgw: error: unrecognized arguments: extra"
