"""Slack incoming webhooks: mrkdwn laid out as Block Kit sections."""

from __future__ import annotations

from typing import Any

from ..errors import DeliveryError
from .base import ChannelMessage, HttpChannel, retry_after_seconds, trim_utf8

MAX_BLOCKS = 50
MAX_SECTION_CHARS = 3_000
MAX_TEXT_CHARS = 40_000


def _chunks(text: str, size: int) -> list[str]:
    """Split text into pieces of at most `size` characters, at line breaks where possible."""
    pieces: list[str] = []
    current = ""
    for full_line in text.splitlines():
        line = full_line
        while len(line) > size:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:size])
            line = line[size:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > size:
            pieces.append(current)
            current = line
        else:
            current = candidate
    if current:
        pieces.append(current)
    return [piece for piece in pieces if piece.strip()]


def sections(text: str) -> list[dict[str, Any]]:
    """Block Kit sections for mrkdwn text, within Slack's per-section and per-message limits."""
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": chunk}}
        for chunk in _chunks(text, MAX_SECTION_CHARS)
    ]
    if len(blocks) > MAX_BLOCKS:
        marker = {"type": "context", "elements": [{"type": "mrkdwn", "text": "…(truncated)"}]}
        blocks = [*blocks[: MAX_BLOCKS - 2], marker, blocks[-1]]
    return blocks


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
