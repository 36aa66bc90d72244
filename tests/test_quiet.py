"""Quiet hours (issue 13): the window math, the routing split, and whole ticks through the stand-ins on a
manual clock, where held messages arrive after the window in one digest, across restarts, with the
excepted events going out at once."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from typing import Any

import pytest

from dwnotify.model import Event
from dwnotify.quiet import LONGEST_WINDOW, is_quiet, window_end
from dwnotify.rules import Route, excepted, route
from dwnotify.settings import DigestSettings, QuietSettings, RuleSettings
from dwnotify.state.base import TICK_LEASE, OutboxMessage
from dwnotify.zones import zone
from tests.conftest import World
from tests.helpers import (
    SLACK_APP_CHANNEL,
    STAGES,
    StateInterposer,
    fail_run,
    ids_in,
    slack_text,
    use_slack_app,
)

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


# --- whole ticks -------------------------------------------------------------------------------------

NIGHT_QUIET = {"from": "22:00", "to": "08:00", "timezone": "Asia/Shanghai"}


def to_local(world: World, weekday: int, hour: int, minute: int = 0) -> datetime:
    """Move the clock forward to the next `weekday` (0 = Monday) at `hour`:`minute` in Shanghai."""
    now = datetime.fromtimestamp(world.clock.now, SHANGHAI)
    target = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    target += timedelta(days=(weekday - target.weekday()) % 7)
    if target <= now:
        target += timedelta(days=7)
    world.clock.now = target.timestamp()
    return target


def night_rules(world: World, quiet: dict[str, Any] | None = None) -> None:
    """DingTalk gets failures at once; Slack gets everything, quiet at night."""
    world.config_overrides["rules"] = [
        {"name": "failures", "events": ["run.failed", "stage.failed"], "channels": ["ops"]},
        {"name": "everything", "events": ["*"], "channels": ["team"], "quiet": quiet or NIGHT_QUIET},
    ]


def start(world: World) -> str:
    return world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}
    )


def progress(world: World, run_id: str) -> None:
    world.dataworks.set_run_status(run_id, stages={"BUILD": "Success", "CHECK": "Running"})


def succeed(world: World, run_id: str) -> None:
    world.dataworks.set_run_status(run_id, status="Success", stages={"CHECK": "Success", "DEPLOY": "Success"})


def fail(world: World, run_id: str) -> None:
    world.dataworks.set_run_status(
        run_id,
        status="Fail",
        message="部署失败",
        stages={"BUILD": "Success", "CHECK": {"status": "Fail", "message": "节点 ods_user 依赖缺失"}},
    )


def in_order(text: str, *parts: str) -> bool:
    """Whether each part occurs in `text` once, in this order."""
    places = [text.find(part) for part in parts]
    return all(text.count(part) == 1 for part in parts) and places == sorted(places) and -1 not in places


STARTED_TEXT, PROGRESS_TEXT, SUCCEEDED_TEXT = (
    "Deployment started",
    "Deployment in progress",
    "Deployment succeeded",
)


@pytest.mark.parametrize("state_backend", ["sqlite", "tablestore"], indirect=True)
def test_messages_in_quiet_hours_arrive_after_them_in_one_digest_across_a_restart(
    world: World, state_backend: str
) -> None:
    night_rules(world)
    to_local(world, 2, 23)  # a Wednesday, 23:00
    run_id = start(world)
    assert world.tick().messages_queued == 1
    progress(world, run_id)
    assert world.tick().messages_pending == 2
    assert world.app is not None
    world.app.close()  # a restart inside the window
    world.app = None
    assert world.tick().messages_pending == 2
    succeed(world, run_id)
    world.tick()
    to_local(world, 3, 7, 59)
    assert world.tick(advance=0).messages_sent == 0  # 07:59: still quiet
    assert world.slack_messages() == []

    after = world.tick(advance=60)  # 08:00: `to` is exclusive
    assert (after.messages_sent, after.chat_posts, after.messages_pending) == (3, 1, 0)
    [message] = world.slack_messages()
    text = slack_text(message)
    assert text.startswith("*DataWorks: 3 updates from quiet hours*")
    assert in_order(text, STARTED_TEXT, PROGRESS_TEXT, SUCCEEDED_TEXT) and text.count(run_id) == 3

    world.app.close()  # and nothing comes again, restarted or not
    world.app = None
    world.tick()
    world.tick(advance=3600)
    assert len(world.slack_messages()) == 1 and world.ding() == []
    assert world.app is not None and world.app.store.report().messages == ()


def test_excepted_events_go_at_once_and_the_runs_held_events_follow_after_the_window(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.config_overrides["rules"] = [
        {
            "name": "night",
            "events": ["*"],
            "channels": ["ops"],
            "quiet": {**NIGHT_QUIET, "except": ["run.failed"]},
        },
        {"name": "everything", "events": ["*"], "channels": ["team"]},
    ]
    to_local(world, 2, 23)
    run_id = start(world)
    world.tick()
    assert world.ding() == [] and len(world.slack_messages()) == 1  # another rule's channel is not quiet
    fail(world, run_id)
    world.tick(advance=3600)
    [failure] = world.ding()  # run.failed alone, at once, though the run's start waits before it
    failed_text = failure["markdown"]["text"]
    assert "Deployment failed" in failed_text and STARTED_TEXT not in failed_text
    assert "Stage succeeded" not in failed_text
    assert len(world.slack_messages()) == 2

    world.tick(advance=3600)  # 01:00: still quiet
    assert len(world.ding()) == 1
    to_local(world, 3, 8)
    world.tick(advance=0)
    first, held = world.ding()
    assert first == failure
    text = held["markdown"]["text"]
    assert text.startswith("### DataWorks: 2 updates from quiet hours")
    assert in_order(text, STARTED_TEXT, "节点 ods_user 依赖缺失") and "Deployment failed" not in text
    world.tick()
    assert len(world.ding()) == 2 and len(world.slack_messages()) == 2
    # A hold is not a retry time from a clock gone back: the passes that sent the failure left it be.
    assert not [r for r in caplog.records if "brought back" in r.getMessage()]


def test_a_digest_whose_post_fails_is_sent_once_later_and_the_runs_next_message_waits_behind_it(
    world: World,
) -> None:
    night_rules(world)
    to_local(world, 2, 23)
    run_id = start(world)
    world.tick()
    progress(world, run_id)
    world.tick()
    to_local(world, 3, 8)
    world.slack.inject(status=500, body="rollup_error", times=1)
    failed = world.tick(advance=0)
    assert (failed.messages_sent, failed.messages_pending) == (0, 2) and world.slack_messages() == []
    succeed(world, run_id)  # not held: the window is over, but it comes after the held ones
    behind = world.tick(advance=1)
    assert (behind.messages_sent, behind.messages_pending) == (0, 3) and world.slack_messages() == []
    world.tick(advance=120)
    digest, after = [slack_text(m) for m in world.slack_messages()]
    assert in_order(digest, STARTED_TEXT, PROGRESS_TEXT) and SUCCEEDED_TEXT not in digest
    assert SUCCEEDED_TEXT in after and "quiet hours" not in after
    world.tick(advance=600)
    assert len(world.slack_messages()) == 2


def test_a_digest_over_the_size_limit_is_several_posts_in_order(world: World) -> None:
    world.config_overrides["rules"] = [
        {"name": "failures", "events": ["run.failed"], "channels": ["ops"], "quiet": NIGHT_QUIET}
    ]
    to_local(world, 2, 23)
    runs = []
    for _ in range(20):  # about 1.2 kB each: more than one DingTalk post holds
        runs.append(fail_run(world, message="节点依赖缺失。" * 300))
        world.tick()
    assert world.ding() == []
    to_local(world, 3, 8)
    summary = world.tick(advance=0)
    assert summary.messages_sent == 20 and summary.chat_posts == len(world.ding()) >= 2
    texts = [message["markdown"]["text"] for message in world.ding()]
    assert all(len(text.encode("utf-8")) <= 20_000 for text in texts)
    assert ids_in(texts) == runs  # every run once, in the order they failed


def test_max_age_counts_from_the_windows_end_so_a_weekends_hold_is_delivered(world: World) -> None:
    night_rules(world, {"days": ["sat", "sun"]})
    to_local(world, 5, 10)  # Saturday 10:00: held 38 hours, past delivery.max_age (24h)
    start(world)
    world.tick()
    to_local(world, 6, 23, 59)
    assert world.tick(advance=0).messages_pending == 1 and world.slack_messages() == []
    to_local(world, 0, 0)
    summary = world.tick(advance=0)
    assert (summary.messages_sent, summary.messages_failed) == (1, 0)
    assert STARTED_TEXT in slack_text(world.slack_messages()[0])


class _Calls(StateInterposer):
    """Records the names of the store calls made."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.names: list[str] = []

    def _before(self, name: str) -> None:
        self.names.append(name)


def test_a_channel_with_only_held_messages_is_left_alone_until_the_window_ends(world: World) -> None:
    night_rules(world)
    to_local(world, 2, 23)
    start(world)
    world.tick()
    wrapped: list[_Calls] = []

    def wrap(store: Any) -> Any:
        wrapped.append(_Calls(store))
        return wrapped[-1]

    assert world.app is not None
    world.app.close()
    world.app = world.build(wrap_store=wrap)
    for _ in range(3):
        assert world.tick().messages_pending == 1
    assert "acquire_lease" not in wrapped[0].names and "update_messages" not in wrapped[0].names


def test_a_hold_stored_by_a_clock_far_ahead_is_brought_back_to_a_week(world: World) -> None:
    night_rules(world)
    to_local(world, 2, 12)  # not quiet: the fault is in the stored time
    world.app = world.build()
    now = world.clock.now
    far = now + 30 * 86400
    message = OutboxMessage(
        "m-far",
        "team",
        "10000/r1",
        "everything",
        1,
        "t",
        "held far ahead",
        now,
        held_until=far,
        next_attempt_at=far,
    )
    lease = world.app.store.acquire_lease(TICK_LEASE, "test", 90.0, now)
    assert lease is not None
    world.app.store.commit(lease, [], [], [message], now)
    world.app.store.release_lease(lease)
    world.tick()
    world.tick(advance=LONGEST_WINDOW.total_seconds() - 120)
    assert world.slack_messages() == []
    world.tick(advance=180)
    assert [slack_text(m) for m in world.slack_messages()] == ["held far ahead"]


# --- a Slack app channel: held edits, no digest ----------------------------------------------------------

CHANNEL = SLACK_APP_CHANNEL


def living_world(world: World, events: list[str], quiet: dict[str, Any]) -> None:
    use_slack_app(world, [{"name": "everything", "events": events, "channels": ["deploys"], "quiet": quiet}])


def living_text(message: dict[str, Any]) -> str:
    blocks = message.get("blocks") or []
    return "\n".join(b["text"]["text"] for b in blocks if b.get("type") == "section") or message["text"]


@pytest.mark.parametrize("state_backend", ["sqlite", "tablestore"], indirect=True)
def test_a_slack_app_channels_held_changes_go_out_after_the_window_as_one_post_with_the_newest_state(
    world: World, state_backend: str
) -> None:
    living_world(world, ["*"], NIGHT_QUIET)
    to_local(world, 2, 23)
    run_id = start(world)
    world.tick()
    progress(world, run_id)
    world.tick()
    fail(world, run_id)
    world.tick()
    assert world.slack.posted(CHANNEL) == []
    to_local(world, 3, 8)
    world.tick(advance=0)
    [message] = world.slack.posted(CHANNEL)
    assert message["edits"] == []  # one post, showing the newest state: no digest, no replay
    assert "节点 ods_user 依赖缺失" in living_text(message) and "失败 Failed" in living_text(message)
    [reply] = world.slack.replies(CHANNEL, message["ts"])
    assert "节点 ods_user 依赖缺失" in reply["text"]
    world.tick()
    assert len(world.slack.posted(CHANNEL)) == 1 and world.slack.posted(CHANNEL)[0]["edits"] == []


def test_a_slack_app_message_shown_at_once_is_not_set_back_by_the_held_edit_after_the_window(
    world: World,
) -> None:
    living_world(world, ["run.*"], {**NIGHT_QUIET, "except": ["run.failed"]})
    to_local(world, 2, 23)
    run_id = start(world)
    world.tick()  # run.started: held
    assert world.slack.posted(CHANNEL) == []
    fail(world, run_id)
    world.tick()  # run.failed: at once, with its reply
    [message] = world.slack.posted(CHANNEL)
    assert "失败 Failed" in living_text(message)
    assert len(world.slack.replies(CHANNEL, message["ts"])) == 1
    to_local(world, 3, 8)
    world.tick(advance=0)  # the held start goes through as an edit that keeps the newest state
    [message] = world.slack.posted(CHANNEL)
    assert len(message["edits"]) == 1
    assert "失败 Failed" in living_text(message) and "运行中 Running" not in living_text(message)
    assert len(world.slack.replies(CHANNEL, message["ts"])) == 1
    assert world.app is not None and world.app.store.report().messages == ()
