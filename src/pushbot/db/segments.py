"""Who a broadcast goes to: a segment of the audience, parsed and named in this one place.

A segment is a filter evaluated by the query that enqueues a push's recipients when its job
starts (pushbot.db.queries), never a stored list of chats: a scheduled push reaches whoever
is in its segment at its start. Its text form (`str(segment)`, `Segment.parse`) is what
`push_messages.segment` stores and what `pushbot push --segment` takes:

* `all` — every subscribed chat (the default);
* `private` — private chats only; `groups` — groups and supergroups only;
* `language:<code>` — private chats whose user's Telegram language is `<code>` (as Telegram
  reports `language_code` on the user's messages: `en`, `de`, `pt-br`…; groups have none);
* `admins` — a test send: the ADMIN_IDS chats on record and not purged, subscribed or not.
  An admin who never wrote to the bot is not on record and is not reached (Telegram lets a
  bot write only to users who started it); the confirmation names them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

# IETF language tags as Telegram reports them: letters, digits and hyphens, short.
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(?:-[a-z0-9]{1,8})*$")
LANGUAGE_CODE_MAX = 16  # chats.language_code


class SegmentKind(StrEnum):
    ALL = "all"
    PRIVATE = "private"
    GROUPS = "groups"
    LANGUAGE = "language"
    ADMINS = "admins"


class InvalidSegment(ValueError):
    """`str()` is the one line shown to the admin or the operator."""


@dataclass(frozen=True)
class Segment:
    kind: SegmentKind
    language: str | None = None  # the lower-case code, for LANGUAGE only

    def __post_init__(self) -> None:
        if (self.kind is SegmentKind.LANGUAGE) != (self.language is not None):
            raise InvalidSegment("a language segment, and only that, names a language")

    @classmethod
    def of_language(cls, code: str) -> Segment:
        language = code.strip().lower()
        if len(language) > LANGUAGE_CODE_MAX or not _LANGUAGE_CODE.match(language):
            raise InvalidSegment(f"{code!r} is not a language code such as en, de or pt-br")
        return cls(SegmentKind.LANGUAGE, language)

    @classmethod
    def parse(cls, raw: str) -> Segment:
        text = raw.strip().lower()
        kind, colon, language = text.partition(":")
        if kind == SegmentKind.LANGUAGE and colon:
            return cls.of_language(language)
        if not colon and kind in _WITHOUT_LANGUAGE:
            return cls(SegmentKind(kind))
        raise InvalidSegment(
            f"unknown audience {raw!r}: use all, private, groups, admins or language:<code> "
            "(e.g. language:de)"
        )

    def __str__(self) -> str:
        if self.kind is SegmentKind.LANGUAGE:
            return f"{self.kind.value}:{self.language}"
        return self.kind.value

    def describe(self) -> str:
        """The segment in words, for previews, reports and listings."""
        if self.kind is SegmentKind.LANGUAGE:
            return f"language {self.language}"
        return _DESCRIPTIONS[self.kind]


_WITHOUT_LANGUAGE = frozenset(k.value for k in SegmentKind if k is not SegmentKind.LANGUAGE)
_DESCRIPTIONS = {
    SegmentKind.ALL: "everyone",
    SegmentKind.PRIVATE: "private chats",
    SegmentKind.GROUPS: "groups",
    SegmentKind.ADMINS: "admins only (test)",
}

EVERYONE = Segment(SegmentKind.ALL)
