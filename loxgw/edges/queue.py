"""Adapter: get DNS packets into NFQUEUE, natively (nft `queue`) or through iptables-nft.

OpenWrt has the nft queue expression (kmod-nft-queue); kernels without it
still have the xtables NFQUEUE target, reachable through iptables-nft. The
mode is chosen at start by asking the kernel: a queue rule checked as `nft -c`
checks it, over netlink (an `nft -c` run was one of the start's processes).

The xtables rules are written with one `iptables-nft-restore --noflush` per
family (atomic: one nftables transaction) and read back with one
`iptables-nft-save -t mangle` per family, never a process per rule (with the
lab config, a process per rule was 100 `iptables-nft` runs at start-up and 24
at stop).
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator, Sequence

from loxgw.core.config import DnsMode
from loxgw.core.dnsrules import QueueRule
from loxgw.core.errors import KernelError
from loxgw.core.firewall import QueueMode
from loxgw.core.record import record
from loxgw.core.xtables import NOTHING, Mangle, chain_args, expected, parse_save, removal_script, restore_script
from loxgw.edges import nft
from loxgw.edges.threads import in_thread

FAMILIES = (4, 6)
PROBE_TABLE = "loxgw_probe"
NFTA_QUEUE_NUM, NFTA_QUEUE_TOTAL, NFTA_QUEUE_FLAGS = 1, 2, 3
NFT_QUEUE_FLAG_BYPASS = 0x01
NLM_F_APPEND = 0x800

# Runs one command with `input` on stdin (the restore script, or "" for save).
Runner = Callable[[Sequence[str], str], subprocess.CompletedProcess[str]]


def run_tool(argv: Sequence[str], data: str) -> subprocess.CompletedProcess[str]:
    """Run one iptables tool; the default Runner."""
    return subprocess.run(list(argv), input=data, capture_output=True, text=True, check=False)


def queue_expression() -> bytes:
    """`queue num 1 bypass` as an NFTA_LIST_ELEM: the bytes nft sends for it."""
    queue = (nft.attr(NFTA_QUEUE_NUM, struct.pack(">H", 1)) + nft.attr(NFTA_QUEUE_TOTAL, struct.pack(">H", 1))
             + nft.attr(NFTA_QUEUE_FLAGS, struct.pack(">H", NFT_QUEUE_FLAG_BYPASS)))
    expression = nft.attr(nft.NFTA_EXPR_NAME, b"queue\0") + nft.attr(nft.NFTA_EXPR_DATA, queue, nested=True)
    return nft.attr(nft.NFTA_LIST_ELEM, expression, nested=True)


def rule_check(expressions: bytes) -> list[tuple[int, int, bytes]]:
    """`table inet loxgw_probe { chain c { EXPRESSIONS } }` as nf_tables messages, to be checked, never applied.

    A regular chain: what is asked is whether the kernel has an expression (kmod-nft-queue), and
    an expression's hook checks run only where a base chain reaches it.
    """
    name = PROBE_TABLE.encode() + b"\0"
    return [
        (nft.NFT_MSG_NEWTABLE, 0, nft.attr(nft.NFTA_TABLE_NAME, name)),
        (nft.NFT_MSG_NEWCHAIN, nft.NLM_F_CREATE, nft.attr(nft.NFTA_CHAIN_TABLE, name)
         + nft.attr(nft.NFTA_CHAIN_NAME, b"c\0")),
        (nft.NFT_MSG_NEWRULE, nft.NLM_F_CREATE | NLM_F_APPEND, nft.attr(nft.NFTA_RULE_TABLE, name)
         + nft.attr(nft.NFTA_RULE_CHAIN, b"c\0") + nft.attr(nft.NFTA_RULE_EXPRESSIONS, expressions, nested=True)),
    ]


def native_queue_supported() -> bool:
    """Whether the kernel has the nft queue expression (checked without changing anything)."""
    try:
        with nft.NetfilterRequests() as requests:
            requests.transact(rule_check(queue_expression()), "checking the nft queue expression", check_only=True)
        return True
    except KernelError:
        return False


@record
class Tools:
    """The restore and save commands of one family."""

    restore: str
    save: str


def xtables_tools(family: int) -> Tools | None:
    """iptables-nft-restore/-save (else iptables-restore/-save) for `family`, or None if not installed."""
    prefix = "iptables" if family == 4 else "ip6tables"
    for variant in ("-nft", ""):
        restore = shutil.which(f"{prefix}{variant}-restore")
        save = shutil.which(f"{prefix}{variant}-save")
        if restore and save:
            return Tools(restore, save)
    return None


def changes_notified(tools: Tools) -> bool:
    """Whether these tools write through nftables (iptables-nft, xtables-nft-multi), whose changes come as
    nftables notifications; the legacy ones' changes come as none."""
    return "nft" in os.path.basename(os.path.realpath(tools.restore))


_early_checks: list[concurrent.futures.Future[bool]] = []


def check_native_queue_early() -> None:
    """Start native_queue_supported() in a thread now; the next choose_mode() takes its answer.

    The check waits on the kernel, not the CPU: where nft_queue is not built in, the kernel asks
    modprobe for it first (7-22 ms here, for 1 ms of CPU). `loxgw run` starts it before its own
    imports, which then run meanwhile.
    """
    if not _early_checks:
        _early_checks.append(in_thread(native_queue_supported, "loxgw-queue-check"))


def choose_mode(dns_mode: DnsMode) -> QueueMode:
    """inline: native queue, else iptables-nft NFQUEUE, else passive (can race)."""
    if dns_mode != "inline":
        return dns_mode
    if _early_checks.pop().result() if _early_checks else native_queue_supported():
        return "nft"
    if xtables_tools(4) is not None:
        return "xtables"
    return "passive"


class XtablesQueue:
    """Owns chains LOXGW_DNS_* in the mangle table (IPv4 and IPv6) and the jumps to them.

    A write assumes the table is as the last read or write left it: one
    restore per family. Only if the kernel refuses it (a leftover of an
    earlier run, a change since) is the table read (one save) and written
    again. `run` and `tools` are injectable (tests count the processes, or
    run them in another namespace).
    """

    def __init__(self, run: Runner | None = None,
                 tools: Callable[[int], Tools | None] = xtables_tools) -> None:
        self._run = run or run_tool
        self._tools = tools
        self._installed: tuple[tuple[QueueRule, ...], tuple[str, ...] | None] | None = None
        self._expected: dict[int, Mangle] = {}
        self._known: dict[int, Mangle] = {}  # per family: what the last read or write left
        self._intact: bool | None = None  # the last present()'s answer; None after a write
        self._notified: bool | None = None

    def notified(self) -> bool:
        """Whether a change to these rules comes as an nftables notification (changes_notified)."""
        if self._notified is None:  # the tools stay what they are while loxgw runs: looked up once
            self._notified = all(changes_notified(tools) for _, tools in self._families())
        return self._notified

    def _families(self) -> Iterator[tuple[int, Tools]]:
        for family in FAMILIES:
            tools = self._tools(family)
            if tools is not None:
                yield family, tools

    def install(self, rules: list[QueueRule], hold: list[str] | None = None) -> None:
        """Replace loxgw's queue rules with `rules`, plus the hold queue rule (FORWARD) if given (idempotent).

        Skipped when the same rules are installed and present() finds all of
        them: most applies change only pinholes. Otherwise one restore per
        family; right after a present() that said False, its read is used
        as is.
        """
        wanted = (tuple(rules), tuple(hold) if hold is not None else None)
        # present() also reads the table, which the write needs to delete the jumps it holds.
        if self._installed is not None and self._intact is not False and self.present() \
                and wanted == self._installed:
            return
        fresh = self._installed is None
        self._installed = None
        self._intact = None
        for family, tools in self._families():
            args = chain_args(rules, hold, family)
            known = None if fresh else self._known.get(family)
            self._write(family, tools, restore_script(args, known), functools.partial(restore_script, args))
            self._expected[family] = self._known[family] = expected(args)
        self._installed = wanted

    def _write(self, family: int, tools: Tools, script: str, again: Callable[[Mangle], str | None]) -> None:
        """Run `script`; if refused (the kernel holds something else), read the table and run `again`'s script."""
        proc = self._run([tools.restore, "--noflush"], script)
        if proc.returncode == 0:
            return
        retry = again(self._read(family, tools))
        if retry is None:
            return
        proc = self._run([tools.restore, "--noflush"], retry)
        if proc.returncode != 0:
            raise KernelError(f"{os.path.basename(tools.restore)} --noflush", None, proc.stderr.strip())

    def _read(self, family: int, tools: Tools) -> Mangle:
        proc = self._run([tools.save, "-t", "mangle"], "")
        if proc.returncode != 0:
            raise KernelError(f"{os.path.basename(tools.save)} -t mangle", None, proc.stderr.strip())
        self._known[family] = parse_save(proc.stdout)
        return self._known[family]

    def remove(self) -> None:
        """Remove every loxgw chain and every jump into them; quiet where already gone.

        Never raises: it runs on the way out, before loxgw's nft table is
        removed. What could not be removed is adopted by the next install
        (its -N fails, it reads the table and writes over it).
        """
        self._installed = None
        self._intact = None
        self._expected.clear()
        for family, tools in self._families():
            known = self._known.get(family)
            try:
                if known is None:
                    known = self._read(family, tools)
                script = removal_script(known)
                if script is not None:
                    self._write(family, tools, script, removal_script)
                self._known[family] = NOTHING
            except KernelError:
                self._known.pop(family, None)

    def present(self) -> bool:
        """Whether every jump and every rule of every loxgw chain, both families, is as installed.

        One save per family. A jump's position is not checked: mwan3 and
        others insert their own hooks at the top of mangle, and two tools
        that each want to be first would rewrite the table in turn forever.
        """
        if self._installed is None:  # nothing to compare with; install() writes without a read
            self._intact = False
            return False
        intact = True
        for family, tools in self._families():
            try:
                found = self._read(family, tools)
            except KernelError:
                intact = False
                continue
            wanted = self._expected.get(family)
            intact = intact and wanted is not None and found.matches(wanted)  # no early exit: install() needs each read
        self._intact = intact
        return intact
