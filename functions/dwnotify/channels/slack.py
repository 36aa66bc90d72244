"""Slack incoming webhooks: mrkdwn laid out as Block Kit sections.

Block Kit's documented limits have their one home here: at most 50 blocks a message; a header's
plain_text up to 150 characters; a section's text up to 3,000 and at most 10 fields of 2,000; at most
10 context elements; any other text object 1 to 3,000 characters; a `block_id` up to 255. Slack
refuses a message that breaks one (400 `invalid_blocks`, for good). The mrkdwn layout (`sections`)
splits long text at line breaks, else at whitespace, never inside an entity such as `&amp;` or a
`<url|text>` link.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import DeliveryError
from .base import TRIM_MARKER, ChannelMessage, HttpChannel, retry_after_seconds, trim_utf8

MAX_BLOCKS = 50
MAX_HEADER_CHARS = 150
MAX_SECTION_CHARS = 3_000
MAX_FIELDS = 10
MAX_FIELD_CHARS = 2_000
MAX_CONTEXT_ELEMENTS = 10
MAX_TEXT_OBJECT_CHARS = 3_000
MAX_BLOCK_ID_CHARS = 255
MAX_TEXT_CHARS = 40_000  # the top-level `text`: Slack truncates past it
ELLIPSIS = "…"

# A `<url|text>` link, `<!here>` or `<@U123>`, or an entity: a cut inside one breaks it.
_UNBREAKABLE = re.compile(r"<[^<>\n]*>|&(?:#[0-9]+|#x[0-9a-fA-F]+|[A-Za-z]+);")


# --- cutting text -------------------------------------------------------------------------------


def split_text(text: str, size: int) -> tuple[str, str]:
    """`text` in two, the first part at most `size` characters, cut where a reader would cut it.

    At whitespace in the second half of the room, else as late as possible outside any entity or
    link: never inside one, unless one alone is longer than `size`. The whitespace at the cut belongs
    to neither part.
    """
    if len(text) <= size:
        return text, ""
    inside = [False] * (size + 1)
    for match in _UNBREAKABLE.finditer(text):
        if match.start() >= size:
            break
        for index in range(match.start() + 1, min(match.end(), size + 1)):
            inside[index] = True
    lead = len(text) - len(text.lstrip())
    safe = [index for index in range(size, lead, -1) if not inside[index]]
    spaced = (index for index in safe if index > size // 2 and text[index].isspace())
    cut = next(spaced, safe[0] if safe else size)
    return text[:cut].rstrip(), text[cut:].lstrip()


def truncate(text: str, size: int) -> str:
    """At most `size` characters of `text`, cut as `split_text` cuts and ending with `…` when cut."""
    if len(text) <= size:
        return text
    head, _ = split_text(text, size - len(ELLIPSIS))
    return head + ELLIPSIS


# --- the mrkdwn layout --------------------------------------------------------------------------


def _chunks(text: str, size: int) -> list[str]:
    """Split text into pieces of at most `size` characters, at line breaks where possible."""
    pieces: list[str] = []
    current = ""
    for full_line in text.splitlines():
        line = full_line
        quote = "> " if line.startswith("> ") else ""  # a quoted line stays quoted on its next piece
        while len(line) > size:
            room = size - len(current) - 1 if current else size
            if room < size // 2:  # too little left beside the lines before: start a new section
                pieces.append(current)
                current, room = "", size
            head, rest = split_text(line, room)
            pieces.append(f"{current}\n{head}" if current else head)
            current = ""
            line = quote + rest if rest and len(quote + rest) < len(line) else rest
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > size:
            pieces.append(current)
            current = line
        else:
            current = candidate
    if current:
        pieces.append(current)
    return [piece for piece in pieces if piece.strip()]


def _marker() -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": TRIM_MARKER}]}


def _fit_count(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most MAX_BLOCKS: the first ones, a marker, and the last one (the console link)."""
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    return [*blocks[: MAX_BLOCKS - 2], _marker(), blocks[-1]]


def sections(text: str) -> list[dict[str, Any]]:
    """Block Kit sections for mrkdwn text, within Slack's per-section and per-message limits.

    `verbatim` keeps Slack from turning bare URLs, channel names and mentions in values into links:
    the template's own `<url|text>` links are what links.
    """
    return _fit_count(
        [
            {"type": "section", "text": {"type": "mrkdwn", "text": chunk, "verbatim": True}}
            for chunk in _chunks(text, MAX_SECTION_CHARS)
        ]
    )


# --- the channel --------------------------------------------------------------------------------


class SlackChannel(HttpChannel):
    """Posts to one Slack incoming webhook."""

    def send(self, message: ChannelMessage) -> None:
        """Post the message; `ok` in a 200 answer is success."""
        blocks = list(message.blocks) if message.blocks is not None else sections(message.text)
        payload = {"text": trim_utf8(message.title or message.text, MAX_TEXT_CHARS), "blocks": blocks}
        response = self._post(self._settings.url.reveal(), payload)
        if response.status_code == 200:
            return
        reason = response.text.strip()[:200] or f"HTTP {response.status_code}"
        if response.status_code == 429:
            raise DeliveryError(
                f"rate limited ({reason})",
                channel=self.name,
                retryable=True,
                retry_after=retry_after_seconds(response, 1.0),
            )
        retryable = response.status_code >= 500
        raise DeliveryError(f"HTTP {response.status_code} {reason}", channel=self.name, retryable=retryable)
