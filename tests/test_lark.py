"""The Lark (Feishu) channel against its custom-bot emulator on 127.0.0.1: the card it sends, signing,
the keyword a bot requires, the bot's answers and rate limit, and the size of what is sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dwnotify.channels.lark import MAX_BODY_BYTES, build_payload
from dwnotify.credentials import Secret
from dwnotify.message import Message
from dwnotify.settings import ChannelSettings
from emulators.lark import LarkEmulator
from tests.helpers import (
    BIG,
    CONSOLE_LINE,
    HOSTILE,
    LARK_TOKEN,
    MESSAGE,
    SECRET,
    about,
    channel,
    lark_url,
    refused,
)
from tests.helpers import CHANNEL_NOW as NOW


@pytest.fixture
def lark() -> Iterator[LarkEmulator]:
    bots = {LARK_TOKEN: None, "signed-bot-token": SECRET, "keyword-bot-token": None}
    with LarkEmulator(bots, keywords={"keyword-bot-token": "上线"}) as emulator:
        emulator.set_time(NOW)
        yield emulator


def test_lark_sends_a_card_with_the_title_as_header(lark: LarkEmulator, http: httpx.Client) -> None:
    channel(http, "lark", lark_url(lark)).send(MESSAGE)
    [body] = lark.messages(LARK_TOKEN)
    assert body["msg_type"] == "interactive" and "sign" not in body
    assert body["card"]["header"]["title"]["content"] == MESSAGE.title
    [element] = body["card"]["elements"]
    assert element["tag"] == "markdown"
    assert element["content"].startswith("- 运行 Run: `a7ef`")  # the title line moved to the header
    assert "**原因 Reason**" in element["content"] and "####" not in element["content"]


def test_lark_digest_title_goes_to_the_header() -> None:
    digest = Message("DataWorks: 2 updates", "*DataWorks: 2 updates*\n\n---\n\nfirst\n\n---\n\nsecond")
    payload = build_payload(ChannelSettings("chat", "lark", Secret("u")), digest)
    assert payload["card"]["header"]["title"]["content"] == "DataWorks: 2 updates"
    assert payload["card"]["elements"][0]["content"].startswith("---\n\nfirst")


def test_lark_signature_is_accepted_and_a_wrong_secret_refused(
    lark: LarkEmulator, http: httpx.Client
) -> None:
    url = lark_url(lark, "signed-bot-token")
    channel(http, "lark", url, secret=SECRET).send(MESSAGE)
    assert len(lark.messages("signed-bot-token")) == 1
    error = refused(channel(http, "lark", url, secret="not-the-secret"))
    assert not error.retryable and str(error).startswith("code 19021: sign match fail")
    stale = refused(channel(http, "lark", url, clock=lambda: NOW - 2 * 3600, secret=SECRET))
    assert "19021" in str(stale) and not stale.retryable


def test_lark_sign_matches_the_documented_recipe() -> None:
    # Not judged by our emulator (written from the same reading): the `gen_sign` sample of Lark's
    # custom-bot guide - HMAC-SHA256 keyed with f"{timestamp}\n{secret}" over an empty message,
    # base64 - run by hand for timestamp 1599360473 and secret "demo", pinned here.
    from dwnotify.channels.lark import sign

    assert sign("demo", 1599360473) == "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8="


def test_lark_adds_the_keyword_a_bot_requires(lark: LarkEmulator, http: httpx.Client) -> None:
    channel(http, "lark", lark_url(lark, "keyword-bot-token"), keyword="上线").send(MESSAGE)
    [body] = lark.messages("keyword-bot-token")
    assert body["card"]["header"]["title"]["content"] == f"{MESSAGE.title} 上线"
    error = refused(channel(http, "lark", lark_url(lark, "keyword-bot-token")))
    assert "19024" in str(error) and "Key Words Not Found" in str(error) and not error.retryable


def test_lark_rate_limit_is_retryable(lark: LarkEmulator, http: httpx.Client) -> None:
    chat = channel(http, "lark", lark_url(lark))
    for _ in range(5):
        chat.send(MESSAGE)  # the emulator's clock stands still: all five in one second
    error = refused(chat)
    assert error.retryable and error.retry_after == 60.0 and "11232" in str(error)
    lark.advance(1.0)
    chat.send(MESSAGE)


@pytest.mark.parametrize(
    ("status", "body", "headers", "retryable", "retry_after", "words"),
    [
        (200, {"code": 9499, "msg": "Bad Request", "data": {}}, {}, False, None, "code 9499: Bad Request"),
        (200, {"code": 19022, "msg": "Ip Not Allowed"}, {}, False, None, "code 19022: Ip Not Allowed"),
        (200, {"StatusCode": 19001, "StatusMessage": "param invalid"}, {}, False, None, "19001"),
        (503, "upstream", {}, True, None, "HTTP 503"),
        (429, "", {"Retry-After": "7"}, True, 7.0, "HTTP 429"),
        (200, "<html>proxy</html>", {}, True, None, "not Lark JSON"),
        (403, "<html>forbidden</html>", {}, False, None, "HTTP 403"),
    ],
)
def test_lark_answers(
    lark: LarkEmulator,
    http: httpx.Client,
    status: int,
    body: Any,
    headers: dict[str, str],
    retryable: bool,
    retry_after: float | None,
    words: str,
) -> None:
    lark.inject(status=status, body=body, headers=headers)
    error = refused(channel(http, "lark", lark_url(lark)))
    assert (error.retryable, error.retry_after) == (retryable, retry_after)
    assert words in str(error)


def test_lark_unknown_token_is_permanent(lark: LarkEmulator, http: httpx.Client) -> None:
    error = refused(channel(http, "lark", lark_url(lark, "deleted-bot-token")))
    assert not error.retryable and "incoming webhook access token invalid" in str(error)


def test_lark_oversize_chinese_is_trimmed_and_accepted(lark: LarkEmulator, http: httpx.Client) -> None:
    channel(http, "lark", lark_url(lark, "signed-bot-token"), secret=SECRET).send(BIG)
    [body] = lark.messages("signed-bot-token")
    wire = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(wire) <= MAX_BODY_BYTES
    content = body["card"]["elements"][0]["content"]
    assert "…(truncated)" in content and content.endswith(CONSOLE_LINE)


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_lark_body_is_measured_after_json_escaping(lark: LarkEmulator, http: httpx.Client, kind: str) -> None:
    text = "### ❌ 发布失败\n" + about(HOSTILE[kind], 19_000) + "\n" + CONSOLE_LINE
    channel(http, "lark", lark_url(lark, "signed-bot-token"), secret=SECRET).send(Message("t", text))
    [body] = lark.messages("signed-bot-token")
    content = body["card"]["elements"][0]["content"]
    assert "…(truncated)" in content and content.endswith(CONSOLE_LINE)


def test_lark_emulator_refuses_an_oversize_body(lark: LarkEmulator, http: httpx.Client) -> None:
    text = "失败" * 4000  # 24 KB
    card = {"elements": [{"tag": "markdown", "content": text}]}
    answer = http.post(lark_url(lark), json={"msg_type": "interactive", "card": card}).json()
    assert (answer["code"], answer["msg"]) == (9499, "Bad Request")
