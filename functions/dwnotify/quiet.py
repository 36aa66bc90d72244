"""Quiet hours: whether a moment falls in a rule's quiet window, and when that window ends. Pure.

A rule's quiet hours are a daily window (`from` inclusive, `to` exclusive, past midnight when `to`
is not after `from`), whole `days`, or both: quiet when either says so. Windows that touch or
overlap are one window, so Friday 22:00 to Saturday 08:00, the whole weekend and Sunday 22:00 to
Monday 08:00 end together on Monday at 08:00.

Each window is a span of real time between two local wall-clock readings. Across a DST change a
reading that the clock skips (02:30 on a spring-forward night) is the moment the clock jumps past
it, and one it shows twice (02:30 on a fall-back night) is its first showing: a night's window
ends once, and the hour repeated after it is not quiet again.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone, tzinfo

from .settings import QuietSettings
from .zones import zone

# A window never holds a message longer: with every day of the week listed it would never end.
LONGEST_WINDOW = timedelta(days=7)
_DAY = timedelta(days=1)


def window_end(quiet: QuietSettings, now: datetime) -> datetime | None:
    """When the quiet window that `now` (tz-aware) falls in ends, in UTC; None when `now` is not quiet."""
    moment = now.astimezone(timezone.utc)
    today = moment.astimezone(zone(quiet.timezone)).date()
    start: datetime | None = None
    end: datetime | None = None
    for begins, ends in sorted(_spans(quiet, today)):
        if start is not None and end is not None:
            if begins <= end:  # touching or overlapping: one window
                end = max(end, ends)
                continue
            if start <= moment < end:
                break
        start, end = begins, ends
    if start is None or end is None or not start <= moment < end:
        return None
    return min(end, moment + LONGEST_WINDOW)


def is_quiet(quiet: QuietSettings, now: datetime) -> bool:
    """Whether `now` (tz-aware) falls in the quiet window."""
    return window_end(quiet, now) is not None


def _spans(quiet: QuietSettings, today: date) -> Iterator[tuple[datetime, datetime]]:
    """The windows (UTC, end exclusive) that start from the day before `today` to a week after it."""
    tz = zone(quiet.timezone)
    for offset in range(-1, LONGEST_WINDOW.days + 2):
        day = today + offset * _DAY
        if quiet.start is not None and quiet.end is not None:
            last = day + _DAY if quiet.end <= quiet.start else day
            yield _instant(day, quiet.start, tz), _instant(last, quiet.end, tz)
        if day.weekday() in quiet.days:
            yield _instant(day, time(0), tz), _instant(day + _DAY, time(0), tz)


def _instant(day: date, at: time, tz: tzinfo) -> datetime:
    """The first moment (UTC) at which the local clock reads `day` `at` or later."""
    wall = datetime.combine(day, at)
    first = wall.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first  # a reading the clock shows (fold=0: its first showing, when it shows it twice)
    # Skipped by a DST jump: the jump lies between the readings on the new and the old offset.
    low = int(wall.replace(tzinfo=tz, fold=1).timestamp())  # reads earlier than `wall`
    high = int(first.timestamp())  # reads later
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, timezone.utc)
