"""Time zones by name, for the settings and templates that show or schedule local times."""

from __future__ import annotations

from datetime import timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "Asia/Shanghai"


@lru_cache(maxsize=32)
def zone(name: str) -> tzinfo:
    """The time zone `name` (an IANA name); ValueError when it is unknown.

    A runtime without tz data still knows the default: China keeps UTC+8 all year.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        if name == DEFAULT_TIMEZONE:
            return timezone(timedelta(hours=8), "CST")
        raise ValueError(f"unknown time zone {name!r}") from None
