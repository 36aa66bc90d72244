"""Quiet hours (issue 13): the window math, the routing split, and whole ticks through the stand-ins on a
manual clock, where held messages arrive after the window in one digest, across restarts, with the
excepted events going out at once."""

from __future__ import annotations

from datetime import datetime, time, timezone
from typing import Any

import pytest

from dwnotify.model import Event
from dwnotify.quiet import LONGEST_WINDOW, is_quiet, window_end
from dwnotify.rules import Route, excepted, route
from dwnotify.settings import DigestSettings, QuietSettings, RuleSettings
from dwnotify.zones import zone

SHANGHAI = zone("Asia/Shanghai")
BERLIN = zone("Europe/Berlin")
UTC = timezone.utc

NIGHT = QuietSettings(time(22), time(8))
LUNCH = QuietSettings(time(12), time(14))
WEEKEND = QuietSettings(None, None, days=(5, 6))
NIGHTS_AND_WEEKEND = QuietSettings(time(22), time(8), days=(5, 6))
BERLIN_NIGHT = QuietSettings(time(22), time(8), "Europe/Berlin")
EVERY_DAY = QuietSettings(None, None, days=(0, 1, 2, 3, 4, 5, 6))


def local(text: str, tz: Any = SHANGHAI) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# 2024-06-07 is a Friday; Europe/Berlin springs forward on 2024-03-31 at 02:00 (to 03:00) and falls
# back on 2024-10-27 at 03:00 (to 02:00).
WINDOWS = [
    # a window past midnight; `to` is exclusive
    (NIGHT, local("2024-06-05 21:59"), None),
    (NIGHT, local("2024-06-05 22:00"), local("2024-06-06 08:00")),
    (NIGHT, local("2024-06-05 23:30"), local("2024-06-06 08:00")),
    (NIGHT, local("2024-06-06 00:00"), local("2024-06-06 08:00")),
    (NIGHT, local("2024-06-06 07:59:59"), local("2024-06-06 08:00")),
    (NIGHT, local("2024-06-06 08:00"), None),
    (NIGHT, local("2024-06-06 12:00"), None),
    # a window within one day
    (LUNCH, local("2024-06-05 11:59"), None),
    (LUNCH, local("2024-06-05 12:00"), local("2024-06-05 14:00")),
    (LUNCH, local("2024-06-05 14:00"), None),
    (LUNCH, local("2024-06-05 23:00"), None),
    # whole days
    (WEEKEND, local("2024-06-07 23:59"), None),
    (WEEKEND, local("2024-06-08 00:00"), local("2024-06-10 00:00")),
    (WEEKEND, local("2024-06-09 23:59"), local("2024-06-10 00:00")),
    (WEEKEND, local("2024-06-10 00:00"), None),
    # nights and whole days merge: Friday 22:00 to Monday 08:00 is one window
    (NIGHTS_AND_WEEKEND, local("2024-06-07 21:59"), None),
    (NIGHTS_AND_WEEKEND, local("2024-06-07 22:00"), local("2024-06-10 08:00")),
    (NIGHTS_AND_WEEKEND, local("2024-06-08 12:00"), local("2024-06-10 08:00")),
    (NIGHTS_AND_WEEKEND, local("2024-06-09 23:00"), local("2024-06-10 08:00")),
    (NIGHTS_AND_WEEKEND, local("2024-06-10 08:00"), None),
    (NIGHTS_AND_WEEKEND, local("2024-06-06 23:00"), local("2024-06-07 08:00")),  # a weekday night
    # Europe/Berlin across DST: the nights are 9 and 11 hours long
    (BERLIN_NIGHT, utc("2024-03-30 21:00"), utc("2024-03-31 06:00")),  # 22:00 CET -> 08:00 CEST
    (BERLIN_NIGHT, utc("2024-03-31 05:59"), utc("2024-03-31 06:00")),
    (BERLIN_NIGHT, utc("2024-03-31 06:00"), None),
    (BERLIN_NIGHT, utc("2024-10-26 20:00"), utc("2024-10-27 07:00")),  # 22:00 CEST -> 08:00 CET
    (BERLIN_NIGHT, utc("2024-10-26 19:59"), None),
    (BERLIN_NIGHT, utc("2024-10-27 07:00"), None),
    # an end the clock skips (02:30 on 2024-03-31) is when it jumps past it, 03:00 CEST
    (QuietSettings(time(1), time(2, 30), "Europe/Berlin"), utc("2024-03-31 00:30"), utc("2024-03-31 01:00")),
    (QuietSettings(time(1), time(2, 30), "Europe/Berlin"), utc("2024-03-31 01:00"), None),
    # a start the clock skips: the window starts at the jump
    (QuietSettings(time(2, 30), time(6), "Europe/Berlin"), utc("2024-03-31 00:59"), None),
    (QuietSettings(time(2, 30), time(6), "Europe/Berlin"), utc("2024-03-31 01:00"), utc("2024-03-31 04:00")),
    # an end the clock shows twice (02:30 on 2024-10-27) is its first showing; the repeated hour
    # after it is not quiet again
    (QuietSettings(time(22), time(2, 30), "Europe/Berlin"), utc("2024-10-27 00:15"), utc("2024-10-27 00:30")),
    (QuietSettings(time(22), time(2, 30), "Europe/Berlin"), utc("2024-10-27 01:15"), None),
    # every day listed: a window never holds longer than a week
    (EVERY_DAY, local("2024-06-05 10:00"), local("2024-06-05 10:00") + LONGEST_WINDOW),
]


@pytest.mark.parametrize(("quiet", "moment", "ends"), WINDOWS)
def test_the_quiet_window_a_moment_falls_in_and_when_it_ends(
    quiet: QuietSettings, moment: datetime, ends: datetime | None
) -> None:
    assert window_end(quiet, moment) == ends
    assert is_quiet(quiet, moment) is (ends is not None)


def test_a_moment_is_read_in_the_windows_zone_whatever_zone_it_comes_in() -> None:
    moment = local("2024-06-05 23:00")
    assert window_end(NIGHT, moment.astimezone(UTC)) == window_end(NIGHT, moment.astimezone(BERLIN))
    assert window_end(BERLIN_NIGHT, moment) is None  # 17:00 in Berlin


@pytest.mark.parametrize(
    ("patterns", "event_type", "passes"),
    [
        (("run.failed",), "run.failed", True),
        (("run.failed",), "stage.failed", False),
        (("stage.*",), "stage.failed", True),
        (("stage.*",), "run.failed", False),
        (("*",), "run.started", True),
        ((), "run.failed", False),
    ],
)
def test_an_event_type_is_excepted_when_it_matches_a_pattern(
    patterns: tuple[str, ...], event_type: str, passes: bool
) -> None:
    assert excepted(QuietSettings(time(22), time(8), except_events=patterns), event_type) is passes


# --- routing -----------------------------------------------------------------------------------------

RUN = "10000/r1"
STARTED = Event("run.started", RUN, "running", "init")
STAGE_FAILED = Event("stage.failed", RUN, "fail", "running")
FAILED = Event("run.failed", RUN, "fail", "running")
NIGHT_AT_23 = local("2024-06-05 23:00").astimezone(UTC)
MORNING = local("2024-06-06 08:00").timestamp()


def quiet_rule(except_events: tuple[str, ...] = ("run.failed",), **changes: Any) -> RuleSettings:
    quiet = QuietSettings(time(22), time(8), except_events=except_events)
    return RuleSettings("night", ("*",), ("ops", "team"), quiet=quiet, **changes)


def test_a_quiet_rule_sends_its_excepted_events_at_once_and_holds_the_rest_to_the_windows_end() -> None:
    rule = quiet_rule()
    routes = route([STARTED, STAGE_FAILED, FAILED], 10000, [rule], NIGHT_AT_23)
    assert routes == [
        Route(rule, "ops", (FAILED,)),
        Route(rule, "team", (FAILED,)),
        Route(rule, "ops", (STARTED, STAGE_FAILED), MORNING),
        Route(rule, "team", (STARTED, STAGE_FAILED), MORNING),
    ]


@pytest.mark.parametrize(
    ("events", "held"),
    [
        ((FAILED,), [None, None]),  # only excepted events: nothing held
        ((STARTED,), [MORNING, MORNING]),  # none excepted: one held message per channel
    ],
)
def test_a_quiet_rule_makes_no_empty_message(events: tuple[Event, ...], held: list[float | None]) -> None:
    routes = route(events, 10000, [quiet_rule()], NIGHT_AT_23)
    assert [(r.events, r.held_until) for r in routes] == [(events, h) for h in held]


@pytest.mark.parametrize(
    "now", [local("2024-06-06 08:00").astimezone(UTC), local("2024-06-06 15:00").astimezone(UTC), None]
)
def test_a_quiet_rule_outside_its_window_routes_as_any_rule(now: datetime | None) -> None:
    rule = quiet_rule()
    routes = route([STARTED, FAILED], 10000, [rule], now)
    assert routes == [Route(rule, "ops", (STARTED, FAILED)), Route(rule, "team", (STARTED, FAILED))]


def test_quiet_hours_hold_only_their_own_rules_messages() -> None:
    loud = RuleSettings("loud", ("*",), ("team",))
    routes = route([STARTED], 10000, [quiet_rule(), loud], NIGHT_AT_23)
    assert [(r.rule.name, r.channel, r.held_until) for r in routes] == [
        ("night", "ops", MORNING),
        ("night", "team", MORNING),
        ("loud", "team", None),
    ]


def test_a_rule_with_a_daily_digest_makes_no_per_run_messages() -> None:
    digest = RuleSettings("daily", ("*",), ("ops",), digest=DigestSettings(time(18)))
    loud = RuleSettings("loud", ("*",), ("team",))
    assert [r.rule.name for r in route([STARTED], 10000, [digest, loud], NIGHT_AT_23)] == ["loud"]
    assert route([STARTED], 10000, [digest], None) == []
