"""What loxgw takes on a router: flash for it and everything it pulls in beyond a stock image, and idle RSS.

`.venv/bin/python -m bench.footprint [--branch 24.10] [--json]` resolves loxgw's
DEPENDS (openwrt/net/loxgw/Makefile) through our feed's Makefiles, the packages feed's
python3 split (tests/openwrt_data/python3-stdlib.toml, the filespecs) and the library
DEPENDS below, and sizes every file each package installs, the way OpenWrt ships it: Python
sources compiled to .pyc (no .py), the rest as it is.

Three figures per package:
- raw: bytes in the files;
- squashfs: each file xz-compressed in 256 KiB blocks (preset 9e), as in an image build
  (mksquashfs -comp xz); small files share blocks there, so this is a little high;
- jffs2: each 4 KiB page zlib-compressed, as `opkg install` writes to a jffs2 overlay.

Where the files come from: the stdlib, its C extensions, libpython and the interpreter are
those of a host Python 3.11 (`--python`; by default the first python3.11 on PATH that, like
OpenWrt's, is built with --enable-shared and its extensions in lib-dynload); shared libraries
(libffi, libbz2, zlib, ...) and the compiled netfilterqueue and miniupnpc modules are the
host's too. All are x86_64 and stripped as the SDK strips them; OpenWrt builds them with -Os
for smaller CPUs, so the native figures are an upper bound. Packages of a stock image (libc,
nftables-json, ...) count zero; kernel modules are listed unmeasured.

`--rss` (root) runs the daemon in the namespace lab with a detected Miniserver and a relay,
waits IDLE seconds (30) and prints its VmRSS.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import lzma
import marshal
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.unit.openwrt.feed import LOXGW_MAKEFILE, ROOT, feed_python_packages, read_makefile, stdlib_split

SQUASHFS_BLOCK = 256 * 1024
JFFS2_PAGE = 4096
# mksquashfs -comp xz: LZMA2 at preset 9e with a dictionary the size of a block.
XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": SQUASHFS_BLOCK}]
STDLIB_PREFIX = "/usr/lib/python$(PYTHON3_VERSION)/"
HOST_LIB = Path("/usr/lib") / (sysconfig.get_config_var("MULTIARCH") or "")
# In the image OpenWrt builds by default (23.05 on): musl's libc and libpthread, nftables with
# JSON (fw4 needs it), and its libraries.
STOCK = {"libpthread", "libc", "libatomic", "nftables-json", "libnftnl", "libmnl", "jansson", "kmod-nft-core"}
KERNEL_MODULES = {"kmod-nft-queue", "kmod-nfnetlink-queue", "kmod-nfnetlink-log"}
# Library DEPENDS of the python3 packages (lang/python/python3/Makefile and
# files/python3-package-*.mk of each branch's packages feed); stdlib-to-stdlib DEPENDS come
# from python3-stdlib.toml.
NATIVE_DEPENDS = {
    "libpython3": [], "python3-base": ["libpython3"],
    "python3-light": ["python3-base", "libbz2", "zlib"], "python3-ctypes": ["libffi"],
    "python3-dbm": ["libgdbm"], "python3-lzma": ["liblzma"], "python3-ncurses": ["libncursesw"],
    "python3-openssl": ["libopenssl", "ca-certs"], "python3-readline": ["libreadline"],
    "python3-sqlite3": ["libsqlite3"], "python3-uuid": ["libuuid"], "libreadline": ["libncursesw"],
    "libnetfilter-queue": ["libnfnetlink", "libmnl"],
}
MASTER_LIGHT_EXTRA = ["libzstd"]  # master's python3-light also depends on libzstd
HOST_LIBRARIES = {
    "libffi": ["libffi.so.8"], "libbz2": ["libbz2.so.1.0"], "zlib": ["libz.so.1"], "libzstd": ["libzstd.so.1"],
    "libgdbm": ["libgdbm.so.6"], "liblzma": ["liblzma.so.5"], "libncursesw": ["libncursesw.so.6"],
    "libopenssl": ["libssl.so.3", "libcrypto.so.3"], "libreadline": ["libreadline.so.8"],
    "libsqlite3": ["libsqlite3.so.0"], "libuuid": ["libuuid.so.1"], "libnfnetlink": ["libnfnetlink.so.0"],
    "libnetfilter-queue": ["libnetfilter_queue.so.1"],
}
NOT_SHIPPED = ("test", "tests", "idle_test", "__pycache__")  # Py3Package's -|*/test, -|*/tests


@dataclass(frozen=True)
class Size:
    files: int = 0
    raw: int = 0
    squashfs: int = 0
    jffs2: int = 0

    def __add__(self, other: Size) -> Size:
        return Size(self.files + other.files, self.raw + other.raw, self.squashfs + other.squashfs,
                    self.jffs2 + other.jffs2)


def shipped_bytes(path: Path) -> bytes:
    """A file as the router holds it: a .py compiled to its .pyc (16-byte header, marshalled code), ELF stripped."""
    data = path.read_bytes()
    if data.startswith(b"\x7fELF"):
        return stripped(path, data)
    if path.suffix != ".py":
        return data
    try:
        code = compile(data, str(path), "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return data  # compileall cannot compile it (Python 2 test data): counted as the source, high
    return importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(code)


def stripped(path: Path, data: bytes) -> bytes:
    """The SDK strips every ELF file it packages (RSTRIP); a host build may carry its symbols."""
    strip = shutil.which("strip")
    if strip is None:
        return data
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / path.name
        done = subprocess.run([strip, "--strip-unneeded", "-o", str(out), str(path)], capture_output=True, check=False)
        return out.read_bytes() if done.returncode == 0 else data


def compressed(data: bytes) -> Size:
    """One file's figures: raw, xz per squashfs block, zlib per jffs2 page."""
    squashfs = sum(len(lzma.compress(data[i:i + SQUASHFS_BLOCK], format=lzma.FORMAT_RAW, filters=XZ_FILTERS))
                   for i in range(0, len(data), SQUASHFS_BLOCK))
    jffs2 = sum(min(len(zlib.compress(data[i:i + JFFS2_PAGE])), len(data[i:i + JFFS2_PAGE]))
                for i in range(0, len(data), JFFS2_PAGE))
    return Size(1, len(data), squashfs, jffs2)


@cache
def file_size(path: Path) -> Size:
    return compressed(shipped_bytes(path))


def walk(paths: Iterable[Path]) -> Iterator[Path]:
    """Files under `paths` as a package ships them: no tests, no caches, no .pyc beside its .py."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.name not in NOT_SHIPPED and not (child.suffix == ".pyc" and child.with_suffix(".py").exists()):
                    yield from walk([child])
        elif path.is_file():
            yield path


def total(paths: Iterable[Path]) -> Size:
    return sum((file_size(p) for p in walk(paths)), Size())


def stdlib_paths(stdlib: Path, specs: Iterable[str]) -> list[Path]:
    """Host files for filespec paths ('/usr/lib/python$(PYTHON3_VERSION)/x', '.../lib-dynload/_y.$(...)')."""
    found = []
    for spec in specs:
        if not spec.startswith(STDLIB_PREFIX):
            continue
        rel = spec.removeprefix(STDLIB_PREFIX)
        if ".$(PYTHON3_SO_SUFFIX)" in rel:
            found.extend(sorted(stdlib.glob(rel.replace(".$(PYTHON3_SO_SUFFIX)", ".cpython-*.so"))))
        else:
            found.extend(sorted(stdlib.glob(rel)))
    return found


def python3_light_paths(branch: str, stdlib: Path) -> list[Path]:
    """python3-base and python3-light's stdlib: all of it but light_removes and every subpackage's files."""
    split = stdlib_split()[branch]
    removed = set(stdlib_paths(stdlib, split["light_removes"]))
    for sub in split["subpackage"].values():
        removed.update(stdlib_paths(stdlib, sub["files"]))
    not_shipped = {"EXTERNALLY-MANAGED", "LICENSE.txt", "site-packages", "dist-packages", "ensurepip", "test"}

    def keep(path: Path) -> bool:
        rel = path.relative_to(stdlib)
        if rel.parts[0] in not_shipped or rel.parts[0].startswith("config-"):
            return False
        if rel.parts[0] == "lib-dynload" and ("_test" in path.name or path.name.startswith("xx")):
            return False  # python3-light's -|lib-dynload/_test*.so; xxlimited and friends are examples
        return path not in removed and not any(parent in removed for parent in path.parents)

    return [p for p in walk([stdlib]) if keep(p)]


@dataclass(frozen=True)
class Interpreter:
    """The host Python whose files stand in for OpenWrt's python3 packages."""

    executable: Path
    stdlib: Path
    libpython: Path | None  # None: linked into the executable
    version: str


QUERY = ("import json, sys, sysconfig; v = sysconfig.get_config_var; print(json.dumps([sys.executable, "
         "sysconfig.get_paths()['stdlib'], v('Py_ENABLE_SHARED') and f\"{v('LIBDIR')}/{v('INSTSONAME')}\", "
         "sys.version.split()[0]]))")


def interpreter(path: str) -> Interpreter:
    found = subprocess.run([path, "-c", QUERY], capture_output=True, text=True, check=True)
    executable, stdlib, libpython, version = json.loads(found.stdout)
    return Interpreter(Path(executable).resolve(), Path(stdlib), Path(libpython) if libpython else None, version)


def default_interpreter() -> Interpreter:
    """A python3.11 built as OpenWrt builds it (--enable-shared), else the one running this."""
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(directory) / minor
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found = interpreter(str(candidate))
            if found.libpython is not None:
                return found
    return interpreter(getattr(sys, "_base_executable", sys.executable))


class Closure:
    """Packages installed with loxgw on one branch, and the files each one brings."""

    def __init__(self, branch: str, python: Interpreter) -> None:
        self.branch = branch
        self.split = stdlib_split()[branch]
        self.ours = feed_python_packages()
        self.python = python
        self.stdlib = python.stdlib
        self.packages = self.resolve(["loxgw", *read_makefile(LOXGW_MAKEFILE).depends("loxgw")])

    def depends(self, name: str) -> list[str]:
        subpackages = self.split["subpackage"]
        if name == "python3-light" and self.branch == "master":
            return [*NATIVE_DEPENDS[name], *MASTER_LIGHT_EXTRA]
        if name in subpackages:
            return ["python3-light", *subpackages[name]["depends"], *NATIVE_DEPENDS.get(name, [])]
        if name in self.ours:
            return self.ours[name]
        return NATIVE_DEPENDS.get(name, [])

    def resolve(self, roots: list[str]) -> list[str]:
        seen: list[str] = []
        todo = list(roots)
        while todo:
            name = todo.pop(0)
            if name not in seen:
                seen.append(name)
                todo.extend(d for d in (self.depends(name) if name != "loxgw" else []) if d not in seen)
        return seen

    def files(self, name: str) -> tuple[list[Path], str]:
        """The files of one package, and where their sizes come from."""
        subpackages = self.split["subpackage"]
        if name == "loxgw":
            return [ROOT / "loxgw", LOXGW_MAKEFILE.parent / "files"], "this repository"
        if name == "libpython3":
            if self.python.libpython is None:
                return [self.python.executable], f"host Python {self.python.version}, linked into the interpreter"
            return [self.python.libpython], f"host Python {self.python.version}"
        if name == "python3-base":
            if self.python.libpython is None:
                return [], "in libpython3's figure"
            return [self.python.executable], f"host Python {self.python.version}"
        if name == "python3-light":
            return python3_light_paths(self.branch, self.stdlib), "host stdlib"
        if name in subpackages:
            return stdlib_paths(self.stdlib, subpackages[name]["files"]), "host stdlib"
        if name in ("python3-netfilterqueue", "python3-miniupnpc"):
            return host_module(name.removeprefix("python3-")), "host build"
        if name in HOST_LIBRARIES:
            return [HOST_LIB / lib for lib in HOST_LIBRARIES[name]], "host library"
        if name == "ca-certs":
            return [Path("/usr/share/ca-certificates/mozilla")], "host certificates"
        return [], "not measured"

    def report(self) -> list[dict[str, object]]:
        rows = []
        for name in self.packages:
            if name in STOCK:
                rows.append({"package": name, "source": "stock image", **Size().__dict__})
                continue
            paths, source = self.files(name)
            note = "kernel module: not measured here" if name in KERNEL_MODULES else source
            rows.append({"package": name, "source": note, **total(paths).__dict__})
        return rows


def host_module(name: str) -> list[Path]:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{name} is not installed in this venv (make test installs it)")
    origin = Path(spec.origin)
    if not spec.submodule_search_locations:
        return [origin]
    return [p for p in walk([origin.parent]) if p.suffix in (".py", ".so")]


def summary(rows: list[dict[str, object]]) -> dict[str, Size]:
    def add(selected: Iterable[dict[str, object]]) -> Size:
        return sum((Size(*(int(str(r[k])) for k in ("files", "raw", "squashfs", "jffs2"))) for r in selected), Size())

    runtime = {"libpython3", "python3-base", "python3-light", "libbz2", "zlib", "libzstd"}
    return {"total": add(rows), "python runtime": add(r for r in rows if r["package"] in runtime),
            "beyond python3-light": add(r for r in rows if r["package"] not in runtime)}


def mib(value: int) -> str:
    return f"{value / 1048576:.2f}"


def print_table(title: str, rows: list[dict[str, object]]) -> None:
    print(f"\n{title}\n\n| package | files | raw MiB | squashfs (xz) MiB | jffs2 (zlib) MiB | sizes from |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['package']} | {r['files']} | {mib(int(str(r['raw'])))} | {mib(int(str(r['squashfs'])))} "
              f"| {mib(int(str(r['jffs2'])))} | {r['source']} |")
    for label, size in summary(rows).items():
        print(f"| **{label}** | {size.files} | {mib(size.raw)} | {mib(size.squashfs)} | {mib(size.jffs2)} | |")


def idle_rss(idle: float) -> int:
    """VmRSS (kB) of a lab daemon with a detected Miniserver and a relay, after `idle` seconds."""
    import time

    from tests.lab.demo import RELAY, background
    from tests.lab.loxgwproc import Loxgw
    from tests.lab.netlab import Lab, wait_for

    with Lab() as lab:
        ms = lab.add_host("miniserver", "iot", 10, mac="50:4f:94:a0:00:01")
        background(lab, ms.ns, "loxlive", "Miniserver Living Room", f"{ms.ip}:80", "504F94A00001")
        gw = Loxgw(lab, extra=RELAY).start()
        assert gw.proc is not None
        wait_for(lambda: any(d["product"] == "miniserver" for d in gw.status()["devices"]), 15, "detection")
        time.sleep(idle)
        with open(f"/proc/{gw.proc.pid}/status", encoding="ascii") as handle:
            rss = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
        gw.stop()
    return rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.footprint", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--branch", default="24.10", choices=sorted(stdlib_split()))
    parser.add_argument("--python", metavar="PATH", help="the host Python standing in for OpenWrt's")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rss", action="store_true", help="measure the daemon's idle RSS in the lab (root)")
    parser.add_argument("--idle", type=float, default=30.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    if args.rss:
        print(f"idle RSS after {args.idle:.0f} s: {idle_rss(args.idle)} kB")
        return 0
    python = interpreter(args.python) if args.python else default_interpreter()
    rows = Closure(args.branch, python).report()
    if args.json:
        print(json.dumps({"packages": rows, **{label: s.__dict__ for label, s in summary(rows).items()}}, indent=2))
        return 0
    print_table(f"loxgw on {args.branch} (host Python {python.version}: {python.executable})", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
