"""The WeCom (企业微信) channel against its group-robot emulator on 127.0.0.1: markdown with mentions,
the robot's answers and rate limit, and the size of what is sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dwnotify.channels.wecom import MAX_CONTENT_BYTES
from dwnotify.message import Message
from emulators.wecom import WeComEmulator
from tests.helpers import BIG, CONSOLE_LINE, HOSTILE, MESSAGE, WECOM_KEY, about, channel, refused, wecom_url
from tests.helpers import CHANNEL_NOW as NOW


@pytest.fixture
def wecom() -> Iterator[WeComEmulator]:
    with WeComEmulator({WECOM_KEY}) as emulator:
        emulator.set_time(NOW)
        yield emulator


def test_wecom_sends_markdown_with_mentions(wecom: WeComEmulator, http: httpx.Client) -> None:
    channel(http, "wecom", wecom_url(wecom), at_user_ids=("ops-lead", "zhangsan")).send(MESSAGE)
    [body] = wecom.messages(WECOM_KEY)
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["content"].startswith("### ❌ 发布失败")
    assert wecom.mentions(WECOM_KEY) == ["ops-lead", "zhangsan"]


def test_wecom_rate_limit_is_retryable(wecom: WeComEmulator, http: httpx.Client) -> None:
    chat = channel(http, "wecom", wecom_url(wecom))
    for _ in range(20):
        chat.send(MESSAGE)
    error = refused(chat)
    assert error.retryable and error.retry_after == 60.0
    assert str(error) == "errcode 45009: api freq out of limit (over 20 messages a minute)"
    wecom.advance(60)
    chat.send(MESSAGE)


def test_wecom_unknown_key_is_permanent_without_wecoms_hint(wecom: WeComEmulator, http: httpx.Client) -> None:
    error = refused(channel(http, "wecom", wecom_url(wecom, "removed-robot-key")))
    assert not error.retryable and str(error).startswith("errcode 93000: invalid webhook url (")
    assert "hint" not in str(error) and "from ip" not in str(error)


@pytest.mark.parametrize(
    ("body", "retryable", "words"),
    [
        ({"errcode": 40058, "errmsg": "markdown.content exceed max length 4096. invalid Request Parameter"},
         False, "errcode 40058: markdown.content exceed max length 4096"),
        ({"errcode": 44004, "errmsg": "empty content, hint: [1], from ip: 1.2.3.4"}, False, "empty content"),
        ({"errcode": -1, "errmsg": "system busy"}, True, "errcode -1: system busy"),
        ("not json", True, "not WeCom JSON"),
    ],
)  # fmt: skip
def test_wecom_answers(
    wecom: WeComEmulator, http: httpx.Client, body: Any, retryable: bool, words: str
) -> None:
    wecom.inject(body=body)
    error = refused(channel(http, "wecom", wecom_url(wecom)))
    assert error.retryable is retryable and words in str(error) and "1.2.3.4" not in str(error)


def test_wecom_oversize_chinese_is_trimmed_and_accepted(wecom: WeComEmulator, http: httpx.Client) -> None:
    channel(http, "wecom", wecom_url(wecom), at_user_ids=("ops-lead",)).send(BIG)
    [body] = wecom.messages(WECOM_KEY)
    content = body["markdown"]["content"]
    assert len(content.encode()) <= MAX_CONTENT_BYTES
    assert f"{CONSOLE_LINE}\n\n<@ops-lead>" in content and "…(truncated)" in content


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_wecom_limit_is_on_the_content_not_its_json_escaping(
    wecom: WeComEmulator, http: httpx.Client, kind: str
) -> None:
    # WeCom documents 4,096 bytes of markdown.content (its error names the field): the text as it
    # decodes, not as JSON escaping writes it. A content near the limit that escapes larger is sent.
    text = about(HOSTILE[kind], 3_900) + "\n" + CONSOLE_LINE
    escaped = len(json.dumps(text, ensure_ascii=False).encode())
    assert len(text.encode()) <= MAX_CONTENT_BYTES < escaped
    channel(http, "wecom", wecom_url(wecom)).send(Message("t", text))
    [body] = wecom.messages(WECOM_KEY)
    assert body["markdown"]["content"] == text


def test_wecom_emulator_limits(wecom: WeComEmulator, http: httpx.Client) -> None:
    def errcode(body: Any) -> int:
        return int(http.post(wecom_url(wecom), json=body).json()["errcode"])

    assert errcode({"msgtype": "markdown", "markdown": {"content": "失" * 1366}}) == 40058  # 4,098 bytes
    assert errcode({"msgtype": "markdown", "markdown": {"content": ""}}) == 44004
    assert errcode({"msgtype": "text", "text": {"content": "x" * 2049}}) == 40058
    assert errcode({"msgtype": "voice2", "voice2": {}}) == 40008
    assert errcode({"msgtype": "markdown", "markdown": {"content": "失" * 1365}}) == 0
