"""Total deadlines: no request outlives its timeout, or the tick's deadline, however slowly a service drips.

The emulators drip an answer one byte every DRIP_S seconds, which never lets a per-read timeout fire:
before the watchdog, such an answer kept a send (and the tick, and the FC invocation) going for as
long as the server liked. These tests need real time, a few short budgets of it; they assert on
what ended and how, never on how long it took.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from dwnotify.channels import Channel, build_channel
from dwnotify.credentials import Secret
from dwnotify.errors import DeliveryError
from dwnotify.message import Message
from dwnotify.settings import ChannelSettings
from dwnotify.watchdog import Watchdog
from emulators.dingtalk import DingTalkEmulator
from emulators.lark import LarkEmulator
from emulators.slack import SlackEmulator
from emulators.webhook import GenericWebhookEmulator
from emulators.wecom import WeComEmulator
from tests.conftest import World, wait_for
from tests.helpers import fail_run

DRIP_S = 0.1
BUDGET_S = 0.5  # a send's timeout here; the answers below take 3 s and more to drip out
MESSAGE = Message("❌ 发布失败", "### ❌ 发布失败\n\n- 运行 Run: `a7ef`")
SLOW_OK = {
    "dingtalk": {"errcode": 0, "errmsg": "ok"},
    "slack": "ok" + " " * 60,  # Slack says "ok"; the padding makes it drip for a while
    "lark": {"code": 0, "msg": "success"},
    "wecom": {"errcode": 0, "errmsg": "ok"},
    "webhook": {"ok": True},
}


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


@pytest.fixture(params=sorted(SLOW_OK))
def service(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any, str]]:
    """(channel type, its emulator, the URL of one robot or hook on it)."""
    kind = str(request.param)
    emulator: Any
    if kind == "dingtalk":
        emulator, path = DingTalkEmulator({"t": None}), "/robot/send?access_token=t"
    elif kind == "slack":
        emulator, path = SlackEmulator({"T000/B000/XXXX"}), "/services/T000/B000/XXXX"
    elif kind == "lark":
        emulator, path = LarkEmulator({"t": None}), "/open-apis/bot/v2/hook/t"
    elif kind == "wecom":
        emulator, path = WeComEmulator({"k"}), "/cgi-bin/webhook/send?key=k"
    else:
        emulator, path = GenericWebhookEmulator({"/hook/demo": None}), "/hook/demo"
    with emulator:
        yield kind, emulator, emulator.base_url + path


def make_channel(
    http: httpx.Client,
    kind: str,
    url: str,
    timeout_s: float = BUDGET_S,
    clock: Callable[[], float] = time.time,
) -> Channel:
    return build_channel(ChannelSettings("chat", kind, Secret(url)), http, timeout_s, clock)


def no_answer(chat: Channel) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:  # before: the whole drip was read, and "sent"
        chat.send(MESSAGE)
    assert caught.value.retryable and caught.value.channel == "chat"
    return caught.value


# --- one send -------------------------------------------------------------------------------------


def test_a_dripping_answer_ends_at_the_timeout_and_the_message_can_go_again(
    http: httpx.Client, service: tuple[str, Any, str]
) -> None:
    kind, emulator, url = service
    emulator.inject(status=200, body=SLOW_OK[kind], drip_s=DRIP_S)
    chat = make_channel(http, kind, url)
    assert str(no_answer(chat)) == f"no answer within {BUDGET_S:g}s"
    assert wait_for(lambda: emulator.hang_ups == 1)  # the request was ended, not left running
    chat.send(MESSAGE)  # the next try gets the service's own (prompt) answer
    assert len(emulator.received) == 1


def test_an_answer_dripped_from_its_status_line_on_ends_at_the_timeout(http: httpx.Client) -> None:
    with DingTalkEmulator({"t": None}) as ding:
        ding.inject(status=200, body=SLOW_OK["dingtalk"], drip_s=DRIP_S, drip_headers=True)
        chat = make_channel(http, "dingtalk", ding.base_url + "/robot/send?access_token=t")
        assert str(no_answer(chat)) == f"no answer within {BUDGET_S:g}s"
        assert wait_for(lambda: ding.hang_ups == 1)


def test_a_send_ends_at_the_ticks_deadline_when_that_comes_first(http: httpx.Client) -> None:
    with SlackEmulator({"T000/B000/XXXX"}) as slack:
        slack.inject(status=200, body=SLOW_OK["slack"], drip_s=DRIP_S)
        url = slack.base_url + "/services/T000/B000/XXXX"
        chat = make_channel(http, "slack", url, timeout_s=30.0, clock=lambda: 1_795_680_000.0)
        chat.deadline = 1_795_680_000.4  # on the channel's (stopped) clock: 0.4 s to go
        assert str(no_answer(chat)) == "no answer within 0.4s"


def test_no_send_starts_after_the_ticks_deadline(http: httpx.Client) -> None:
    with SlackEmulator({"T000/B000/XXXX"}) as slack:
        chat = make_channel(http, "slack", slack.base_url + "/services/T000/B000/XXXX")
        chat.deadline = time.time() - 1
        assert "deadline has passed" in str(no_answer(chat))
        assert slack.attempts == []


def test_a_prompt_answer_is_read_whole(http: httpx.Client) -> None:
    with GenericWebhookEmulator({"/hook/demo": None}) as hooks:
        hooks.inject(status=503, body="busy " * 1000)
        with pytest.raises(DeliveryError) as caught:
            make_channel(http, "webhook", hooks.base_url + "/hook/demo").send(MESSAGE)
        assert caught.value.retryable and str(caught.value).startswith("HTTP 503 busy busy")


# --- the watchdog ---------------------------------------------------------------------------------


def test_the_watchdog_ends_a_blocked_read_and_leaves_no_thread_behind() -> None:
    before = set(threading.enumerate())
    reader, writer = socket.socketpair()
    with reader, writer:
        with Watchdog(0.2) as watchdog:
            watchdog.watch(reader)
            assert reader.recv(1) == b""  # blocked until the watchdog shut the connection down
        assert watchdog.fired
    assert set(threading.enumerate()) == before


def test_a_watchdog_whose_time_is_not_up_touches_nothing() -> None:
    reader, writer = socket.socketpair()
    with reader, writer:
        with Watchdog(30) as watchdog:
            watchdog.watch(reader)
            writer.sendall(b"x")
            assert reader.recv(1) == b"x"
        assert not watchdog.fired and not watchdog.expired()
        writer.sendall(b"y")
        assert reader.recv(1) == b"y"


# --- a whole tick ---------------------------------------------------------------------------------


def test_a_dripping_robot_keeps_its_message_and_the_other_channels_still_get_theirs(world: World) -> None:
    world.config_overrides["delivery.timeout"] = "1s"
    world.dingtalk.inject(status=200, body=SLOW_OK["dingtalk"], drip_s=0.2)
    fail_run(world)
    summary = world.tick()  # DingTalk ("ops") is sent to first, then Slack ("team")
    assert (summary.messages_sent, summary.messages_pending, summary.messages_failed) == (1, 1, 0)
    assert world.ding() == [] and len(world.slack_messages()) == 1
    assert world.app is not None
    [waiting] = world.app.store.pending_messages("ops")
    assert (waiting.attempts, waiting.last_error) == (1, "no answer within 1s")
    later = world.tick(advance=60)
    assert (later.messages_sent, later.messages_pending) == (1, 0)
    assert len(world.ding()) == 1


def test_a_dripping_dataworks_list_is_skipped_and_the_outbox_still_goes_out(world: World) -> None:
    world.config_overrides["dataworks.timeout"] = "1s"
    world.config_overrides["dataworks.max_attempts"] = 1
    world.dingtalk.inject(status=500, body="busy")
    fail_run(world)
    assert world.tick().messages_pending == 1 and world.ding() == []  # DingTalk's message waits
    page = {"PagingInfo": {"PageNumber": 1, "PageSize": 100, "TotalCount": 0, "PipelineRuns": []}}
    world.dataworks.inject_answer("ListPipelineRuns", page, drip_s=0.2)
    summary = world.tick()  # before: this tick read the whole drip (seconds per byte of it)
    # Workspaces are read at once: the drip is whichever asked first.
    assert len(summary.errors) == 1
    assert summary.errors[0].endswith(": ListPipelineRuns: no answer within 1s"), summary.errors
    assert (summary.messages_sent, summary.messages_pending) == (1, 0) and len(world.ding()) == 1
    assert world.tick().errors == []
