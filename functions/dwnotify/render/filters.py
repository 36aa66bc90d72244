"""The template filters that are pure functions: durations, datetimes, status words, byte-length cuts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

from dwnotify.model import (
    CANCELED,
    FAIL,
    INIT,
    RUNNING,
    SUCCESS,
    TERMINATED,
    normalize_status,
)
from dwnotify.text import trim_utf8
from dwnotify.zones import DEFAULT_TIMEZONE, zone

DEFAULT_DATETIME_FORMAT = "%Y-%m-%d %H:%M"

# --- status words -------------------------------------------------------------------------------

_STATUS_WORDS: Mapping[str, tuple[str, str, str]] = {
    SUCCESS: ("✅", "成功", "Succeeded"),
    FAIL: ("❌", "失败", "Failed"),
    RUNNING: ("⏳", "运行中", "Running"),
    INIT: ("⏸", "未开始", "Pending"),
    TERMINATED: ("⛔", "已终止", "Terminated"),
    CANCELED: ("🚫", "已取消", "Canceled"),
}


# Reminders (`stage.waiting`, `stage.stuck`): how a message names what the stage has been doing.
_REMINDER_WORDS: Mapping[str, tuple[str, str, str]] = {
    "stage.waiting": ("🙋", "等待推进", "waiting for a person"),
    "stage.stuck": ("🐢", "运行过久", "running long"),
}


def event_emoji(event: object) -> str:
    """The emoji of an event: a reminder's own, else its status's."""
    kind = getattr(event, "type", "")
    if kind in _REMINDER_WORDS:
        return _REMINDER_WORDS[kind][0]
    return status_emoji(getattr(event, "status", None))


def event_label(event: object, lang: str = "both") -> str:
    """An event in words: a reminder's with how long (`等待推进 35m · waiting for a person 35m`),
    else its status's (`status_label`)."""
    kind = getattr(event, "type", "")
    if kind not in _REMINDER_WORDS:
        return status_label(getattr(event, "status", None), lang)
    _, chinese, english = _REMINDER_WORDS[kind]
    waited = getattr(event, "waited", None)
    took = f" {format_duration(waited)}" if isinstance(waited, timedelta) else ""
    return {"zh": f"{chinese}{took}", "en": f"{english}{took}"}.get(
        lang, f"{chinese}{took} · {english}{took}"
    )


def status_emoji(status: object) -> str:
    """The emoji of a status (any spelling); ❔ for an unknown one."""
    return _STATUS_WORDS.get(normalize_status(status), ("❔", "", ""))[0]


def status_label(status: object, lang: str = "both") -> str:
    """A status in words: `失败 Failed` (lang `both`), `失败` (`zh`), `Failed` (`en`); unknown as it came."""
    normal = normalize_status(status)
    if normal not in _STATUS_WORDS:
        return normal
    _, chinese, english = _STATUS_WORDS[normal]
    return {"zh": chinese, "en": english}.get(lang, f"{chinese} {english}")


# --- durations, datetimes and lengths -----------------------------------------------------------


def format_duration(value: timedelta | None) -> str:
    """A duration in its two largest units: `1h 3m`, `3m 12s`, `45s`; empty for None."""
    if value is None:
        return ""
    rest = max(0, int(value.total_seconds()))
    amounts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, rest = divmod(rest, size)
        amounts.append((amount, unit))
    first = next((i for i, (amount, _) in enumerate(amounts) if amount), len(amounts) - 1)
    return " ".join(f"{amount}{unit}" for amount, unit in amounts[first : first + 2] if amount) or "0s"


def format_datetime(
    value: datetime | None, fmt: str = DEFAULT_DATETIME_FORMAT, tz: str = DEFAULT_TIMEZONE
) -> str:
    """A datetime shown in time zone `tz` (naive ones are taken as UTC); empty for None."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(zone(tz)).strftime(fmt)


def truncate_bytes(value: object, n: int) -> str:
    """At most `n` bytes of UTF-8, cut on a character boundary and ending with a visible marker."""
    return trim_utf8("" if value is None else str(value), n)
