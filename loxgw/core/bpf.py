"""Classic BPF socket filters: the instructions loxgw's programs use, and the kernel's reading of them.

The programs themselves are decisions of their features (core.relaywire: the
relay's sockets; core.nftwatch: the ruleset watch; edges.conntrack: the
Intercom's conntrack events); edges.socketfilter attaches them. `run` executes
a program as the kernel does, for the tests that check each program against
packets and messages.
"""

from __future__ import annotations

from collections.abc import Sequence

Instruction = tuple[int, int, int, int]  # code, jump if true, jump if false, k (struct sock_filter)

LD_W_ABS, LD_H_ABS, LD_B_ABS = 0x20, 0x28, 0x30  # A = big-endian word, half word, byte at k
LD_H_IND, LDX_B_MSH = 0x48, 0xB1  # A = half word at X + k; X = 4 * (byte at k & 15): an IPv4 header length
AND_K, RET_K = 0x54, 0x06
JEQ_K, JGT_K, JGE_K = 0x15, 0x25, 0x35
PKTTYPE = 0xFFFFF004  # LD_W_ABS here reads skb->pkt_type (SKF_AD_OFF -0x1000 + SKF_AD_PKTTYPE 4)
ACCEPT = 0x40000  # RET_K: bytes to keep, all of them

_WIDTH = {LD_W_ABS: 4, LD_H_ABS: 2, LD_B_ABS: 1}


def run(program: Sequence[Instruction], data: bytes, pkttype: int = 0) -> bool:
    """Whether the kernel keeps `data` (a load past its end drops it, as the kernel's does)."""
    a = x = pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == LD_W_ABS and k == PKTTYPE:
            a = pkttype
        elif code in _WIDTH:
            if k + _WIDTH[code] > len(data):
                return False
            a = int.from_bytes(data[k : k + _WIDTH[code]], "big")
        elif code == LD_H_IND:
            if x + k + 2 > len(data):
                return False
            a = int.from_bytes(data[x + k : x + k + 2], "big")
        elif code == LDX_B_MSH:
            if k >= len(data):
                return False
            x = 4 * (data[k] & 15)
        elif code == AND_K:
            a &= k
        elif code in (JEQ_K, JGT_K, JGE_K):
            taken = a == k if code == JEQ_K else a > k if code == JGT_K else a >= k
            pc += jt if taken else jf
        elif code == RET_K:
            return k != 0
        else:
            raise ValueError(f"unknown instruction {code:#x}")
