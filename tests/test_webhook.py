"""The generic webhook channel against its emulator on 127.0.0.1: the JSON it posts, signing, the
statuses it answers, a URL kept out of error text, and the size of what is sent."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from dwnotify.channels.webhook import MAX_BODY_BYTES as WEBHOOK_MAX_BODY_BYTES
from dwnotify.channels.webhook import MAX_TEXT_BYTES
from dwnotify.message import Message
from emulators.webhook import GenericWebhookEmulator
from tests.helpers import BIG, CONSOLE_LINE, HOOK, HOSTILE, MESSAGE, SECRET, about, channel, refused
from tests.helpers import CHANNEL_NOW as NOW


@pytest.fixture
def hooks() -> Iterator[GenericWebhookEmulator]:
    with GenericWebhookEmulator({HOOK: None, "/hooks/signed-7c1d": SECRET}) as emulator:
        emulator.set_time(NOW)
        yield emulator


def test_webhook_posts_title_and_text(hooks: GenericWebhookEmulator, http: httpx.Client) -> None:
    channel(http, "webhook", hooks.base_url + HOOK).send(MESSAGE)
    assert hooks.messages(HOOK) == [{"title": MESSAGE.title, "text": MESSAGE.text}]


def test_webhook_signature(hooks: GenericWebhookEmulator, http: httpx.Client) -> None:
    url = f"{hooks.base_url}/hooks/signed-7c1d"
    channel(http, "webhook", url, secret=SECRET).send(MESSAGE)
    assert len(hooks.messages("/hooks/signed-7c1d")) == 1
    for chat, words in [
        (channel(http, "webhook", url, secret="wrong-secret-value"), "bad signature"),
        (channel(http, "webhook", url, clock=lambda: NOW - 600, secret=SECRET), "stale timestamp"),
        (channel(http, "webhook", url), "missing signature"),
    ]:
        error = refused(chat)
        assert not error.retryable and str(error).startswith("HTTP 401") and words in str(error)


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "retry_after"),
    [(429, {"Retry-After": "12"}, True, 12.0), (429, {}, True, 60.0), (502, {}, True, None),
     (408, {}, True, None), (400, {}, False, None), (410, {}, False, None)],
)  # fmt: skip
def test_webhook_statuses(
    hooks: GenericWebhookEmulator,
    http: httpx.Client,
    status: int,
    headers: dict[str, str],
    retryable: bool,
    retry_after: float | None,
) -> None:
    hooks.inject(status=status, headers=headers)
    error = refused(channel(http, "webhook", hooks.base_url + HOOK))
    assert (error.retryable, error.retry_after) == (retryable, retry_after)
    assert str(error).startswith(f"HTTP {status}")


def test_webhook_rate_limit_answers_retry_after(http: httpx.Client) -> None:
    with GenericWebhookEmulator({HOOK: None}, per_minute=2) as hooks:
        hooks.set_time(NOW)
        chat = channel(http, "webhook", hooks.base_url + HOOK)
        chat.send(MESSAGE)
        hooks.advance(15)
        chat.send(MESSAGE)
        error = refused(chat)
        assert error.retryable and error.retry_after == 45.0


def test_webhook_error_text_never_shows_the_url(hooks: GenericWebhookEmulator, http: httpx.Client) -> None:
    url = f"{hooks.base_url}{HOOK}?token={SECRET}"
    hooks.inject(status=404, body=f"no hook at {url} ({HOOK}, token {SECRET})")
    error = refused(channel(http, "webhook", url))
    assert str(error) == "HTTP 404 no hook at *** (***, token ***)"


def test_webhook_oversize_chinese_is_trimmed_and_accepted(
    hooks: GenericWebhookEmulator, http: httpx.Client
) -> None:
    channel(http, "webhook", hooks.base_url + HOOK).send(BIG)
    [body] = hooks.messages(HOOK)
    assert len(body["text"].encode()) <= MAX_TEXT_BYTES and body["text"].endswith(CONSOLE_LINE)


@pytest.mark.parametrize("unit", [*HOSTILE.values(), "错\x00\x01\x02\x03"])  # the last: 3x once escaped
def test_webhook_body_stays_within_64_kib_after_json_escaping(
    hooks: GenericWebhookEmulator, http: httpx.Client, unit: str
) -> None:
    text = "### ❌ 发布失败\n" + about(unit, 31_000) + "\n" + CONSOLE_LINE
    channel(http, "webhook", hooks.base_url + HOOK).send(Message("t", text))  # before: HTTP 413
    [attempt] = hooks.attempts
    [body] = hooks.messages(HOOK)
    assert len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()) <= WEBHOOK_MAX_BODY_BYTES
    assert attempt.status == 200 and body["text"].endswith(CONSOLE_LINE)
    assert len(body["text"].encode()) <= MAX_TEXT_BYTES
