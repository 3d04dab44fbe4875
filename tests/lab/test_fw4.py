"""firewall4 integration: loxgw's include files in a fw4-shaped table, through reloads and restarts."""

from __future__ import annotations

import subprocess
import sys

from tests.lab.loxgwproc import LAB_CONFIG, REPO, Loxgw
from tests.lab.netlab import Lab, wait_for
from tests.lab.test_dns import listen, resolve_and_connect, try_connect
from tests.lab.test_relay import listen as listen_udp
from tests.lab.test_relay import received

# Send one UDP datagram (hex payload) to DST:PORT, broadcast allowed.
SEND = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[1], int(sys.argv[2])))
"""

FILES = f"{REPO}/openwrt/net/loxgw/files"

# The shape of what fw4 generates for a 'lan' zone (accept, forward to wan) and a locked-down
# 'iot' zone as real configs have it (input REJECT but DHCP and DNS, forward REJECT), with the
# chain-pre includes where fw4 puts them.
FW4 = f"""
table inet fw4 {{
\tchain input {{
\t\ttype filter hook input priority filter; policy drop;
\t\tinclude "{FILES}/fw4-input.nft"
\t\tiifname "lo" accept
\t\tct state vmap {{ established : accept, related : accept, invalid : drop }}
\t\tiifname "br-lan" jump input_lan
\t\tiifname "br-iot" jump input_iot
\t}}
\tchain input_lan {{
\t\taccept
\t}}
\tchain input_iot {{
\t\tmeta l4proto {{ tcp, udp }} th dport 53 accept
\t\tudp dport 67 accept
\t\treject
\t}}
\tchain forward {{
\t\ttype filter hook forward priority filter; policy drop;
\t\tinclude "{FILES}/fw4-forward.nft"
\t\tct state vmap {{ established : accept, related : accept, invalid : drop }}
\t\tiifname "br-lan" jump forward_lan
\t\tiifname "br-iot" jump forward_iot
\t}}
\tchain forward_lan {{
\t\toifname "wan" accept
\t\tdrop
\t}}
\tchain forward_iot {{
\t\treject
\t}}
}}
"""


def load_fw4(lab: Lab) -> None:
    proc = subprocess.run(["ip", "netns", "exec", lab.ns_router, "nft", "-f", "-"], input=FW4, text=True,
                          capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr


def ping(lab: Lab, ns: str, addr: str) -> bool:
    return lab.run(ns, "ping", "-c1", "-W1", addr, check=False).returncode == 0


def scenario(lab: Lab, ms_ns: str, audio_ns: str, plain_ns: str, phone_ns: str, ms_ip: str) -> list[object]:
    return [
        try_connect(lab, ms_ns, "203.0.113.7:22"),  # opened by the earlier DNS answer
        try_connect(lab, ms_ns, "203.0.113.80:80"),  # never resolved: fw4's iot zone drops it
        try_connect(lab, phone_ns, f"{ms_ip}:443", f"{ms_ip}:8080"),  # pinhole, and not
        ping(lab, audio_ns, "192.168.20.1"),  # the Audioserver's gateway ping
        ping(lab, plain_ns, "192.168.20.1"),  # anyone else: fw4's input policy
    ]


def test_allowances_survive_fw4_reload_and_restart(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    audio = lab.add_host("audio", "iot", 11, mac="50:4f:94:a0:00:02")
    plain = lab.add_host("plain", "iot", 12)
    phone = lab.add_host("phone", "lan", 20)
    listen(lab, "203.0.113.7", 22)
    listen(lab, "203.0.113.80", 80)
    serve = lab.popen(ms.ns, [sys.executable, "-m", "tests.lab.peer", "listen-tcp", ms.ip, "443", "8080"],
                      stdout=subprocess.PIPE)
    assert serve.stdout is not None and serve.stdout.readline().strip() == b"ready"
    load_fw4(lab)
    devices = (f"\nconfig device 'ms'\n\toption type 'miniserver'\n\toption mac '{ms.mac}'\n\toption ip '{ms.ip}'\n"
               f"\nconfig device 'audio'\n\toption type 'audioserver'\n\toption mac '{audio.mac}'\n"
               f"\toption ip '{audio.ip}'\n")
    config = LAB_CONFIG.replace("option firewall 'standalone'", "option firewall 'fw4'")
    gw = Loxgw(lab, config_text=config.format(socket="{socket}", main_extra="", extra=devices)).start()
    assert gw.status()["firewall"] == "fw4"
    assert resolve_and_connect(lab, ms.ns, "a7.remcov3.loxonecloud.com", 22) == "open"
    expected = [["open"], ["blocked"], ["open", "blocked"], True, False]
    assert scenario(lab, ms.ns, audio.ns, plain.ns, phone.ns, ms.ip) == expected

    # fw4 reload: its table is flushed and re-filled from its template and the includes.
    lab.run(lab.ns_router, "nft", "flush", "table", "inet", "fw4")
    lab.run(lab.ns_router, "nft", "delete", "table", "inet", "fw4")
    load_fw4(lab)
    assert scenario(lab, ms.ns, audio.ns, plain.ns, phone.ns, ms.ip) == expected

    # fw4 restart: fw4's table goes away and is created again; loxgw's is never touched.
    lab.run(lab.ns_router, "nft", "delete", "table", "inet", "fw4")
    assert try_connect(lab, ms.ns, "203.0.113.80:80") == ["open"]  # no fw4 at all: everything flows
    load_fw4(lab)
    assert scenario(lab, ms.ns, audio.ns, plain.ns, phone.ns, ms.ip) == expected
    assert gw.status()["counters"].get("restores", 0) == 0

    # fw4 flush (and /etc/init.d/firewall stop) deletes every table, loxgw's included; loxgw
    # rebuilds its table, pinholes and DNS entries, and fw4 start brings its own back.
    lab.run(lab.ns_router, "nft", "flush", "ruleset")
    wait_for(lambda: gw.status()["counters"].get("restores", 0) == 1, 5, "loxgw's table rebuilt")
    load_fw4(lab)
    assert scenario(lab, ms.ns, audio.ns, plain.ns, phone.ns, ms.ip) == expected


def test_discovery_broadcasts_reach_the_relay_through_a_locked_iot_input(lab: Lab) -> None:
    """fw4's iot input rejects all but DHCP and DNS; loxgw lets its relay's broadcasts in, nothing else."""
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    phone = lab.add_host("phone", "lan", 20)
    load_fw4(lab)
    config = LAB_CONFIG.replace("option firewall 'standalone'", "option firewall 'fw4'")
    # The Python path: its sockets need the input rule this test is about (kernel copies do not).
    relay = "\nconfig relay\n\tlist zone 'iot'\n\tlist zone 'lan'\n\toption kernel 'off'\n"
    Loxgw(lab, config_text=config.format(socket="{socket}", main_extra="", extra=relay)).start()
    listener = listen_udp(lab, phone.ns, 7070, 3, settle=0.5)
    lab.run(ms.ns, sys.executable, "-c", SEND, "192.168.20.255", "7070", "01")
    assert [line.split(" ")[1] for line in received(listener)] == ["01"]
