"""Classic BPF socket filters (SO_ATTACH_FILTER): the kernel drops what the program refuses.

The programs are decisions and live in the core (core.relaywire for the relay's
sockets, core.nftwatch for the ruleset watch); this attaches one to a socket.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Sequence

SO_ATTACH_FILTER = 26

Instruction = tuple[int, int, int, int]  # code, jump if true, jump if false, k (struct sock_filter)


def attach(sock: socket.socket, program: Sequence[Instruction]) -> None:
    """Attach `program`; struct sock_fprog points at the instructions, which the kernel copies."""
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *insn) for insn in program))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("@HP", len(program), ctypes.addressof(code)))
