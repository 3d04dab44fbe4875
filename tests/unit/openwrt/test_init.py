"""The procd init script: what it hands procd, what it logs, fw4's includes and dnsmasq's rebind exception."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loxgw.core import config, configschema
from loxgw.core.catalog import DEVICE_PRODUCTS
from tests.unit.openwrt.feed import FEED, LOXGW_MAKEFILE, read_makefile
from tests.unit.openwrt.sandbox import INIT, Sandbox

DOMAIN = "dyndns.loxonecloud.com"
INCLUDE = '\t\tmeta mark & 0x10000000 == 0x10000000 ct state != invalid accept comment "loxgw: allowed by loxgw"'
FW4_RULES = '\t\tiif "lo" accept comment "!fw4: Accept traffic from loopback"'


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def validation_lists() -> dict[str, dict[str, str]]:
    """Section type -> {option: 'type[:default]'} from the validate_*_section functions."""
    text = INIT.read_text()
    found: dict[str, dict[str, str]] = {}
    for section, body in re.findall(r'uci_load_validate loxgw (\w+) "\$1" "\$2" \\\n((?:\t\t\'[^\']+\'(?: \\)?\n)+)',
                                    text):
        specs = re.findall(r"'([^']+)'", body)
        found[section] = {spec.split(":", 1)[0]: spec.split(":", 1)[1] for spec in specs}
    return found


def test_validation_lists_are_the_daemons_schema() -> None:
    lists = validation_lists()
    assert list(lists) == list(config.SECTIONS)
    for section, kind in config.SECTIONS.items():
        rows = configschema.rows(kind)
        assert list(lists[section]) == [row.uci for row in rows], section
        for row in rows:
            kind_of, _, default = lists[section][row.uci].partition(":")
            assert kind_of.startswith("list(") == row.is_list, (section, row.uci)
            if row.required or row.default is None or row.is_list:
                assert default == "", (section, row.uci)
            else:
                value = row.default
                assert default == (str(int(value)) if isinstance(value, bool) else str(value)), (section, row.uci)
    products = re.findall(r'"(\w+)"', lists["device"]["type"])
    assert tuple(products) == tuple(DEVICE_PRODUCTS)


def test_start_hands_procd_an_unprivileged_instance(box: Sandbox) -> None:
    done = box.init("start_service")
    assert (done.returncode, done.stderr) == (0, "")
    run_dir = Path(box.env["T_SOCKET"]).parent
    assert [line for line in box.log() if line.startswith("procd")] == [
        "procd_open_instance loxgw",
        f"procd_set_param command {box.bin}/loxgw -c {box.config} --log-streams run",
        "procd_set_param env PYTHONUNBUFFERED=1",
        "procd_set_param respawn 3600 5 5",
        "procd_set_param reload_signal HUP",
        "procd_set_param stdout 1",
        "procd_set_param stderr 1",
        f"procd_set_param file {box.config}",
        "procd_set_param user loxgw",
        "procd_set_param group loxgw",
        "procd_set_param capabilities /etc/capabilities/loxgw.json",
        "procd_set_param no_new_privs 1",
        "procd_add_jail loxgw",
        "procd_close_instance",
    ]
    assert box.calls("loxgw") == [f"loxgw -c {box.config} check"]
    assert run_dir.is_dir()
    assert box.calls("chown") + box.calls("chgrp") + box.calls("chmod") == [
        f"chown loxgw:loxgw {run_dir}", f"chgrp loxgw {box.config}", f"chmod 0750 {run_dir}",
        f"chmod 0640 {box.config}"]


def test_a_state_file_left_by_root_is_handed_over(box: Sandbox) -> None:
    run_dir = Path(box.env["T_SOCKET"]).parent
    run_dir.mkdir(parents=True)
    (run_dir / "status-dns-entries.json").write_text("[]")
    (run_dir / "elsewhere").symlink_to("/etc/passwd")
    box.init("start_service")
    assert f"chown loxgw:loxgw {run_dir}/status-dns-entries.json" in box.calls("chown")
    assert not [c for c in box.calls("chown") if c.endswith("/elsewhere")]


@pytest.mark.parametrize(("case", "env", "message"), [
    ("no ujail", {"T_UJAIL": "/nonexistent/ujail"},
     "logger loxgw daemon.notice running as root: /nonexistent/ujail (procd-ujail) is not installed"),
    ("no user", {"T_USER_EXISTS": "0"}, "logger loxgw daemon.notice running as root: there is no user loxgw"),
])
def test_without_ujail_or_user_it_runs_as_root(box: Sandbox, case: str, env: dict[str, str], message: str) -> None:
    box.init("start_service", **env)
    procd = [line for line in box.log() if line.startswith("procd")]
    assert "procd_set_param reload_signal HUP" in procd
    assert [line for line in procd if re.search(r" (user|group|capabilities|no_new_privs)|add_jail", line)] == []
    assert message in box.log()
    assert box.calls("chown") == []


def test_a_shared_socket_directory_is_never_handed_over(box: Sandbox) -> None:
    # /var/run is a symlink on OpenWrt (to /tmp/run): root uses it as it is.
    (box.root / "tmp" / "run").mkdir(parents=True)
    (box.root / "var").mkdir()
    (box.root / "var" / "run").symlink_to(box.root / "tmp" / "run")
    shared = box.root / "var" / "run"
    box.init("start_service", T_SOCKET=f"{shared}/loxgw.sock")
    assert box.calls("chown") == [] and box.calls("chgrp") == []
    assert ("logger loxgw daemon.warning running as root: status_socket's directory "
            f"{shared} is not loxgw's own (.../loxgw/)") in box.log()
    assert "procd_close_instance" in box.log()


def test_a_symlinked_socket_directory_is_refused(box: Sandbox) -> None:
    (box.root / "run").mkdir()
    (box.root / "run" / "loxgw").symlink_to(box.root)
    done = box.init("start_service")
    assert done.returncode == 1
    assert f"logger loxgw daemon.err {box.root}/run/loxgw is a symlink: not handing it to loxgw" in box.log()
    assert not [line for line in box.log() if line.startswith("procd")]


def test_check_output_reaches_the_log_line_by_line(box: Sandbox) -> None:
    problems = f"{box.config}:3: unknown option 'x' in zone iot\n{box.config}:9: dns_mode: expected one of ..."
    done = box.init("start_service", T_CHECK_RC="1", T_CHECK_OUT=problems)
    assert done.returncode == 1
    assert box.calls("logger") == [f"logger loxgw daemon.err {line}" for line in problems.splitlines()]
    assert not [line for line in box.log() if line.startswith("procd")]


def test_no_file_in_tmp() -> None:
    text = INIT.read_text()
    assert re.findall(r">\s*/tmp|/tmp/(?!dhcp\.leases)", text) == []


def test_a_disabled_service_gets_no_instance(box: Sandbox) -> None:
    done = box.init("start_service", T_ENABLED="0")
    assert done.returncode == 0
    assert box.calls("loxgw") == [] and not [line for line in box.log() if line.startswith("procd")]


def test_an_invalid_main_section_is_logged_with_checks_verdict(box: Sandbox) -> None:
    done = box.init("start_service", T_VALIDATE_STATUS="1")
    assert done.returncode == 1
    assert box.calls("loxgw") == [f"loxgw -c {box.config} check"]
    assert box.calls("logger") == [f"logger loxgw daemon.err {box.config}: section 'main' is invalid"]


def test_reload_is_procds_not_a_bare_signal() -> None:
    text = INIT.read_text()
    assert "reload_service" not in text and "procd_send_signal" not in text
    assert "procd_set_param reload_signal HUP" in text


@pytest.mark.parametrize(("chains", "reloads"), [
    ({"forward": FW4_RULES, "input": FW4_RULES}, 1),
    ({"forward": INCLUDE + "\n" + FW4_RULES, "input": FW4_RULES}, 1),
    ({"forward": INCLUDE + "\n" + FW4_RULES, "input": INCLUDE + "\n" + FW4_RULES}, 0),
    ({}, 0),  # fw4 stopped: it reads the includes when it starts
])
def test_fw4_reloads_only_when_an_include_is_missing(box: Sandbox, chains: dict[str, str], reloads: int) -> None:
    box.fw4_chains(**chains)
    box.init("start_service")
    assert box.calls("fw4") == ["fw4 -q reload"] * reloads


def test_standalone_mode_leaves_fw4_alone(box: Sandbox) -> None:
    box.fw4_chains(forward=FW4_RULES, input=FW4_RULES)
    box.init("start_service", T_FIREWALL="standalone")
    assert box.calls("nft") == [] and box.calls("fw4") == []


def test_the_include_files_carry_the_comment_the_check_looks_for() -> None:
    for chain in ("forward", "input"):
        rules = [line for line in (FEED / "net" / "loxgw" / "files" / f"fw4-{chain}.nft").read_text().splitlines()
                 if line and not line.startswith("#")]
        assert rules == [INCLUDE.strip()]


def dnsmasq(*domains: str) -> dict[str, object]:
    return {"type": "dnsmasq", "name": None, "options": {"rebind_domain": list(domains)} if domains else {}}


def loxgw_main(**options: str) -> dict[str, object]:
    return {"type": "loxgw", "name": "main", "options": options}


def test_rebind_exception_is_added_once(box: Sandbox) -> None:
    box.uci({"dhcp": [dnsmasq("example.org")], "loxgw": [loxgw_main()]})
    assert box.init("rebind_exception").returncode == 0
    assert box.uci()["dhcp"][0]["options"]["rebind_domain"] == ["example.org", DOMAIN]
    assert box.log() == [f"uci add_list dhcp.@dnsmasq[0].rebind_domain={DOMAIN}", "uci commit dhcp", "dnsmasq reload"]
    box.init("rebind_exception")
    assert box.log() == []
    assert box.uci()["dhcp"][0]["options"]["rebind_domain"] == ["example.org", DOMAIN]


def test_every_dnsmasq_instance_gets_it(box: Sandbox) -> None:
    box.uci({"dhcp": [dnsmasq(), {"type": "host", "name": "x", "options": {}}, dnsmasq(DOMAIN), dnsmasq()],
             "loxgw": [loxgw_main()]})
    box.init("rebind_exception")
    assert [s["options"].get("rebind_domain") for s in box.uci()["dhcp"]] == [[DOMAIN], None, [DOMAIN], [DOMAIN]]


def test_opting_out_removes_it(box: Sandbox) -> None:
    box.uci({"dhcp": [dnsmasq("example.org", DOMAIN)], "loxgw": [loxgw_main(rebind_exception="0")]})
    box.init("rebind_exception")
    assert box.uci()["dhcp"][0]["options"]["rebind_domain"] == ["example.org"]
    assert box.log() == [f"uci del_list dhcp.@dnsmasq[0].rebind_domain={DOMAIN}", "uci commit dhcp", "dnsmasq reload"]


def test_remove_takes_it_out_and_a_stopped_dnsmasq_is_not_started(box: Sandbox) -> None:
    box.uci({"dhcp": [dnsmasq(DOMAIN)], "loxgw": [loxgw_main()]})
    box.init("rebind_exception", "remove", T_RUNNING="")
    assert box.uci()["dhcp"][0]["options"]["rebind_domain"] == []
    assert box.log() == [f"uci del_list dhcp.@dnsmasq[0].rebind_domain={DOMAIN}", "uci commit dhcp"]


def test_start_applies_the_rebind_option(box: Sandbox) -> None:
    box.uci({"dhcp": [dnsmasq()], "loxgw": [loxgw_main()]})
    box.init("start_service")
    assert box.uci()["dhcp"][0]["options"]["rebind_domain"] == [DOMAIN]


def test_rebind_exception_refuses_other_words(box: Sandbox) -> None:
    done = box.init("rebind_exception", "maybe")
    assert done.returncode == 1
    assert done.stderr == "usage: /etc/init.d/loxgw rebind_exception [add|remove]\n"


def test_uci_defaults_apply_the_exception_through_the_init_script() -> None:
    makefile = read_makefile(LOXGW_MAKEFILE)
    install = makefile.defines["Py3Package/loxgw/install"]
    assert "./files/loxgw.uci-defaults $(1)/etc/uci-defaults/99-loxgw" in install
    assert "./files/loxgw.init $(1)/etc/init.d/loxgw" in install
    script = (FEED / "net" / "loxgw" / "files" / "loxgw.uci-defaults").read_text()
    commands = [line for line in script.splitlines() if line and not line.startswith("#")]
    assert commands == ["/etc/init.d/loxgw rebind_exception", "exit 0"]
