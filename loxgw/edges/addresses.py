"""The subnets of named interfaces, read from the kernel with one pyroute2 dump."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pyroute2 import IPRoute

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def interface_networks(names: Iterable[str]) -> list[Network]:
    """Every subnet configured on the named interfaces (link-local IPv6 left out)."""
    wanted = set(names)
    if not wanted:
        return []
    found: list[Network] = []
    with IPRoute() as ipr:
        indices = {link["index"] for link in ipr.get_links() if link.get_attr("IFLA_IFNAME") in wanted}
        for addr in ipr.get_addr():
            if addr["index"] not in indices:
                continue
            network = ipaddress.ip_interface(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}").network
            if not network.is_link_local:
                found.append(network)
    return found
