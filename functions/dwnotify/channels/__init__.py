"""Chat services, one module each, registered by channel type."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from ..settings import ChannelSettings
from .base import Channel, ChannelMessage

Clock = Callable[[], float]


def _dingtalk(settings: ChannelSettings, client: httpx.Client, timeout_s: float, clock: Clock) -> Channel:
    from .dingtalk import DingTalkChannel

    return DingTalkChannel(settings, client, timeout_s=timeout_s, clock=clock)


def _slack(settings: ChannelSettings, client: httpx.Client, timeout_s: float, clock: Clock) -> Channel:
    from .slack import SlackChannel

    return SlackChannel(settings, client, timeout_s=timeout_s)


def _lark(settings: ChannelSettings, client: httpx.Client, timeout_s: float, clock: Clock) -> Channel:
    from .lark import LarkChannel

    return LarkChannel(settings, client, timeout_s=timeout_s, clock=clock)


def _wecom(settings: ChannelSettings, client: httpx.Client, timeout_s: float, clock: Clock) -> Channel:
    from .wecom import WeComChannel

    return WeComChannel(settings, client, timeout_s=timeout_s)


def _webhook(settings: ChannelSettings, client: httpx.Client, timeout_s: float, clock: Clock) -> Channel:
    from .webhook import WebhookChannel

    return WebhookChannel(settings, client, timeout_s=timeout_s, clock=clock)


CHANNEL_TYPES: dict[str, Callable[[ChannelSettings, httpx.Client, float, Clock], Channel]] = {
    "dingtalk": _dingtalk,
    "slack": _slack,
    "lark": _lark,
    "wecom": _wecom,
    "webhook": _webhook,
}


def build_channel(settings: ChannelSettings, client: httpx.Client, timeout_s: float, clock: Clock) -> Channel:
    """The channel for a configured destination."""
    return CHANNEL_TYPES[settings.type](settings, client, timeout_s, clock)


__all__ = ["CHANNEL_TYPES", "Channel", "ChannelMessage", "build_channel"]
