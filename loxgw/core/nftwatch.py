"""Which nftables notifications loxgw's ruleset watch reads (edges.nft.RulesetWatch).

The watch must see every deletion of loxgw's table, chains, rules and sets. Set
elements are notifications too, one message per element anyone writes (loxgw's
own DNS grants: thousands a second, 50,000 in a restore), and every transaction
ends with a generation message. Parsing those in Python stalled the daemon's
event loop 50-180 ms per burst (tests/lab/test_grants_restore.py). A classic BPF
socket filter drops them in the kernel: each notification whose first message
is an element or generation message.

The kernel packs one transaction's notifications into page-sized buffers in the
transaction's order, so a buffer that begins with an element message is dropped
whole. A transaction that writes elements and, after them, deletes loxgw's
objects would go unseen; `nft flush ruleset`, fw4's reloads and loxgw's own
declarations begin with their deletions.
"""

from __future__ import annotations

import struct
import sys

from loxgw.core.bpf import ACCEPT, JEQ_K, LD_B_ABS, RET_K, Instruction, run

NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM, NFT_MSG_NEWGEN = 12, 14, 15
IGNORED = (NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM, NFT_MSG_NEWGEN)
# Deletions are what can take loxgw's objects away (fw4 restart, nft flush ruleset, iptables -D).
NFT_MSG_DELTABLE, NFT_MSG_DELCHAIN, NFT_MSG_DELRULE, NFT_MSG_DELSET = 2, 5, 8, 11
DELETIONS = frozenset({NFT_MSG_DELTABLE, NFT_MSG_DELCHAIN, NFT_MSG_DELRULE, NFT_MSG_DELSET})
# The first attribute of each: NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE.
TABLE_ATTRIBUTE = 1
NFPROTO_INET, NFPROTO_IPV4, NFPROTO_NETDEV, NFPROTO_IPV6 = 1, 2, 5, 10
XTABLES = ((NFPROTO_IPV4, "mangle"), (NFPROTO_IPV6, "mangle"))  # where iptables-nft keeps loxgw's DNS rules

Table = tuple[int, str]  # a table a deletion was in: (nfgen family, name)
# Notifications were lost, or a deletion's table could not be read: any table may have lost something.
ANY_TABLE: Table = (0, "")
_HEADER = struct.Struct("=IH")  # nlmsg_len, nlmsg_type (the kernel's byte order)
_ATTRIBUTE = struct.Struct("=HH")  # nla_len, nla_type
NLMSG_HDRLEN, NFGENMSG_LEN = 16, 4

KEEP, DROP = ACCEPT, 0  # bytes of the buffer to keep: all, none


def notification_filter(byteorder: str = sys.byteorder) -> list[Instruction]:
    """The filter: keep a buffer unless its first message is one nf_tables sends per element or transaction.

    nlmsg_type, the 16 bits at offset 4 of the netlink header, is in the
    host's byte order; classic BPF loads bytes one by one here: the
    subsystem is the high byte, the message kind the low one.
    """
    kind_at, subsystem_at = (4, 5) if byteorder == "little" else (5, 4)
    drop_at = 3 + len(IGNORED) + 1
    program: list[Instruction] = [
        (LD_B_ABS, 0, 0, subsystem_at),
        (JEQ_K, 0, len(IGNORED) + 1, NFNL_SUBSYS_NFTABLES),  # another subsystem: keep
        (LD_B_ABS, 0, 0, kind_at),
    ]
    for i, kind in enumerate(IGNORED):
        program.append((JEQ_K, drop_at - (3 + i) - 1, 0, kind))
    return [*program, (RET_K, 0, 0, KEEP), (RET_K, 0, 0, DROP)]


def kept(program: list[Instruction], buffer: bytes) -> bool:
    """Run the filter over one buffer, as the kernel would (tests)."""
    return run(program, buffer)


def deleted_tables(buffer: bytes) -> set[Table]:
    """The table of each deletion among one buffer's notifications; ANY_TABLE where one cannot be read.

    Which table lost something decides what loxgw checks again: its own
    table, the iptables-nft rules in ip and ip6 `mangle`, a relay's netdev
    table. Replacing a table of its own (the relay's netdev table is
    deleted and created in one transaction) is then no reason to read
    iptables back, nor is a change to anybody else's tables.
    """
    deleted: set[Table] = set()
    offset = 0
    while offset + NLMSG_HDRLEN <= len(buffer):
        length, kind = _HEADER.unpack_from(buffer, offset)
        end = offset + length
        if length < NLMSG_HDRLEN or end > len(buffer):
            deleted.add(ANY_TABLE)  # the kernel's buffers are whole: this one is not understood
            break
        if kind >> 8 == NFNL_SUBSYS_NFTABLES and kind & 0xFF in DELETIONS:
            deleted.add(_table_of(buffer, offset + NLMSG_HDRLEN, end))
        offset += (length + 3) & ~3
    return deleted


def _table_of(buffer: bytes, start: int, end: int) -> Table:
    """The family (nfgenmsg) and the table attribute of the deletion message in buffer[start:end]."""
    if start + NFGENMSG_LEN > end:
        return ANY_TABLE
    family = buffer[start]
    at = start + NFGENMSG_LEN
    while at + _ATTRIBUTE.size <= end:
        length, kind = _ATTRIBUTE.unpack_from(buffer, at)
        if length < _ATTRIBUTE.size or at + length > end:
            return ANY_TABLE
        if kind & 0x3FFF == TABLE_ATTRIBUTE:
            name = buffer[at + _ATTRIBUTE.size : at + length].split(b"\0", 1)[0]
            return (family, name.decode("ascii", "replace")) if name else ANY_TABLE
        at += (length + 3) & ~3
    return ANY_TABLE


def touched(deleted: set[Table] | frozenset[Table], *tables: Table) -> bool:
    """Whether any of `tables` may have lost something."""
    return ANY_TABLE in deleted or any(table in deleted for table in tables)


def to_check(deleted: set[Table] | frozenset[Table], table: str, xtables_notified: bool = True
             ) -> tuple[bool, bool]:
    """After these deletions: whether loxgw's table (`inet table`) and whether its iptables DNS rules may
    have lost something. Rules written by legacy iptables (`xtables_notified` False) send no notification
    of their own: any deletion is a reason to look at them, as good as any."""
    xtables = touched(deleted, *XTABLES) if xtables_notified else bool(deleted)
    return touched(deleted, (NFPROTO_INET, table)), xtables
