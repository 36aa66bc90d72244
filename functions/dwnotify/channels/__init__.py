"""Chat services, one module each, registered by channel type (one line per service below).

Each module declares its `TYPE` (`kind.ChannelType`): options, template formats, rate budget,
digest rules and sender. Adding a service is its module, its line here and its templates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from . import dingtalk, lark, slack, slack_app, webhook, wecom
from .base import Channel
from .kind import ChannelType

if TYPE_CHECKING:
    import httpx

    from ..settings import ChannelSettings

CHANNEL_TYPES: Mapping[str, ChannelType] = {
    kind.name: kind
    for kind in (
        dingtalk.TYPE,
        slack.TYPE,
        slack_app.TYPE,
        lark.TYPE,
        wecom.TYPE,
        webhook.TYPE,
    )
}


def build_channel(
    settings: ChannelSettings, client: httpx.Client, timeout_s: float, clock: Callable[[], float]
) -> Channel:
    """The sender for a configured destination."""
    return CHANNEL_TYPES[settings.type].build(settings, client, timeout_s, clock)


__all__ = ["CHANNEL_TYPES", "Channel", "ChannelType", "build_channel"]
