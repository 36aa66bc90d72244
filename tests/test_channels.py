"""What spans the chat channel types: errors every type gives alike (the network down, a URL no request
can be made of, which fails its channel only), and for Lark, WeCom and the generic webhook their config
keys, built-in templates and samples, one whole tick through all three, and the emulators' command line.

Each type's own behaviour against its emulator is in its module: test_dingtalk, test_slack, test_lark,
test_wecom, test_webhook.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from dwnotify.config import parse
from dwnotify.credentials import Secret
from dwnotify.errors import ConfigError
from dwnotify.model import EVENT_TYPES
from dwnotify.render import Renderer
from dwnotify.samples import sample_context
from dwnotify.settings import ProjectSettings
from emulators.lark import LarkEmulator
from emulators.webhook import GenericWebhookEmulator
from emulators.wecom import WeComEmulator
from tests.conftest import World
from tests.helpers import (
    CHECK_MESSAGE,
    CONSOLE,
    HEADLINES,
    HOOK,
    LARK_TOKEN,
    SECRET,
    WECOM_KEY,
    channel,
    fail_run,
    lark_url,
    one_event_context,
    refused,
    wecom_url,
)

ROOT = Path(__file__).resolve().parents[1]


# --- what every type does alike ------------------------------------------------------------------------


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
