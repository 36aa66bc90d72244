"""A judge for the DingTalk robot emulator: DingtalkChatbot 1.5.7, a widely used client no one here wrote.

What it sends signed, the emulator must take; what it sends wrong, the emulator must refuse with the
errcode DingTalk gives (310000). Its signature is also checked against the recipe in platform-facts
(timestamp in ms, base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")), URL-encoded) and
against dwnotify's own `sign`. The client runs on the real clock (it reads time.time() itself), so
the emulator does too; a few messages only (it sleeps past 20 a minute).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from dingtalkchatbot.chatbot import DingtalkChatbot

from dwnotify.channels.dingtalk import sign
from emulators.dingtalk import DingTalkEmulator

TOKEN = "judge-robot-token-8d2e"
SECRET = "SEC9b3f0e6a1c2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a7b8c9d0e1f2a3b"


@pytest.fixture
def robot() -> Iterator[DingTalkEmulator]:
    with DingTalkEmulator({TOKEN: SECRET, "unsigned": None}) as emulator:
        yield emulator


def bot(robot: DingTalkEmulator, secret: str | None = SECRET, token: str = TOKEN) -> DingtalkChatbot:
    return DingtalkChatbot(f"{robot.base_url}/robot/send?access_token={token}", secret=secret)


def test_its_signed_text_and_markdown_are_accepted(robot: DingTalkEmulator) -> None:
    client = bot(robot)
    assert client.send_text("发布成功 · Deployment succeeded", at_mobiles=["13800000000"]) == {
        "errcode": 0,
        "errmsg": "ok",
    }
    markdown = (
        "### ❌ 发布失败\n\n- **Finance DW**\n\n> 节点依赖缺失\n\n[打开](https://dataworks.data.aliyun.com/x)"
    )
    assert client.send_markdown("❌ 发布失败", markdown)["errcode"] == 0
    text, card = robot.messages(TOKEN)
    assert text["text"]["content"] == "发布成功 · Deployment succeeded\n@13800000000"
    assert text["at"]["atMobiles"] == ["13800000000"]
    assert card["markdown"]["title"] == "❌ 发布失败"
    assert card["markdown"]["text"].startswith("### ❌ 发布失败\n\n- **Finance DW**")


def test_its_signature_is_the_documented_recipe_and_ours(robot: DingTalkEmulator) -> None:
    before_ms = time.time() * 1000
    client = bot(robot)
    query = urlsplit(client.webhook).query
    params = parse_qs(query)
    timestamp = int(params["timestamp"][0])
    assert abs(timestamp - before_ms) < 5_000  # milliseconds, now
    digest = hmac.new(SECRET.encode(), f"{timestamp}\n{SECRET}".encode(), hashlib.sha256).digest()
    assert params["sign"] == [base64.b64encode(digest).decode()]  # what the query decodes to
    assert f"sign={sign(SECRET, timestamp)}" in query  # dwnotify writes the same bytes on the wire


def test_a_wrong_signature_is_refused_with_310000(robot: DingTalkEmulator) -> None:
    wrong = bot(robot, secret="SEC" + "0" * 64)
    assert wrong.send_text("发布成功")["errcode"] == 310000
    tampered = bot(robot)
    tampered.webhook = tampered.webhook.replace("sign=", "sign=x", 1)
    assert tampered.send_markdown("t", "### t")["errcode"] == 310000
    unsigned = bot(robot, secret=None)  # no timestamp, no sign: a signing robot refuses it
    assert unsigned.send_text("发布成功")["errcode"] == 310000
    assert robot.messages(TOKEN) == []
    assert [a.result for a in robot.attempts] == ["310000"] * 3


def test_a_signature_over_an_hour_old_is_refused(robot: DingTalkEmulator) -> None:
    client = bot(robot)
    robot.set_time(time.time() + 3600 + 60)  # the robot's clock an hour and a minute on
    assert client.send_text("发布成功")["errcode"] == 310000
    robot.set_time(time.time() + 3600 - 60)
    assert client.send_text("发布成功")["errcode"] == 0


def test_an_unsigned_robot_takes_it_unsigned(robot: DingTalkEmulator) -> None:
    assert bot(robot, secret=None, token="unsigned").send_text("发布成功")["errcode"] == 0
    assert bot(robot, token="no-such-robot").send_text("发布成功")["errcode"] == 300001
