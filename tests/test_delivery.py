"""Delivery: every announced event reaches its channel once, in order, whatever the webhooks do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dwnotify.delivery import RETRY_CAP_S, Deliverer, pack, retry_delay
from dwnotify.message import Message
from dwnotify.state.base import TICK_LEASE, OutboxMessage
from dwnotify.text import fit_text
from tests.conftest import DING_TOKEN, World
from tests.helpers import ding_texts, fail_run, ids_in, slack_text, start_run


def test_a_webhook_failing_for_several_ticks_gets_every_message_once_in_order(world: World) -> None:
    world.slack.inject(status=500, body="rollup_error", times=4)
    run_id = start_run(world)
    world.tick()
    world.dataworks.set_run_status(run_id, stages={"BUILD": "Success", "DEPLOY": "Running"})
    world.tick()
    world.dataworks.set_run_status(run_id, status="Success", stages={"DEPLOY": "Success"})
    summary = world.tick()
    assert summary.messages_pending >= 1 and world.slack_messages() == []
    for _ in range(6):
        world.tick(advance=120)
    texts = [slack_text(message) for message in world.slack_messages()]
    assert len(texts) == 3  # started, in progress, succeeded: each once
    assert "运行中" in texts[0] and "发布到生产环境" in texts[1] and "成功" in texts[2]
    assert world.app is not None
    assert world.app.store.report().messages == ()


def test_a_dead_webhook_is_given_up_with_a_reason_and_blocks_nobody(world: World) -> None:
    world.slack.inject(status=410, body="channel_is_archived", times=100)
    fail_run(world)
    summary = world.tick()
    assert summary.messages_failed == 1 and summary.messages_sent == 1  # Slack given up, DingTalk sent
    assert summary.messages_pending == 0
    assert len(world.ding()) == 1
    assert world.app is not None
    [failed] = world.app.store.report().messages
    assert (
        failed.status == "failed"
        and "410" in failed.last_error
        and "channel_is_archived" in failed.last_error
    )


def test_slack_429_is_waited_out(world: World) -> None:
    world.slack.inject(status=429, body="rate_limited", headers={"Retry-After": "30"}, times=1)
    start_run(world)
    first = world.tick()
    assert (first.messages_sent, first.messages_pending) == (0, 1)
    second = world.tick(advance=60)
    assert (second.messages_sent, second.messages_pending) == (1, 0)
    assert len(world.slack_messages()) == 1


def test_a_retry_after_of_a_day_pauses_the_channel_ten_minutes_at_most(world: World) -> None:
    world.slack.inject(status=429, body="rate_limited", headers={"Retry-After": "86400"}, times=1)
    start_run(world)
    assert world.tick().messages_pending == 1
    for _ in range(9):
        world.tick(advance=60)
    assert world.slack_messages() == []  # the pause is kept...
    world.tick(advance=120)
    assert len(world.slack_messages()) == 1  # ...but no longer than any pause dwnotify sets itself


def test_dingtalk_130101_pauses_the_robot_for_ten_minutes(world: World) -> None:
    world.dingtalk.inject(status=200, body={"errcode": 130101, "errmsg": "send too fast"}, times=1)
    fail_run(world)
    assert world.tick().messages_pending == 1
    attempts_after_refusal = len(world.dingtalk.attempts)
    for _ in range(8):
        world.tick(advance=60)
    assert len(world.dingtalk.attempts) == attempts_after_refusal  # nobody knocks on a silenced robot
    world.tick(advance=180)
    assert len(world.ding()) == 1


def test_thirty_failures_at_once_reach_one_robot_unsilenced(world: World) -> None:
    run_ids = {fail_run(world, project=10000 + (index % 2)) for index in range(30)}
    summary = world.tick()
    assert summary.messages_failed == 0 and summary.messages_pending == 0
    assert not world.dingtalk.silenced(DING_TOKEN)
    delivered = ids_in(ding_texts(world))
    assert sorted(delivered) == sorted(run_ids)  # every run once, none twice
    assert len(world.ding()) <= 19
    slack_ids = ids_in([slack_text(m) for m in world.slack_messages()])
    assert sorted(slack_ids) == sorted(run_ids)


def test_bursts_over_several_ticks_never_exceed_the_robot_budget(world: World) -> None:
    for _ in range(5):
        for _ in range(12):
            fail_run(world)
        world.tick(advance=20)
    world.tick(advance=60)
    sent_at = sorted(a.at for a in world.dingtalk.attempts)
    for index, start in enumerate(sent_at):
        assert sum(1 for t in sent_at[index:] if t < start + 60) <= 20
    assert not world.dingtalk.silenced(DING_TOKEN)
    assert len(ids_in(ding_texts(world))) == 60


def test_messages_past_max_age_fail_with_the_last_error(world: World) -> None:
    world.config_overrides["delivery"] = {"max_age": "10m"}
    world.slack.inject(status=503, body="", times=1000)
    start_run(world)
    world.tick()
    for _ in range(12):
        world.tick(advance=60)
    assert world.app is not None
    [failed] = world.app.store.report().messages
    assert failed.status == "failed" and "max_age" in failed.last_error and "503" in failed.last_error


def test_retry_delay_is_exponential_and_capped() -> None:
    assert [retry_delay(n, None, 1.0) for n in (1, 2, 3, 4, 5, 6)] == [10, 20, 40, 80, 120, 120]
    assert retry_delay(1, 30.0, 0.0) == 30.0
    assert retry_delay(1, 600.0, 1.0) == RETRY_CAP_S


@pytest.mark.parametrize("limit", [10, 11, 12, 13])
def test_fit_text_never_splits_a_character(limit: int) -> None:
    fitted = fit_text("发布失败发布失败", limit)
    assert len(fitted.encode("utf-8")) <= limit


def test_chinese_text_over_the_byte_limit_is_accepted_end_to_end(world: World) -> None:
    fail_run(world, message="上游节点未发布，" * 2500)
    summary = world.tick()
    assert summary.messages_failed == 0
    [message] = world.ding()
    assert "…(truncated)" in message["markdown"]["text"]
    assert "defaultProjectId=10000" in message["markdown"]["text"]


def _message(index: int, text: str, blocks: bool = False) -> OutboxMessage:
    return OutboxMessage(
        id=f"m{index}", channel="team", run_key=f"10000/r{index}", rule="all", seq=index, title="t",
        text=text, created_at=0.0, blocks_json='[{"type": "divider"}]' if blocks else None,
    )  # fmt: skip


def test_digests_keep_order_stay_under_the_limit_and_leave_block_kit_messages_alone() -> None:
    messages = [_message(i, "发布失败" * 500, blocks=(i == 5)) for i in range(12)]
    groups = pack("dingtalk", messages)
    assert [m.id for group in groups for m in group] == [m.id for m in messages]
    assert all(sum(len(m.text.encode()) for m in group) <= 17_000 for group in groups)
    assert [m.id for m in next(g for g in groups if any(m.blocks_json for m in g))] == ["m5"]


def test_no_send_starts_that_could_outlast_the_deadline(world: World) -> None:
    for _ in range(3):
        fail_run(world)
    world.clock.advance(60)
    world.app = world.build()
    # 5 s left: discovery and the commit happen; a send (10 s timeout) could overrun, so it waits.
    summary = world.app.notifier.tick(deadline=world.clock.now + 5)
    assert summary.events == 9 and summary.messages_sent == 0 and summary.messages_pending == 6
    assert world.ding() == [] and world.slack_messages() == []
    assert world.tick().messages_sent == 6


@pytest.mark.parametrize(("keyword", "delivered"), [("DWN", True), (None, False)])
def test_a_keyword_robot_takes_messages_only_with_its_keyword(
    world: World, keyword: str | None, delivered: bool
) -> None:
    world.dingtalk.keywords = {DING_TOKEN: ["DWN"]}  # the robot's security setting
    ops = world.config_data()["channels"]["ops"]
    world.config_overrides["channels"] = {
        **world.config_data()["channels"],
        "ops": {**ops, **({"keyword": keyword} if keyword else {}), "at_mobiles": ["13800000000"]},
    }
    fail_run(world)
    summary = world.tick()
    if delivered:
        [message] = world.ding()
        assert "DWN" in message["markdown"]["text"] and "@13800000000" in message["markdown"]["text"]
        assert message["at"]["atMobiles"] == ["13800000000"]
    else:
        assert world.ding() == [] and summary.messages_failed == 1
        assert world.app is not None
        [failed] = world.app.store.report().messages
        assert "310000" in failed.last_error


class SlowChannel:
    """A channel stub whose answer comes `answer_after_s` after the send, on the test's clock.

    `meanwhile_at_s` into each send, `meanwhile` runs (another tick starting while this one waits).
    """

    def __init__(
        self, world: World, answer_after_s: float, meanwhile_at_s: float, meanwhile: Callable[[], object]
    ) -> None:
        self.name = "team"
        self._clock = world.clock
        self._answer_after_s = answer_after_s
        self._meanwhile_at_s = meanwhile_at_s
        self._meanwhile = meanwhile
        self.deadline: float | None = None
        self.sent: list[str] = []

    def send(self, message: Message) -> None:
        self.sent.append(message.text)
        self._clock.advance(self._meanwhile_at_s)
        self._meanwhile()
        self._clock.advance(self._answer_after_s - self._meanwhile_at_s)


def queue_on_team(world: World, app: Any, count: int) -> list[str]:
    """Commit `count` messages for the Slack channel through the store API; their texts."""
    texts = [f"message {index}" for index in range(count)]
    news = [
        OutboxMessage(f"m{index}", "team", f"10000/r{index}", "everything", index, "t", text, world.clock.now)
        for index, text in enumerate(texts)
    ]
    lease = app.store.acquire_lease(TICK_LEASE, "setup", 90.0, world.clock.now)
    assert lease is not None
    app.store.commit(lease, [], [], news, world.clock.now)
    app.store.release_lease(lease)
    return texts


def deliverer(world: World, app: Any, owner: str, channel: Any, timeout_s: float) -> Deliverer:
    """A delivery pass of one tick on `app`'s store, every send going to `channel`."""
    return Deliverer(
        app.store, app.notifier.settings.channels, lambda _: channel, owner=owner,
        clock=world.clock, sleep=world.clock.sleep, max_age_s=86400.0, send_timeout_s=timeout_s,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("timeout_s", "answer_after_s", "second_tick_at_s"),
    [
        (90.0, 65.0, 61.0),  # the report: a 90 s timeout, Slack answering after 65 s, a tick at 61 s
        (30.0, 30.0, 30.0),  # the longest timeout the config allows, each send taking all of it
    ],
)
def test_a_tick_starting_while_a_slow_send_waits_for_its_answer_sends_nothing_twice(
    world: World, timeout_s: float, answer_after_s: float, second_tick_at_s: float
) -> None:
    world.clock.advance(60)
    first, second = world.build(), world.build()  # two FC instances on one state
    texts = queue_on_team(world, first, 3)
    quick = SlowChannel(world, 0.0, 0.0, lambda: None)
    interloper = deliverer(world, second, "tick-b", quick, timeout_s)
    slow = SlowChannel(world, answer_after_s, second_tick_at_s, interloper.deliver)
    stats = deliverer(world, first, "tick-a", slow, timeout_s).deliver()
    assert quick.sent == []  # the channel stayed leased while each answer was awaited
    assert slow.sent == texts and (stats.sent, stats.pending) == (3, 0)
    assert first.store.pending_messages("team") == []
    second.close()


def test_a_lease_cut_after_the_clock_stepped_back_mid_pass_is_renewed_on_the_new_clock(world: World) -> None:
    # The second tick, on the stepped-back clock, cuts the first tick's lease (it claims an hour):
    # the first tick must renew it on the new clock, not trust the hour it thinks it has left.
    world.clock.advance(60)
    first, second = world.build(), world.build()
    texts = queue_on_team(world, first, 4)
    quick = SlowChannel(world, 0.0, 0.0, lambda: None)
    interloper = deliverer(world, second, "tick-b", quick, 30.0)

    def step_back_once_then_deliver() -> None:
        if len(slow.sent) == 1:
            world.clock.now -= 3600
        interloper.deliver()

    slow = SlowChannel(world, 30.0, 30.0, step_back_once_then_deliver)
    deliverer(world, first, "tick-a", slow, 30.0).deliver()
    assert slow.sent == texts and quick.sent == []
    second.close()


def test_each_send_is_bounded_by_the_passs_deadline(world: World) -> None:
    # The channel cuts its own request at `deadline`: a send started 20 s before the end with a
    # 10 s timeout may still not outlive the tick when the answer drips.
    world.clock.advance(60)
    app = world.build()
    queue_on_team(world, app, 1)
    seen: list[float | None] = []
    channel = SlowChannel(world, 0.0, 0.0, lambda: seen.append(channel.deadline))
    deliverer(world, app, "tick-a", channel, 10.0).deliver(world.clock.now + 20)
    assert seen == [world.clock.now + 20]
    app.close()
