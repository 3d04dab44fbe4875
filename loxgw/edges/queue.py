"""Adapter: get DNS packets into NFQUEUE, natively (nft `queue`) or through iptables-nft.

OpenWrt has the nft queue expression (kmod-nft-queue); kernels without it
still have the xtables NFQUEUE target, reachable through iptables-nft. The
mode is chosen at start by asking the kernel (`nft -c` of a queue rule).
"""

from __future__ import annotations

import shutil
import subprocess

from loxgw.core.config import DnsMode
from loxgw.core.dnsrules import QueueRule
from loxgw.core.errors import KernelError
from loxgw.core.firewall import QueueMode
from loxgw.edges import nft

XT_CHAIN = {"input": "LOXGW_DNS_IN", "output": "LOXGW_DNS_OUT", "forward": "LOXGW_DNS_FWD"}
XT_HOOK = {"input": "INPUT", "output": "OUTPUT", "forward": "FORWARD"}
PROBE = (
    "table inet loxgw_probe {\n"
    "\tchain c {\n\t\ttype filter hook output priority 0; policy accept;\n"
    "\t\tudp sport 1 queue num 1 bypass\n\t}\n}\n"
)


def native_queue_supported() -> bool:
    """Whether the kernel has the nft queue expression (checked without changing anything)."""
    try:
        nft.run_script(PROBE, check_only=True)
        return True
    except KernelError:
        return False


def _xtables(family: int) -> str | None:
    for name in (("iptables-nft", "iptables") if family == 4 else ("ip6tables-nft", "ip6tables")):
        found = shutil.which(name)
        if found:
            return found
    return None


def choose_mode(dns_mode: DnsMode) -> QueueMode:
    """inline: native queue, else iptables-nft NFQUEUE, else passive (can race)."""
    if dns_mode != "inline":
        return dns_mode
    if native_queue_supported():
        return "nft"
    if _xtables(4) is not None:
        return "xtables"
    return "passive"


class XtablesQueue:
    """Owns chains LOXGW_DNS_* in the mangle table (IPv4 and IPv6) and the jumps to them."""

    def __init__(self) -> None:
        self._installed: tuple[tuple[QueueRule, ...], tuple[str, ...] | None] | None = None

    def _run(self, binary: str, *args: str, check: bool = True) -> bool:
        proc = subprocess.run([binary, "-w", "-t", "mangle", *args], capture_output=True, text=True,
                              check=False)
        if check and proc.returncode != 0:
            raise KernelError(f"{binary} {' '.join(args)}", None, proc.stderr.strip())
        return proc.returncode == 0

    def install(self, rules: list[QueueRule], hold: list[str] | None = None) -> None:
        """Replace loxgw's queue rules with `rules`, plus the hold queue rule (FORWARD) if given (idempotent).

        Skipped when the same rules are installed and the jumps to them are
        there: most applies change only pinholes, and rewriting the chains
        takes dozens of iptables runs, during which DNS would pass unseen.
        """
        wanted = (tuple(rules), tuple(hold) if hold is not None else None)
        if wanted == self._installed and self.present():
            return
        self._installed = None
        self._write(rules, hold)
        self._installed = wanted

    def _write(self, rules: list[QueueRule], hold: list[str] | None) -> None:
        for family in (4, 6):
            binary = _xtables(family)
            if binary is None:
                continue
            for hook, chain in XT_CHAIN.items():
                if not self._run(binary, "-N", chain, check=False):
                    self._run(binary, "-F", chain)
                if not self._run(binary, "-C", XT_HOOK[hook], "-j", chain, check=False):
                    self._run(binary, "-I", XT_HOOK[hook], "-j", chain)
                if hook == "forward" and hold is not None:
                    self._run(binary, "-A", chain, *hold)
                for rule in rules:
                    if rule.hook != hook or rule.family not in (None, family):
                        continue
                    for interface in rule.interfaces:
                        for args in rule.xtables(interface):
                            self._run(binary, "-A", chain, *args)

    def remove(self) -> None:
        """Remove every loxgw chain and jump; quiet where already gone."""
        self._installed = None
        for family in (4, 6):
            binary = _xtables(family)
            if binary is None:
                continue
            for hook, chain in XT_CHAIN.items():
                while self._run(binary, "-D", XT_HOOK[hook], "-j", chain, check=False):
                    pass
                self._run(binary, "-F", chain, check=False)
                self._run(binary, "-X", chain, check=False)

    def present(self) -> bool:
        """Whether the IPv4 jump into loxgw's output chain exists (a firewall restart removes it)."""
        binary = _xtables(4)
        return binary is not None and self._run(
            binary, "-C", "OUTPUT", "-j", XT_CHAIN["output"], check=False
        )
