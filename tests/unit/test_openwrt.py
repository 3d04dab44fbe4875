"""The OpenWrt feed: Makefiles an SDK can build, a clean init script, a default config that checks."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import loxgw
from loxgw import cli
from loxgw.core.config import load_config
from loxgw.daemon import app as daemon
from loxgw.edges import netifd

FEED = Path(__file__).parents[2] / "openwrt"
MAKEFILES = sorted([*FEED.glob("lang/*/Makefile"), FEED / "net" / "loxgw" / "Makefile"])
LUCI = FEED / "luci" / "luci-app-loxgw"
SHELL_SCRIPTS = [p for p in FEED.rglob("*") if p.is_file() and p.read_bytes().startswith(b"#!/bin/sh")]


def variables(makefile: Path) -> dict[str, str]:
    text = makefile.read_text().replace("\\\n", " ")
    return {m[1]: m[2].strip() for m in re.finditer(r"^\s*([A-Z0-9_]+):=(.*)$", text, re.M)}


def test_feed_has_the_three_packages() -> None:
    names = {variables(m)["PKG_NAME"] for m in MAKEFILES}
    assert names == {"loxgw", "python-netfilterqueue", "python-miniupnpc"}


@pytest.mark.parametrize("makefile", MAKEFILES, ids=lambda p: p.parent.name)
def test_makefile_has_what_the_sdk_needs(makefile: Path) -> None:
    v = variables(makefile)
    text = makefile.read_text()
    for key in ("PKG_NAME", "PKG_VERSION", "PKG_RELEASE", "PKG_LICENSE", "PKG_MAINTAINER"):
        assert v.get(key), f"{makefile}: {key} missing"
    assert re.fullmatch(r"\d+(\.\d+)+", v["PKG_VERSION"])
    assert text.startswith("#") and "include $(TOPDIR)/rules.mk" in text
    assert "include $(INCLUDE_DIR)/package.mk" in text
    assert re.search(r"\$\(eval \$\(call BuildPackage,", text)
    assert re.search(r"\$\(eval \$\(call Py3Package,", text)
    if "PYPI_NAME" in v:
        assert re.fullmatch(r"[0-9a-f]{64}", v["PKG_HASH"])
        assert text.index("pypi.mk") < text.index("include $(INCLUDE_DIR)/package.mk")
    # Every ./files/ path an install step names exists.
    for name in re.findall(r"\./files/([\w.-]+)", text):
        assert (makefile.parent / "files" / name).is_file(), name


def test_loxgw_package_depends_on_what_it_imports_and_runs() -> None:
    depends = variables(FEED / "net" / "loxgw" / "Makefile")["DEPENDS"].split()
    for needed in ("+python3-light", "+python3-asyncio", "+python3-logging", "+python3-pyroute2",
                   "+python3-netfilterqueue", "+python3-miniupnpc", "+nftables-json",
                   "+libnetfilter-queue", "+kmod-nft-queue", "+kmod-nfnetlink-queue", "+kmod-nfnetlink-log"):
        assert needed in depends
    # DNS is read by loxgw's own wire walker (dnslib is the tests' reference only).
    assert "+python3-dnslib" not in depends
    assert variables(FEED / "net" / "loxgw" / "Makefile")["PKG_VERSION"] == loxgw.__version__
    assert "/etc/config/loxgw" in (FEED / "net" / "loxgw" / "Makefile").read_text().split("conffiles")[1]


def test_netfilterqueue_builds_with_cython() -> None:
    assert "python-cython/host" in variables(FEED / "lang" / "python-netfilterqueue" / "Makefile")["PKG_BUILD_DEPENDS"]


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_are_shellcheck_clean(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (make test installs it)")
    proc = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout


def test_there_is_an_init_script() -> None:
    assert sorted(p.name for p in SHELL_SCRIPTS) == ["loxgw.init", "luci.loxgw"]
    text = (FEED / "net" / "loxgw" / "files" / "loxgw.init").read_text()
    assert "USE_PROCD=1" in text and "procd_set_param respawn" in text
    assert "--log-streams run" in text and "PYTHONUNBUFFERED=1" in text
    assert "procd_add_reload_trigger loxgw" in text and "procd_add_interface_trigger" in text


def test_default_config_passes_check(capsys: pytest.CaptureFixture[str]) -> None:
    path = FEED / "net" / "loxgw" / "files" / "loxgw.config"
    assert cli.main(["-c", str(path), "check"]) == 0
    config = load_config(str(path))
    assert [(z.name, z.networks) for z in config.zones] == [("iot", ("iot",)), ("lan", ("lan",))]


NETIFD = {
    "iot": {"up": True, "l3_device": "br-iot", "device": "br-iot"},
    "lan": {"up": True, "l3_device": "br-lan", "device": "br-lan"},
    "wan": {"up": True, "l3_device": "pppoe-wan", "device": "eth1"},
}


def test_networks_resolve_through_netifd() -> None:
    config = load_config(str(FEED / "net" / "loxgw" / "files" / "loxgw.config"))
    resolved, missing = netifd.resolve_networks(config, NETIFD.get)
    assert missing == []
    assert config.interfaces_with_role("devices") == ()
    assert (resolved.interfaces_with_role("devices"), resolved.interfaces_with_role("clients")) == (
        ("br-iot",), ("br-lan",))
    assert netifd.device_of(NETIFD["wan"]) == "pppoe-wan"


def test_network_that_is_down_is_reported() -> None:
    config = load_config(str(FEED / "net" / "loxgw" / "files" / "loxgw.config"))
    down: dict[str, dict[str, Any]] = {"lan": NETIFD["lan"], "iot": {"up": False}}
    resolved, missing = netifd.resolve_networks(config, down.get)
    assert missing == ["iot"]
    assert resolved.interfaces_with_role("clients") == ("br-lan",)


def test_log_streams_split_by_level(capsys: pytest.CaptureFixture[str]) -> None:
    daemon.setup_logging("debug", split_streams=True)
    try:
        daemon.log.info("hello")
        daemon.log.error("broken")
        out, err = capsys.readouterr()
        assert (out, err) == ("loxgw: INFO: hello\n", "loxgw: ERROR: broken\n")
    finally:
        daemon.log.handlers.clear()
        daemon.log.setLevel(logging.NOTSET)


def test_luci_menu_view_acl_and_rpcd_fit_together() -> None:
    menu = json.loads((LUCI / "root/usr/share/luci/menu.d/luci-app-loxgw.json").read_text())
    (entry,) = menu.values()
    view = LUCI / "htdocs/luci-static/resources/view" / (entry["action"]["path"] + ".js")
    assert view.is_file()
    acl = json.loads((LUCI / "root/usr/share/rpcd/acl.d/luci-app-loxgw.json").read_text())
    assert entry["depends"]["acl"] == list(acl)
    assert acl["luci-app-loxgw"]["read"]["ubus"] == {"luci.loxgw": ["status"]}
    js = view.read_text()
    assert "object: 'luci.loxgw'" in js and "method: 'status'" in js
    for field in ("devices", "dns_entries", "relay", "upnp"):
        assert f"status.{field}" in js
    makefile = (LUCI / "Makefile").read_text()
    assert "include $(TOPDIR)/feeds/luci/luci.mk" in makefile and "+loxgw" in makefile


def test_rpcd_plugin_answers_json() -> None:
    plugin = LUCI / "root/usr/libexec/rpcd/luci.loxgw"
    listed = subprocess.run(["sh", str(plugin), "list"], capture_output=True, text=True, check=True).stdout
    assert json.loads(listed) == {"status": {}}
    called = subprocess.run(["sh", str(plugin), "call", "status"], input="{}", capture_output=True, text=True,
                            check=True).stdout
    answer = json.loads(called)
    assert isinstance(answer, dict) and ("error" in answer or "version" in answer)


def test_luci_view_is_valid_javascript() -> None:
    if shutil.which("node") is None:
        pytest.skip("node not installed")
    view = LUCI / "htdocs/luci-static/resources/view/loxgw/status.js"
    proc = subprocess.run(["node", "--check", str(view)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
