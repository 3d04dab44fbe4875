"""Adapter: get DNS packets into NFQUEUE, natively (nft `queue`) or through iptables-nft.

OpenWrt has the nft queue expression (kmod-nft-queue); kernels without it
still have the xtables NFQUEUE target, reachable through iptables-nft. The
mode is chosen at start by asking the kernel (`nft -c` of a queue rule).

The xtables rules are written with one `iptables-nft-restore --noflush` per
family (atomic: one nftables transaction) and read back with one
`iptables-nft-save -t mangle` per family, never a process per rule (with the
lab config, a process per rule was 100 `iptables-nft` runs at start-up and 24
at stop).
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from loxgw.core.config import DnsMode
from loxgw.core.dnsrules import QueueRule
from loxgw.core.errors import KernelError
from loxgw.core.firewall import QueueMode
from loxgw.edges import nft

XT_CHAIN = {"input": "LOXGW_DNS_IN", "output": "LOXGW_DNS_OUT", "forward": "LOXGW_DNS_FWD"}
XT_HOOK = {"input": "INPUT", "output": "OUTPUT", "forward": "FORWARD"}
CHAINS = tuple(XT_CHAIN.values())
FAMILIES = (4, 6)
PROBE = (
    "table inet loxgw_probe {\n"
    "\tchain c {\n\t\ttype filter hook output priority 0; policy accept;\n"
    "\t\tudp sport 1 queue num 1 bypass\n\t}\n}\n"
)

# Runs one command with `input` on stdin (the restore script, or "" for save).
Runner = Callable[[Sequence[str], str], subprocess.CompletedProcess[str]]

# One rule as iptables holds it: its option groups, sorted (see canonical()).
Rule = tuple[tuple[str, ...], ...]


def run_tool(argv: Sequence[str], data: str) -> subprocess.CompletedProcess[str]:
    """Run one iptables tool; the default Runner."""
    return subprocess.run(list(argv), input=data, capture_output=True, text=True, check=False)


def native_queue_supported() -> bool:
    """Whether the kernel has the nft queue expression (checked without changing anything)."""
    try:
        nft.run_script(PROBE, check_only=True)
        return True
    except KernelError:
        return False


@dataclass(frozen=True)
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


def choose_mode(dns_mode: DnsMode) -> QueueMode:
    """inline: native queue, else iptables-nft NFQUEUE, else passive (can race)."""
    if dns_mode != "inline":
        return dns_mode
    if native_queue_supported():
        return "nft"
    if xtables_tools(4) is not None:
        return "xtables"
    return "passive"


# --- what iptables holds, in a form both sides can be compared in ------------------


def _string_bytes(value: str, hex_string: bool) -> bytes:
    """The pattern of `--string` or `--hex-string` (`|0b6c6f78|`, or text with |..| hex runs)."""
    if not hex_string:
        return value.encode()
    out = b""
    for index, part in enumerate(value.split("|")):
        out += bytes.fromhex(part) if index % 2 else part.encode()
    return out


def _groups(args: Sequence[str]) -> list[list[str]]:
    """Options with their values: ["-p", "udp"], ["--icase"], ["!-s", "10.0.0.1"]."""
    groups: list[list[str]] = []
    negate = False
    for token in args:
        if token == "!":
            negate = True
        elif token.startswith("-") and len(token) > 1 and not token[1].isdigit():
            groups.append([("!" if negate else "") + token])
            negate = False
        elif groups:
            groups[-1].append(token)
        else:
            groups.append(["", token])
    return groups


def _normal(group: list[str]) -> tuple[str, ...]:
    option, values = group[0], group[1:]
    bare = option.lstrip("!")
    if bare in ("-s", "-d") and len(values) == 1:
        try:
            return (option, str(ipaddress.ip_network(values[0], strict=False)))
        except ValueError:
            return (option, *values)
    if bare in ("--string", "--hex-string") and len(values) == 1:
        try:
            return ("!--string" if option.startswith("!") else "--string",
                    _string_bytes(values[0], bare == "--hex-string").hex())
        except ValueError:
            return (option, *values)
    if bare == "-p":
        return (option, *(v.lower() for v in values))
    return (option, *values)


def _one(args: Sequence[str]) -> Rule:
    groups = [_normal(g) for g in _groups(args)]
    protocol = next((g[1] for g in groups if g[0] == "-p" and len(g) == 2), None)
    # iptables-save names the protocol's own match (`-p udp -m udp --dport 53`) where the rule
    # was written without it; which module a port option belongs to is no difference.
    groups = [g for g in groups if g != ("-m", protocol)]
    return tuple(sorted(groups))


def canonical(args: Sequence[str]) -> tuple[Rule, ...]:
    """The rules iptables makes of `args`, each in a form independent of spelling and option order.

    iptables makes one rule per (source, destination) pair of comma lists,
    and iptables-save prints options in its own order (addresses first, its
    own order within a match and a target), masks on host addresses
    (`9.9.9.9/32`), compressed IPv6, `--string "x"` for a printable
    `--hex-string`. Sorting the option groups makes the comparison blind to
    order only; every option and value still has to match.
    """
    args = list(args)
    lists: dict[int, list[str]] = {}
    for index, token in enumerate(args[:-1]):
        if token in ("-s", "-d") and "," in args[index + 1]:
            lists[index + 1] = args[index + 1].split(",")
    if not lists:
        return (_one(args),)
    positions = sorted(lists)
    rules = []
    for combination in itertools.product(*(lists[p] for p in positions)):
        expanded = list(args)
        for position, value in zip(positions, combination, strict=True):
            expanded[position] = value
        rules.append(_one(expanded))
    return tuple(rules)


def _target(args: Sequence[str]) -> str | None:
    for index, token in enumerate(args[:-1]):
        if token in ("-j", "-g", "--jump", "--goto"):
            return args[index + 1]
    return None


@dataclass(frozen=True)
class Mangle:
    """loxgw's part of one family's mangle table: its chains' rules and every jump into them."""

    chains: Mapping[str, tuple[Rule, ...]]  # the LOXGW_DNS_* chains that exist, with their rules
    jumps: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (chain, rule arguments) of rules that jump into them

    def matches(self, other: Mangle) -> bool:
        """The same chains with the same rules in the same order, and the same jumps (in any order)."""
        return dict(self.chains) == dict(other.chains) and self._jump_rules() == other._jump_rules()

    def _jump_rules(self) -> list[tuple[str, tuple[Rule, ...]]]:
        return sorted((chain, canonical(args)) for chain, args in self.jumps)


NOTHING = Mangle({})


def parse_save(text: str) -> Mangle:
    """loxgw's chains and the jumps into them, from `iptables-nft-save -t mangle` output."""
    chains: dict[str, list[Rule]] = {}
    jumps: list[tuple[str, tuple[str, ...]]] = []
    in_mangle = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            in_mangle = line == "*mangle"
        elif line == "COMMIT":
            in_mangle = False
        elif in_mangle and line.startswith(":"):
            name = line[1:].split(maxsplit=1)[0]
            if name in CHAINS:
                chains.setdefault(name, [])
        elif in_mangle and line.startswith("-A "):
            try:
                tokens = shlex.split(line)
            except ValueError:  # quoting iptables-save never prints: nothing loxgw wrote
                tokens = line.split()
            chain, args = tokens[1], tokens[2:]
            if chain in CHAINS:
                chains.setdefault(chain, []).extend(canonical(args))
            elif _target(args) in CHAINS:
                jumps.append((chain, tuple(args)))
    return Mangle({name: tuple(rules) for name, rules in chains.items()}, tuple(jumps))


# --- what loxgw writes --------------------------------------------------------------


def chain_args(rules: Sequence[QueueRule], hold: Sequence[str] | None, family: int) -> dict[str, list[list[str]]]:
    """Each loxgw chain's rules for `family`, as iptables arguments after the chain name, in order."""
    out: dict[str, list[list[str]]] = {chain: [] for chain in CHAINS}
    if hold is not None:
        out[XT_CHAIN["forward"]].append(list(hold))
    for rule in rules:
        if rule.family not in (None, family):
            continue
        for interface in rule.interfaces:
            out[XT_CHAIN[rule.hook]] += rule.xtables(interface)
    return out


def expected(args: Mapping[str, list[list[str]]]) -> Mangle:
    """What the kernel holds once `args` are installed: the chains, and one plain jump per hook."""
    chains = {chain: tuple(rule for a in args[chain] for rule in canonical(a)) for chain in CHAINS}
    return Mangle(chains, tuple((XT_HOOK[hook], ("-j", chain)) for hook, chain in XT_CHAIN.items()))


def _line(*tokens: str) -> str:
    """One restore line; a token with blanks or quotes goes in double quotes (the restore parser's rule)."""
    out = []
    for token in tokens:
        if "\n" in token or "\r" in token:
            raise ValueError(f"newline in an iptables argument: {token!r}")
        if not token or any(c in token for c in " \t\"'\\#"):
            token = '"' + token.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out.append(token)
    return " ".join(out)


def restore_script(args: Mapping[str, list[list[str]]], known: Mangle | None) -> str:
    """The `iptables-nft-restore --noflush` input that installs `args`, in one transaction.

    `known` is what the table holds now. None means "nothing of loxgw's, as
    far as we know": the chains are created with -N, which fails (and the
    whole transaction with it) if one exists, so a leftover of an earlier run
    is never doubled. Otherwise each chain is declared (created, or emptied:
    --noflush empties a declared user chain) and every jump the table holds
    is deleted by its own spelling, so exactly one jump per hook is left, at
    the top.
    """
    lines = ["*mangle"]
    if known is None:
        lines += [_line("-N", chain) for chain in CHAINS]
    else:
        lines += [f":{chain} - [0:0]" for chain in CHAINS]
        lines += [_line("-D", chain, *rule) for chain, rule in known.jumps]
    lines += [_line("-A", chain, *rule) for chain in CHAINS for rule in args[chain]]
    lines += [_line("-I", XT_HOOK[hook], "1", "-j", chain) for hook, chain in XT_CHAIN.items()]
    return "\n".join([*lines, "COMMIT", ""])


def removal_script(known: Mangle) -> str | None:
    """The restore input that removes every jump into loxgw's chains and the chains; None if nothing is there."""
    if not known.chains and not known.jumps:
        return None
    lines = ["*mangle"]
    lines += [_line("-D", chain, *rule) for chain, rule in known.jumps]
    lines += [_line("-F", chain) for chain in known.chains]  # a chain with rules cannot be deleted
    lines += [_line("-X", chain) for chain in known.chains]
    return "\n".join([*lines, "COMMIT", ""])


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
