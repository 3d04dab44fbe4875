"""Adapter: add DNS grants to nftables sets over netlink, one batch per answer, no subprocess.

pyroute2 encodes the NFT_MSG_NEWSETELEM messages; the batch is sent on a raw
NETLINK_NETFILTER socket. nfnetlink commits a batch synchronously inside
send(), so when send() returns the elements are live: the DNS answer can be
released and the device's first packet finds its element. Errors come back
as netlink error messages, read without blocking and counted.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

from pyroute2.netlink import NLM_F_CREATE, NLM_F_REQUEST
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_NFTABLES, nfgen_msg
from pyroute2.netlink.nfnetlink.nftsocket import NFT_MSG_NEWSETELEM, nft_set_elem_list_msg

from loxgw.dns import Grant, Profile
from loxgw.errors import KernelError
from loxgw.ruleset import cloud_set_name

NETLINK_NETFILTER = 12
NFPROTO_INET = 1
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NLMSG_ERROR = 2


class SetWriter:
    """Adds grants as set elements with timeouts; one instance per daemon."""

    def __init__(self, table: str, profiles: tuple[Profile, ...]) -> None:
        self.table = table
        self.index = {profile: i for i, profile in enumerate(profiles)}
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.sock.setblocking(False)
        self.seq = 0
        self.errors = 0

    def close(self) -> None:
        self.sock.close()

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0x7FFFFFFF
        return self.seq

    def _batch_marker(self, kind: int) -> bytes:
        msg = nfgen_msg()
        msg["res_id"] = NFNL_SUBSYS_NFTABLES
        msg["header"]["type"] = kind
        msg["header"]["flags"] = NLM_F_REQUEST
        msg["header"]["sequence_number"] = self._next_seq()
        msg.encode()
        data: bytes = msg.data
        return data

    def _elements(self, set_name: str, elements: list[tuple[bytes, int]]) -> bytes:
        msg = nft_set_elem_list_msg()
        msg["nfgen_family"] = NFPROTO_INET
        msg["attrs"] = [
            ("NFTA_SET_ELEM_LIST_TABLE", self.table),
            ("NFTA_SET_ELEM_LIST_SET", set_name),
            ("NFTA_SET_ELEM_LIST_ELEMENTS", [
                {"attrs": [("NFTA_SET_ELEM_KEY", {"attrs": [("NFTA_DATA_VALUE", key)]}),
                           ("NFTA_SET_ELEM_TIMEOUT", timeout_ms)]}
                for key, timeout_ms in elements
            ]),
        ]
        msg["header"]["type"] = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM
        # NLM_F_CREATE without EXCL: an existing element gets its timeout refreshed.
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_CREATE
        msg["header"]["sequence_number"] = self._next_seq()
        msg.encode()
        data: bytes = msg.data
        return data

    def add(self, grants: Iterable[Grant]) -> int:
        """Insert the grants in one netlink batch; returns how many elements were sent."""
        by_set: dict[str, list[tuple[bytes, int]]] = {}
        for grant in grants:
            index = self.index.get(grant.profile)
            if index is None:
                continue
            key = grant.device.packed + grant.address.packed
            by_set.setdefault(cloud_set_name(index, grant.address.version), []).append(
                (key, grant.timeout * 1000)
            )
        if not by_set:
            return 0
        batch = self._batch_marker(NFNL_MSG_BATCH_BEGIN)
        for name, elements in by_set.items():
            batch += self._elements(name, elements)
        batch += self._batch_marker(NFNL_MSG_BATCH_END)
        try:
            self.sock.send(batch)
        except OSError as exc:
            raise KernelError("netlink set element batch", exc.errno, exc.strerror or "") from exc
        self.drain_errors()
        return sum(len(v) for v in by_set.values())

    def drain_errors(self) -> int:
        """Read pending netlink errors (unblocking); returns the last errno seen, 0 if none."""
        last = 0
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return last
            offset = 0
            while offset + 20 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, offset + 16)[0]
                    if code:
                        self.errors += 1
                        last = code
                offset += max((length + 3) & ~3, 20)
