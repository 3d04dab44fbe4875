"""OpenWrt networks to Linux devices: zones may say `list network 'iot'`.

netifd knows which device carries a network right now (`ubus call
network.interface.NAME status`: "l3_device", else "device"). Resolution runs
at start, on reload, and procd reloads loxgw when a zone's network changes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from loxgw.core.config import Config

NetworkLookup = Callable[[str], "dict[str, Any] | None"]


def device_of(status: dict[str, Any]) -> str | None:
    """The Linux device of a network from netifd's status answer, if it is up."""
    device = status.get("l3_device") or status.get("device")
    return device if isinstance(device, str) and device else None


def ubus_status(network: str) -> dict[str, Any] | None:
    """netifd's status of one network, or None (no ubus, unknown network)."""
    ubus = shutil.which("ubus")
    if ubus is None:
        return None
    proc = subprocess.run([ubus, "call", f"network.interface.{network}", "status"],
                          capture_output=True, text=True, timeout=5, check=False)
    if proc.returncode != 0:
        return None
    try:
        answer = json.loads(proc.stdout)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def resolve_networks(config: Config, lookup: NetworkLookup) -> tuple[Config, list[str]]:
    """The config with each zone's networks added to its interfaces; and the networks not found."""
    missing: list[str] = []
    zones = []
    for zone in config.zones:
        interfaces = dict.fromkeys(zone.interfaces)
        for network in zone.networks:
            status = lookup(network)
            device = device_of(status) if status else None
            if device is None:
                missing.append(network)
            else:
                interfaces[device] = None
        zones.append(replace(zone, interfaces=tuple(interfaces)))
    return replace(config, zones=tuple(zones)), missing
