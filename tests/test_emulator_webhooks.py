"""The DingTalk robot and Slack incoming-webhook emulators, driven over HTTP with httpx."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest

from emulators.dingtalk import DingTalkEmulator
from emulators.slack import SlackEmulator
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_795_680_000.0
SECRET = "SEC0123456789abcdef"


@pytest.fixture
def ding() -> Iterator[DingTalkEmulator]:
    emulator = DingTalkEmulator({"plain": None, "signed": SECRET, "kw": None}, keywords={"kw": "发布"})
    emulator.set_time(NOW)
    with emulator:
        yield emulator


@pytest.fixture
def slack() -> Iterator[SlackEmulator]:
    emulator = SlackEmulator({"T000/B000/XXXX"})
    emulator.set_time(NOW)
    with emulator:
        yield emulator


def sign(secret: str, timestamp_ms: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode())


def text(content: str = "发布成功") -> dict[str, Any]:
    return {"msgtype": "text", "text": {"content": content}, "at": {"atMobiles": ["13800000000"]}}


def send(
    http: httpx.Client, ding: DingTalkEmulator, token: str, body: Any, query: str = ""
) -> dict[str, Any]:
    url = f"{ding.base_url}/robot/send?access_token={token}{query}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post(url, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    return response.json()


def signed_query(timestamp_ms: int, secret: str = SECRET) -> str:
    return f"&timestamp={timestamp_ms}&sign={sign(secret, timestamp_ms)}"


def test_dingtalk_plain_robot_keeps_the_message(ding: DingTalkEmulator, http: httpx.Client) -> None:
    assert send(http, ding, "plain", text()) == {"errcode": 0, "errmsg": "ok"}
    assert ding.received == [text()]
    assert ding.received[0]["at"] == {"atMobiles": ["13800000000"]}
    assert ding.messages("plain") == [text()]


def test_dingtalk_sign(ding: DingTalkEmulator, http: httpx.Client) -> None:
    now_ms = int(NOW * 1000)
    assert send(http, ding, "signed", text(), signed_query(now_ms))["errcode"] == 0
    assert send(http, ding, "signed", text(), signed_query(now_ms, "SECwrong"))["errcode"] == 310000
    assert send(http, ding, "signed", text())["errcode"] == 310000
    stale = now_ms - 3601 * 1000
    assert send(http, ding, "signed", text(), signed_query(stale))["errcode"] == 310000
    assert len(ding.received) == 1


@pytest.mark.parametrize(
    ("token", "body", "errcode"),
    [
        ("nobody", text(), 300001),
        ("plain", b"{not json", 40035),
        ("plain", {"msgtype": "voice", "voice": {}}, 40035),
        ("plain", {"msgtype": "text", "text": {}}, 40035),
        ("plain", {"msgtype": "markdown", "markdown": {"text": "# hi"}}, 400402),
        ("plain", text("x" * 20_001), 460101),
        ("kw", text("deploy done"), 310000),
        ("kw", {"msgtype": "markdown", "markdown": {"title": "发布失败", "text": "details"}}, 0),
        ("plain", {"msgtype": "link", "link": {"title": "t", "text": "x", "messageUrl": "https://e"}}, 0),
        ("plain", {"msgtype": "actionCard", "actionCard": {"title": "t", "text": "x"}}, 0),
        ("plain", {"msgtype": "feedCard", "feedCard": {"links": [{"title": "t"}]}}, 0),
    ],
)
def test_dingtalk_content_checks(
    ding: DingTalkEmulator, http: httpx.Client, token: str, body: Any, errcode: int
) -> None:
    assert send(http, ding, token, body)["errcode"] == errcode
    assert len(ding.received) == (errcode == 0)


def test_dingtalk_21st_message_in_a_minute_silences_the_robot(
    ding: DingTalkEmulator, http: httpx.Client
) -> None:
    for i in range(20):
        ding.advance(2)
        assert send(http, ding, "plain", text(f"发布 {i}"))["errcode"] == 0
    answer = send(http, ding, "plain", text("one too many"))
    assert answer["errcode"] == 130101
    assert ding.silenced("plain")
    ding.advance(120)  # the minute is over, the penalty is not
    assert send(http, ding, "plain", text())["errcode"] == 130101
    assert send(http, ding, "kw", text())["errcode"] == 0  # other robots are unaffected
    ding.advance(600)
    assert not ding.silenced("plain")
    assert send(http, ding, "plain", text())["errcode"] == 0
    assert len(ding.received) == 22


def test_dingtalk_injected_answers(ding: DingTalkEmulator, http: httpx.Client) -> None:
    ding.inject(times=2)
    assert send(http, ding, "plain", text()) == {"errcode": -1, "errmsg": "系统繁忙"}
    assert send(http, ding, "plain", text())["errcode"] == -1
    ding.inject(status=502, body="bad gateway")
    response = http.post(f"{ding.base_url}/robot/send?access_token=plain", json=text())
    assert (response.status_code, response.text) == (502, "bad gateway")
    assert send(http, ding, "plain", text())["errcode"] == 0
    assert [a.result for a in ding.attempts] == ["injected", "injected", "injected", "0"]


def test_slack_ok_and_received(slack: SlackEmulator, http: httpx.Client) -> None:
    payload = {
        "text": "run a7ef succeeded",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*ok*"}}],
    }
    response = http.post(f"{slack.base_url}/services/T000/B000/XXXX", json=payload)
    assert (response.status_code, response.text) == (200, "ok")
    assert response.headers["content-type"].startswith("text/plain")
    assert slack.received == [payload]


def test_slack_unknown_hook_and_bad_payloads(slack: SlackEmulator, http: httpx.Client) -> None:
    url = f"{slack.base_url}/services/T000/B000/XXXX"
    response = http.post(f"{slack.base_url}/services/T000/B000/nope", json={"text": "x"})
    assert (response.status_code, response.text) == (404, "no_service")
    cases = [
        (b"{", "invalid_payload"),
        (json.dumps({"username": "x"}).encode(), "invalid_payload"),
        (json.dumps({"text": "x", "blocks": [{"type": "divider"}] * 51}).encode(), "invalid_blocks"),
        (
            json.dumps(
                {"blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]}
            ).encode(),
            "invalid_blocks",
        ),
        (
            json.dumps(
                {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3001}}]}
            ).encode(),
            "invalid_blocks",
        ),
    ]
    for body, word in cases:
        slack.advance(1)
        response = http.post(url, content=body, headers={"Content-Type": "application/json"})
        assert (response.status_code, response.text) == (400, word), body[:40]
    assert slack.received == []


def test_slack_takes_legacy_attachments_alone(slack: SlackEmulator, http: httpx.Client) -> None:
    url = f"{slack.base_url}/services/T000/B000/XXXX"
    payload = {"attachments": [{"fallback": "run failed", "color": "#d00000", "text": "run a7ef failed"}]}
    response = http.post(url, json=payload)
    assert (response.status_code, response.text) == (200, "ok")
    assert slack.received == [payload] and slack.refused == []


@pytest.mark.parametrize(
    ("payload", "word", "why"),
    [
        ({"attachments": "x"}, "invalid_payload", "attachments must be a list of objects"),
        ({"attachments": [{"text": "x"}] * 101}, "too_many_attachments", "101 attachments"),
        (
            {
                "attachments": [
                    {"blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]}
                ]
            },
            "invalid_blocks",
            "attachments[0].blocks[0] (header): text must be 1 to 150 characters",
        ),
    ],
)
def test_slack_judges_attachments(
    slack: SlackEmulator, http: httpx.Client, payload: dict[str, Any], word: str, why: str
) -> None:
    response = http.post(f"{slack.base_url}/services/T000/B000/XXXX", json=payload)
    assert (response.status_code, response.text) == (400, word)
    assert slack.refused == [f"{word}: {why}"]


SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "x"}}
BUTTON = {"type": "button", "text": {"type": "plain_text", "text": "Open"}, "url": "https://x"}


@pytest.mark.parametrize(
    ("block", "why"),
    [
        # What only slack_sdk's Block Kit models refuse here:
        ({"type": "section", "text": {"type": "plain_text", "text": "x", "verbatim": True}}, "TypeError"),
        ({"type": "section", "text": {"type": "mrkdwn", "text": "x", "emoji": True}}, "TypeError"),
        ({"type": "actions", "elements": [BUTTON] * 26}, "cannot exceed 25 elements"),
        (
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "x"}, {"type": "nope"}]},
            "does not know",
        ),
        ({"type": "image", "image_url": "https://x/i.png", "alt_text": "a" * 2001}, "alt_text"),
        # What slack_sdk lets through and Block Kit's documented limits do not:
        (
            {"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]},
            "field text must be 1 to 2000",
        ),
        ({"type": "section", "text": {"type": "mrkdwn", "text": ""}}, "text must be 1 to 3000"),
        ({"type": "header", "text": {"type": "mrkdwn", "text": "h"}}, "must be a plain_text text object"),
        (
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "c" * 3001}]},
            "element text must be 1 to 3000",
        ),
    ],
)
def test_slack_judges_every_block_with_slack_sdk_and_the_documented_limits(
    slack: SlackEmulator, http: httpx.Client, block: dict[str, Any], why: str
) -> None:
    response = http.post(
        f"{slack.base_url}/services/T000/B000/XXXX", json={"text": "t", "blocks": [SECTION, block]}
    )
    assert (response.status_code, response.text) == (400, "invalid_blocks")
    [refused] = slack.refused
    assert refused.startswith(f"invalid_blocks: blocks[1] ({block['type']}): ") and why in refused, refused
    assert slack.received == []
    assert http.get(f"{slack.base_url}/_emulator").json()["refused"] == [refused]


def test_slack_rate_limit_allows_a_burst_of_three(slack: SlackEmulator, http: httpx.Client) -> None:
    url = f"{slack.base_url}/services/T000/B000/XXXX"
    assert [http.post(url, json={"text": str(i)}).status_code for i in range(3)] == [200, 200, 200]
    limited = http.post(url, json={"text": "4"})
    assert (limited.status_code, limited.text, limited.headers["Retry-After"]) == (429, "rate_limited", "1")
    slack.advance(1)
    assert http.post(url, json={"text": "5"}).status_code == 200
    assert http.post(url, json={"text": "6"}).status_code == 429
    assert [m["text"] for m in slack.received] == ["0", "1", "2", "5"]


@pytest.mark.parametrize(
    ("status", "word"), [(403, "invalid_token"), (410, "channel_is_archived"), (500, "rollup_error")]
)
def test_slack_injected_errors(slack: SlackEmulator, http: httpx.Client, status: int, word: str) -> None:
    slack.inject(status=status)
    url = f"{slack.base_url}/services/T000/B000/XXXX"
    response = http.post(url, json={"text": "x"})
    assert (response.status_code, response.text) == (status, word)
    assert http.post(url, json={"text": "x"}).status_code == 200


def test_control_api_reads_records_and_moves_the_clock(slack: SlackEmulator, http: httpx.Client) -> None:
    http.post(f"{slack.base_url}/services/T000/B000/XXXX", json={"text": "hello"})
    http.post(f"{slack.base_url}/_emulator/clock", json={"advance": 30})
    state = http.get(f"{slack.base_url}/_emulator").json()
    assert state["received"] == [{"text": "hello"}]
    assert state["now"] == NOW + 30
    http.post(f"{slack.base_url}/_emulator/inject", json={"status": 410})
    assert http.post(f"{slack.base_url}/services/T000/B000/XXXX", json={"text": "x"}).status_code == 410


@pytest.mark.parametrize(
    ("service", "probe"),
    [("dingtalk", "/robot/send?access_token=demo"), ("slack", "/services/T000/B000/demo")],
)
def test_cli_default_targets(service: str, probe: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulators", service], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        body = {"msgtype": "text", "text": {"content": "hi"}} if service == "dingtalk" else {"text": "hi"}
        response = httpx.post(url + probe, json=body)
        assert response.status_code == 200
        assert response.text in ("ok", '{"errcode": 0, "errmsg": "ok"}')
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize("drip_headers", [False, True], ids=["body", "whole-answer"])
def test_an_injected_drip_arrives_whole_one_byte_at_a_time(
    ding: DingTalkEmulator, http: httpx.Client, drip_headers: bool
) -> None:
    ding.inject(status=200, body={"errcode": 0, "errmsg": "ok"}, drip_s=0.005, drip_headers=drip_headers)
    pieces: list[bytes] = []
    url = f"{ding.base_url}/robot/send?access_token=plain"
    with http.stream("POST", url, json=text()) as response:
        pieces += response.iter_raw()
    assert response.status_code == 200 and json.loads(b"".join(pieces)) == {"errcode": 0, "errmsg": "ok"}
    assert len(pieces) > 1  # it came in pieces, not in one write
    assert [a.result for a in ding.attempts] == ["injected"] and ding.received == []
    assert send(http, ding, "plain", text())["errcode"] == 0  # one answer injected, then the robot again


def test_a_client_hanging_up_on_a_drip_is_counted(slack: SlackEmulator) -> None:
    import socket

    slack.inject(status=200, body="ok" * 50, drip_s=0.02)
    host, port = slack.base_url.removeprefix("http://").split(":")
    body = b'{"text": "hi"}'
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /services/T000/B000/XXXX HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert sock.recv(12).startswith(b"HTTP/1.1 200")
    assert wait_for(lambda: slack.hang_ups == 1)
