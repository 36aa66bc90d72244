"""Daily digests from whole ticks on a controllable clock, on SQLite and on Tablestore: one a day per
channel with the right counts, also when two ticks race at the digest time, when the tick at that
minute is missed, and never for a time that passed before the rule was first seen."""

from __future__ import annotations

from datetime import datetime

import pytest

from dwnotify.zones import zone
from tests.conftest import World
from tests.helpers import STAGES, at_once, use_slack_app

SHANGHAI = zone("Asia/Shanghai")
MIN = 60.0


def at(text: str) -> float:
    """Epoch seconds of a Shanghai local time `YYYY-MM-DD HH:MM`."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=SHANGHAI).timestamp()


@pytest.fixture
def daily(world: World) -> World:
    """Every event to the Slack webhook as a digest at 18:00 Shanghai time; the clock at 09:00."""
    world.config_overrides["rules"] = [
        {"name": "daily", "events": ["*"], "channels": ["team"], "digest": {"at": "18:00"}}
    ]
    world.clock.now = at("2026-11-28 09:00")
    return world


def digests(world: World) -> list[str]:
    return [m["text"] for m in world.slack_messages() if "Daily deployment digest" in m["text"]]


def digest_texts(world: World) -> list[str]:
    return [
        "\n".join(b["text"]["text"] for b in m["blocks"] if b.get("type") == "section")
        for m in world.slack_messages()
        if "Daily deployment digest" in m["text"]
    ]


def morning(world: World) -> None:
    """A success, a failure and a run still going, in workspace 10000."""
    ok = world.dataworks.add_run(10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"})
    bad = world.dataworks.add_run(
        10000,
        status="Running",
        stages=STAGES,
        stage_statuses={"BUILD": "Running"},
        description="修改 dwd_user",
    )
    world.dataworks.add_run(10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"})
    world.tick(advance=MIN)
    world.dataworks.set_run_status(
        ok, "Success", stages={"BUILD": "Success", "CHECK": "Success", "DEPLOY": "Success"}
    )
    world.dataworks.set_run_status(
        bad, "Fail", stages={"BUILD": {"status": "Fail", "message": "节点依赖缺失"}}
    )
    world.tick(advance=MIN)


def tick_until(world: World, until: float, every: float = 10 * MIN) -> None:
    while world.clock.now + every <= until:
        world.tick(advance=every)


def test_one_digest_a_day_with_the_runs_counts(daily: World) -> None:
    world = daily
    morning(world)
    tick_until(world, at("2026-11-28 17:59"))
    assert digests(world) == []
    world.tick(advance=at("2026-11-28 18:00") - world.clock.now + 30)
    [text] = digest_texts(world)
    assert "运行 Runs 3 · ✅ 1 · ❌ 1 · ⏳ 1" in text
    assert "修改 dwd_user" in text and "节点依赖缺失" in text
    tick_until(world, at("2026-11-29 17:50"))
    assert len(digests(world)) == 1  # once a day
    world.tick(advance=at("2026-11-29 18:01") - world.clock.now)
    assert len(digests(world)) == 2
    second = digest_texts(world)[1]
    assert "运行 Runs 1 · ✅ 0 · ❌ 0 · ⏳ 1" in second  # only what moved since, and what still runs


def test_a_missed_digest_minute_is_sent_late_once(daily: World) -> None:
    world = daily
    morning(world)
    tick_until(world, at("2026-11-28 17:50"))
    world.tick(advance=at("2026-11-28 18:40") - world.clock.now)  # no tick between 17:50 and 18:40
    assert len(digests(world)) == 1
    for _ in range(3):
        world.tick(advance=10 * MIN)
    assert len(digests(world)) == 1


def test_a_digest_time_before_the_rule_was_first_seen_is_not_caught_up(daily: World) -> None:
    world = daily
    world.clock.now = at("2026-11-28 19:00")  # the rule is first seen after today's 18:00
    morning(world)
    tick_until(world, at("2026-11-29 17:50"))
    assert digests(world) == []
    world.tick(advance=at("2026-11-29 18:05") - world.clock.now)
    assert len(digests(world)) == 1


def test_two_ticks_racing_at_the_digest_time_send_one(daily: World) -> None:
    world = daily
    morning(world)
    tick_until(world, at("2026-11-28 17:59"))
    apps = [world.build() for _ in range(2)]
    world.clock.now = at("2026-11-28 18:00") + 5
    at_once([app.notifier.tick for app in apps])
    for app in apps:  # and each again, a minute later
        world.clock.now += MIN
        app.notifier.tick()
    world.tick(advance=MIN)
    assert len(digests(world)) == 1
    for app in apps:
        app.close()


def test_a_digest_rule_sends_no_per_run_messages(daily: World) -> None:
    world = daily
    morning(world)
    assert world.slack_messages() == []


def test_a_slack_app_channel_posts_the_digest_as_a_message_of_its_own(daily: World) -> None:
    world = daily
    use_slack_app(
        world,
        [
            {"name": "live", "events": ["*"], "channels": ["deploys"]},
            {"name": "daily", "events": ["*"], "channels": ["deploys"], "digest": {"at": "18:00"}},
        ],
    )
    morning(world)
    runs = len(world.slack.posted("C0123456"))
    world.tick(advance=at("2026-11-28 18:00") - world.clock.now + 30)
    posted = world.slack.posted("C0123456")
    assert len(posted) == runs + 1
    digest = posted[-1]
    assert "Daily deployment digest" in digest["text"] and not digest.get("metadata")  # no run's message
    world.tick(advance=10 * MIN)
    assert len(world.slack.posted("C0123456")) == runs + 1


def test_check_renders_a_digest_rules_template_and_reports_a_broken_one(daily: World) -> None:
    from tests.helpers import cli_env, dwnotify, write

    world = daily
    config = world.write_config()
    fine = dwnotify("check", "--config", str(config), env=cli_env(world))
    assert fine.returncode == 0, fine.stderr
    folder = world.tmp / "mine"
    write(folder, "slack/digest.mrkdwn.j2", "*digest*\n{{ digest.no_such_field }}")
    world.config_overrides["templates"] = str(folder)
    broken = dwnotify("check", "--config", str(world.write_config()), env=cli_env(world))
    assert broken.returncode == 2
    [line] = broken.stderr.splitlines()
    assert line.startswith("config error: rules[0].digest: ") and "slack/digest.mrkdwn.j2, line 2" in line
    assert "no_such_field" in line
