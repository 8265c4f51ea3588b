"""Text formatting as Telegram does it: parse_mode markup -> plain text + entities.

Offsets and lengths are in UTF-16 code units, like Telegram's. Error descriptions follow
Telegram's (tdlib's) wording so that a bot's "can't parse entities" handling is exercised;
`parse_text` raises `ApiError` 400 "Bad Request: can't parse entities: ...".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import unescape
from typing import Any

from tgstandin.errors import ApiError, bad_request

Entity = dict[str, Any]

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
_COMMAND = re.compile(r"/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")


def utf16_len(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode())


def _parse_error(problem: str) -> ApiError:
    return bad_request(f"can't parse entities: {problem}")


def command_entities(text: str) -> list[Entity]:
    """Telegram marks a leading /command (optionally /command@bot) as a bot_command."""
    match = _COMMAND.match(text)
    if match is None:
        return []
    end = match.end()
    if end < len(text) and not text[end].isspace():
        return []
    return [{"offset": 0, "length": utf16_len(match.group()), "type": "bot_command"}]


def parse_text(text: str, parse_mode: str | None) -> tuple[str, list[Entity]]:
    if parse_mode is None or parse_mode == "":
        return text, []
    mode = parse_mode.lower()
    if mode == "html":
        return _HtmlParser(text).parse()
    if mode == "markdownv2":
        return _MarkdownV2Parser(text).parse()
    if mode == "markdown":
        return _MarkdownParser(text).parse()
    raise bad_request(f"unsupported parse_mode {parse_mode!r}")


def sorted_entities(entities: list[Entity]) -> list[Entity]:
    kept = [e for e in entities if e["length"] > 0]
    kept.sort(key=lambda e: (e["offset"], -e["length"]))
    return kept


@dataclass
class _Builder:
    """Accumulates the plain text and tracks its UTF-16 length as it grows."""

    parts: list[str] = field(default_factory=list)
    length: int = 0

    def add(self, chunk: str) -> None:
        self.parts.append(chunk)
        self.length += utf16_len(chunk)

    def text(self) -> str:
        return "".join(self.parts)


# ---------------------------------------------------------------------------------------------
# HTML

_HTML_SIMPLE_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
}
_HTML_TAGS = {*_HTML_SIMPLE_TAGS, "a", "span", "tg-emoji", "tg-time"}
_HTML_ATTRIBUTE = re.compile(
    r"""\s*([A-Za-z0-9_-]+)\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)|\s*([A-Za-z0-9_-]+)"""
)
_HTML_ENTITY = re.compile(r"&(#[0-9]{1,7}|#x[0-9a-fA-F]{1,6}|lt|gt|amp|quot);")


@dataclass
class _OpenTag:
    name: str
    attributes: dict[str, str]
    start: int
    byte_offset: int
    language: str | None = None


class _HtmlParser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.out = _Builder()
        self.stack: list[_OpenTag] = []
        self.entities: list[Entity] = []

    def parse(self) -> tuple[str, list[Entity]]:
        src = self.source
        i = 0
        while i < len(src):
            lt = src.find("<", i)
            if lt < 0:
                self.out.add(_html_unescape(src[i:]))
                break
            if lt > i:
                self.out.add(_html_unescape(src[i:lt]))
            i = self._end_tag(lt) if src.startswith("</", lt) else self._start_tag(lt)
        if self.stack:
            raise _parse_error(
                f'Can\'t find end tag corresponding to start tag "{self.stack[-1].name}"'
            )
        return self.out.text(), sorted_entities(self.entities)

    def _start_tag(self, lt: int) -> int:
        src = self.source
        name_end = lt + 1
        while name_end < len(src) and not src[name_end].isspace() and src[name_end] not in "/>":
            name_end += 1
        name = src[lt + 1 : name_end].lower()
        if name not in _HTML_TAGS:
            raise _parse_error(
                f'Unsupported start tag "{name}" at byte offset {_byte_offset(src, lt)}'
            )
        gt = src.find(">", name_end)
        if gt < 0:
            raise _parse_error(f"Unclosed start tag at byte offset {_byte_offset(src, lt)}")
        attributes = {
            (m.group(1) or m.group(3)).lower(): (m.group(2) or "").strip("\"'")
            for m in _HTML_ATTRIBUTE.finditer(src, name_end, gt)
        }
        if name == "span" and attributes.get("class") != "tg-spoiler":
            raise _parse_error(
                f'Tag "span" must have class "tg-spoiler" at byte offset {_byte_offset(src, lt)}'
            )
        self.stack.append(_OpenTag(name, attributes, self.out.length, _byte_offset(src, lt)))
        return gt + 1

    def _end_tag(self, lt: int) -> int:
        src = self.source
        gt = src.find(">", lt)
        if gt < 0:
            raise _parse_error(f"Unclosed end tag at byte offset {_byte_offset(src, lt)}")
        name = src[lt + 2 : gt].strip().lower()
        if not self.stack:
            raise _parse_error(f"Unexpected end tag at byte offset {_byte_offset(src, lt)}")
        tag = self.stack.pop()
        if name and name != tag.name:
            raise _parse_error(
                f"Unmatched end tag at byte offset {_byte_offset(src, lt)}, "
                f'expected "</{tag.name}>", found "</{name}>"'
            )
        self._close(tag)
        return gt + 1

    def _close(self, tag: _OpenTag) -> None:
        length = self.out.length - tag.start
        language = tag.attributes.get("class", "")
        parent = self.stack[-1] if self.stack else None
        if (
            tag.name == "code"
            and parent
            and parent.name == "pre"
            and language.startswith("language-")
        ):
            # <pre><code class="language-x"> is one pre entity with a language.
            parent.language = language[len("language-") :]
            return
        entity = self._entity_for(tag)
        if entity is not None and length > 0:
            entity.update(offset=tag.start, length=length)
            self.entities.append(entity)

    def _entity_for(self, tag: _OpenTag) -> Entity | None:
        if tag.name in _HTML_SIMPLE_TAGS:
            kind = _HTML_SIMPLE_TAGS[tag.name]
            if kind == "blockquote" and "expandable" in tag.attributes:
                kind = "expandable_blockquote"
            entity: Entity = {"type": kind}
            if kind == "pre" and tag.language:
                entity["language"] = tag.language
            return entity
        if tag.name == "span":
            return {"type": "spoiler"}
        if tag.name == "a":
            href = tag.attributes.get("href")
            return {"type": "text_link", "url": href} if href else None
        if tag.name == "tg-emoji":
            return {"type": "custom_emoji", "custom_emoji_id": tag.attributes.get("emoji-id", "")}
        if tag.name == "tg-time":
            unix = tag.attributes.get("unix", "0")
            return {"type": "date_time", "unix_time": int(unix) if unix.isdigit() else 0}
        return None


def _html_unescape(chunk: str) -> str:
    if "&" not in chunk:
        return chunk
    return _HTML_ENTITY.sub(lambda m: unescape(m.group()), chunk)


# ---------------------------------------------------------------------------------------------
# MarkdownV2

_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MDV2_NAMES = {
    "*": "Bold",
    "_": "Italic",
    "__": "Underline",
    "~": "Strikethrough",
    "||": "Spoiler",
    "`": "Code",
    "```": "Pre",
    "[": "TextUrl",
}
_MDV2_TYPES = {
    "*": "bold",
    "_": "italic",
    "__": "underline",
    "~": "strikethrough",
    "||": "spoiler",
    "`": "code",
    "```": "pre",
}


@dataclass
class _OpenMark:
    mark: str
    start: int
    byte_offset: int
    language: str | None = None


class _MarkdownV2Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.out = _Builder()
        self.stack: list[_OpenMark] = []
        self.entities: list[Entity] = []
        self.quote_start: int | None = None

    def parse(self) -> tuple[str, list[Entity]]:
        src = self.source
        i = 0
        while i < len(src):
            i = self._step(i)
        self._close_quote()
        if self.stack:
            mark = self.stack[-1]
            raise _parse_error(
                f"Can't find end of {_MDV2_NAMES[mark.mark]} entity at byte offset "
                f"{mark.byte_offset}"
            )
        return self.out.text(), sorted_entities(self.entities)

    def _in_code(self) -> bool:
        return bool(self.stack) and self.stack[-1].mark in ("`", "```")

    def _step(self, i: int) -> int:
        src = self.source
        char = src[i]
        if char == "\\" and i + 1 < len(src) and 0 < ord(src[i + 1]) < 127:
            self.out.add(src[i + 1])
            return i + 2
        if self._in_code():
            return self._step_in_code(i)
        if char == ">" and not self.stack and (i == 0 or src[i - 1] == "\n"):
            if self.quote_start is None:
                self.quote_start = self.out.length
            return i + 1
        if char == "\n" and self.quote_start is not None and not src.startswith(">", i + 1):
            self._close_quote()
        if char not in _MDV2_RESERVED:
            self.out.add(char)
            return i + 1
        if char == "]" and self.stack and self.stack[-1].mark == "[":
            return self._close_link(i)
        mark = self._mark_at(i)
        if mark is None:
            raise _parse_error(
                f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
            )
        if self.stack and self.stack[-1].mark == mark:
            self._close(self.stack.pop())
            return i + len(mark)
        return self._open(mark, i)

    def _close_quote(self) -> None:
        if self.quote_start is not None and self.out.length > self.quote_start:
            length = self.out.length - self.quote_start
            self.entities.append(
                {"type": "blockquote", "offset": self.quote_start, "length": length}
            )
        self.quote_start = None

    def _mark_at(self, i: int) -> str | None:
        src = self.source
        for mark in ("```", "__", "||", "*", "_", "~", "`", "["):
            if src.startswith(mark, i):
                return mark
        return None

    def _open(self, mark: str, i: int) -> int:
        opened = _OpenMark(mark, self.out.length, _byte_offset(self.source, i))
        end = i + len(mark)
        if mark == "```":
            newline = self.source.find("\n", end)
            header = self.source[end:newline] if newline >= 0 else ""
            if newline >= 0 and header and " " not in header and "`" not in header:
                opened.language = header
                end = newline + 1
        self.stack.append(opened)
        return end

    def _step_in_code(self, i: int) -> int:
        mark = self.stack[-1].mark
        if self.source.startswith(mark, i):
            self._close(self.stack.pop())
            return i + len(mark)
        self.out.add(self.source[i])
        return i + 1

    def _close(self, mark: _OpenMark) -> None:
        entity: Entity = {"type": _MDV2_TYPES[mark.mark]}
        if mark.language:
            entity["language"] = mark.language
        entity.update(offset=mark.start, length=self.out.length - mark.start)
        self.entities.append(entity)

    def _close_link(self, i: int) -> int:
        mark = self.stack.pop()
        src = self.source
        if not src.startswith("(", i + 1):
            return i + 1  # "[text]" without a URL is plain text
        url_chars: list[str] = []
        j = i + 2
        while j < len(src) and src[j] != ")":
            if src[j] == "\\" and j + 1 < len(src):
                j += 1
            url_chars.append(src[j])
            j += 1
        if j >= len(src):
            raise _parse_error(f"Can't find end of a url at byte offset {_byte_offset(src, i + 1)}")
        length = self.out.length - mark.start
        if length > 0:
            url = "".join(url_chars)
            self.entities.append(
                {"type": "text_link", "url": url, "offset": mark.start, "length": length}
            )
        return j + 1


# ---------------------------------------------------------------------------------------------
# Markdown (legacy)

_MD_TYPES = {"*": "bold", "_": "italic", "`": "code", "```": "pre"}


class _MarkdownParser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.out = _Builder()
        self.entities: list[Entity] = []

    def parse(self) -> tuple[str, list[Entity]]:
        src = self.source
        i = 0
        while i < len(src):
            char = src[i]
            if char == "\\" and i + 1 < len(src) and src[i + 1] in "_*`[":
                self.out.add(src[i + 1])
                i += 2
            elif char in "_*`[":
                i = self._entity(i)
            else:
                self.out.add(char)
                i += 1
        return self.out.text(), sorted_entities(self.entities)

    def _entity(self, i: int) -> int:
        src = self.source
        mark = "```" if src.startswith("```", i) else src[i]
        closing = "]" if mark == "[" else mark
        end = src.find(closing, i + len(mark))
        if end < 0:
            raise _parse_error(
                f"Can't find end of the entity starting at byte offset {_byte_offset(src, i)}"
            )
        inner = src[i + len(mark) : end]
        start = self.out.length
        if mark == "[":
            return self._link(inner, start, end)
        language = None
        if mark == "```" and "\n" in inner:
            first, rest = inner.split("\n", 1)
            if first and " " not in first:
                language, inner = first, rest
        self.out.add(inner)
        entity: Entity = {
            "type": _MD_TYPES[mark],
            "offset": start,
            "length": self.out.length - start,
        }
        if language:
            entity["language"] = language
        self.entities.append(entity)
        return end + len(closing)

    def _link(self, inner: str, start: int, end: int) -> int:
        src = self.source
        self.out.add(inner)
        if not src.startswith("(", end + 1) or src.find(")", end) < 0:
            return end + 1
        close = src.find(")", end)
        url = src[end + 2 : close]
        self.entities.append(
            {"type": "text_link", "url": url, "offset": start, "length": self.out.length - start}
        )
        return close + 1
