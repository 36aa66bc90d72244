"""Chat services, one module each, registered by channel type (one line per service below)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING, cast

from ..settings import ChannelSettings
from .base import Channel, ChannelMessage

if TYPE_CHECKING:
    import httpx

# type -> "module:Class"; modules are imported only when a message goes to that type.
CHANNEL_TYPES: dict[str, str] = {
    "dingtalk": "dingtalk:DingTalkChannel",
    "slack": "slack:SlackChannel",
    "lark": "lark:LarkChannel",
    "wecom": "wecom:WeComChannel",
    "webhook": "webhook:WebhookChannel",
}


def build_channel(
    settings: ChannelSettings, client: httpx.Client, timeout_s: float, clock: Callable[[], float]
) -> Channel:
    """The channel for a configured destination."""
    module_name, class_name = CHANNEL_TYPES[settings.type].split(":")
    channel_class = getattr(import_module(f"{__name__}.{module_name}"), class_name)
    return cast(Channel, channel_class(settings, client, timeout_s=timeout_s, clock=clock))


__all__ = ["CHANNEL_TYPES", "Channel", "ChannelMessage", "build_channel"]
