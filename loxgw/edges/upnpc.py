"""Adapter: miniupnpc's blocking calls, one function per thing loxgw asks the upstream IGD.

Every function here blocks (SSDP waits, SOAP over HTTP), so the daemon runs
them in a worker thread; the DNS path and the relay never wait for them.
"""

from __future__ import annotations

import miniupnpc

from loxgw.core.errors import LoxgwError
from loxgw.core.record import record

DISCOVER_DELAY_MS = 1000
DESCRIPTION = "loxgw"


class UpnpError(LoxgwError):
    """The IGD said no or could not be reached; `conflict` names the holder of a taken port."""

    def __init__(self, message: str, conflict: str = "") -> None:
        super().__init__(message)
        self.conflict = conflict


@record
class Gateway:
    external_ip: str
    our_address: str  # this router's address as the IGD sees it (its internal client)


def _detail(exc: Exception) -> str:
    """The library's text for a failure, left out where it is errno 0's "Success" (it says nothing)."""
    text = str(exc).strip()
    return "" if text in ("", "Success") else f" ({text})"


def _connect() -> tuple[miniupnpc.UPnP, Gateway]:
    client = miniupnpc.UPnP()
    client.discoverdelay = DISCOVER_DELAY_MS
    # miniupnpc raises plain Exception with the UPnP error text (an empty search
    # reads "Success"), so each step says in its own words what failed.
    try:
        found = client.discover()
    except Exception as exc:
        raise UpnpError(f"no UPnP IGD answered on the WAN side{_detail(exc)}") from exc
    if found == 0:
        raise UpnpError("no UPnP IGD answered on the WAN side")
    try:
        client.selectigd()
    except Exception as exc:
        raise UpnpError(f"no usable UPnP IGD among {found} UPnP devices: {exc}") from exc
    try:
        return client, Gateway(client.externalipaddress(), client.lanaddr)
    except Exception as exc:
        raise UpnpError(f"IGD: {exc}") from exc


def ensure(external_port: int, proto: str, lease: int) -> Gateway:
    """Map external_port on the IGD to the same port on this router; refresh it if it is ours."""
    client, gateway = _connect()
    upper = proto.upper()
    try:
        existing = client.getspecificportmapping(external_port, upper)
        if existing is not None and existing[0] != gateway.our_address:
            raise UpnpError(f"port {external_port}/{proto} is mapped to {existing[0]}:{existing[1]} "
                            f"({existing[2] or 'no description'})", conflict=str(existing[0]))
        client.addportmapping(external_port, upper, gateway.our_address, external_port, DESCRIPTION, "", lease)
    except UpnpError:
        raise
    except Exception as exc:
        text = str(exc)
        conflict = "another host" if "Conflict" in text else ""
        raise UpnpError(f"IGD refused the mapping: {text}", conflict=conflict) from exc
    return gateway


def remove(external_port: int, proto: str) -> None:
    """Delete our mapping (only if it is ours)."""
    client, gateway = _connect()
    upper = proto.upper()
    try:
        existing = client.getspecificportmapping(external_port, upper)
        if existing is not None and existing[0] == gateway.our_address:
            client.deleteportmapping(external_port, upper)
    except Exception as exc:
        raise UpnpError(f"IGD: {exc}") from exc
