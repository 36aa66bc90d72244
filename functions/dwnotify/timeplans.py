"""The config's time-aware sections: top-level `reminders`, and a rule's `quiet` hours and `digest`.

Read into settings with every problem named by its dotted path, like the rest of the config. Local
times are `HH:MM` (24 hours) in an IANA time zone, Asia/Shanghai unless the section names another.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import time, timedelta

from dwnotify.interpolate import Loc
from dwnotify.settings import DigestSettings, QuietSettings, ReminderSettings
from dwnotify.yamlcheck import Checker
from dwnotify.zones import DEFAULT_TIMEZONE, zone

_CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SHORTEST_REMINDER = timedelta(minutes=1)  # a tick a minute: shorter would fire at the next tick anyway


def parse_reminders(c: Checker, value: object, loc: Loc) -> ReminderSettings | None:
    """`reminders: {waiting_after, stuck_after, repeat}`: at least one of the first two."""
    if value is None:
        return None
    f = c.section(value, loc, optional=("waiting_after", "stuck_after", "repeat"))
    if f is None:
        return None
    after = {key: _reminder_duration(c, *f.at(key)) for key in ("waiting_after", "stuck_after", "repeat")}
    if f.values.get("waiting_after") is None and f.values.get("stuck_after") is None:
        c.add(loc, "needs waiting_after, stuck_after or both (how long a stage may wait or run)")
        return None
    return ReminderSettings(after["waiting_after"], after["stuck_after"], after["repeat"])


def _reminder_duration(c: Checker, value: object, loc: Loc) -> timedelta | None:
    if value is None:
        return None
    duration = c.duration(value, loc, timedelta(0), zero_ok=True)
    if timedelta(0) < duration < _SHORTEST_REMINDER:
        c.add(loc, "must be at least 1m (dwnotify looks once a minute)", value)
        return None
    return duration or None


def parse_quiet(c: Checker, value: object, loc: Loc, event_patterns: Collection[str]) -> QuietSettings | None:
    """A rule's `quiet: {from, to, timezone, except, days}`: a daily window, whole days, or both."""
    if value is None:
        return None
    f = c.section(value, loc, optional=("from", "to", "timezone", "except", "days"))
    if f is None:
        return None
    start, end = _clock(c, *f.at("from")), _clock(c, *f.at("to"))
    has_start, has_end = f.values.get("from") is not None, f.values.get("to") is not None
    if has_start != has_end:
        c.add(loc, "needs both from and to (or neither, with days)")
    days = _days(c, *f.at("days"))
    if not has_start and not has_end and f.values.get("days") is None:
        c.add(loc, "needs from and to (a daily window), days (whole days), or both")
    elif len(days) == len(DAYS):
        c.add(f.at("days")[1], "lists every day: the rule would never speak (take it out of rules instead)")
    elif has_start and has_end and start is not None and start == end:
        c.add(f.at("to")[1], "must differ from from (to is exclusive: the window would be empty)")
    excepted = []
    listed, where = f.at("except")
    for item, here in c.items(listed, where) if listed is not None else []:
        pattern = c.text(item, here)
        if pattern is not None and pattern not in event_patterns:
            c.add(here, f"{c.quote(here, pattern)} is not an event type, 'run.*', 'stage.*' or '*'")
        elif pattern is not None:
            excepted.append(pattern)
    return QuietSettings(start, end, _timezone(c, *f.at("timezone")), tuple(excepted), days)


def parse_digest(c: Checker, value: object, loc: Loc) -> DigestSettings | None:
    """A rule's `digest: {at, timezone}`."""
    if value is None:
        return None
    f = c.section(value, loc, required=("at",), optional=("timezone",))
    if f is None:
        return None
    at = _clock(c, *f.at("at"))
    zone_name = _timezone(c, *f.at("timezone"))
    return DigestSettings(at, zone_name) if at is not None else None


def _clock(c: Checker, value: object, loc: Loc) -> time | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        # YAML 1.1 reads an unquoted 22:00 as the sexagesimal number 1320
        return time(value // 60, value % 60)
    text = c.text(value, loc)
    match = _CLOCK.fullmatch(text) if text is not None else None
    if text is not None and match is None:
        c.add(loc, 'must be a time of day such as "22:00" (24 hours, HH:MM)', value)
    return time(int(match.group(1)), int(match.group(2))) if match else None


def _timezone(c: Checker, value: object, loc: Loc) -> str:
    name = c.text(value, loc) if value is not None else DEFAULT_TIMEZONE
    if name is None:
        return DEFAULT_TIMEZONE
    try:
        zone(name)
    except ValueError:
        c.add(loc, "is not a time zone this runtime knows (an IANA name such as Asia/Shanghai)", value)
        return DEFAULT_TIMEZONE
    return name


def _days(c: Checker, value: object, loc: Loc) -> tuple[int, ...]:
    if value is None:
        return ()
    days: list[int] = []
    for item, here in c.items(value, loc, empty="must list at least one day (mon ... sun)"):
        day = c.choice(item, here, DAYS)
        if day is not None and DAYS.index(day) not in days:
            days.append(DAYS.index(day))
    return tuple(sorted(days))
