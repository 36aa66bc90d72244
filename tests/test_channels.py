"""Lark, WeCom and generic webhook channels against their emulators on 127.0.0.1, plus config and render."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from dwnotify.channels import Channel, build_channel
from dwnotify.channels.lark import MAX_BODY_BYTES, build_payload
from dwnotify.channels.webhook import MAX_BODY_BYTES as WEBHOOK_MAX_BODY_BYTES
from dwnotify.channels.webhook import MAX_TEXT_BYTES
from dwnotify.channels.wecom import MAX_CONTENT_BYTES
from dwnotify.config import parse
from dwnotify.credentials import Secret
from dwnotify.errors import ConfigError, DeliveryError
from dwnotify.message import Message
from dwnotify.model import EVENT_TYPES
from dwnotify.render import Renderer
from dwnotify.samples import sample_context
from dwnotify.settings import ChannelSettings, ProjectSettings
from emulators.lark import LarkEmulator
from emulators.webhook import GenericWebhookEmulator
from emulators.wecom import WeComEmulator
from tests.conftest import World
from tests.helpers import CHECK_MESSAGE, CONSOLE, HEADLINES, HOSTILE, about, fail_run, one_event_context

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_795_680_000.0
SECRET = "lark-or-hook-secret-7f3a"
LARK_TOKEN = "0d5b2c1e-lark-token-9a7f"
WECOM_KEY = "693a91f6-wecom-key-0ec2"
HOOK = "/hooks/dwnotify-b41c9e"
CONSOLE_LINE = "[打开 DataWorks 控制台 · Open DataWorks](https://dataworks.data.aliyun.com/x)"
MESSAGE = Message(
    "❌ 发布失败 · Deployment failed",
    f"### ❌ 发布失败 · Deployment failed\n\n- 运行 Run: `a7ef`\n\n#### 原因 Reason\n\n{CONSOLE_LINE}",
)
BIG = Message("❌ 发布失败", "### ❌ 发布失败\n" + "节点依赖缺失，请检查。\n" * 3000 + CONSOLE_LINE)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


@pytest.fixture
def lark() -> Iterator[LarkEmulator]:
    bots = {LARK_TOKEN: None, "signed-bot-token": SECRET, "keyword-bot-token": None}
    with LarkEmulator(bots, keywords={"keyword-bot-token": "上线"}) as emulator:
        emulator.set_time(NOW)
        yield emulator


@pytest.fixture
def wecom() -> Iterator[WeComEmulator]:
    with WeComEmulator({WECOM_KEY}) as emulator:
        emulator.set_time(NOW)
        yield emulator


@pytest.fixture
def hooks() -> Iterator[GenericWebhookEmulator]:
    with GenericWebhookEmulator({HOOK: None, "/hooks/signed-7c1d": SECRET}) as emulator:
        emulator.set_time(NOW)
        yield emulator


def channel(
    http: httpx.Client, kind: str, url: str, clock: Callable[[], float] = lambda: NOW, **extra: Any
) -> Channel:
    secret = extra.pop("secret", None)
    settings = ChannelSettings("chat", kind, Secret(url), Secret(secret) if secret else None, **extra)
    return build_channel(settings, http, 5.0, clock)


def refused(chat: Channel, message: Message = MESSAGE) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        chat.send(message)
    error = caught.value
    assert error.channel == "chat"
    for secret in (LARK_TOKEN, WECOM_KEY, HOOK, "signed-bot-token", "127.0.0.1", SECRET):
        assert secret not in str(error) and secret not in repr(error.args)
    return error


# --- Lark ------------------------------------------------------------------------------------------


def lark_url(lark: LarkEmulator, token: str = LARK_TOKEN) -> str:
    return f"{lark.base_url}/open-apis/bot/v2/hook/{token}"


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


# --- WeCom -----------------------------------------------------------------------------------------


def wecom_url(wecom: WeComEmulator, key: str = WECOM_KEY) -> str:
    return f"{wecom.base_url}/cgi-bin/webhook/send?key={key}"


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


# --- generic webhook -------------------------------------------------------------------------------


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


def test_network_errors_are_retryable(http: httpx.Client) -> None:
    with GenericWebhookEmulator({HOOK: None}) as hooks:
        url = hooks.base_url
    for kind, path in [("lark", "/open-apis/bot/v2/hook/x"), ("wecom", "/cgi-bin/webhook/send?key=k"),
                       ("webhook", HOOK)]:  # fmt: skip
        error = refused(channel(http, kind, url + path))
        assert error.retryable and str(error).startswith("network error")


# A URL no request can be made of: config refuses each at load (addresses.py); these reach the
# channels only through settings built by hand, or a check that misses one.
UNSENDABLE_URLS = [
    "http://127.0.0.1:9/robot/send?access_token=to\nken",  # a control character: httpx.InvalidURL
    "http://127.0.0.1:9/hook\x7f",
    "http://[::1/hook",  # a broken IPv6 host
    "ftp://127.0.0.1/hook",  # httpx.UnsupportedProtocol
    "127.0.0.1:9/hook",  # no scheme
]


@pytest.mark.parametrize("url", UNSENDABLE_URLS)
@pytest.mark.parametrize("kind", ["dingtalk", "slack", "lark", "wecom", "webhook"])
def test_a_url_no_request_can_be_made_of_is_a_permanent_error(
    http: httpx.Client, kind: str, url: str
) -> None:
    secret = {"dingtalk": "SEC0123", "lark": SECRET, "webhook": SECRET}.get(kind)
    error = refused(channel(http, kind, url, secret=secret))
    assert not error.retryable and "cannot be sent" in str(error)
    assert "to\nken" not in str(error) and "hook" not in str(error).replace("channels.chat", "")


def test_an_unsendable_url_fails_its_channel_only(world: World) -> None:
    """The bad URL bypasses config (settings built by hand): its channel gives up, the next one sends."""
    world.app = world.build()
    settings = world.app.notifier.settings
    ops = settings.channels["ops"]
    broken = replace(ops, url=Secret(ops.url.reveal().replace("access_token=", "access_token=\n")))
    world.app.notifier.settings = replace(settings, channels={**settings.channels, "ops": broken})
    fail_run(world)
    summary = world.tick()  # before: httpx.InvalidURL escaped the tick, and Slack ("team") got nothing
    assert (summary.messages_failed, summary.messages_sent, summary.messages_pending) == (1, 1, 0)
    assert len(world.slack_messages()) == 1 and world.dingtalk.attempts == []
    [failed] = world.app.store.report().messages
    assert failed.channel == "ops" and "cannot be sent (InvalidURL)" in failed.last_error


# --- config, templates, one whole tick ------------------------------------------------------------

BASE: dict[str, Any] = {
    "dataworks": {"region": "cn-shanghai", "projects": [10000]},
    "rules": [{"name": "all", "events": ["*"], "channels": ["feishu", "qywx", "hook"]}],
}
CHANNELS: dict[str, Any] = {
    "feishu": {
        "type": "lark",
        "url": f"https://open.feishu.cn/open-apis/bot/v2/hook/{LARK_TOKEN}",
        "secret": SECRET,
        "keyword": "发布",
    },
    "qywx": {
        "type": "wecom",
        "url": f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={WECOM_KEY}",
        "at_user_ids": ["ops-lead"],
    },
    "hook": {"type": "webhook", "url": f"https://hooks.example.com{HOOK}", "secret": SECRET},
}


def test_the_new_types_load_with_their_keys(tmp_path: Path) -> None:
    settings = parse({**BASE, "channels": CHANNELS}, tmp_path, {})
    feishu, qywx, hook = (settings.channels[name] for name in ("feishu", "qywx", "hook"))
    assert (feishu.type, feishu.secret, feishu.keyword) == ("lark", Secret(SECRET), "发布")
    assert (qywx.type, qywx.at_user_ids) == ("wecom", ("ops-lead",))
    assert (hook.type, hook.url.reveal(), hook.secret) == ("webhook", CHANNELS["hook"]["url"], Secret(SECRET))


@pytest.mark.parametrize(
    ("name", "change", "where", "fragment"),
    [
        ("feishu", {"at_mobiles": ["13800000000"]}, "channels.feishu.at_mobiles", "unknown key"),
        ("qywx", {"at_mobiles": ["13800000000"]}, "channels.qywx.at_mobiles", "unknown key"),
        ("qywx", {"secret": SECRET}, "channels.qywx.secret", "unknown key"),
        ("hook", {"keyword": "发布"}, "channels.hook.keyword", "unknown key"),
        ("feishu", {"url": f"https://open.feishu.cn/{LARK_TOKEN}"}, "channels.feishu.url", "custom bot URL"),
        (
            "qywx",
            {"url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"},
            "channels.qywx.url",
            "with its key",
        ),
    ],
)
def test_the_new_types_refuse_what_they_do_not_take(
    tmp_path: Path, name: str, change: dict[str, Any], where: str, fragment: str
) -> None:
    channels = {**CHANNELS, name: {**CHANNELS[name], **change}}
    with pytest.raises(ConfigError) as caught:
        parse({**BASE, "channels": channels}, tmp_path, {})
    [problem] = caught.value.problems
    assert problem.startswith(f"{where}: ") and fragment in problem
    assert LARK_TOKEN not in problem and WECOM_KEY not in problem and SECRET not in problem


@pytest.mark.parametrize("template", ["default", "failure"])
@pytest.mark.parametrize("channel_type", ["lark", "wecom", "webhook"])
@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_renders_with_the_new_builtin_templates(
    event_type: str, channel_type: str, template: str
) -> None:
    message = Renderer(None).render(channel_type, template, one_event_context(event_type, channel_type))
    assert HEADLINES[event_type] in message.title
    assert "Finance DW" in message.text and message.text.endswith(f"]({CONSOLE})")
    if event_type in {"stage.failed", "run.failed"}:
        assert CHECK_MESSAGE in message.text


@pytest.mark.parametrize("channel_type", ["lark", "wecom", "webhook"])
def test_the_sample_message_fits_each_service(channel_type: str) -> None:
    project = ProjectSettings(10000, "Finance DW", "cn-shanghai", "dataworks.cn-shanghai.aliyuncs.com")
    ctx = sample_context("chat", channel_type, "all", project, datetime(2026, 11, 28, tzinfo=timezone.utc))
    for name in ("default", "failure"):
        text = Renderer(None).render(channel_type, name, ctx).text
        assert "生产发布检查" in text and "ads_order_summary_d" in text
        assert len(text.encode()) < {"lark": 16_000, "wecom": 3_800, "webhook": 30_000}[channel_type]
        if channel_type == "wecom":
            assert '<font color="warning">失败 Failed</font>' in text
        if channel_type == "lark":  # card markdown 1.0 has no quotes; escaped values stay out of code
            assert "\n> " not in text and "```" not in text


def test_a_failed_run_reaches_all_three_services(world: World) -> None:
    lark = LarkEmulator({LARK_TOKEN: SECRET}, keywords={LARK_TOKEN: "发布"}, clock=world.clock)
    wecom = WeComEmulator({WECOM_KEY}, clock=world.clock)
    hooks = GenericWebhookEmulator({HOOK: SECRET}, clock=world.clock)
    with lark, wecom, hooks:
        world.config_overrides["channels"] = {  # replaces the DingTalk and Slack channels
            "feishu": {**CHANNELS["feishu"], "url": lark_url(lark)},
            "qywx": {**CHANNELS["qywx"], "url": wecom_url(wecom)},
            "hook": {**CHANNELS["hook"], "url": hooks.base_url + HOOK},
        }
        world.config_overrides["rules"] = BASE["rules"]
        fail_run(world, message="节点 ods_user 依赖缺失")
        summary = world.tick()
        assert summary.messages_sent == 3 and summary.messages_failed == 0
        [card] = lark.messages(LARK_TOKEN)
        assert card["card"]["header"]["title"]["content"].startswith("❌ 发布失败")
        assert "节点 ods_user 依赖缺失" in card["card"]["elements"][0]["content"]
        [markdown] = wecom.messages(WECOM_KEY)
        assert "节点 ods_user 依赖缺失" in markdown["markdown"]["content"]
        assert wecom.mentions(WECOM_KEY) == ["ops-lead"]
        [posted] = hooks.messages(HOOK)
        assert posted["title"].startswith("❌ 发布失败") and "节点 ods_user 依赖缺失" in posted["text"]


@pytest.mark.parametrize(
    ("service", "probe", "body"),
    [
        ("lark", "/open-apis/bot/v2/hook/demo", {"msg_type": "text", "content": {"text": "hi"}}),
        ("wecom", "/cgi-bin/webhook/send?key=demo", {"msgtype": "markdown", "markdown": {"content": "hi"}}),
        ("webhook", "/hook/demo", {"title": "hi", "text": "hi"}),
    ],
)
def test_cli_default_targets(service: str, probe: str, body: dict[str, Any]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulators", service], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        answer = httpx.post(url + probe, json=body)
        assert answer.status_code == 200
        assert answer.json().get("code", answer.json().get("errcode", 0)) == 0
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
