"""The OpenWrt feed: Makefiles an SDK can build, a clean init script, a default config that checks."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

import loxgw
from loxgw import cli
from loxgw.core.config import load_config
from loxgw.daemon import app as daemon
from loxgw.edges import netifd
from tests.unit.openwrt.feed import FEED, LOXGW_MAKEFILE, ROOT, read_makefile, shell_script

MAKEFILES = sorted([*FEED.glob("lang/*/Makefile"), LOXGW_MAKEFILE])
LUCI = FEED / "luci" / "luci-app-loxgw"
SHELL_SCRIPTS = [p for p in FEED.rglob("*") if p.is_file() and p.read_bytes().startswith(b"#!/bin/sh")]
# Maintainer scripts the package carries (`define Package/loxgw/postinst` ...).
PACKAGE_SCRIPTS = [name for name in read_makefile(LOXGW_MAKEFILE).defines
                   if shell_script(read_makefile(LOXGW_MAKEFILE), name).startswith("#!/bin/sh")]


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
    for key in ("PKG_NAME", "PKG_VERSION", "PKG_RELEASE", "PKG_LICENSE", "PKG_LICENSE_FILES", "PKG_MAINTAINER"):
        assert v.get(key), f"{makefile}: {key} missing"
    assert v["PKG_MAINTAINER"] == "loxgw developers <loxgw@example.org>"
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
    depends = read_makefile(LOXGW_MAKEFILE).depends("loxgw")
    # tests/unit/openwrt/test_stdlib.py holds the python3-* list to loxgw's imports.
    assert "python3" not in depends
    for needed in ("python3-light", "python3-asyncio", "python3-logging", "python3-urllib", "python3-xml",
                   "python3-netfilterqueue", "python3-miniupnpc", "nftables-json",
                   "libnetfilter-queue", "kmod-nft-queue", "kmod-nfnetlink-queue", "kmod-nfnetlink-log"):
        assert needed in depends
    # loxgw's netlink messages are its own: pyroute2 is the tests' reference (tests/unit/openwrt/test_stdlib.py
    # checks that no module imports it).
    assert [d for d in depends if "pyroute2" in d] == []
    # DNS is read by loxgw's own wire walker (dnslib is the tests' reference only).
    assert "python3-dnslib" not in depends
    assert variables(LOXGW_MAKEFILE)["PKG_VERSION"] == loxgw.__version__
    assert "/etc/config/loxgw" in LOXGW_MAKEFILE.read_text().split("conffiles")[1]


def test_pip_and_opkg_install_the_same_libraries_with_loxgw() -> None:
    # pyproject's runtime dependencies are the Python packages of this feed that loxgw's package depends
    # on; the references only tests use (dnslib, zeroconf, pyroute2) are in the dev extra, not on a router.
    with (ROOT / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]

    def names(requirements: list[str]) -> list[str]:
        return sorted(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements)

    ours = {p for m in FEED.glob("lang/*/Makefile") for p in read_makefile(m).packages}
    depended = sorted(d.removeprefix("python3-") for d in read_makefile(LOXGW_MAKEFILE).depends("loxgw") if d in ours)
    assert names(project["dependencies"]) == depended == ["miniupnpc", "netfilterqueue"]
    assert {"dnslib", "zeroconf", "pyroute2"} <= set(names(project["optional-dependencies"]["dev"]))


def test_a_change_to_the_sources_rebuilds_the_package() -> None:
    makefile = read_makefile(LOXGW_MAKEFILE)
    source = makefile.expand("$(LOXGW_SOURCE)", {"CURDIR": str(LOXGW_MAKEFILE.parent)})
    assert Path(source).resolve() == ROOT
    # Build/Prepare copies these; package.mk rebuilds when a file under PKG_FILE_DEPENDS changes.
    depends = makefile.variables["PKG_FILE_DEPENDS"].split()
    assert depends == ["$(LOXGW_SOURCE)/loxgw", "$(LOXGW_SOURCE)/pyproject.toml", "$(LOXGW_SOURCE)/README.md"]
    prepare = makefile.defines["Build/Prepare"]
    assert all(path in prepare for path in depends)


def test_loxgw_ships_sources_and_license_apart() -> None:
    makefile = read_makefile(LOXGW_MAKEFILE)
    assert "$(eval $(call BuildPackage,loxgw-src))" in LOXGW_MAKEFILE.read_text()
    assert "$(CP) ./files/LICENSE $(PKG_BUILD_DIR)/" in makefile.defines["Build/Prepare"]
    license_text = (LOXGW_MAKEFILE.parent / "files" / "LICENSE").read_text()
    assert license_text.startswith("MIT License\n") and makefile.variables["PKG_LICENSE"] == "MIT"


def test_netfilterqueue_builds_with_cython() -> None:
    assert "python-cython/host" in variables(FEED / "lang" / "python-netfilterqueue" / "Makefile")["PKG_BUILD_DEPENDS"]


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_are_shellcheck_clean(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (make test installs it)")
    proc = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("name", PACKAGE_SCRIPTS)
def test_package_scripts_are_shellcheck_clean(name: str) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (make test installs it)")
    script = shell_script(read_makefile(LOXGW_MAKEFILE), name)
    proc = subprocess.run(["shellcheck", "-s", "sh", "-"], input=script, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout


def test_there_is_an_init_script() -> None:
    ours = sorted(p.name for p in SHELL_SCRIPTS if FEED / "net" in p.parents)
    assert ours == ["loxgw.init", "loxgw.uci-defaults"]
    assert PACKAGE_SCRIPTS == ["Package/loxgw/postinst", "Package/loxgw/prerm", "Package/loxgw/postrm"]
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


def luci_views() -> list[Path]:
    menu = json.loads((LUCI / "root/usr/share/luci/menu.d/luci-app-loxgw.json").read_text())
    return [LUCI / "htdocs/luci-static/resources/view" / (entry["action"]["path"] + ".js")
            for entry in menu.values() if entry["action"]["type"] == "view"]


def test_luci_menu_views_and_acl_fit_together() -> None:
    menu = json.loads((LUCI / "root/usr/share/luci/menu.d/luci-app-loxgw.json").read_text())
    views = luci_views()
    assert views and all(view.is_file() for view in views)
    acl = json.loads((LUCI / "root/usr/share/rpcd/acl.d/luci-app-loxgw.json").read_text())
    assert [entry["depends"]["acl"] for entry in menu.values() if "depends" in entry] == [list(acl)]
    makefile = (LUCI / "Makefile").read_text()
    assert "include $(TOPDIR)/feeds/luci/luci.mk" in makefile and "+loxgw" in makefile


@pytest.mark.parametrize("view", luci_views(), ids=lambda p: p.name)
def test_luci_views_are_valid_javascript(view: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("node not installed")
    proc = subprocess.run(["node", "--check", str(view)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
