"""The DingTalk channel against the robot emulator on 127.0.0.1: the size of what is sent."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dwnotify.channels import build_channel
from dwnotify.channels.base import TRIM_MARKER, ChannelMessage
from dwnotify.channels.dingtalk import MAX_BODY_BYTES, build_payload
from dwnotify.settings import ChannelSettings, Secret
from emulators.webhooks import DingTalkEmulator

NOW = 1_795_680_000.0
TOKEN = "ding-robot-token-31c7"
SECRET = "SEC5e0c9b1d7a3f4e2c8b6a9d0f1e2d3c4b"
CONSOLE_LINE = "[打开 DataWorks 控制台 · Open DataWorks](https://dataworks.data.aliyun.com/x)"


@pytest.fixture
def ding() -> Iterator[DingTalkEmulator]:
    with DingTalkEmulator({TOKEN: SECRET}) as emulator:
        emulator.set_time(NOW)
        yield emulator


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def settings_for(
    url: str = "https://oapi.dingtalk.com/robot/send?access_token=t", **extra: object
) -> ChannelSettings:
    return ChannelSettings("ops", "dingtalk", Secret(url), Secret(SECRET), **extra)  # type: ignore[arg-type]


def wire_size(payload: dict[str, object]) -> int:
    return len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


# --- the 20,000 bytes are the request body's, not the text's ----------------------------------------

# Units of text that JSON escaping grows: a quote or a backslash takes two bytes, a control character six.
HOSTILE = {
    "quotes": 'SQL 报错: "id","name","ds" ',
    "backslashes": r"C:\dataworks\nodes\ods_user\run.log ",
    "control characters": "节点\x01\x02\x1b[31m失败\x7f\t",
    "newlines": "未通过\n\n",
    "mixed": 'line "a"\\b\r\n\x00任务 ',
}


def about(unit: str, size: int) -> str:
    """`unit` repeated to about `size` bytes of UTF-8."""
    return unit * (size // len(unit.encode()))


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_text_that_json_escaping_grows_past_the_limit_is_fitted_and_accepted(
    ding: DingTalkEmulator, http: httpx.Client, kind: str
) -> None:
    text = "### ❌ 发布失败\n\n" + about(HOSTILE[kind], 18_000) + "\n" + CONSOLE_LINE
    assert len(text.encode()) < MAX_BODY_BYTES < wire_size({"text": text})  # over only once encoded
    url = f"{ding.base_url}/robot/send?access_token={TOKEN}"
    chat = build_channel(settings_for(url, at_mobiles=("13800000000",)), http, 5.0, lambda: NOW)
    chat.send(ChannelMessage("❌ 发布失败", text))  # before: errcode 460101, failed for good
    [attempt] = ding.attempts
    assert attempt.result == "0"
    sent = attempt.body["markdown"]["text"]
    assert TRIM_MARKER in sent and sent.endswith(f"{CONSOLE_LINE}\n\n@13800000000")
    assert text.startswith(sent.split(TRIM_MARKER)[0]) and "\ufffd" not in sent


@given(
    st.text(alphabet=st.sampled_from('"\\\n\r\t\x00\x01\x1f<>&*[]`_#发布失败 ab'), min_size=1, max_size=40),
    st.integers(min_value=0, max_value=4_000),
)
@settings(max_examples=80, deadline=None)
def test_any_text_fits_the_body_limit(unit: str, times: int) -> None:
    body = unit * times + "\n" + CONSOLE_LINE
    payload = build_payload(settings_for(keyword="发布", at_user_ids=("u1",)), ChannelMessage("t", body))
    assert wire_size(payload) <= MAX_BODY_BYTES
    if wire_size({"text": body}) <= 15_000:
        assert payload["markdown"]["text"].startswith(body)  # nothing cut that fitted
    else:
        assert payload["markdown"]["text"].split("\n\n@u1")[0].endswith(CONSOLE_LINE)


def test_a_body_that_fits_is_not_trimmed() -> None:
    text = '"quoted" \\ back\nslash ' * 100
    payload = build_payload(settings_for(), ChannelMessage("t", text))
    assert payload["markdown"]["text"] == text and TRIM_MARKER not in text


def test_the_emulator_measures_the_body_as_dingtalk_does(ding: DingTalkEmulator, http: httpx.Client) -> None:
    ding.robots["plain"] = None
    text = '"' * 12_000  # 12,000 bytes of text, 24,000 of body
    body = {"msgtype": "markdown", "markdown": {"title": "t", "text": text}}
    url = f"{ding.base_url}/robot/send?access_token=plain"
    answer = http.post(url, content=json.dumps(body).encode()).json()
    assert answer["errcode"] == 460101
    body["markdown"]["text"] = "失" * 6_600  # 19,800 bytes of UTF-8, sent as it is
    answer = http.post(url, content=json.dumps(body, ensure_ascii=False).encode()).json()
    assert answer["errcode"] == 0
