"""The one message type, from the renderer through the outbox to a channel's sender."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Message:
    """A plain title (for notifications), the text in the channel's markup, and Block Kit blocks if any."""

    title: str
    text: str
    blocks: tuple[dict[str, Any], ...] | None = None
