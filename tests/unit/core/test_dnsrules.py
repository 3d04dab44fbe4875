"""Which DNS packets loxgw copies or holds, and the hold chain (core.dnsrules), per row of core.dnspath."""

from __future__ import annotations

import ipaddress

from loxgw.core import catalog, dnspath, dnsrules, ruleset, xtables
from loxgw.core.config import Config, parse_config
from loxgw.core.dns import all_profiles

CONFIG = """
config loxgw 'main'
	option queue_num '100'
	list trusted_resolver '198.51.100.53'
config zone 'iot'
	option role 'devices'
	list interface 'br-iot'
	option cloud '1'
config zone 'lan'
	option role 'clients'
	list interface 'br-lan'
	option cloud '1'
"""


PROFILES = all_profiles(catalog.load())


def path_of(config: Config, queue: str = "xtables", nflog: bool = True) -> dnspath.DnsPath:
    return dnspath.choose(config.main.dns_mode, queue, nflog, config.main.dns_hold)  # type: ignore[arg-type]


def rules_by(config_text: str = CONFIG, copies: bool = True) -> dict[tuple[str, str, bool], dnsrules.QueueRule]:
    config = parse_config(config_text, "t")
    rules = dnsrules.dns_queue_rules(config, path_of(config, nflog=copies))
    return {(r.hook, r.interfaces[0], r.incoming): r for r in rules if r.family in (None, 4)}


def test_with_nflog_devices_dns_is_copied_and_clients_answers_are_held() -> None:
    rules = rules_by()
    for hook in ("input", "forward"):
        query = rules[(hook, "br-iot", True)]
        assert (query.copy, query.qnum, query.prefix) == (True, 100, "loxgw-devices")
        assert rules[(hook, "br-lan", True)].copy  # every query is only copied
    for hook in ("output", "forward"):
        answer = rules[(hook, "br-iot", False)]
        assert (answer.copy, answer.qnum) == (True, 100)
        held = rules[(hook, "br-lan", False)]
        assert (held.copy, held.qnum) == (False, 101)
    assert rules[("output", "br-iot", False)].nft().endswith(
        'log prefix "loxgw-devices" group 100 queue-threshold 1')
    assert rules[("output", "br-lan", False)].nft().endswith("queue num 101 bypass")


def test_without_nflog_everything_is_held_per_role() -> None:
    rules = rules_by(copies=False)
    assert not any(r.copy for r in rules.values())
    assert {r.qnum for k, r in rules.items() if k[1] == "br-iot"} == {100}
    assert {r.qnum for k, r in rules.items() if k[1] == "br-lan"} == {101}


CATALOG_ONLY = CONFIG.replace("option queue_num '100'", "option queue_num '100'\n"
                                 "\toption egress_audioserver 'catalog'\n\toption egress_stereo_extension 'catalog'")


def test_xtables_copy_rule_keeps_the_prefilter_and_names_the_role() -> None:
    rule = rules_by(CATALOG_ONLY)[("output", "br-iot", False)]
    args = rule.xtables("br-iot")
    assert all(a[-8:] == ["-j", "NFLOG", "--nflog-group", "100", "--nflog-threshold", "1",
                          "--nflog-prefix", "loxgw-devices"] for a in args)
    assert all("--hex-string" in a for a in args)
    assert {a[a.index("-p") + 1] for a in args} == {"udp", "tcp"}


def test_egress_resolved_needs_every_name_of_devices_zones() -> None:
    """Audioservers resolve radio stations by default (egress 'resolved'): no prefilter for devices zones."""
    rules = rules_by()
    devices = rules[("output", "br-iot", False)].xtables("br-iot")
    clients = rules[("output", "br-lan", False)].xtables("br-lan")
    assert [a for a in devices if "--hex-string" in a] == []
    assert len(devices) == 2  # udp and tcp, every DNS answer
    assert all("--hex-string" in a for a in clients)


def test_hold_chain_holds_new_flows_of_devices_zones_without_a_grant() -> None:
    config = parse_config(CONFIG, "t")
    profiles = PROFILES
    native = dnsrules.hold_rules(config, path_of(config), "nft", profiles)
    assert len(native) == 2  # IPv4 and IPv6
    v4 = native[0]
    assert v4.startswith('iifname { "br-iot" } ct state new meta nfproto ipv4 ip daddr != { 0.0.0.0/8, 10.0.0.0/8,')
    assert v4.count("ip saddr . ip daddr != @cloud4_") == len(profiles)
    assert v4.endswith("queue num 100 bypass")
    assert "br-lan" not in v4  # clients zones' flows are not held
    marked = dnsrules.hold_rules(config, path_of(config), "xtables", profiles)[1]
    assert marked.endswith("meta mark set meta mark | 0x20000000")
    assert dnsrules.hold_xtables_rule(config, path_of(config)) == [
        "-m", "mark", "--mark", "0x20000000/0x20000000", "-j", "NFQUEUE", "--queue-num", "100", "--queue-bypass"]


def test_hold_chain_rendered_only_with_copies_and_a_queue() -> None:
    config = parse_config(CONFIG, "t")
    assert "chain hold {" in ruleset.render(config, "standalone", "xtables", path_of(config)).script
    assert "chain hold {" not in ruleset.render(config, "standalone", "xtables", path_of(config, nflog=False)).script
    assert "chain hold {" not in ruleset.render(config, "standalone", "passive", path_of(config, "passive")).script
    passive = parse_config(CONFIG.replace("option queue_num '100'", "option dns_mode 'passive'"), "t")
    assert dnsrules.hold_rules(passive, path_of(passive), "xtables", ()) == []
    assert dnsrules.hold_xtables_rule(passive, path_of(passive)) is None


def test_allowed_targets_are_held_too() -> None:
    config = parse_config(CONFIG, "t")
    allowed = parse_config(CONFIG.replace("list trusted_resolver", "list allowed_target '10.20.0.0/16'\n"
                                          "\tlist trusted_resolver"), "t")
    assert allowed.main.allowed_targets == (ipaddress.ip_network("10.20.0.0/16"),)
    profiles = PROFILES
    assert "daddr != { 0.0.0.0/8" in dnsrules.hold_rules(config, path_of(config), "nft", profiles)[0]
    assert "daddr != {" not in dnsrules.hold_rules(allowed, path_of(allowed), "nft", profiles)[0]


def test_dns_hold_answer_holds_devices_answers_and_nothing_else() -> None:
    text = CONFIG.replace("option queue_num '100'", "option queue_num '100'\n\toption dns_hold 'answer'")
    config = parse_config(text, "t")
    rules = rules_by(text)
    assert rules[("input", "br-iot", True)].copy  # queries are still only copied
    answer = rules[("output", "br-iot", False)]
    assert (answer.copy, answer.qnum) == (False, 100)
    assert dnsrules.hold_rules(config, path_of(config), "nft", PROFILES) == []
    assert dnsrules.hold_xtables_rule(config, path_of(config)) is None
    assert "chain hold" not in ruleset.render(config, "standalone", "xtables", path_of(config)).script


def test_dns_hold_auto_holds_devices_answers_up_to_a_rate_then_copies_them_and_holds_first_packets() -> None:
    text = CONFIG.replace("option queue_num '100'", "option queue_num '100'\n\toption dns_hold 'auto'")
    config = parse_config(text, "t")
    path = path_of(config)
    assert path is dnspath.ANSWERS_HELD_UP_TO_A_RATE and path.queues == ((0, "hold"), (1, "clients"), (2, "devices"))
    rules = dnsrules.dns_queue_rules(config, path)
    answers = [r for r in rules if r.interfaces == ("br-iot",) and not r.incoming]
    # Per hook: the rated rules (one per family the bucket is keyed on), then the copy that takes the rest.
    assert [(r.hook, r.held_up_to_a_rate, r.copy, r.qnum, r.family) for r in answers] == [
        ("output", 4, False, 102, None), ("output", 6, False, 102, None), ("output", None, True, 100, None),
        ("forward", 4, False, 102, 4), ("forward", None, True, 100, 4)]
    assert all(r.copy for r in rules if r.incoming)  # queries are only copied
    assert [r.qnum for r in rules if r.interfaces == ("br-lan",) and not r.incoming] == [101, 101]
    assert answers[0].nft().endswith(
        "meta nfproto ipv4 update @dns_held_answers4 { ip daddr limit rate 1000/second burst 100 packets } "
        'limit name "dns_held_answers" queue num 102 bypass')
    assert "update @dns_held_answers6 { ip6 daddr " in answers[1].nft()
    held_v4 = answers[0].xtables("br-iot")
    tail = ["-m", "hashlimit", "--hashlimit-upto", "1000/sec", "--hashlimit-burst", "100", "--hashlimit-name",
            "loxgw_held", "-j", "NFQUEUE", "--queue-num", "102", "--queue-bypass"]
    assert held_v4 and all(args[-len(tail):] == tail for args in held_v4)
    assert not any("--hashlimit-mode" in args for args in held_v4)  # one bucket: a table that cannot fill
    # The first packets of what was copied still wait.
    assert dnsrules.hold_rules(config, path, "nft", PROFILES)
    assert dnsrules.hold_xtables_rule(config, path) is not None
    # Each family's chain gets its own family's rated rules only.
    v4 = xtables.chain_args(rules, None, 4)
    v6 = xtables.chain_args(rules, None, 6)
    assert sum("loxgw_held" in args for chain in v4.values() for args in chain) == len(held_v4) + len(
        answers[3].xtables("br-iot"))
    assert sum("loxgw_held" in args for chain in v6.values() for args in chain) == len(answers[1].xtables("br-iot"))
    native = "\n".join(dnsrules.native_queue_chains(config, path))
    assert "set dns_held_answers4 {" in native and "set dns_held_answers6 {" in native
    assert "limit dns_held_answers { rate 2000/second burst 200 packets; }" in native
    assert "dns_held_answers" not in "\n".join(dnsrules.native_queue_chains(
        parse_config(CONFIG, "t"), path_of(parse_config(CONFIG, "t"))))
