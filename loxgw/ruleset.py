"""The nftables ruleset loxgw wants, rendered as one `nft -f` script.

Pure: config (and later devices and DNS entries) in, text out. The script
creates loxgw's table if missing, flushes its rules and re-declares everything
in one transaction, so a reload never leaves a half-applied firewall and never
drops set elements (`flush table` empties chains, not sets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from loxgw.config import Config

ResolvedFirewall = Literal["fw4", "standalone"]

# Set names are part of the contract with later features (DNS, pinholes) and
# with the fw4 include files, so they are spelled once here.
CLOUD4 = "cloud4"
CLOUD6 = "cloud6"
CLOUD4_PING = "cloud4_ping"
CLOUD6_PING = "cloud6_ping"


@dataclass(frozen=True)
class Ruleset:
    """The rendered script and the table it owns."""

    table: str
    script: str


def _ifset(names: tuple[str, ...]) -> str:
    return "{ " + ", ".join(f'"{n}"' for n in names) + " }"


def render(config: Config, firewall: ResolvedFirewall) -> Ruleset:
    """Render the complete ruleset for a config.

    Standalone: loxgw is the firewall of its zones. Forwarded traffic from a
    devices zone, and from a clients zone into a devices zone, is dropped
    unless established/related or allowed by a loxgw set; everything else is
    left to whatever other tables decide. fw4: the same allowances, but no drop
    of our own; fw4's zone policies decide (its include files jump here).
    """
    table = config.main.table
    device_ifs = config.interfaces_with_role("devices")
    client_ifs = config.interfaces_with_role("clients")
    final = (
        'counter drop comment "loxgw: not allowed"'
        if firewall == "standalone"
        else 'counter return comment "loxgw: fw4 zone policy decides"'
    )
    lines = [
        f"# loxgw ruleset ({firewall}) for {config.path}",
        f"table inet {table}",
        f"flush table inet {table}",
        f"table inet {table} {{",
        f"\tset {CLOUD4} {{",
        "\t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service",
        "\t\tflags interval, timeout",
        '\t\tcomment "device . cloud address . proto . ports, from DNS answers"',
        "\t}",
        f"\tset {CLOUD6} {{",
        "\t\ttype ipv6_addr . ipv6_addr . inet_proto . inet_service",
        "\t\tflags interval, timeout",
        "\t}",
        f"\tset {CLOUD4_PING} {{",
        "\t\ttype ipv4_addr . ipv4_addr",
        "\t\tflags timeout",
        "\t}",
        f"\tset {CLOUD6_PING} {{",
        "\t\ttype ipv6_addr . ipv6_addr",
        "\t\tflags timeout",
        "\t}",
        "",
        "\tchain allow_from_devices {",
        "\t\tct state established,related accept",
        f"\t\tip saddr . ip daddr . meta l4proto . th dport @{CLOUD4} accept",
        f"\t\tip6 saddr . ip6 daddr . meta l4proto . th dport @{CLOUD6} accept",
        f"\t\ticmp type echo-request ip saddr . ip daddr @{CLOUD4_PING} accept",
        f"\t\ticmpv6 type echo-request ip6 saddr . ip6 daddr @{CLOUD6_PING} accept",
        f"\t\t{final}",
        "\t}",
        "",
        "\tchain allow_into_devices {",
        "\t\tct state established,related accept",
        f"\t\t{final}",
        "\t}",
        "",
    ]
    if firewall == "standalone":
        lines += [
            "\tchain forward {",
            "\t\ttype filter hook forward priority filter; policy accept;",
        ]
        if device_ifs:
            lines.append(f"\t\tiifname {_ifset(device_ifs)} jump allow_from_devices")
            if client_ifs:
                lines.append(
                    f"\t\tiifname {_ifset(client_ifs)} oifname {_ifset(device_ifs)} "
                    "jump allow_into_devices"
                )
        lines.append("\t}")
    lines.append("}")
    return Ruleset(table=table, script="\n".join(lines) + "\n")


def render_removal(table: str) -> str:
    """A script that removes loxgw's table whether or not it exists."""
    return f"table inet {table}\ndelete table inet {table}\n"
