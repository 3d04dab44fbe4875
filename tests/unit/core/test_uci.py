"""The UCI tokenizer: libuci's lines and words, bounded messages, and one promise over any text."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.core import uci
from loxgw.core.errors import ConfigError

# Characters str.splitlines() ends a line at, though libuci (fgets) does not.
NOT_LINE_ENDS = {
    "VT": "\x0b", "FF": "\x0c", "FS": "\x1c", "GS": "\x1d", "RS": "\x1e",
    "NEL": "\x85", "LS": "\u2028", "PS": "\u2029",
}


@pytest.mark.parametrize("char", NOT_LINE_ENDS.values(), ids=NOT_LINE_ENDS.keys())
def test_only_newline_ends_a_line(char: str) -> None:
    text = f"# a comment {char} here\nconfig a\n\toption b 'x{char}y'\n\toption c '1'\nbogus\n"
    with pytest.raises(ConfigError) as info:
        uci.parse(text, "t")
    assert [(p.line, p.message) for p in info.value.problems] == [(5, "unknown keyword 'bogus'")]
    _, sections = uci.parse(text.replace("bogus\n", ""), "t")
    options = sections[0].options
    assert (sections[0].line, options["b"].values, options["b"].line, options["c"].line) == (2, [f"x{char}y"], 3, 4)


@pytest.mark.parametrize("char", ["\x1c", "\x85", "\u2028"], ids=["FS", "NEL", "LS"])
def test_a_non_space_separator_is_part_of_a_bare_word(char: str) -> None:
    _, sections = uci.parse(f"config a\n\toption b x{char}y\n", "t")
    assert sections[0].options["b"].values == [f"x{char}y"]


def test_vt_ff_and_cr_separate_words_as_isspace_does() -> None:
    _, sections = uci.parse("config\x0ba\r\n\toption\tb\x0c'c'\r\n\toption d e\x0b\r\n", "t")
    options = sections[0].options
    assert (sections[0].type, options["b"].values, options["b"].line, options["d"].values) == ("a", ["c"], 2, ["e"])


def test_backslash_before_crlf_continues_the_line() -> None:
    _, sections = uci.parse("config a\r\n\toption b x\\\r\ny\r\n\toption d \"e\\\r\nf\"\r\n", "t")
    options = sections[0].options
    assert (options["b"].values, options["d"].values, options["d"].line) == (["xy"], ["ef"], 4)


def test_a_quoted_value_spanning_lines_keeps_its_newlines_and_counts_them() -> None:
    _, sections = uci.parse("config a\n\toption b 'one\ntwo'\n\toption c \"x\ny\"\n\toption d 'z'\n", "t")
    options = sections[0].options
    assert (options["b"].values, options["c"].values, options["d"].line) == (["one\ntwo"], ["x\ny"], 6)


def test_a_name_spanning_lines_is_not_a_name() -> None:
    with pytest.raises(ConfigError) as info:
        uci.parse("config a 'b\n'\n", "t")
    assert [(p.line, p.message) for p in info.value.problems] == [(1, "invalid section name 'b\\n'")]


def test_double_quote_escapes() -> None:
    _, sections = uci.parse('config a\n\toption b "x\\"y\\\\z"\n', "t")
    assert sections[0].options["b"].values == ['x"y\\z']


def test_hash_starts_a_comment_only_between_words() -> None:
    _, sections = uci.parse("config a # note\n\toption b x#y # note\n", "t")
    assert (sections[0].name, sections[0].options["b"].values) == (None, ["x#y"])


def test_list_after_option_becomes_list() -> None:
    _, sections = uci.parse("config a\n\toption p '1'\n\tlist p '2'\n", "t")
    option = sections[0].options["p"]
    assert (option.values, option.is_list, option.line) == (["1", "2"], True, 3)


def test_unterminated_quote_names_the_line_it_opened_on() -> None:
    with pytest.raises(ConfigError) as info:
        uci.parse("config a\n\toption b 'x\n\n\n", "t")
    assert [(p.line, p.message) for p in info.value.problems] == [(2, "unterminated ' quote")]


@pytest.mark.parametrize(
    ("text", "lines"),
    [("", []), ("a", ["a"]), ("a\n", ["a\n"]), ("a\n\nb", ["a\n", "\n", "b"]), ("\x0b\x85\n", ["\x0b\x85\n"])],
)
def test_split_lines(text: str, lines: list[str]) -> None:
    assert uci.split_lines(text) == lines


def test_quote_shortens_long_values_and_names_their_length() -> None:
    assert uci.quote("short") == "'short'"
    assert uci.quote("y" * 40) == repr("y" * 40)
    assert uci.quote("z" * 10_000_000) == f"'{'z' * 40}…' (10000000 characters)"


def test_messages_never_repeat_a_long_word() -> None:
    long = "w" * 1_000_000
    text = f"config {long}x- '{long}-'\n\toption {long}- '1'\n{long}\n"
    with pytest.raises(ConfigError) as info:
        uci.parse(text, "t")
    shown = f"'{'w' * 40}…'"
    assert [(p.line, p.message) for p in info.value.problems] == [
        (1, f"invalid section type {shown} (1000002 characters)"),
        (1, f"invalid section name {shown} (1000001 characters)"),
        (2, f"invalid option name {shown} (1000001 characters)"),
        (3, f"unknown keyword {shown} (1000000 characters)"),
    ]


# --- one promise: any text gives sections or a ConfigError, every line in range ---


def _line_count(text: str) -> int:
    return text.count("\n") + (1 if text and not text.endswith("\n") else 0)


TOKENS = st.sampled_from([
    "config", "option", "list", "package", "a", "b_1", "'", '"', "\\", "#", " ", "\t", "\n", "\n", "\r\n",
    "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00", "é",
])


@settings(max_examples=500, deadline=None)
@given(st.text() | st.lists(TOKENS | st.text(max_size=2), max_size=80).map("".join))
def test_any_text_gives_sections_or_a_config_error(text: str) -> None:
    count = _line_count(text)
    try:
        _package, sections = uci.parse(text, "p")
    except ConfigError as exc:
        assert 1 <= len(exc.problems) <= uci.MAX_PROBLEMS + 1, text
        # Line 0 is the whole file: only the count of problems past the cap.
        in_file = exc.problems[:uci.MAX_PROBLEMS]
        assert all(p.path == "p" and 1 <= p.line <= count for p in in_file), (exc.problems, text)
        assert [p.line for p in exc.problems[uci.MAX_PROBLEMS:]] in ([], [0])
        assert all(len(p.message) <= 1000 for p in exc.problems), exc.problems
    else:
        for section in sections:
            assert 1 <= section.line <= count, (section, text)
            assert all(1 <= option.line <= count for option in section.options.values()), (section, text)


def test_problems_are_capped_with_a_count_of_the_rest() -> None:
    with pytest.raises(ConfigError) as info:
        uci.parse("bogus\n" * 250, "t")
    problems = info.value.problems
    assert [(p.line, p.message) for p in problems[-2:]] == [
        (100, "unknown keyword 'bogus'"), (0, "and 150 more problems"),
    ]
    assert len(problems) == uci.MAX_PROBLEMS + 1


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=8) | st.text(alphabet="Az09_-. é١", max_size=6))
def test_identifiers_are_what_libuci_takes_ascii_letters_digits_and_underscores(text: str) -> None:
    assert uci.is_identifier(text) == bool(re.fullmatch(r"[A-Za-z0-9_]+", text))
