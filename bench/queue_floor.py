"""What an NFQUEUE round trip alone costs a DNS answer: the floor under any answer-holding design.

Run as root: `.venv/bin/python -m bench.queue_floor [N]`. The lab and the side-by-side resolvers
of bench.dns_latency, without loxgw: catalogue answers of the router's dnsmasq are queued to a
consumer that accepts each packet at once (asyncio reader, as loxgw's queue handling was), with
no inspection and no insert. Prints the added latency per row, as bench.dns_latency does.
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.dns_latency import interleaved, print_latency, start_resolvers
from tests.lab.netlab import Lab

CONSUMER = r"""
import asyncio
from netfilterqueue import NetfilterQueue
nfq = NetfilterQueue()
nfq.bind(7053, lambda pkt: pkt.accept(), max_len=4096, range=4300)
loop = asyncio.new_event_loop()
loop.add_reader(nfq.get_fd(), lambda: nfq.run(block=False))
print("ready", flush=True)
loop.run_forever()
"""


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with Lab() as lab:
        ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
        start_resolvers(lab)
        lab.run(lab.ns_router, "iptables-nft", "-t", "mangle", "-A", "OUTPUT", "-o", "br-iot", "-p", "udp",
                "--sport", "53", "-m", "string", "--algo", "bm", "--hex-string", "|0b6c6f786f6e65636c6f7564|",
                "-j", "NFQUEUE", "--queue-num", "7053", "--queue-bypass")
        consumer = lab.popen(lab.ns_router, [sys.executable, "-c", CONSUMER], stdout=subprocess.PIPE)
        assert consumer.stdout is not None and consumer.stdout.readline().strip() == b"ready"
        time.sleep(0.2)
        interleaved(lab, ms.ns, 50)
        latency, lost = interleaved(lab, ms.ns, n)
    print(f"## Queue floor: {n} queries per row, all rows taking turns (µs); "
          "'loxgw inline' is here a consumer that only accepts\n")
    print_latency(latency, lost)
    return 0


if __name__ == "__main__":
    sys.exit(main())
