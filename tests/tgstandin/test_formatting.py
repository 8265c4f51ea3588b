"""parse_mode handling: the plain text and entities Telegram would store, and its errors."""

from __future__ import annotations

import pytest

from tgstandin.errors import ApiError
from tgstandin.formatting import command_entities, parse_text, utf16_len


def entities(text: str, mode: str) -> tuple[str, list[tuple[str, int, int]]]:
    plain, found = parse_text(text, mode)
    return plain, [(e["type"], e["offset"], e["length"]) for e in found]


def test_html_nesting_entities_and_utf16_offsets() -> None:
    assert entities("<b>bold <i>both</i></b> 😀 <u>x</u>", "HTML") == (
        "bold both 😀 x",
        [("bold", 0, 9), ("italic", 5, 4), ("underline", 13, 1)],
    )
    assert utf16_len("😀") == 2


def test_html_pre_with_language_and_escapes() -> None:
    plain, found = parse_text('<pre><code class="language-py">a &lt; b</code></pre>', "HTML")
    assert plain == "a < b"
    assert found == [{"type": "pre", "language": "py", "offset": 0, "length": 5}]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<b>open", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("<blink>x</blink>", 'Unsupported start tag "blink" at byte offset 0'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
    ],
)
def test_html_errors(text: str, problem: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_text(text, "HTML")
    assert caught.value.description == f"Bad Request: can't parse entities: {problem}"


def test_markdown_v2() -> None:
    assert entities(r"*bold* _it_ __under__ ~s~ ||sp|| `code` \. done\!", "MarkdownV2") == (
        "bold it under s sp code . done!",
        [
            ("bold", 0, 4),
            ("italic", 5, 2),
            ("underline", 8, 5),
            ("strikethrough", 14, 1),
            ("spoiler", 16, 2),
            ("code", 19, 4),
        ],
    )
    plain, found = parse_text("[site](https://x.org/a\\)b)", "MarkdownV2")
    assert plain == "site" and found[0]["url"] == "https://x.org/a)b"


def test_markdown_v2_reserved_characters_must_be_escaped() -> None:
    with pytest.raises(ApiError, match=r"Character '\.' is reserved"):
        parse_text("Version 2.0", "MarkdownV2")
    with pytest.raises(ApiError, match="Can't find end of Bold entity at byte offset 0"):
        parse_text("*never closed", "MarkdownV2")


def test_legacy_markdown() -> None:
    assert entities("*b* _i_ `c` [l](http://x)", "Markdown") == (
        "b i c l",
        [("bold", 0, 1), ("italic", 2, 1), ("code", 4, 1), ("text_link", 6, 1)],
    )
    with pytest.raises(ApiError, match="Can't find end of the entity starting at byte offset 0"):
        parse_text("_open", "Markdown")


def test_unknown_parse_mode() -> None:
    with pytest.raises(ApiError, match="unsupported parse_mode"):
        parse_text("x", "BBCode")


def test_command_entities() -> None:
    assert command_entities("/push@pushbot_test_bot hi") == [
        {"offset": 0, "length": 22, "type": "bot_command"}
    ]
    assert command_entities("/ nope") == []
    assert command_entities("not /a command") == []
