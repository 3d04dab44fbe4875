"""Adapter: the system facts `loxgw doctor` needs, read without changing anything.

fw4's and loxgw's chains (`nft list chain`), kernel features (`nft -c` of a
probe rule, /proc/net/ip_tables_matches, the module lists), interface state
(/sys/class/net), the networks on the zones' interfaces (rtnetlink), and the
resolver's rebind setting: `uci` on OpenWrt, elsewhere the command line and
configuration files of the dnsmasq processes in this network namespace.
Nothing here judges; core.doctor does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable

from loxgw.core.config import IPNetwork
from loxgw.core.doctor import Rebind, domain_covered, rebind_from_options, split_domains
from loxgw.core.errors import KernelError
from loxgw.edges import nft, rtnl

IFF_UP = 0x1
MAX_CONF_BYTES = 1 << 20  # a dnsmasq configuration file read at most this far
MAX_CONF_FILES = 64  # files read per dnsmasq process (conf-dir can name many)
MAX_CONF_DEPTH = 4
NFLOG_PROBE = ("table inet loxgw_probe {\n\tchain c {\n\t\ttype filter hook output priority 0; policy accept;\n"
               "\t\tudp sport 1 log group 1\n\t}\n}\n")
# dnsmasq options that take a value as the next argument when not written `--opt=value`.
DNSMASQ_VALUED = frozenset({"conf-file", "conf-dir", "rebind-domain-ok", "C", "7"})


def nft_chain(table: str, chain: str, family: str = "inet") -> str | None:
    """`nft list chain FAMILY TABLE CHAIN`, or None if it does not exist (or nft is missing)."""
    try:
        binary = nft.nft_binary()
    except KernelError:
        return None
    proc = subprocess.run([binary, "list", "chain", family, table, chain], capture_output=True, text=True,
                          timeout=10, check=False)
    return proc.stdout if proc.returncode == 0 else None


def _accepts(script: str) -> bool | None:
    try:
        nft.nft_binary()
    except KernelError:
        return None
    try:
        nft.run_script(script, check_only=True)
        return True
    except KernelError:
        return False


def kernel_features() -> dict[str, bool | None]:
    """nft_queue and nflog (nft -c of a probe rule), xt_string and xt_hashlimit (loaded, built in or
    loadable); None: unknown."""
    from loxgw.edges import queue

    return {"nft_queue": queue.native_queue_supported(), "nflog": _accepts(NFLOG_PROBE),
            "xt_string": xt_match_available("string"), "xt_hashlimit": xt_match_available("hashlimit")}


def xt_match_available(match: str, matches: str = "/proc/net/ip_tables_matches",
                       modules: str | None = None) -> bool | None:
    """Whether the kernel has the xtables match `match`: loaded, built in, or a module it can load
    (listed in modules.dep, or, as OpenWrt installs them without one, its file in the modules
    directory); None when none of that could be read."""
    found = None
    try:
        with open(matches, encoding="ascii") as handle:
            if match in handle.read().split():
                return True
        found = False
    except OSError:
        pass
    modules = modules or f"/lib/modules/{os.uname().release}"
    if os.path.exists(os.path.join(modules, f"xt_{match}.ko")):
        return True
    for listing in ("modules.builtin", "modules.dep"):
        try:
            with open(os.path.join(modules, listing), encoding="utf-8", errors="replace") as handle:
                if f"/xt_{match}.ko" in handle.read():
                    return True
            found = False
        except OSError:
            continue
    return found


def interface_state(name: str) -> str:
    """"up", "down" (administratively), "no carrier", or "missing"."""
    base = os.path.join("/sys/class/net", os.path.basename(name))
    try:
        with open(os.path.join(base, "flags"), encoding="ascii") as handle:
            flags = int(handle.read().strip(), 16)
    except (OSError, ValueError):
        return "missing"
    if not flags & IFF_UP:
        return "down"
    try:
        with open(os.path.join(base, "carrier"), encoding="ascii") as handle:
            return "up" if handle.read().strip() == "1" else "no carrier"
    except OSError:
        return "no carrier"


def interface_networks(names: Iterable[str]) -> dict[str, tuple[IPNetwork, ...]]:
    """The networks of the addresses on each named interface (IPv4 and IPv6, link-local left out)."""
    wanted = set(names)
    found: dict[str, list[IPNetwork]] = {}
    index = {link.index: link.name for link in rtnl.links()}
    for addr in rtnl.addresses():
        name = index.get(addr.index)
        if name is None or name not in wanted:
            continue
        network = addr.interface().network
        if not network.is_link_local:
            found.setdefault(name, []).append(network)
    return {name: tuple(networks) for name, networks in found.items()}


# --- the resolver's rebind protection ---------------------------------------------------


def rebind_facts() -> Rebind:
    """OpenWrt: dhcp.@dnsmasq[0] in UCI. Elsewhere: the dnsmasq processes of this network namespace."""
    uci = shutil.which("uci")
    if os.path.exists("/etc/openwrt_release") and uci is not None:
        setting = _uci(uci, "dhcp.@dnsmasq[0].rebind_protection")
        listed = _uci(uci, "dhcp.@dnsmasq[0].rebind_domain") or ""
        return Rebind("openwrt", setting != "0", tuple(d for v in listed.split() for d in split_domains(v)),
                      "uci dhcp.@dnsmasq[0]")
    found = []
    for pid, argv in dnsmasq_processes():
        protection, domains = rebind_from_options(dnsmasq_options(argv))
        found.append(Rebind("dnsmasq", protection, domains, f"dnsmasq pid {pid}"))
    # Several instances: the one that would drop the App's names speaks for all.
    found.sort(key=lambda r: (not (r.protection and not domain_covered(r.domains)), not r.protection))
    return found[0] if found else Rebind("none")


def _uci(binary: str, key: str) -> str | None:
    proc = subprocess.run([binary, "-q", "get", key], capture_output=True, text=True, timeout=10, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def dnsmasq_processes() -> list[tuple[int, list[str]]]:
    """(pid, argv) of the dnsmasq processes in this network namespace (other namespaces' are not ours)."""
    try:
        own = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read(65536).decode("utf-8", "replace").split("\0")
            if os.path.basename(argv[0]) != "dnsmasq" or os.stat(f"/proc/{entry}/ns/net").st_ino != own:
                continue
        except OSError:
            continue
        found.append((int(entry), [a for a in argv[1:] if a]))
    return sorted(found)


def dnsmasq_options(argv: list[str]) -> list[str]:
    """Every option of a dnsmasq command line and the configuration files it reads, as `name[=value]`."""
    options: list[str] = []
    args = iter(argv)
    for arg in args:
        if not arg.startswith("-"):
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        if arg.startswith("-C") and len(arg) > 2 and not arg.startswith("--"):
            name, eq, value = "C", "=", arg[2:]
        if not eq and name in DNSMASQ_VALUED:
            value = next(args, "")
        options.append(f"{'conf-file' if name == 'C' else 'conf-dir' if name == '7' else name}={value}"
                       if eq or name in DNSMASQ_VALUED else name)
    files = [o.partition("=")[2] for o in options if o.startswith("conf-file=")]
    directories = [o.partition("=")[2] for o in options if o.startswith("conf-dir=")]
    budget = [MAX_CONF_FILES]
    for path in files or ["/etc/dnsmasq.conf"]:
        options += _conf_file(path, 0, budget)
    for directory in directories:
        options += _conf_dir(directory, 0, budget)
    return options


def _conf_file(path: str, depth: int, budget: list[int]) -> list[str]:
    if depth > MAX_CONF_DEPTH or budget[0] <= 0:
        return []
    budget[0] -= 1
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(MAX_CONF_BYTES)
    except OSError:
        return []
    options: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        options.append(line)
        key, _, value = line.partition("=")
        if key.strip() == "conf-file":
            options += _conf_file(value.strip(), depth + 1, budget)
        elif key.strip() == "conf-dir":
            options += _conf_dir(value.strip(), depth + 1, budget)
    return options


def _conf_dir(spec: str, depth: int, budget: list[int]) -> list[str]:
    """`conf-dir=DIR[,.ext...][,*.ext...]`: files ending in a `*` suffix only, or all but the listed suffixes."""
    directory, *suffixes = spec.split(",")
    wanted = tuple(s[1:] for s in suffixes if s.startswith("*"))
    skipped = tuple(s for s in suffixes if not s.startswith("*"))
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    options: list[str] = []
    for name in names:
        if name.startswith(".") or name.endswith("~") or (name.startswith("#") and name.endswith("#")):
            continue
        if (wanted and not name.endswith(wanted)) or (skipped and name.endswith(skipped)):
            continue
        options += _conf_file(os.path.join(directory, name), depth, budget)
    return options


def redirect_present(table: str) -> bool | None:
    """Whether loxgw's table holds its DNS redirect chain with its rule (None: nft missing)."""
    listing = nft_chain(table, "dns_redirect")
    return None if listing is None and not shutil.which("nft") else (listing is not None and "redirect" in listing)
