"""The netlink requests of edges.nft and the set-refresh probe against a real kernel, read back with real nft."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.lab.loxgwproc import REPO

# Run in the namespace: prints what the netlink side sees, as JSON.
ASK = """
import json, struct, sys
from loxgw.edges import nft, nftset
what = sys.argv[1]
if what == "exists":
    print(json.dumps([nft.table_exists(name) for name in sys.argv[2:]]))
elif what == "expirations":
    with nft.NetfilterRequests() as requests:
        print(json.dumps([[key.hex(), ms] for key, ms in requests.set_expirations(sys.argv[2], sys.argv[3])]))
elif what == "probe":
    print(json.dumps(nftset.probe_refresh()))
elif what == "refresh":  # the probe's question, asked through SetWriter and answered by nft
    writer = nftset.SetWriter("t", (), "expiration")
    key = bytes([192, 0, 2, 1, 192, 0, 2, 2])
    writer.add_elements([("s", key, 1000)], expires=100)
    writer.add_elements([("s", key, 1000)])
    print(json.dumps(writer.errors))
elif what == "counters":
    from loxgw.edges import relayset
    print(json.dumps([relayset.kernel_counters(name) for name in sys.argv[2:]]))
elif what == "watch":  # which of nft's changes the ruleset watch reads: one line per change
    import subprocess, time
    watch, seen = nft.RulesetWatch(), []
    for step in sys.argv[2:]:
        subprocess.run(["nft", step], check=True)
        time.sleep(0.05)
        try:
            kinds = []
            while True:
                data = watch.sock.recv(1 << 16)
                offset = 0
                while offset + 16 <= len(data):
                    length, kind = struct.unpack_from("=IH", data, offset)
                    kinds.append(kind & 0xFF)
                    offset += max((length + 3) & ~3, 16)
        except BlockingIOError:
            seen.append(kinds)
    print(json.dumps(seen))
"""


def nft(ns: str, *args: str) -> str:
    proc = subprocess.run(["ip", "netns", "exec", ns, "nft", *args], capture_output=True, text=True, check=False,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def ask(ns: str, *args: str) -> object:
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", ASK, *args], capture_output=True,
                          text=True, check=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
    return json.loads(proc.stdout)


def test_table_exists_agrees_with_nft(namespace: str) -> None:
    nft(namespace, "add", "table", "inet", "loxgw")
    nft(namespace, "add", "table", "ip", "only_ip")
    assert ask(namespace, "exists", "loxgw", "only_ip", "absent") == [True, False, False]


def test_set_expirations_agree_with_nft(namespace: str) -> None:
    script = ("table inet t {\n\tset s {\n\t\ttype ipv4_addr . ipv4_addr\n\t\tflags timeout\n\t}\n}\n"
              "add element inet t s { 192.0.2.1 . 192.0.2.2 timeout 1000s expires 100s, "
              "10.0.0.1 . 10.0.0.2 timeout 60s }\n")
    subprocess.run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], input=script, text=True, check=True)
    answer = ask(namespace, "expirations", "t", "s")
    assert isinstance(answer, list)
    found = {key: ms for key, ms in answer}
    listed = json.loads(nft(namespace, "-j", "list", "set", "inet", "t", "s"))["nftables"]
    (nft_set,) = [item["set"] for item in listed if "set" in item]
    by_nft = {"".join(f"{int(b):02x}" for part in e["elem"]["val"]["concat"] for b in part.split(".")):
              e["elem"]["expires"] for e in nft_set["elem"]}
    assert sorted(found) == sorted(by_nft) == ["0a0000010a000002", "c0000201c0000202"]
    for key, seconds in by_nft.items():
        assert abs(found[key] / 1000 - seconds) <= 2, key


def test_the_refresh_probe_answers_what_nft_shows_and_leaves_nothing(namespace: str) -> None:
    mode = ask(namespace, "probe")
    assert mode in ("expiration", "replace", "none")
    assert "loxgw_probe" not in nft(namespace, "list", "tables")
    script = "table inet t {\n\tset s {\n\t\ttype ipv4_addr . ipv4_addr\n\t\tflags timeout\n\t}\n}\n"
    subprocess.run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], input=script, text=True, check=True)
    assert ask(namespace, "refresh") == 0
    listed = json.loads(nft(namespace, "-j", "list", "set", "inet", "t", "s"))["nftables"]
    (nft_set,) = [item["set"] for item in listed if "set" in item]
    (entry,) = nft_set["elem"]
    assert (entry["elem"]["expires"] > 500) == (mode == "expiration"), (mode, entry)


def test_the_probe_replaces_a_probe_table_a_killed_run_left(namespace: str) -> None:
    nft(namespace, "add", "table", "inet", "loxgw_probe")
    nft(namespace, "add", "set", "inet", "loxgw_probe", "s", "{ type ipv4_addr; }")
    assert ask(namespace, "probe") in ("expiration", "replace", "none")
    assert "loxgw_probe" not in nft(namespace, "list", "tables")


def test_the_ruleset_watch_reads_deletions_and_no_element_or_generation_message(namespace: str) -> None:
    seen = ask(namespace, "watch",
               "add table inet w; add set inet w s { type ipv4_addr; flags timeout; }",
               "add element inet w s { 192.0.2.1, 192.0.2.2, 192.0.2.3 }",
               "delete element inet w s { 192.0.2.1 }",
               "add element inet w s { 192.0.2.9 }; delete set inet w s",
               "delete table inet w")
    # NEWTABLE 0, NEWSET 9, DELTABLE 2: the declarations and deletions, not the elements (12, 14)
    # nor each transaction's generation message (15). The fourth change is the blind spot
    # core.nftwatch names: the kernel packs the set's deletion (11) behind the element's message
    # in one buffer, which the filter drops whole.
    assert seen == [[0, 9], [], [], [], [2]]


def test_the_relay_counters_over_netlink_are_what_nft_lists(namespace: str) -> None:
    subprocess.run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], check=True, text=True, input=(
        "table netdev r {\n counter a { packets 7 bytes 700 }\n counter b { packets 0 bytes 0 }\n}\n"
        "table inet other {\n counter a { packets 99 bytes 1 }\n}\n"))
    listed = {c["counter"]["name"]: c["counter"]["packets"] for c in json.loads(
        nft(namespace, "-j", "list", "counters", "table", "netdev", "r"))["nftables"] if "counter" in c}
    assert ask(namespace, "counters", "r", "nosuch") == [listed, {}] == [{"a": 7, "b": 0}, {}]
