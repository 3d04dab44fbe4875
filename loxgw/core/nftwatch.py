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

import sys

from loxgw.core.bpf import ACCEPT, JEQ_K, LD_B_ABS, RET_K, Instruction, run

NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM, NFT_MSG_NEWGEN = 12, 14, 15
IGNORED = (NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM, NFT_MSG_NEWGEN)

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
