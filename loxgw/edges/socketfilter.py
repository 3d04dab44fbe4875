"""Classic BPF socket filters (SO_ATTACH_FILTER): the kernel drops what the program refuses.

The programs are decisions and live with their features (core.relaywire for the
relay's sockets, core.nftwatch for the ruleset watch, edges.conntrack for the
Intercom's events; instructions in core.bpf); this attaches one to a socket.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Sequence

from loxgw.core.bpf import Instruction

SO_ATTACH_FILTER = 26


def attach(sock: socket.socket, program: Sequence[Instruction]) -> None:
    """Attach `program`; struct sock_fprog points at the instructions, which the kernel copies."""
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *insn) for insn in program))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("@HP", len(program), ctypes.addressof(code)))
