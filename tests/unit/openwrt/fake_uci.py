"""A stand-in for OpenWrt's `uci` command over a JSON file: get, add_list, del_list, commit.

State ($T_UCI): {"package": [{"type": ..., "name": ... or null, "options": {name: str or [str]}}]}.
Sections are addressed as libuci does: by name, or as @type[index]. Changes are written at
once and logged to $T_LOG; `commit` is only logged.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any


def find(state: dict[str, list[dict[str, Any]]], package: str, section: str) -> dict[str, Any] | None:
    sections = state.get(package, [])
    anonymous = re.fullmatch(r"@(\w+)\[(-?\d+)\]", section)
    if anonymous:
        typed = [s for s in sections if s["type"] == anonymous[1]]
        index = int(anonymous[2])
        return typed[index] if -len(typed) <= index < len(typed) else None
    return next((s for s in sections if s["name"] == section), None)


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "-q"]
    path = os.environ["T_UCI"]
    with open(path, encoding="utf-8") as handle:
        state = json.load(handle)
    command, target = args[0], args[1]
    if command == "commit":
        log(f"uci commit {target}")
        return 0
    key, _, value = target.partition("=")
    package, section, *option = key.split(".")
    found = find(state, package, section)
    if found is None:
        return 1
    if command == "get":
        if not option:
            print(found["type"])
            return 0
        current = found["options"].get(option[0])
        if current is None:
            return 1
        print(" ".join(current) if isinstance(current, list) else current)
        return 0
    values = found["options"].setdefault(option[0], [])
    if command == "add_list":
        values.append(value)
    elif command == "del_list":
        found["options"][option[0]] = [v for v in values if v != value]
    else:
        return 1
    log(f"uci {command} {target}")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(state, handle)
    return 0


def log(line: str) -> None:
    with open(os.environ["T_LOG"], "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
