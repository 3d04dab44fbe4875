"""Doctor's system facts: dnsmasq's options from its command line and the files it reads."""

from __future__ import annotations

from pathlib import Path

from loxgw.core.doctor import rebind_from_options
from loxgw.edges import probe


def test_options_come_from_the_command_line_and_the_files_it_names(tmp_path: Path) -> None:
    conf_dir = tmp_path / "dnsmasq.d"
    conf_dir.mkdir()
    (conf_dir / "loxgw.conf").write_text("# the App's local names\nrebind-domain-ok=/dyndns.loxonecloud.com/\n")
    (conf_dir / "old.bak").write_text("rebind-domain-ok=/skipped.example/\n")
    (conf_dir / ".hidden.conf").write_text("rebind-domain-ok=/hidden.example/\n")
    main = tmp_path / "dnsmasq.conf"
    main.write_text(f"stop-dns-rebind\nconf-dir={conf_dir},.bak\n")
    argv = ["--keep-in-foreground", "-C", str(main), "--rebind-domain-ok", "/example.org/", "--port=53"]
    options = probe.dnsmasq_options(argv)
    assert rebind_from_options(options) == (True, ("example.org", "dyndns.loxonecloud.com"))
    only_conf = probe.dnsmasq_options([f"--conf-file={main}", f"--conf-dir={conf_dir},*.bak"])
    assert rebind_from_options(only_conf) == (True, ("dyndns.loxonecloud.com", "skipped.example"))


def test_a_loop_of_files_ends(tmp_path: Path) -> None:
    looping = tmp_path / "a.conf"
    looping.write_text(f"conf-file={looping}\nstop-dns-rebind\n")
    assert rebind_from_options(probe.dnsmasq_options([f"-C{looping}"])) == (True, ())


def test_an_interface_that_is_not_there() -> None:
    assert probe.interface_state("lxgw-none0") == "missing"
    assert probe.interface_state("lo") == "up"


def test_an_xtables_match_is_found_loaded_listed_or_as_openwrt_installs_it(tmp_path: Path) -> None:
    matches, modules = tmp_path / "ip_tables_matches", tmp_path / "modules"
    modules.mkdir()

    def available() -> bool | None:
        return probe.xt_match_available("hashlimit", str(matches), str(modules))

    assert available() is None  # nothing readable: unknown
    matches.write_text("string\nmark\n")
    assert available() is False  # registered matches readable, no module for it anywhere
    (modules / "xt_hashlimit.ko").write_bytes(b"")  # OpenWrt: modules flat, no modules.dep
    assert available() is True
    (modules / "xt_hashlimit.ko").unlink()
    (modules / "modules.dep").write_text("kernel/net/netfilter/xt_hashlimit.ko: kernel/net/netfilter/x_tables.ko\n")
    assert available() is True  # Debian: loadable
    (modules / "modules.dep").write_text("")
    matches.write_text("string\nhashlimit\n")
    assert available() is True  # loaded (or built in)
