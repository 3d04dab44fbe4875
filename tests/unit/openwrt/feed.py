"""Our OpenWrt feed as the tests read it: Makefile variables, defines and the packages feed's defaults."""

from __future__ import annotations

import glob
import re
import shutil
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[3]
FEED = ROOT / "openwrt"
DATA = ROOT / "tests" / "openwrt_data"
LOXGW_MAKEFILE = FEED / "net" / "loxgw" / "Makefile"
PYTHON_MAKEFILES = sorted(FEED.glob("lang/*/Makefile"))


@dataclass(frozen=True)
class Makefile:
    """The parts of an OpenWrt package Makefile the tests need, unexpanded."""

    path: Path
    variables: dict[str, str]
    defines: dict[str, str]

    @property
    def packages(self) -> list[str]:
        """Packages named by `$(eval $(call Py3Package,NAME))`."""
        return re.findall(r"^\$\(eval \$\(call Py3Package,([\w.-]+)\)\)", self.path.read_text(), re.M)

    def depends(self, package: str) -> list[str]:
        """DEPENDS of `define Package/NAME`, without the leading '+'."""
        found = re.search(r"^\s*DEPENDS:=(.*)$", self.defines[f"Package/{package}"].replace("\\\n", " "), re.M)
        return [d.lstrip("+") for d in found[1].split()] if found else []

    def expand(self, text: str, extra: dict[str, str] | None = None) -> str:
        """Expand $(VAR) references from this Makefile and `extra`; an unknown one is an error."""
        known = {**self.variables, **(extra or {})}

        def one(match: re.Match[str]) -> str:
            name = match[1]
            if name not in known:
                raise KeyError(f"{self.path}: $({name}) is not known to the tests")
            return self.expand(known[name], extra)

        return re.sub(r"\$\(([A-Za-z0-9_]+)\)", one, text)

    def wheel_glob(self) -> str:
        """The file name python3-package.mk's install step globs for (Py3Build/Install/Default)."""
        v = self.variables
        # PYTHON3_PKG_WHEEL_NAME?=$(subst -,_,$(if $(PYPI_SOURCE_NAME),$(PYPI_SOURCE_NAME),$(PKG_NAME)))
        # with pypi.mk's PYPI_SOURCE_NAME?=$(PYPI_NAME).
        default = v.get("PYPI_SOURCE_NAME") or v.get("PYPI_NAME") or v["PKG_NAME"]
        name = v.get("PYTHON3_PKG_WHEEL_NAME") or default.replace("-", "_")
        version = v.get("PYTHON3_PKG_WHEEL_VERSION") or v["PKG_VERSION"]
        return f"{name}-{version}-*.whl"


def read_makefile(path: Path) -> Makefile:
    text = path.read_text()
    defines = {m[1]: m[2] for m in re.finditer(r"^define ([^\n]+)\n(.*?)^endef$", text, re.M | re.S)}
    outside = re.sub(r"^define [^\n]+\n.*?^endef$", "", text, flags=re.M | re.S).replace("\\\n", " ")
    variables = {m[1]: m[2].strip() for m in re.finditer(r"^([A-Z0-9_]+):=(.*)$", outside, re.M)}
    return Makefile(path, variables, defines)


def shell_script(makefile: Makefile, name: str) -> str:
    """A maintainer script (`define Package/x/postinst`) as the package carries it: make's $$ is $."""
    return makefile.defines[name].replace("$$", "$")


def feed_python_packages() -> dict[str, list[str]]:
    """Our feed's Python packages (lang/*/Makefile) and their DEPENDS."""
    found = {}
    for path in PYTHON_MAKEFILES:
        makefile = read_makefile(path)
        for package in makefile.packages:
            found[package] = makefile.depends(package)
    return found


def apply_filespec(spec: str, src: Path, dest: Path) -> None:
    """lang/python/python-package-install.sh: '+|path' copies from src, '-|path' removes from dest; both must match."""
    for line in spec.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        command, path = (part.strip() for part in line.split("|")[:2])
        if command == "+":
            found = sorted(glob.glob(str(src / path.lstrip("/"))))
            assert found, f"filespec: {path} not found in the installed tree"
            for item in map(Path, found):
                target = dest / item.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                if item.is_dir():
                    shutil.copytree(item, target, dirs_exist_ok=True)
                else:
                    shutil.copy2(item, target)
        elif command == "-":
            found = sorted(glob.glob(str(dest / path.lstrip("/"))))
            assert found, f"filespec: {path} not found, the SDK's build would fail"
            for item in map(Path, found):
                shutil.rmtree(item) if item.is_dir() else item.unlink()


@cache
def host_tools() -> dict[str, Any]:
    with (DATA / "host-tools.toml").open("rb") as handle:
        return tomllib.load(handle)["branch"]


@cache
def stdlib_split() -> dict[str, Any]:
    with (DATA / "python3-stdlib.toml").open("rb") as handle:
        return tomllib.load(handle)["branch"]


BRANCHES = ("23.05", "24.10", "master")
