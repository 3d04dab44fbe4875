"""The subnets of named interfaces, read from the kernel with two rtnetlink dumps."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from loxgw.edges import rtnl

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def interface_networks(names: Iterable[str]) -> list[Network]:
    """Every subnet configured on the named interfaces (link-local IPv6 left out)."""
    wanted = set(names)
    if not wanted:
        return []
    found: list[Network] = []
    indices = {link.index for link in rtnl.links() if link.name in wanted}
    for addr in rtnl.addresses():
        if addr.index not in indices:
            continue
        network = addr.interface().network
        if not network.is_link_local:
            found.append(network)
    return found
