"""How DNS reaches loxgw, as one table: the renderer, the DNS service and status all read it.

Three things decide the path: the queue the kernel offers (native nft
`queue`, the xtables NFQUEUE target, neither), whether NFLOG copies can be
had, and `dns_hold`. Each row says what is copied, what is held, which
queues loxgw binds and what status calls it.
"""

from __future__ import annotations

from typing import Literal

from loxgw.core.config import DnsHold, DnsMode, ZoneRole
from loxgw.core.firewall import HELD_ANSWERS_OFFSET, QueueMode
from loxgw.core.record import record

QueueUse = Literal["hold", "devices", "clients"]  # what a bound queue carries: first packets, or a role's DNS


@record
class DnsPath:
    """One row of the table."""

    label: str  # what `loxgw status` shows as `dns`
    copies: bool  # DNS arrives as NFLOG copies (group queue_num); the packets go on at once
    held_answers: tuple[ZoneRole, ...]  # roles whose catalogue answers wait until granted
    held_queries: bool  # queries wait too (only without NFLOG: the query must be known first)
    hold_first_packets: bool  # a devices zone's first packet to an ungranted address waits
    queues: tuple[tuple[int, QueueUse], ...]  # (offset from queue_num, what it carries)
    copy_delay: bool  # copies are read in batches (only when no answer of a devices zone waits)
    sniff: bool = False  # packet sockets read DNS passively
    # A devices zone's answers wait while they come slowly enough (core.firewall.HELD_ANSWERS_*),
    # in queue offset HELD_ANSWERS_OFFSET; beyond that they are copied and first packets wait.
    answers_held_up_to_a_rate: bool = False


OFF = DnsPath("off", False, (), False, False, (), False)
PASSIVE = DnsPath("passive", False, (), False, False, (), False, sniff=True)
COPIES = DnsPath("copies", True, ("clients",), False, True, ((0, "hold"), (1, "clients")), True)
COPIES_ANSWERS_HELD = DnsPath("copies, answers held", True, ("devices", "clients"), False, False,
                              ((0, "devices"), (1, "clients")), False)
ANSWERS_HELD_UP_TO_A_RATE = DnsPath("answers held, beyond a rate copies", True, ("clients",), False, True,
                                    ((0, "hold"), (1, "clients"), (HELD_ANSWERS_OFFSET, "devices")), True,
                                    answers_held_up_to_a_rate=True)
QUEUED = DnsPath("queued", False, ("devices", "clients"), True, False, ((0, "devices"), (1, "clients")), False)

ROWS: tuple[DnsPath, ...] = (OFF, PASSIVE, COPIES, COPIES_ANSWERS_HELD, ANSWERS_HELD_UP_TO_A_RATE, QUEUED)


def choose(dns_mode: DnsMode, queue: QueueMode, nflog: bool, dns_hold: DnsHold) -> DnsPath:
    """The row for a config's `dns_mode` and `dns_hold`, given what the kernel offers."""
    if dns_mode == "off" or queue == "off":
        return OFF
    if dns_mode == "passive" or queue == "passive":
        return PASSIVE
    if not nflog:
        return QUEUED
    return {"connection": COPIES, "answer": COPIES_ANSWERS_HELD, "auto": ANSWERS_HELD_UP_TO_A_RATE}[dns_hold]


def queue_of(path: DnsPath, role: ZoneRole) -> int | None:
    """Offset of the queue holding `role`'s DNS in this row, or None if nothing of it is held."""
    return next((offset for offset, use in path.queues if use == role), None)
