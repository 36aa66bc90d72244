"""The HTTP entry: 404 when actions are off, 401 for anything unsigned or stale, 200 with the click
handed to the actor otherwise; and FC 3.0 HTTP-trigger events answered through `index.handler`, plain
and base64 bodies."""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest

from dwnotify import config, http_entry
from dwnotify.http_entry import HttpRequest, fc_http_request, handle
from dwnotify.settings import Settings
from dwnotify.slack_verify import Interaction
from tests.conftest import World
from tests.helpers import SLACK_APP_CHANNEL, use_slack_app
from tests.test_slack_verify import SECRET, slack_headers

CHANNEL = SLACK_APP_CHANNEL
OTHER_SECRET = "c4ca4238a0b923820dcc509a6f75849b"
VALUE = {"project": 10000, "run": "run-1", "stage": "DEPLOY"}
NOW = 1_767_000_000
ACTIONS_ON = {"enabled": True, "approvers": ["alice"]}


def click(user: str = "U0ALICE01", channel: str = CHANNEL, action: str = "dwnotify:advance") -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": user},
        "channel": {"id": channel},
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": channel},
        "actions": [{"action_id": action, "value": json.dumps(VALUE)}],
        "response_url": "https://hooks.slack.com/actions/T/1/x",
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def config_data(enabled: bool = True) -> dict[str, Any]:
    return {
        "dataworks": {"region": "cn-shanghai", "projects": [10000]},
        "channels": {
            "deploys": {
                "type": "slack-app",
                "token": "xoxb-1-abc",
                "channel": CHANNEL,
                "signing_secret": SECRET,
            },
            "elsewhere": {
                "type": "slack-app",
                "token": "xoxb-1-abc",
                "channel": "C0999999",
                "signing_secret": OTHER_SECRET,
            },
        },
        "people": {"alice": {"name": "Alice", "slack_user_id": "U0ALICE01"}},
        "rules": [{"name": "all", "events": ["*"], "channels": ["deploys"]}],
        "actions": {"enabled": enabled, "approvers": ["alice"]},
    }


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return config.parse(config_data(), tmp_path, {})


def post(
    raw: bytes, headers: dict[str, str], path: str = "/slack/actions", method: str = "POST"
) -> HttpRequest:
    return HttpRequest(method, path, headers, raw)


class TakingActor:
    """Stands for `acting.Actor`: records the verified clicks the entry hands over."""

    def __init__(self) -> None:
        self.taken: list[tuple[Interaction, int]] = []

    def take(self, interaction: Interaction, retry: int = 0) -> str:
        self.taken.append((interaction, retry))
        return "claimed"


def answer(request: HttpRequest, settings: Settings, now: float, actor: TakingActor | None = None) -> Any:
    taking = actor or TakingActor()
    return handle(request, settings, now, lambda: taking)  # type: ignore[arg-type, return-value]


def test_a_signed_click_is_answered_200_empty_and_handed_to_the_actor_with_its_retry(
    settings: Settings,
) -> None:
    raw, actor = click(), TakingActor()
    response = answer(
        post(raw, {**slack_headers(raw, NOW), "X-Slack-Retry-Num": "1"}), settings, NOW + 2, actor
    )
    assert (response.status, response.body) == (200, "")
    [(interaction, retry)] = actor.taken
    assert retry == 1
    assert (interaction.user_id, interaction.action_id, dict(interaction.value)) == (
        "U0ALICE01",
        "dwnotify:advance",
        VALUE,
    )
    assert interaction.response_url == "https://hooks.slack.com/actions/T/1/x"


def test_a_verified_request_that_is_no_block_action_is_answered_and_not_taken(settings: Settings) -> None:
    payload = {"type": "view_submission", "user": {"id": "U0ALICE01"}, "channel": {"id": CHANNEL}}
    raw, actor = urlencode({"payload": json.dumps(payload)}).encode(), TakingActor()
    assert answer(post(raw, slack_headers(raw, NOW)), settings, NOW, actor).status == 200
    assert actor.taken == []


@pytest.mark.parametrize(
    ("case", "make"),
    [
        ("unsigned", lambda raw: {}),
        ("wrong secret", lambda raw: slack_headers(raw, NOW, "not-the-secret")),
        ("another channel's secret", lambda raw: slack_headers(raw, NOW, OTHER_SECRET)),
        ("stale", lambda raw: slack_headers(raw, NOW - 301)),
        ("future", lambda raw: slack_headers(raw, NOW + 301)),
    ],
)
def test_refused_with_401_and_not_taken(
    settings: Settings, caplog: pytest.LogCaptureFixture, case: str, make: Any
) -> None:
    raw, actor = click(), TakingActor()
    with caplog.at_level(logging.INFO):
        response = answer(post(raw, make(raw)), settings, NOW, actor)
    assert response.status == 401, case
    assert actor.taken == []
    assert SECRET not in response.body + caplog.text and OTHER_SECRET not in caplog.text


def test_a_replayed_body_with_its_old_headers_is_refused(settings: Settings) -> None:
    raw = click()
    headers = slack_headers(raw, NOW)
    assert answer(post(raw, headers), settings, NOW).status == 200
    assert answer(post(raw, headers), settings, NOW + 301).status == 401


def test_a_tampered_body_is_refused(settings: Settings) -> None:
    raw = click()
    headers = slack_headers(raw, NOW)
    assert answer(post(raw.replace(b"advance", b"abolish"), headers), settings, NOW).status == 401


def test_a_click_from_a_channel_no_slack_app_channel_posts_to_is_refused(settings: Settings) -> None:
    raw = click(channel="C0NOTOURS")
    assert answer(post(raw, slack_headers(raw, NOW)), settings, NOW).status == 401


def test_the_other_channels_secret_verifies_its_own_messages(settings: Settings) -> None:
    raw = click(channel="C0999999")
    assert answer(post(raw, slack_headers(raw, NOW, OTHER_SECRET)), settings, NOW).status == 200
    assert answer(post(raw, slack_headers(raw, NOW, SECRET)), settings, NOW).status == 401


def test_paths_and_methods(settings: Settings) -> None:
    raw = click()
    signed = slack_headers(raw, NOW)
    assert answer(post(raw, signed, path="/slack/other"), settings, NOW).status == 404
    assert answer(post(raw, signed, path="/"), settings, NOW).status == 404
    response = answer(post(raw, signed, method="GET"), settings, NOW)
    assert response.status == 405 and response.headers["Allow"] == "POST"
    assert answer(post(raw, signed, method="post"), settings, NOW).status == 200


def test_with_actions_disabled_everything_is_404(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = config.parse(config_data(enabled=False), tmp_path, {})
    raw = click()
    with caplog.at_level(logging.INFO):
        for method in ("POST", "GET"):
            assert answer(post(raw, slack_headers(raw, NOW), method=method), settings, NOW).status == 404
    assert not [r for r in caplog.records if r.name == "dwnotify.audit"]


def test_an_oversized_body_is_refused_before_it_is_read(settings: Settings) -> None:
    raw = b"payload=" + b"x" * (http_entry.MAX_BODY_BYTES + 1)
    assert answer(post(raw, slack_headers(raw, NOW)), settings, NOW).status == 413


# FC 3.0 HTTP trigger --------------------------------------------------------------------------------


def fc_event(
    raw: bytes, headers: dict[str, str], *, encoded: bool = False, path: str = "/slack/actions"
) -> bytes:
    """An HTTP-trigger event as FC 3.0's documentation shows it (header keys capitalized)."""
    return json.dumps(
        {
            "version": "v1",
            "rawPath": path,
            "body": base64.b64encode(raw).decode() if encoded else raw.decode(),
            "isBase64Encoded": encoded,
            "headers": {key.title(): value for key, value in headers.items()},
            "queryParameters": {},
            "requestContext": {
                "accountId": "1234567890123456",
                "domainName": "dwnotify-abc.cn-shanghai.fcapp.run",
                "domainPrefix": "dwnotify-abc",
                "http": {
                    "method": "POST",
                    "path": path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "11.11.11.11",
                    "userAgent": "Slackbot 1.0 (+https://api.slack.com/robots)",
                },
                "requestId": "1-64f6cd87-0123456789abcdef",
                "time": "2023-09-05T06:41:11Z",
                "timeEpoch": "1693896071895",
            },
        }
    ).encode()


def test_timer_and_explicit_events_are_not_http_events() -> None:
    timer = b'{"triggerTime": "2023-12-26T07:49:00Z", "triggerName": "tick", "payload": "{}"}'
    for event in (timer, b'{"action": "tick"}', b"", b"not json", None, {"rawPath": "/x"}):
        assert fc_http_request(event) is None
    request = fc_http_request(fc_event(b"a=1", {"x-slack-signature": "v0=1"}))
    assert request is not None
    assert (request.method, request.path, request.body) == ("POST", "/slack/actions", b"a=1")
    assert request.headers == {"X-Slack-Signature": "v0=1"}


def test_an_invalid_base64_body_matches_no_signature(settings: Settings) -> None:
    event = json.loads(fc_event(b"", {}))
    event.update(body="%%%not base64", isBase64Encoded=True)
    request = fc_http_request(event)
    assert request is not None and request.body != b""


@pytest.fixture
def fc_world(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    """The World's emulators with a Slack app channel and actions, read by index.handler from its env."""
    world.primed = False  # nothing in the store before: the test sees whether anything is written
    use_slack_app(world, signing_secret="${SLACK_SIGNING_SECRET}")
    world.config_overrides["people"] = {"alice": {"slack_user_id": "U0ALICE01"}}
    world.config_overrides["actions"] = ACTIONS_ON
    for name, value in {**world.environ(), "SLACK_SIGNING_SECRET": SECRET}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(http_entry, "settings_cache", http_entry.SettingsCache())
    return world


def call_handler(world: World, event: bytes) -> dict[str, Any]:
    import index

    path = world.write_config()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DWNOTIFY_CONFIG", str(path))
        return index.handler(event, SimpleNamespace(request_id="1-http"))


@pytest.mark.parametrize("encoded", [False, True])
def test_the_fc_handler_takes_a_signed_click(
    fc_world: World, encoded: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With no function to invoke in the context the click is carried out at once: here on a run
    DataWorks does not know, so it is refused after one read, and its answer is not sent to a host
    actions.response_hosts does not list."""
    import index

    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "test-ak")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "test-secret")
    fc_world.config_overrides["actions"] = {**ACTIONS_ON, "response_hosts": ["127.0.0.1"]}
    raw = click()
    try:
        with caplog.at_level(logging.INFO, logger="dwnotify"):
            answer = call_handler(
                fc_world, fc_event(raw, slack_headers(raw, int(time.time())), encoded=encoded)
            )
    finally:
        index.apps.clear()
    assert answer["statusCode"] == 200 and answer["body"] == ""
    assert set(answer) >= {"statusCode", "headers", "body"}
    assert [c.action for c in fc_world.dataworks.calls] == ["GetPipelineRun"]
    audits = [
        json.loads(r.getMessage().removeprefix("audit "))
        for r in caplog.records
        if r.name == "dwnotify.audit"
    ]
    assert [(a["result"], a["person"], a["run"]) for a in audits] == [
        ("claimed", "alice", "run-1"),
        ("refused", "alice", "run-1"),
    ]
    assert "not in actions.response_hosts" in caplog.text


def test_the_fc_handler_refuses_a_bad_signature_and_changes_nothing(fc_world: World) -> None:
    import index

    raw = click()
    headers = slack_headers(raw, int(time.time()), "wrong-secret")
    answer = call_handler(fc_world, fc_event(raw, headers, encoded=True))
    assert answer["statusCode"] == 401
    assert SECRET not in json.dumps(answer)
    assert fc_world.dataworks.call_count() == 0
    assert not (fc_world.tmp / "state.db").exists()
    assert index.apps.cache._app is None  # no clients were built


def test_the_fc_handler_with_actions_disabled_answers_404_and_builds_nothing(fc_world: World) -> None:
    import index

    fc_world.config_overrides["actions"] = {"enabled": False}
    raw = click()
    answer = call_handler(fc_world, fc_event(raw, slack_headers(raw, int(time.time()))))
    assert answer["statusCode"] == 404
    assert fc_world.dataworks.call_count() == 0
    assert not (fc_world.tmp / "state.db").exists()
    assert index.apps.cache._app is None


def test_the_fc_handler_answers_500_for_a_broken_config_without_secrets(
    fc_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    fc_world.config_overrides["actions"] = {"enabled": True, "approvers": ["nobody"]}
    raw = click()
    answer = call_handler(fc_world, fc_event(raw, slack_headers(raw, NOW)))
    assert answer["statusCode"] == 500
    assert SECRET not in json.dumps(answer) + caplog.text


def test_a_timer_event_still_ticks(fc_world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import index

    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "test-ak")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "test-secret")
    try:
        result = call_handler(fc_world, b'{"triggerTime": "2023-12-26T07:49:00Z", "triggerName": "tick"}')
    finally:
        index.apps.clear()
    assert "statusCode" not in result and result.get("error") is None, result
    assert fc_world.dataworks.call_count() > 0
