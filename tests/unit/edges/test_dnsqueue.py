"""The inline DNS path's own netlink message: the queue's fail-open flag, against pyroute2's encoding."""

from __future__ import annotations

import socket

from pyroute2.netlink import NLM_F_REQUEST
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_QUEUE, nfgen_msg

from loxgw.edges.dnsqueue import NFQA_CFG_F_FAIL_OPEN, NFQNL_MSG_CONFIG, fail_open_message


class _QueueConfig(nfgen_msg):  # type: ignore[misc]  # pyroute2 is untyped
    """NFQNL_MSG_CONFIG as pyroute2 declares messages: the reference for the hand encoding."""

    nla_map = (("NFQA_CFG_UNSPEC", "none"), ("NFQA_CFG_CMD", "hex"), ("NFQA_CFG_PARAMS", "hex"),
               ("NFQA_CFG_QUEUE_MAXLEN", "be32"), ("NFQA_CFG_MASK", "be32"), ("NFQA_CFG_FLAGS", "be32"))


def test_the_fail_open_message_is_the_bytes_pyroute2_encodes() -> None:
    for queue_num in (0, 7053, 65535):
        msg = _QueueConfig()
        msg["nfgen_family"] = socket.AF_UNSPEC
        msg["res_id"] = queue_num
        msg["attrs"] = [("NFQA_CFG_MASK", NFQA_CFG_F_FAIL_OPEN), ("NFQA_CFG_FLAGS", NFQA_CFG_F_FAIL_OPEN)]
        msg["header"]["type"] = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG
        msg["header"]["flags"] = NLM_F_REQUEST
        msg.encode()
        assert fail_open_message(queue_num) == bytes(msg.data)
