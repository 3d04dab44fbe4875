"""The classic BPF reader the filters' tests rely on (core.bpf): loads, jumps, returns as the kernel's."""

from __future__ import annotations

import pytest

from loxgw.core import bpf


def test_loads_are_big_endian_and_a_load_past_the_end_drops() -> None:
    word = [(bpf.LD_W_ABS, 0, 0, 0), (bpf.JEQ_K, 0, 1, 0x01020304), (bpf.RET_K, 0, 0, bpf.ACCEPT), (bpf.RET_K, 0, 0, 0)]
    assert bpf.run(word, bytes([1, 2, 3, 4])) is True
    assert bpf.run(word, bytes([4, 3, 2, 1])) is False
    assert bpf.run(word, bytes([1, 2, 3])) is False  # too short: the kernel drops it


def test_the_packet_type_the_ip_header_length_and_comparisons() -> None:
    udp_port = [(bpf.LD_W_ABS, 0, 0, bpf.PKTTYPE), (bpf.JEQ_K, 0, 4, 1), (bpf.LDX_B_MSH, 0, 0, 0),
                (bpf.LD_H_IND, 0, 0, 2), (bpf.JGE_K, 0, 1, 7070), (bpf.RET_K, 0, 0, bpf.ACCEPT), (bpf.RET_K, 0, 0, 0)]
    header = bytes([0x46]) + bytes(23)  # IPv4 with options: 24 bytes
    assert bpf.run(udp_port, header + bytes([0, 0, 0x1B, 0x9E]), pkttype=1) is True  # port 7070, broadcast
    assert bpf.run(udp_port, header + bytes([0, 0, 0x1B, 0x9D]), pkttype=1) is False  # 7069
    assert bpf.run(udp_port, header + bytes([0, 0, 0x1B, 0x9E]), pkttype=0) is False  # not a broadcast
    with pytest.raises(ValueError, match="unknown instruction"):
        bpf.run([(0x99, 0, 0, 0)], b"")
