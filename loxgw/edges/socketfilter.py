"""Classic BPF socket filters (SO_ATTACH_FILTER): the kernel drops what the program refuses.

The programs are decisions and live with their features (core.relaywire for the
relay's sockets, core.nftwatch for the ruleset watch, edges.conntrack for the
Intercom's events; instructions in core.bpf); this attaches one to a socket.
"""

from __future__ import annotations

import array
import socket
import struct
from collections.abc import Sequence

from loxgw.core.bpf import Instruction

SO_ATTACH_FILTER = 26


def attach(sock: socket.socket, program: Sequence[Instruction]) -> None:
    """Attach `program`; struct sock_fprog points at the instructions, which the kernel copies.

    The pointer is the address of an array's buffer (array.buffer_info), which lives until the
    call returns: ctypes would do the same, and on OpenWrt it is a package of its own
    (python3-ctypes, with libffi) for this one pointer.
    """
    code = array.array("B", b"".join(struct.pack("=HBBI", *insn) for insn in program))
    address, _ = code.buffer_info()
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("@HP", len(program), address))
