"""The firewall's names, marks, prefixes and key layouts, in one place every layer reads.

The renderer (core.ruleset), the set writers (edges.nftset), the DNS queue
(edges.dnsqueue), the reconciler (daemon.firewall) and the OpenWrt include
files all spell these; a change here is a change everywhere.
"""

from __future__ import annotations

from typing import Literal

from loxgw.core.catalog import DEVICE_PRODUCTS, Product
from loxgw.core.config import ZoneRole

ResolvedFirewall = Literal["fw4", "standalone"]
QueueMode = Literal["nft", "xtables", "passive", "off"]

DNS_PORT = 53
# The packet mark bit loxgw sets on what it allows, for firewall4 to accept (fw4 mode).
# The include files under openwrt/net/loxgw/files/ spell the same value.
FW4_MARK = 0x10000000
# Set by the hold chain on a first packet that must wait for loxgw (xtables mode, where the
# queue itself is an iptables rule); loxgw clears it again in its verdict.
HOLD_MARK = 0x20000000
# The relay's kernel path (core.relaykernel): its netdev ingress chain marks a copy before `dup`
# (the egress chain of the copy's device rewrites marked packets only, then clears the bit) and
# the relayed original (table inet loxgw's relay_windows chain opens its answer windows, then
# clears the bit). Set and cleared under a mask: other bits of the mark belong to others.
RELAY_COPY_MARK = 0x40000000
RELAY_ORIGINAL_MARK = 0x08000000
# Beyond this rate first packets are not held: they go straight to the allow rules (and may
# race a grant, a TCP retransmission later finding it), so a flood cannot stall loxgw.
HOLD_RATE = "2000/second burst 500 packets"
# With `dns_hold 'auto'` a devices zone's answers are held (NFQUEUE queue_num + 2) while they come
# at most this fast; beyond that they are copied and the device's first packet waits instead. The
# DNS thread holds some 5,000 answers a second before it falls behind (bench/RESULTS.md, session
# 2): held answers take at most 40 % of that. Native nft keeps a bucket per device (by IP family;
# a full set of buckets makes the rule not match: the answer is copied) and one for all. iptables
# keeps one bucket per IP family for all devices: a per-device hashlimit drops packets when its
# table is full, and devices faking addresses could fill it and break DNS for everyone.
HELD_ANSWERS_PER_DEVICE = (1000, 100)  # per second, burst (native nft)
HELD_ANSWERS_IN_ALL = (2000, 200)  # native nft, both IP families together
HELD_ANSWERS_PER_FAMILY = (1000, 100)  # iptables, each IP family
HELD_ANSWERS_OFFSET = 2
HELD_ANSWERS_SET = {4: "dns_held_answers4", 6: "dns_held_answers6"}  # each device's bucket (native nft)
HELD_ANSWERS_LIMIT = "dns_held_answers"  # the bucket of all (native nft)
# What loxgw's chains did not allow is sampled to user space (NFLOG group queue_num + 2) at
# most this often, for `loxgw doctor` and the blocked-attempts table; the kernel keeps the rate.
BLOCKED_SAMPLE_RATE = "20/second burst 20 packets"
BLOCKED_GROUP_OFFSET = 2
BLOCKED_PREFIX = {"from_devices": "loxgw-blocked-out", "into_devices": "loxgw-blocked-in"}
# NFLOG prefixes of DNS copies: the asker's zone role.
COPY_PREFIX: dict[ZoneRole, str] = {"devices": "loxgw-devices", "clients": "loxgw-clients"}

# Sets whose elements loxgw writes at run time.
# ifname . asker . port, timeout: the answer to a relayed request may come back from that devices
# interface, from any source port (an Audioserver answers from 7091, not from a relayed port).
# The relay writes the key (core.relaywire.answer_key) in the layout the kernel declared.
RELAY_ANSWERS = "relay_answers4"
SEARCH_ANSWERS = "search_answers4"  # interface . port, timeout: answers to loxgw's own searches
SEARCH_WINDOW = 3  # seconds after a search that its answers are let in (fw4 mode)
# device . proto . port open from clients zones to that one device: its own HTTP port, the ports
# it announces (mDNS SRV, SSDP LOCATION), an unknown product's web ports. The ports every device
# of a product gets are rules over products_set (core.ruleset), not elements here.
PIN_PORT = "pin_port4"
ROUTER_PING = "router_ping4"  # device: its gateway ping is answered
EGRESS_OPEN = "egress_open4"  # device: egress mode `open`, plain internet
MEDIA = "media4"  # app host . intercom, timeout: a live signalling session lets UDP pass both ways


def products_set(product: Product) -> str:
    """Addresses of the detected devices of one product: the rules of its ports match them.

    A device coming or going changes one element of this hash set; the
    ports its product gets are in the rules, which change only with the
    config. (Keying pinholes by device address put 1,260 elements into
    concatenated interval sets at 250 devices.)
    """
    return f"dev_{product}4"


def inbound_rule(product: Product) -> str:
    """The comment of the rule that opens a product's ports from clients zones (explain names it)."""
    return f"loxgw: {product} ports from clients zones"


def device_rule(source: Product, target: Product) -> str:
    """The comment of the rule that lets devices of `source` open ports on devices of `target`."""
    return f"loxgw: {source} to {target} ports"


def client_rule(product: Product) -> str:
    """The comment of the rule that lets devices of a product reach clients-zone hosts."""
    return f"loxgw: {product} to clients-zone hosts"


# Elements each DNS set holds at most; the ledger (core.dnsledger) has the same capacity over
# all of them, so it never holds less than the kernel.
CLOUD_SET_SIZE = 65536


def cloud_set_name(index: int, family: int) -> str:
    """Set of (device . address) pairs granted one catalogue profile (see core.dns)."""
    return f"cloud{family}_{index}"


# Sets of pinholes: name, key type, comment. Their elements are desired state only (computed
# from devices), unlike the DNS sets, whose elements the kernel times out. Hash sets, not
# intervals: a device coming or going must not touch a concatenated interval set (pipapo), whose
# every change the kernel pays in proportion to its size (deleting one element of 1,260 took
# 5 ms under the nftables commit lock, which the relay's answer-window writes wait for).
PIN_SETS: tuple[tuple[str, str, str], ...] = (
    (PIN_PORT, "ipv4_addr . inet_proto . inet_service", "device . proto . port open from clients zones to it alone"),
)
# Plain address sets written from devices.
ADDRESS_SETS: tuple[tuple[str, str], ...] = (
    (ROUTER_PING, "devices whose gateway ping the router must answer"),
    (EGRESS_OPEN, "devices whose product has egress mode open: plain internet"),
    *((products_set(p), f"detected {p} devices") for p in DEVICE_PRODUCTS),
)
DESIRED_SETS: tuple[str, ...] = (*(s[0] for s in PIN_SETS), *(s[0] for s in ADDRESS_SETS))
# Sets earlier versions declared (name, key type, flags), removed by every declaration: `flush
# table` keeps sets, and a table left by an older loxgw still holds them.
OBSOLETE_SETS: tuple[tuple[str, str, str], ...] = (
    ("pin_in4", "ipv4_addr . inet_proto . inet_service", "interval"),
    ("pin_client4", "ipv4_addr . inet_proto . inet_service", "interval"),
    *((f"pin_dev_{p}4", "ipv4_addr . inet_proto . inet_service", "interval") for p in DEVICE_PRODUCTS),
)
