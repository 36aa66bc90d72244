"""Acting from Slack end to end on loopback: the living message shows its buttons while a run waits at a
gate; the Slack stand-in clicks them as Slack does (signed block_actions, retries) into `dwnotify serve`'s
HTTP entry; DataWorks' stand-in advances or abolishes the run; the message is edited at once and the
next poll shows the result. Judged by slack_sdk's Block Kit models and the official DataWorks SDK's
view of the emulator (tests/test_judge_dataworks_sdk.py)."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import httpx
import pytest
from slack_sdk.models.blocks import ActionsBlock, Block

from dwnotify import serve
from dwnotify.app import App
from dwnotify.slack_verify import signature
from emulators.fc import FcEmulator
from tests.conftest import ManualClock, World, open_world
from tests.helpers import SLACK_APP_CHANNEL, STAGES, at_once, use_slack_app

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
ALICE, BOB, STRANGER = "U0ALICE01", "U0BOB0002", "U0STRANGE"


@pytest.fixture
def acting(world: World) -> World:
    """The World with a Slack app channel that takes clicks, alice and bob approvers."""
    use_slack_app(world, signing_secret=SECRET)
    world.config_overrides["people"] = {
        "alice": {"slack_user_id": ALICE},
        "bob": {"slack_user_id": BOB},
        "stranger": {"slack_user_id": STRANGER},
    }
    world.config_overrides["actions"] = {
        "enabled": True,
        "approvers": ["alice", "bob"],
        "response_hosts": ["127.0.0.1"],  # the Slack stand-in's response_url
    }
    return world


@contextmanager
def served(world: World) -> Iterator[tuple[str, App]]:
    """`dwnotify serve`'s loop in a thread on a free loopback port, taking clicks with the World's app."""
    app = world.app = world.app or world.build()
    stop, out = threading.Event(), io.StringIO()
    thread = threading.Thread(
        target=serve.run,
        args=(app.notifier.settings, "127.0.0.1", 0),
        kwargs={"stream": out, "stop": stop, "actor": app.actor},
        daemon=True,
    )
    thread.start()
    assert wait_for(lambda: "serving on" in out.getvalue())
    base = re.search(r"http://\S+", out.getvalue())
    assert base is not None
    try:
        yield f"{base.group(0)}/slack/actions", app
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive()


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def waiting_run(world: World) -> str:
    """A run whose build and check succeeded and whose deploy waits for a person."""
    return world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Success", "CHECK": "Success"}
    )


def the_message(world: World) -> dict[str, Any]:
    [message] = world.slack.posted(SLACK_APP_CHANNEL)
    return message


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = [b for b in message.get("blocks") or [] if b.get("block_id") == "dwnotify_actions"]
    for block in blocks:
        parsed = Block.parse(block)
        assert isinstance(parsed, ActionsBlock)
        parsed.validate_json()
    return [element for block in blocks for element in block["elements"]]


def click(world: World, url: str, action: str, user: str = ALICE, **options: Any) -> list[Any]:
    return world.slack.click(
        url,
        user_id=user,
        channel_id=SLACK_APP_CHANNEL,
        message_ts=the_message(world)["ts"],
        action_id=f"dwnotify:{action}",
        signing_secret=options.pop("secret", SECRET),
        timestamp=options.pop("timestamp", int(time.time())),  # serve checks against the real clock
        **options,
    )


def writes(world: World, action: str = "ExecPipelineRunStage") -> int:
    return world.dataworks.call_count(action)


def decided(app: App, key: str, result: str = "done") -> Callable[[], bool]:
    def check() -> bool:
        record = app.store.load_action(key)
        return record is not None and record.result == result

    return check


def test_a_waiting_run_shows_its_buttons_and_an_approvers_click_advances_it_once(acting: World) -> None:
    run_id = waiting_run(acting)
    acting.tick()
    offered = buttons(the_message(acting))
    assert [(b["action_id"], b["text"]["text"]) for b in offered] == [
        ("dwnotify:advance", "Advance to 发布到生产环境"),
        ("dwnotify:abolish", "Abolish run"),
    ]
    assert json.loads(offered[0]["value"]) == {"project": 10000, "run": run_id, "stage": "DEPLOY"}
    assert all("confirm" in b for b in offered)
    with served(acting) as (url, app):
        [attempt] = click(acting, url, "advance")
        assert attempt.status == 200 and attempt.answer == b""
        assert wait_for(decided(app, f"10000/{run_id}/DEPLOY/advance"))
    assert writes(acting) == 1
    edited = the_message(acting)
    assert buttons(edited) == []  # edited at once: the buttons gone, who asked and when
    assert re.search(
        r"advance requested by <@U0ALICE01> at \d\d:\d\d", json.dumps(edited, ensure_ascii=False)
    )
    acting.tick(advance=1)  # the next poll shows the stage running; the run still moves: abolish stays
    assert [b["action_id"] for b in buttons(the_message(acting))] == ["dwnotify:abolish"]
    acting.tick()  # the stand-in's stage succeeds after 5 s, and with its last stage the run
    assert buttons(the_message(acting)) == []


def test_a_slack_retry_a_replay_and_a_second_click_do_nothing_more(acting: World) -> None:
    run_id = waiting_run(acting)
    acting.tick()
    with served(acting) as (url, app):
        [first] = click(acting, url, "advance")
        assert wait_for(decided(app, f"10000/{run_id}/DEPLOY/advance"))
        replayed = acting.slack.replay(url, first)  # the same body and headers, within 5 minutes
        stamp = str(int(time.time()))
        retried = httpx.post(  # Slack's retry: the same body signed anew, with X-Slack-Retry-Num
            url,
            content=first.body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Slack-Request-Timestamp": stamp,
                "X-Slack-Signature": signature(SECRET, stamp, first.body),
                "X-Slack-Retry-Num": "1",
                "X-Slack-Retry-Reason": "http_timeout",
            },
        )
        stale = json.dumps({"project": 10000, "run": run_id, "stage": "DEPLOY"})  # Bob has the old message
        [again] = click(acting, url, "advance", user=BOB, value=stale)
        assert (replayed.status, retried.status_code, again.status) == (200, 200, 200)
        time.sleep(0.3)  # anything deferred by mistake would run now
    assert writes(acting) == 1


def test_two_clicks_at_once_advance_once(acting: World) -> None:
    run_id = waiting_run(acting)
    acting.tick()
    with served(acting) as (url, app):
        attempts = at_once(
            [lambda: click(acting, url, "advance"), lambda: click(acting, url, "advance", user=BOB)]
        )
        assert all(a[-1].status == 200 for a in attempts)
        assert wait_for(decided(app, f"10000/{run_id}/DEPLOY/advance"))
        time.sleep(0.3)
    assert writes(acting) == 1


def test_a_non_approver_is_told_so_and_nothing_changes(acting: World) -> None:
    waiting_run(acting)
    acting.tick()
    before = the_message(acting)
    with served(acting) as (url, _):
        [attempt] = click(acting, url, "advance", user=STRANGER)
        assert attempt.status == 200
        assert wait_for(lambda: bool(acting.slack.ephemerals(STRANGER)))
    [answer] = acting.slack.ephemerals(STRANGER)
    assert "not an approver" in answer["text"]
    assert writes(acting) == 0 and the_message(acting) == before


@pytest.mark.parametrize(
    ("case", "options"),
    [
        ("a bad signature", {"secret": "not-the-signing-secret"}),
        ("a stale timestamp", {"timestamp": int(time.time()) - 400}),
    ],
)
def test_a_refused_request_changes_nothing(acting: World, case: str, options: dict[str, Any]) -> None:
    waiting_run(acting)
    acting.tick()
    with served(acting) as (url, _):
        attempts = click(acting, url, "advance", **options)
        assert {a.status for a in attempts} == {401}, case
        assert len(attempts) == 4  # Slack retried, refused each time
    assert writes(acting) == 0 and acting.dataworks.call_count("GetPipelineRun") == 0


def test_a_stage_that_moved_before_the_click_is_refused_with_the_reason(acting: World) -> None:
    run_id = waiting_run(acting)
    acting.tick()
    acting.dataworks.set_run_status(run_id, stages={"DEPLOY": "Running"})  # someone used the console
    with served(acting) as (url, _):
        click(acting, url, "advance")
        assert wait_for(lambda: bool(acting.slack.ephemerals(ALICE)))
    assert "no longer waiting to be advanced (it is running)" in acting.slack.ephemerals(ALICE)[0]["text"]
    assert writes(acting) == 0


def test_abolish_ends_the_run_and_the_living_message_says_so(acting: World) -> None:
    run_id = waiting_run(acting)
    acting.tick()
    with served(acting) as (url, app):
        click(acting, url, "abolish")
        assert wait_for(decided(app, f"10000/{run_id}/DEPLOY/abolish"))
    assert writes(acting, "AbolishPipelineRun") == 1
    summary = acting.tick()
    assert summary.events >= 1
    final = the_message(acting)
    assert buttons(final) == []
    text = json.dumps(final, ensure_ascii=False).lower()
    assert "cancel" in text or "取消" in text


# -- on Function Compute: the HTTP trigger answers, an async invocation of the function acts ---------------


@pytest.fixture
def on_fc(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[World, FcEmulator, ModuleType]]:
    """A World on Tablestore whose function (the real handler) runs in the FC stand-in, reached with
    the real fc2 client through `scale.endpoint`."""
    import index
    from dwnotify import http_entry

    monkeypatch.setattr(http_entry, "settings_cache", http_entry.SettingsCache())  # this World's config
    with open_world(tmp_path, clock, "tablestore") as world:
        fc = FcEmulator(clock=clock)
        endpoint = fc.start()
        use_slack_app(world, signing_secret=SECRET)
        world.config_overrides["people"] = {"alice": {"slack_user_id": ALICE}}
        world.config_overrides["actions"] = {
            "enabled": True,
            "approvers": ["alice"],
            "response_hosts": ["127.0.0.1"],
        }
        world.config_overrides["scale"] = {"shards": 1, "endpoint": endpoint, "function": "dwnotify"}
        monkeypatch.setenv("DWNOTIFY_CONFIG", str(world.write_config()))
        monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "test-ak")
        monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "test-secret")
        for name, value in world.environ().items():
            monkeypatch.setenv(name, value)
        try:
            yield world, fc, index
        finally:
            index.apps.clear()
            fc.stop()


def http_event(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """An FC 3.0 HTTP-trigger event, as the function URL maps a request."""
    return {
        "version": "v1",
        "rawPath": "/slack/actions",
        "body": body.decode(),
        "isBase64Encoded": False,
        "headers": headers,
        "queryParameters": {},
        "requestContext": {"http": {"method": "POST", "path": "/slack/actions"}, "requestId": "1-http"},
    }


def test_on_fc_the_click_is_answered_first_and_carried_out_once_by_an_async_invocation(
    on_fc: tuple[World, FcEmulator, ModuleType],
) -> None:
    """Also when the async invocation dies after its work and FC runs it again."""
    world, fc, index = on_fc
    released, died = threading.Event(), threading.Event()

    def function(event: Any, context: Any) -> Any:
        released.wait(30)  # held until the HTTP answer is back: the call comes after Slack has its 200
        result = index.handler(event, context)
        if not died.is_set():
            died.set()
            raise RuntimeError("the instance died after acting")
        return result

    fc.register("dwnotify", function)
    run_id = waiting_run(world)
    world.tick()
    message = the_message(world)
    body = world.slack.click_body(ALICE, SLACK_APP_CHANNEL, message["ts"], "dwnotify:advance", None)
    stamp = str(int(time.time()))
    headers = {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature(SECRET, stamp, body)}
    answer = index.handler(http_event(body, headers), SimpleNamespace(request_id="1-http"))
    assert (answer["statusCode"], answer["body"]) == (200, "")
    assert writes(world) == 0 and world.dataworks.call_count("GetPipelineRun") == 0
    released.set()
    assert fc.wait_idle(60)
    acts = [i for i in fc.invocations if json.loads(i.event).get("action") == "act"]
    assert len(acts) == 2 and acts[0].failed and not acts[1].failed  # FC retried the one that died
    assert writes(world) == 1
    [call] = [c for c in world.dataworks.calls if c.action == "ExecPipelineRunStage"]
    assert (call.params["Id"], call.params["Code"]) == (run_id, "DEPLOY")
    assert buttons(the_message(world)) == []


def test_with_actions_off_a_waiting_run_shows_no_buttons(acting: World) -> None:
    acting.config_overrides["actions"] = {"enabled": False}
    waiting_run(acting)
    acting.tick()
    message = the_message(acting)
    assert message["blocks"] and buttons(message) == []
