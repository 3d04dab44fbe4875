"""The firewall's iptables-nft DNS rules (where the kernel lacks nft `queue`), kept beside its table.

The declaration (`nft -f`) and these rules (`iptables-nft-restore`, then
`ip6tables-nft-restore`) are separate tables written by separate processes,
~30 ms each here; the kernel serialises their transactions (60 of 60
concurrent rounds applied in the lab), so a declaration writes both at once
(`alongside`): start-up waits for the longer of the two, not for both.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from loxgw.core.dnsrules import dns_queue_rules, hold_xtables_rule
from loxgw.daemon.logs import log_failure

if TYPE_CHECKING:
    from loxgw.daemon.firewall import Desired

log = logging.getLogger("loxgw")


class QueueRules(Protocol):
    """The iptables-nft DNS rules (edges.queue.XtablesQueue), where the kernel lacks nft `queue`."""

    def install(self, rules: list[Any], hold: list[str] | None = None) -> None: ...
    def remove(self) -> None: ...
    def present(self) -> bool: ...
    def notified(self) -> bool: ...


def alongside(here: Callable[[], None], there: Callable[[], None]) -> None:
    """Run `here` in this thread and `there` in another at the same time; raise here's error, else there's."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="loxgw-alongside") as pool:
        other = pool.submit(there)
        try:
            here()
        except Exception:
            second = other.exception()
            if second is not None:  # a second failure: logged; the first one is raised
                log_failure(log, "firewall, beside a failed declaration", second)
            raise
        other.result()


class QueueRuleKeeper:
    """Installs, checks and removes the xtables DNS rules a desired state's DNS path asks for."""

    def __init__(self, make: Callable[[], QueueRules] | None) -> None:
        self.make = make  # None: never installs any (tests that record scripts)
        self.rules: QueueRules | None = None

    def install(self, desired: Desired) -> None:
        """The rules of `desired`'s DNS path, or none where it does not queue through xtables."""
        if desired.queue != "xtables":
            self.remove()
            return
        if self.rules is None:
            if self.make is None:
                return
            self.rules = self.make()
        self.rules.install(dns_queue_rules(desired.config, desired.path),
                           hold_xtables_rule(desired.config, desired.path))

    def notified(self) -> bool:
        """Whether a change to the installed rules comes as an nftables notification (none installed: yes)."""
        return self.rules is None or self.rules.notified()

    def intact(self) -> bool:
        """False if rules are installed and someone changed them (one save per family)."""
        return self.rules is None or self.rules.present()

    def remove(self) -> None:
        if self.rules is not None:
            self.rules.remove()
            self.rules = None
