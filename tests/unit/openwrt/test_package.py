"""The loxgw package around the daemon: maintainer scripts, privileges, fw4 includes, the systemd unit."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.openwrt.feed import FEED, LOXGW_MAKEFILE, ROOT, read_makefile, shell_script
from tests.unit.openwrt.sandbox import Sandbox

FILES = FEED / "net" / "loxgw" / "files"
UNIT = ROOT / "etc" / "loxgw.service"
FW4_RELOAD = "fw4 -q reload"
UBUS_HUP = 'ubus call service signal {"name":"ubus","signal":1}'


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def maintainer_script(name: str, init: Path | None = None) -> str:
    text = shell_script(read_makefile(LOXGW_MAKEFILE), f"Package/loxgw/{name}")
    return text if init is None else text.replace("/etc/init.d/loxgw", str(init))


@pytest.mark.parametrize(("fw4_running", "expected"), [(True, [UBUS_HUP, FW4_RELOAD]), (False, [UBUS_HUP])])
def test_postinst_on_a_live_router(box: Sandbox, fw4_running: bool, expected: list[str]) -> None:
    if fw4_running:
        box.fw4_chains(forward="", input="")
    done = box.script(maintainer_script("postinst"))
    assert done.returncode == 0
    assert [line for line in box.log() if not line.startswith("nft ")] == expected


@pytest.mark.parametrize("name", ["postinst", "prerm", "postrm"])
def test_scripts_do_nothing_while_an_image_is_built(box: Sandbox, name: str) -> None:
    box.fw4_chains(forward="", input="")
    done = box.script(maintainer_script(name, init=box.bin / "init"), IPKG_INSTROOT=str(box.root / "rootfs"))
    assert (done.returncode, box.log()) == (0, [])


def test_removal_takes_the_rebind_exception_and_the_includes_away(box: Sandbox) -> None:
    (box.bin / "init").write_text('#!/bin/sh\necho "init $*" >> "$T_LOG"\n')
    (box.bin / "init").chmod(0o755)
    box.fw4_chains(forward="", input="")
    assert box.script(maintainer_script("prerm", init=box.bin / "init")).returncode == 0
    assert box.log() == ["init rebind_exception remove"]
    assert box.script(maintainer_script("postrm")).returncode == 0
    assert box.calls("fw4") == [FW4_RELOAD]


@pytest.mark.parametrize("name", ["prerm", "postrm"])
def test_an_upgrade_keeps_both(box: Sandbox, name: str) -> None:
    box.fw4_chains(forward="", input="")
    done = box.script(maintainer_script(name, init=box.bin / "init"), PKG_UPGRADE="1")
    assert (done.returncode, box.log()) == (0, [])


def test_makefile_installs_the_capabilities_and_ubus_acl_the_init_script_names() -> None:
    install = read_makefile(LOXGW_MAKEFILE).defines["Py3Package/loxgw/install"]
    assert "./files/loxgw.capabilities.json $(1)/etc/capabilities/loxgw.json" in install
    assert "./files/loxgw.acl.json $(1)/usr/share/acl.d/loxgw.json" in install
    assert "CAPABILITIES=/etc/capabilities/loxgw.json" in (FILES / "loxgw.init").read_text()
    assert "USERID:=loxgw:loxgw" in read_makefile(LOXGW_MAKEFILE).defines["Package/loxgw"]


def test_capabilities_are_exactly_net_admin_and_net_raw() -> None:
    # procd's ujail reads the OCI capability sets (openwrt/procd: jail/capabilities.c).
    sets = json.loads((FILES / "loxgw.capabilities.json").read_text())
    assert sets == {name: ["CAP_NET_ADMIN", "CAP_NET_RAW"]
                    for name in ("bounding", "effective", "permitted", "inheritable", "ambient")}


def test_ubus_acl_lets_the_daemons_user_ask_netifd_only_for_status() -> None:
    # ubusd (openwrt/ubus: ubusd_acl.c): a trailing '*' matches object names by prefix.
    acl = json.loads((FILES / "loxgw.acl.json").read_text())
    assert acl == {"user": "loxgw", "access": {"network.interface.*": {"methods": ["status"]}}}
    netifd = (ROOT / "loxgw" / "edges" / "netifd.py").read_text()
    calls = re.findall(r'\[ubus, "call", f"([\w.]+)\{network\}", "(\w+)"\]', netifd)
    assert calls == [("network.interface.", "status")]


def test_includes_never_accept_conntrack_invalid_packets() -> None:
    for chain in ("forward", "input"):
        rules = [line for line in (FILES / f"fw4-{chain}.nft").read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
        assert rules and all(" accept" in rule for rule in rules)
        assert [rule for rule in rules if "ct state != invalid" not in rule] == []


def test_includes_load_into_fw4_shaped_chains() -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft not installed (make test installs it)")
    script = "table inet fw4 {\n" + "".join(
        f'\tchain {chain} {{\n\t\ttype filter hook {chain} priority filter; policy drop;\n'
        f'\t\tinclude "{FILES}/fw4-{chain}.nft"\n'
        f'\t\tct state vmap {{ established : accept, related : accept, invalid : drop }}\n\t}}\n'
        for chain in ("forward", "input")) + "}\n"
    proc = subprocess.run(["nft", "-c", "-f", "-"], input=script, capture_output=True, text=True, check=False)
    if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN")
    assert (proc.returncode, proc.stderr) == (0, "")


def unit() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit_keeps_two_capabilities_and_a_private_runtime_dir() -> None:
    settings = unit()
    assert settings["User"] == ["loxgw"] and settings["Group"] == ["loxgw"]
    assert settings["AmbientCapabilities"] == settings["CapabilityBoundingSet"] == ["CAP_NET_ADMIN CAP_NET_RAW"]
    assert settings["RuntimeDirectory"] == ["loxgw"] and settings["RuntimeDirectoryMode"] == ["0750"]
    assert settings["ProtectSystem"] == ["strict"] and settings["ReadWritePaths"] == ["/run/loxgw"]
    assert settings["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET"]
    for sandboxing in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
                       "ProtectKernelModules", "ProtectControlGroups", "RestrictNamespaces", "RestrictSUIDSGID",
                       "LockPersonality"):
        assert settings[sandboxing] == ["yes"], sandboxing


def verifiable_unit(tmp_path: Path) -> Path:
    """The unit with loxgw's path on this machine: systemd-analyze checks that ExecStart exists."""
    beside = Path(sys.executable).parent / "loxgw"
    loxgw = str(beside) if beside.is_file() else shutil.which("loxgw") or ""
    if not loxgw:
        pytest.skip("no loxgw executable to stand in for /usr/local/bin/loxgw")
    copy = tmp_path / "loxgw.service"
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/loxgw", loxgw))
    return copy


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    proc = subprocess.run(["systemd-analyze", "verify", str(verifiable_unit(tmp_path))],
                          capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_systemd_rates_the_sandbox_well(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(verifiable_unit(tmp_path))],
                          capture_output=True, text=True, check=False)
    found = re.search(r"Overall exposure level for loxgw.service: (\d+\.\d+)", proc.stdout + proc.stderr)
    if found is None:
        pytest.skip(f"this systemd-analyze cannot rate units offline: {proc.stderr.strip()[:200]}")
    # 9.7 ("UNSAFE") before the sandboxing; 1.8 with it (systemd 252).
    assert float(found[1]) <= 2.0
