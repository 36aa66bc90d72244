"""The host's clock stepping back (or forward) between ticks: every message still arrives once, in order,
without waiting for the clock to catch up. Run on both state backends.

Only dwnotify's clock steps: the chat services and DataWorks keep theirs, as real ones do. A fresh app
is built after each step, as a new FC instance would be.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dwnotify import config
from dwnotify.app import build_app
from dwnotify.tick import TickSummary
from tests.conftest import CREDENTIALS, DING_TOKEN, STATE_BACKENDS, ManualClock, World, open_world
from tests.helpers import fail_run, ids_in, slack_text, start_run

HOUR = 3600.0
SLACK_ONLY = [{"name": "everything", "events": ["*"], "channels": ["team"]}]
DINGTALK_ONLY = [{"name": "failures", "events": ["run.failed"], "channels": ["ops"]}]


class HostClock:
    """dwnotify's clock: the services' clock plus an offset the test steps; sleeping passes both."""

    def __init__(self, services: ManualClock) -> None:
        self.services = services
        self.offset = 0.0

    def __call__(self) -> float:
        return self.services.now + self.offset

    def sleep(self, seconds: float) -> None:
        self.services.sleep(seconds)


class Host:
    """A World whose app runs on a HostClock."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.clock = HostClock(world.clock)

    def step(self, seconds: float) -> None:
        """Step the host's clock, then start a new instance (an app built afresh)."""
        self.clock.offset += seconds
        if self.world.app is not None:
            self.world.app.close()
        settings = config.load(self.world.write_config(), self.world.environ())
        self.world.app = build_app(settings, CREDENTIALS, clock=self.clock, sleep=self.clock.sleep)

    def tick(self, advance: float = 60.0) -> TickSummary:
        return self.world.tick(advance)

    def longest_sleep(self) -> float:
        return max(self.world.clock.slept, default=0.0)


@pytest.fixture(params=STATE_BACKENDS)
def host(request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock) -> Iterator[Host]:
    with open_world(tmp_path, clock, request.param) as world:
        yield Host(world)


def slack_texts(world: World) -> list[str]:
    return [slack_text(message) for message in world.slack_messages()]


def assert_in_order(texts: list[str]) -> None:
    """started, in progress, succeeded: each once, in that order."""
    assert len(texts) == 3, texts
    assert "运行中" in texts[0] and "发布包构建" in texts[0]
    assert "发布到生产环境" in texts[1] and "运行中" in texts[1]
    assert "成功" in texts[2] and "发布到生产环境" in texts[2]


def finish(world: World, run_id: str) -> None:
    world.dataworks.set_run_status(run_id, status="Success", stages={"DEPLOY": "Success"})


def progress(world: World, run_id: str) -> None:
    world.dataworks.set_run_status(run_id, stages={"BUILD": "Success", "DEPLOY": "Running"})


def test_a_clock_stepping_back_an_hour_neither_stalls_slack_nor_reorders_a_run(host: Host) -> None:
    world = host.world
    world.config_overrides["rules"] = SLACK_ONLY
    world.slack.inject(status=500, body="rollup_error", times=1)
    run_id = start_run(world)
    host.step(0.0)
    assert host.tick().messages_pending == 1  # run.started waits for its retry, stored on this clock
    host.step(-HOUR)
    progress(world, run_id)
    host.tick()
    finish(world, run_id)
    host.tick()
    for _ in range(3):
        host.tick()
    # Before: the channel counted as busy for an hour (a send time in the future), the retry waited an
    # hour, and then the later messages, with lower clock-made seqs, went before run.started.
    assert_in_order(slack_texts(world))
    assert world.app is not None and world.app.store.report().messages == ()
    assert host.longest_sleep() < 60


def test_a_clock_stepping_forward_then_back_keeps_every_message_in_order(host: Host) -> None:
    world = host.world
    world.config_overrides["rules"] = SLACK_ONLY
    world.slack.inject(status=503, body="", times=2)
    run_id = start_run(world)
    host.step(0.0)
    host.tick()
    host.step(HOUR)
    progress(world, run_id)
    host.tick()
    host.step(-HOUR)
    finish(world, run_id)
    for _ in range(5):
        host.tick()
    assert_in_order(slack_texts(world))
    assert world.app is not None and world.app.store.report().messages == ()


def test_a_robot_silenced_before_the_clock_stepped_back_is_tried_after_ten_minutes(host: Host) -> None:
    world = host.world
    world.config_overrides["rules"] = DINGTALK_ONLY
    world.dingtalk.inject(status=200, body={"errcode": 130101, "errmsg": "send too fast"}, times=1)
    fail_run(world)
    host.step(0.0)
    assert host.tick().messages_pending == 1  # the robot is paused for ten minutes, on this clock
    host.step(-50 * 60)  # under the hour DingTalk allows a signature's clock to be off
    minutes = 0
    while not world.ding() and minutes < 15:
        host.tick()
        minutes += 1
    assert len(world.ding()) == 1 and 9 <= minutes <= 11  # the pause is kept, not stretched to an hour


def test_a_robot_budget_spent_before_the_clock_stepped_back_frees_up_within_a_minute(host: Host) -> None:
    world = host.world
    world.config_overrides["rules"] = DINGTALK_ONLY
    first = {fail_run(world) for _ in range(19)}
    host.step(0.0)
    assert host.tick().messages_sent == 19  # the robot's whole budget for this minute
    host.step(-50 * 60)
    later = fail_run(world)
    host.tick()
    host.tick()
    delivered = ids_in([message["markdown"]["text"] for message in world.ding()])
    assert sorted(delivered) == sorted([*first, later])  # each once, the later one within two minutes
    assert not world.dingtalk.silenced(DING_TOKEN)
