"""The Slack stand-in's interactivity: clicks sent to an app on loopback as Slack sends them, judged by
slack_sdk's SignatureVerifier; retries while the app does not acknowledge; the response_url's limits."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.webhook import WebhookClient

from dwnotify.slack_verify import parse_payload
from emulators.slack import (
    DEFAULT_BOT_TOKEN,
    RESPONSE_URL_TTL_S,
    RESPONSE_URL_USES,
    ClickAttempt,
    SlackEmulator,
)
from tests.helpers import at_once

NOW = 1_795_680_000.0
CHANNEL = "C0123456"
SECRET = "8f14e45fceea167a5a36dedd4bea2543"  # a signing secret of the app's
VALUE = json.dumps({"project": 10000, "run": "r-7f3a", "stage": "CHECK"})
BLOCKS = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "*⏸ 等待发布检查*"}},
    {
        "type": "actions",
        "block_id": "dwnotify_actions",
        "elements": [
            {
                "type": "button",
                "action_id": "dwnotify:advance",
                "text": {"type": "plain_text", "text": "Advance to 发布检查"},
                "value": VALUE,
                "style": "primary",
            }
        ],
    },
]


@dataclass
class Answer:
    """How the app answers one request: a status, headers, and whether it first waits for `release`."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hold: bool = False


class App:
    """A tiny app on 127.0.0.1: records each request and answers from a script (then 200)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.script: list[Answer] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with app._lock:
                    app.received.append((dict(self.headers.items()), body))
                    answer = app.script.pop(0) if app.script else Answer()
                if answer.hold:
                    app.release.wait(30)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # Slack stopped waiting and hung up

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slack/actions"

    def headers(self, index: int) -> dict[str, str]:
        return {k.lower(): v for k, v in self.received[index][0].items()}


@pytest.fixture
def slack() -> Iterator[SlackEmulator]:
    with SlackEmulator(api_rates={}) as emulator:
        emulator.set_time(NOW)
        yield emulator


@pytest.fixture
def app() -> Iterator[App]:
    served = App()
    served.thread.start()
    yield served
    served.release.set()
    served.server.shutdown()
    served.server.server_close()


class EmulatorClock(Clock):
    def __init__(self, slack: SlackEmulator) -> None:
        self.slack = slack

    def now(self) -> float:
        return self.slack.now()


def verifier(slack: SlackEmulator, secret: str = SECRET) -> SignatureVerifier:
    return SignatureVerifier(secret, clock=EmulatorClock(slack))


def post(slack: SlackEmulator, blocks: list[dict[str, Any]] = BLOCKS) -> str:
    answer = httpx.post(
        f"{slack.base_url}/api/chat.postMessage",
        headers={"Authorization": f"Bearer {DEFAULT_BOT_TOKEN}"},
        json={"channel": CHANNEL, "text": "等待发布检查", "blocks": blocks},
    ).json()
    assert answer["ok"], answer
    return str(answer["ts"])


def click(slack: SlackEmulator, app: App, ts: str, **options: Any) -> list[ClickAttempt]:
    where = {"user_id": "U0123ABCD", "channel_id": CHANNEL, "message_ts": ts, "action_id": "dwnotify:advance"}
    return slack.click(app.url, signing_secret=SECRET, **{**where, **options})


def payload_of(body: bytes) -> dict[str, Any]:
    [raw] = parse_qs(body.decode())["payload"]
    decoded: dict[str, Any] = json.loads(raw)
    return decoded


def test_a_click_is_signed_as_slack_signs_and_carries_the_message_and_the_button(
    slack: SlackEmulator, app: App
) -> None:
    ts = post(slack)
    [attempt] = click(slack, app, ts)
    assert attempt.acknowledged and (attempt.status, attempt.retry, attempt.reason) == (200, 0, None)
    [(headers, body)] = app.received
    assert verifier(slack).is_valid_request(body, headers)
    assert not verifier(slack, "another app's secret").is_valid_request(body, headers)
    lower = app.headers(0)
    assert lower["content-type"] == "application/x-www-form-urlencoded"
    assert lower["x-slack-request-timestamp"] == str(int(NOW))
    assert "x-slack-retry-num" not in lower and "x-slack-retry-reason" not in lower
    payload = payload_of(body)
    assert payload["type"] == "block_actions" and payload["api_app_id"] == "A0000APP"
    assert payload["user"] == {
        "id": "U0123ABCD",
        "username": "u0123abcd",
        "name": "u0123abcd",
        "team_id": "T0000DEMO",
    }
    assert payload["container"] == {
        "type": "message",
        "message_ts": ts,
        "channel_id": CHANNEL,
        "is_ephemeral": False,
    }
    assert payload["channel"] == {"id": CHANNEL, "name": "deploys"} and payload["team"]["id"] == "T0000DEMO"
    assert isinstance(payload["token"], str) and payload["trigger_id"]
    assert (payload["message"]["ts"], payload["message"]["blocks"]) == (ts, BLOCKS)
    assert payload["message"]["text"] == "等待发布检查" and payload["message"]["bot_id"] == "B0000BOT"
    [action] = payload["actions"]
    assert {k: action[k] for k in ("action_id", "block_id", "value", "type", "style")} == {
        "action_id": "dwnotify:advance",
        "block_id": "dwnotify_actions",
        "value": VALUE,
        "type": "button",
        "style": "primary",
    }
    assert action["text"] == BLOCKS[1]["elements"][0]["text"] and action["action_ts"]
    assert payload["response_url"].startswith(f"{slack.base_url}/actions/T0000DEMO/")
    # dwnotify's own reader of the payload sees the same click.
    interaction = parse_payload(body)
    assert interaction is not None
    assert (interaction.user_id, interaction.channel_id, interaction.message_ts) == ("U0123ABCD", CHANNEL, ts)
    assert (interaction.action_id, interaction.run, interaction.stage) == (
        "dwnotify:advance",
        "r-7f3a",
        "CHECK",
    )
    assert slack.clicks == [attempt]


def test_the_payload_carries_the_message_as_it_is_now(slack: SlackEmulator, app: App) -> None:
    ts = post(slack)
    edited = [BLOCKS[0], {"type": "context", "elements": [{"type": "mrkdwn", "text": "advance requested"}]}]
    answer = httpx.post(
        f"{slack.base_url}/api/chat.update",
        headers={"Authorization": f"Bearer {DEFAULT_BOT_TOKEN}"},
        json={"channel": CHANNEL, "ts": ts, "text": "edited", "blocks": edited},
    ).json()
    assert answer["ok"]
    click(slack, app, ts, value=VALUE)  # a button from the old version of the message
    message = payload_of(app.received[0][1])["message"]
    assert (message["blocks"], message["text"]) == (edited, "edited")
    assert payload_of(app.received[0][1])["actions"][0]["value"] == VALUE


def test_a_click_needs_a_message_and_a_button(slack: SlackEmulator, app: App) -> None:
    ts = post(slack)
    with pytest.raises(KeyError):
        click(slack, app, "1795680000.000001")
    with pytest.raises(KeyError):
        click(slack, app, ts, action_id="dwnotify:abolish")  # no such button, and no value to forge
    forged = json.dumps({"project": 1, "run": "other", "stage": "X"})
    click(slack, app, ts, action_id="dwnotify:abolish", value=forged)
    assert payload_of(app.received[0][1])["actions"][0]["value"] == forged
    slack.delete_message(CHANNEL, ts)
    with pytest.raises(KeyError):
        click(slack, app, ts)
    assert len(app.received) == 1


def test_an_app_answering_500_gets_retries_numbered_1_to_3(slack: SlackEmulator, app: App) -> None:
    ts = post(slack)
    app.script = [Answer(500)] * 4
    attempts = click(slack, app, ts)
    assert [(a.retry, a.status, a.reason) for a in attempts] == [(n, 500, "http_error") for n in range(4)]
    assert len(app.received) == 4
    assert [app.headers(n).get("x-slack-retry-num") for n in range(4)] == [None, "1", "2", "3"]
    assert [app.headers(n).get("x-slack-retry-reason") for n in range(4)] == [None, *["http_error"] * 3]
    assert {body for _, body in app.received} == {app.received[0][1]}  # the same click, sent again
    assert all(verifier(slack).is_valid_request(body, headers) for headers, body in app.received)
    assert slack.clicks == attempts


@pytest.mark.parametrize(("status", "acknowledged"), [(200, True), (204, True), (302, False), (404, False)])
def test_only_a_2xx_acknowledges(slack: SlackEmulator, app: App, status: int, acknowledged: bool) -> None:
    ts = post(slack)
    app.script = [Answer(status)]
    attempts = click(slack, app, ts, retries=1)
    assert attempts[0].acknowledged is acknowledged and attempts[0].status == status
    assert len(attempts) == len(app.received) == (1 if acknowledged else 2)


def test_no_retry_after_an_acknowledgement_nor_when_the_app_says_no_retry(
    slack: SlackEmulator, app: App
) -> None:
    ts = post(slack)
    app.script = [Answer(500), Answer(204)]
    attempts = click(slack, app, ts)
    assert [(a.retry, a.status, a.acknowledged) for a in attempts] == [(0, 500, False), (1, 204, True)]
    app.script = [Answer(503, {"X-Slack-No-Retry": "1"})]
    [refused] = click(slack, app, ts)
    assert (refused.status, refused.reason, refused.no_retry) == (503, "http_error", True)
    assert [a.retry for a in click(slack, app, ts, retries=0)] == [0]
    app.script = [Answer(500)]
    assert [a.status for a in click(slack, app, ts, retries=0)] == [500]
    assert len(app.received) == 5


def test_an_app_too_slow_to_answer_gets_a_retry_for_http_timeout(slack: SlackEmulator, app: App) -> None:
    ts = post(slack)
    app.script = [Answer(hold=True)]  # answers only once the test lets it: long after Slack gave up
    attempts = click(slack, app, ts, timeout_s=0.3)
    app.release.set()
    assert [(a.retry, a.status, a.reason) for a in attempts] == [(0, None, "http_timeout"), (1, 200, None)]
    assert (
        app.headers(1)["x-slack-retry-num"] == "1"
        and app.headers(1)["x-slack-retry-reason"] == "http_timeout"
    )
    assert len(app.received) == 2


def test_an_app_that_is_down_gets_retries_for_connection_failed(slack: SlackEmulator) -> None:
    ts = post(slack)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    attempts = slack.click(
        f"http://127.0.0.1:{port}/slack/actions",
        user_id="U0123ABCD",
        channel_id=CHANNEL,
        message_ts=ts,
        action_id="dwnotify:advance",
        signing_secret=SECRET,
        retries=2,
    )
    assert [(a.retry, a.status, a.reason) for a in attempts] == [
        (n, None, "connection_failed") for n in range(3)
    ]
    assert attempts[2].headers["X-Slack-Retry-Reason"] == "connection_failed"


def test_two_clicks_at_once_reach_the_app_each_signed_with_its_own_response_url(
    slack: SlackEmulator, app: App
) -> None:
    ts = post(slack)
    first, second = at_once(
        [lambda: click(slack, app, ts), lambda: click(slack, app, ts, user_id="U0SECOND")]
    )
    assert len(first) == len(second) == 1 and first[0].acknowledged and second[0].acknowledged
    assert len(app.received) == 2
    assert all(verifier(slack).is_valid_request(body, headers) for headers, body in app.received)
    users = sorted(payload_of(body)["user"]["id"] for _, body in app.received)
    assert users == ["U0123ABCD", "U0SECOND"]
    assert slack.response_url_of(first[0]) != slack.response_url_of(second[0])


def test_a_replay_resends_the_old_body_with_its_old_headers(slack: SlackEmulator, app: App) -> None:
    ts = post(slack)
    [attempt] = click(slack, app, ts)
    slack.advance(6 * 60)  # past the five minutes an app allows
    replayed = slack.replay(app.url, attempt)
    assert replayed.acknowledged  # this app checks nothing; one that verifies refuses it:
    (old_headers, old_body), (headers, body) = app.received
    assert (headers, body) == (old_headers, old_body) and replayed.headers == attempt.headers
    assert not verifier(slack).is_valid_request(body, headers)
    # An old body signed at an old time, on purpose; and a body tampered with after signing.
    stale = click(slack, app, ts, retries=0, timestamp=int(NOW))
    assert stale[0].headers["X-Slack-Request-Timestamp"] == str(int(NOW))
    click(slack, app, ts, retries=0, body_override=b"payload=%7B%7D")
    headers, body = app.received[-1]
    assert body == b"payload=%7B%7D" and verifier(slack).is_valid_request(body, headers)
    assert len(slack.clicks) == 4


# --- the response_url ------------------------------------------------------------------------------------


def response_url(slack: SlackEmulator, app: App, user: str = "U0123ABCD") -> str:
    [attempt] = click(slack, app, post(slack), user_id=user)
    return slack.response_url_of(attempt)


def test_a_response_url_shows_an_ephemeral_to_who_clicked(slack: SlackEmulator, app: App) -> None:
    mine, theirs = response_url(slack, app), response_url(slack, app, user="U0SECOND")
    answer = WebhookClient(mine).send(text="advance requested: run r-7f3a", response_type="ephemeral")
    assert (answer.status_code, answer.body) == (200, "ok")
    plain = httpx.post(theirs, json={"text": "not yours", "replace_original": False})  # ephemeral by default
    assert (plain.status_code, plain.text) == (200, "ok")
    assert [e["text"] for e in slack.ephemerals("U0123ABCD")] == ["advance requested: run r-7f3a"]
    assert [e["text"] for e in slack.ephemerals("U0SECOND")] == ["not yours"]
    assert len(slack.ephemerals()) == 2
    [first, second] = slack.posted(CHANNEL)
    assert first["edits"] == second["edits"] == [] and not first["deleted"]  # nothing else changed


def test_a_response_url_is_good_for_five_uses(slack: SlackEmulator, app: App) -> None:
    url = response_url(slack, app)
    statuses = [httpx.post(url, json={"text": f"n{n}"}) for n in range(RESPONSE_URL_USES + 1)]
    assert [(r.status_code, r.text) for r in statuses] == [(200, "ok")] * RESPONSE_URL_USES + [
        (404, "used_url")
    ]
    assert [r["use"] for r in slack.responses()] == list(range(1, RESPONSE_URL_USES + 1))


def test_a_response_url_expires_thirty_minutes_after_the_click(slack: SlackEmulator, app: App) -> None:
    url = response_url(slack, app)
    slack.advance(RESPONSE_URL_TTL_S)
    assert httpx.post(url, json={"text": "just in time"}).status_code == 200
    slack.advance(1)
    late = httpx.post(url, json={"text": "too late"})
    assert (late.status_code, late.text) == (404, "expired_url")
    assert len(slack.responses()) == 1


def test_a_response_url_refuses_what_is_not_a_message_without_using_it_up(
    slack: SlackEmulator, app: App
) -> None:
    url = response_url(slack, app)
    assert (httpx.post(url, content=b"{not json").text, httpx.post(url, json={}).text) == (
        "invalid_payload",
        "invalid_payload",
    )
    bad = httpx.post(url, json={"blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}]})
    assert (bad.status_code, bad.text) == (400, "invalid_blocks")
    assert httpx.post(f"{slack.base_url}/actions/T0000DEMO/9/unknown", json={"text": "x"}).status_code == 404
    for n in range(RESPONSE_URL_USES):
        assert httpx.post(url, json={"text": f"n{n}"}).status_code == 200
    assert slack.refused and len(slack.responses()) == RESPONSE_URL_USES


def test_a_response_url_can_replace_or_delete_the_message_or_post_in_the_channel(
    slack: SlackEmulator, app: App
) -> None:
    ts = post(slack)
    urls = [slack.response_url_of(click(slack, app, ts)[0]) for _ in range(3)]
    replaced = [{"type": "section", "text": {"type": "mrkdwn", "text": "advance requested"}}]
    assert (
        httpx.post(urls[0], json={"replace_original": True, "text": "r", "blocks": replaced}).status_code
        == 200
    )
    message = slack.message(CHANNEL, ts)
    assert message is not None and (message["blocks"], message["text"], len(message["edits"])) == (
        replaced,
        "r",
        1,
    )
    assert (
        httpx.post(urls[1], json={"response_type": "in_channel", "text": "for everyone"}).status_code == 200
    )
    assert [m["text"] for m in slack.posted(CHANNEL)] == ["r", "for everyone"]
    assert httpx.post(urls[2], json={"delete_original": True}).status_code == 200
    message = slack.message(CHANNEL, ts)
    assert message is not None and message["deleted"]
    assert [r["shown"] for r in slack.responses()] == ["replaced", "in_channel", "deleted"]
    assert slack.ephemerals() == []
