"""The iptables-nft DNS queue rules as data: what loxgw writes (a restore script) and what it reads back.

Pure: `iptables-nft-save -t mangle` text becomes a Mangle (loxgw's LOXGW_DNS_*
chains and the jumps to them, each rule in a canonical form), which compares
with what loxgw's rules should give; the restore script rewrites the chains
in one transaction. edges.queue runs the tools.
"""

from __future__ import annotations

import ipaddress
import itertools
import shlex
from collections.abc import Mapping, Sequence

from loxgw.core.dnsrules import QueueRule
from loxgw.core.record import record

XT_CHAIN = {"input": "LOXGW_DNS_IN", "output": "LOXGW_DNS_OUT", "forward": "LOXGW_DNS_FWD"}
XT_HOOK = {"input": "INPUT", "output": "OUTPUT", "forward": "FORWARD"}
CHAINS = tuple(XT_CHAIN.values())

# One rule as iptables holds it: its option groups, sorted (see canonical()).
Rule = tuple[tuple[str, ...], ...]


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


@record
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
        if rule.family not in (None, family) or rule.held_up_to_a_rate not in (None, family):
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
