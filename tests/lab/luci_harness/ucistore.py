"""rpcd's `uci` ubus object over UCI files, for the harness.

`get` reads a file with loxgw's own UCI parser (libuci's syntax); `add`, `set` and
`delete` stage changes as rpcd does per session; `apply` writes the staged packages
back as UCI text, so a test can run the real `loxgw check` on what the settings page
saved. Anonymous sections get rpcd-style ids (cfgNNNNNN). Calls run one at a time, as in
rpcd's single-threaded loop (the harness server answers on threads; LuCI's save sends its
`add` and `set` calls at once).
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from loxgw.core import uci
from tests.lab.luci_harness.server import Reply

Section = dict[str, Any]


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def render(sections: dict[str, Section]) -> str:
    """UCI text of a package's sections, in their order."""
    out: list[str] = []
    for sid, section in sorted(sections.items(), key=lambda item: item[1][".index"]):
        head = f"config {section['.type']}"
        if not section[".anonymous"]:
            head += f" {_quote(sid)}"
        out.append(head)
        for key, value in section.items():
            if key.startswith("."):
                continue
            if isinstance(value, list):
                out.extend(f"\tlist {key} {_quote(v)}" for v in value)
            else:
                out.append(f"\toption {key} {_quote(value)}")
        out.append("")
    return "\n".join(out)


class UciStore:
    """Packages by name -> file path; `handle(method, args)` answers like rpcd's uci object."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.staged: dict[str, dict[str, Section]] = {}
        self.dirty: set[str] = set()
        self.applied: list[str] = []
        self.counter = 0x1000
        self.lock = threading.Lock()

    def read(self, config: str) -> dict[str, Section]:
        path = self.files[config]
        with open(path, encoding="utf-8") as handle:
            _package, raw = uci.parse(handle.read(), path)
        sections: dict[str, Section] = {}
        for index, section in enumerate(raw):
            sid = section.name or f"cfg{index:06x}"
            values: Section = {".name": sid, ".type": section.type, ".anonymous": section.name is None,
                               ".index": index}
            for name, option in section.options.items():
                values[name] = list(option.values) if option.is_list else option.values[-1]
            sections[sid] = values
        return sections

    def package(self, config: str) -> dict[str, Section]:
        """The file's sections with this session's changes; the file as it is now while there are none."""
        if config not in self.dirty or config not in self.staged:
            self.staged[config] = self.read(config)
        return self.staged[config]

    def handle(self, method: str, args: dict[str, Any]) -> Reply:
        with self.lock:
            return self.handle_one(method, args)

    def handle_one(self, method: str, args: dict[str, Any]) -> Reply:
        config = args.get("config", "")
        if method in ("get", "add", "set", "delete") and config not in self.files:
            return Reply(code=4)
        if method == "get":
            return Reply({"values": copy.deepcopy(self.package(config))})
        if method in ("add", "set", "delete"):
            self.package(config)
            self.dirty.add(config)
        if method == "add":
            sections = self.package(config)
            sid = args.get("name")
            if not sid:
                self.counter += 1
                sid = f"cfg{self.counter:06x}"
            sections[sid] = {".name": sid, ".type": args["type"], ".anonymous": not args.get("name"),
                             ".index": max([s[".index"] for s in sections.values()] + [-1]) + 1}
            sections[sid].update(args.get("values") or {})
            return Reply({"section": sid})
        if method == "set":
            section = self.package(config).get(args["section"])
            if section is None:
                return Reply(code=4)
            section.update(args.get("values") or {})
            return Reply()
        if method == "delete":
            sections = self.package(config)
            options = args.get("options") or ([args["option"]] if args.get("option") else None)
            if options is None:
                sections.pop(args["section"], None)
            else:
                for option in options:
                    sections.get(args["section"], {}).pop(option, None)
            return Reply()
        if method == "apply":
            for config_name in sorted(self.dirty):
                with open(self.files[config_name], "w", encoding="utf-8") as handle:
                    handle.write(render(self.staged[config_name]))
                self.applied.append(config_name)
            self.staged.clear()
            self.dirty.clear()
            return Reply()
        if method in ("confirm", "rollback"):
            return Reply()
        if method == "changes":
            return Reply({"changes": {}})
        return Reply(code=3)
