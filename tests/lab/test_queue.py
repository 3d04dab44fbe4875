"""The nft queue expression check over netlink answers as `nft -c` does, and changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.lab.loxgwproc import REPO

CHECK = """
import sys
from loxgw.core.errors import KernelError
from loxgw.edges import nft, queue
if sys.argv[1] == "queue":
    print(queue.native_queue_supported())
else:  # an expression every nf_tables kernel has, and one none has
    name = sys.argv[1].encode() + b"\\0"
    expression = nft.attr(nft.NFTA_LIST_ELEM, nft.attr(nft.NFTA_EXPR_NAME, name), nested=True)
    try:
        with nft.NetfilterRequests() as requests:
            requests.transact(queue.rule_check(expression), "check", check_only=True)
        print("accepted")
    except KernelError as exc:
        print(exc.errno)
"""
PROBE = ("table inet loxgw_probe {\n\tchain c {\n\t\ttype filter hook output priority 0; policy accept;\n"
         "\t\tudp sport 1 queue num 1 bypass\n\t}\n}\n")


def check(ns: str, what: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CHECK, what], capture_output=True,
                          text=True, check=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                          timeout=60).stdout.strip()


def test_the_netlink_check_agrees_with_nft_check(namespace: str) -> None:
    by_nft = subprocess.run(["ip", "netns", "exec", namespace, "nft", "-c", "-f", "-"], input=PROBE, text=True,
                            capture_output=True, check=False).returncode == 0
    assert check(namespace, "queue") == str(by_nft)


def test_the_check_accepts_a_known_expression_refuses_an_unknown_and_applies_nothing(namespace: str) -> None:
    assert check(namespace, "counter") == "accepted"
    assert check(namespace, "no_such_expression") == "2"  # ENOENT
    listed = subprocess.run(["ip", "netns", "exec", namespace, "nft", "list", "ruleset"], capture_output=True,
                            text=True, check=True).stdout
    assert listed == ""
