"""The one message type, from the renderer through the outbox to a channel's sender."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .settings import PersonSettings


@dataclass(frozen=True)
class Message:
    """A plain title (for notifications), the text in the channel's markup, and Block Kit blocks if any.

    `mentions` are the people the text mentions (a service that also wants them listed beside the
    text, DingTalk's `at`, reads them here). `reply` is a living message's thread reply (Slack app).
    """

    title: str
    text: str
    blocks: tuple[dict[str, Any], ...] | None = None
    mentions: tuple[PersonSettings, ...] = ()
    reply: str | None = None
