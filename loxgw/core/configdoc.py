"""The README's option table, rendered from the config schema (tests keep the README equal to it)."""

from __future__ import annotations

from loxgw.core.config import SECTIONS
from loxgw.core.configschema import rows, shown

# How the table heads each section type's rows.
HEADINGS = {
    "loxgw": "config loxgw 'main'",
    "zone": "config zone NAME",
    "device": "config device NAME",
    "relay": "config relay",
    "upnp": "config upnp NAME",
    "knx": "config knx",
    "reflector": "config reflector",
}


def _row(cells: list[str]) -> str:
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


def option_table() -> str:
    """Markdown: one row per option with its section, UCI name, default and doc, in schema order."""
    lines = [_row(["section", "option", "default", "meaning"]), "|---|---|---|---|"]
    for section_type, kind in SECTIONS.items():
        heading = f"`{HEADINGS[section_type]}`"
        for row in rows(kind):
            option = f"`list {row.uci}`" if row.is_list else f"`{row.uci}`"
            lines.append(_row([heading, option, shown(row.default), row.doc]))
            heading = ""
    return "\n".join(lines) + "\n"
