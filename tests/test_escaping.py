"""Values from DataWorks stay text in every channel's markup: hostile names, messages, descriptions and
creators rendered by the built-in templates and sent through each channel to its emulator.

Each check reads the message as the service documents its syntax (links, mentions, tags, emphasis,
block marks), independently of how the product escapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dwnotify.channels import build_channel, dingtalk, lark, webhook, wecom
from dwnotify.channels.base import Markup
from dwnotify.credentials import Secret
from dwnotify.message import Message
from dwnotify.model import FAIL, Run
from dwnotify.render import MessageContext, Renderer
from dwnotify.settings import ChannelSettings
from emulators.dingtalk import DingTalkEmulator
from emulators.lark import LarkEmulator
from emulators.webhook import GenericWebhookEmulator
from emulators.wecom import WeComEmulator
from tests.helpers import CONSOLE, context, event, make_run, stage, write

NOW = 1_795_680_000.0
HOSTILE = {
    "lark @all": "<at id=all></at> build",
    "lark @user": '<at user_id="ou_1a2b3c"></at> 请处理',
    "wecom mention": "<@U0123ABCD> 看一下",
    "link": "[点我](http://evil.example/x)",
    "image": "![p](http://evil.example/p.png)",
    "autolink": "<http://evil.example>",
    "html link": "<a href='http://evil.example'>x</a>",
    "font tag": '<font color="warning">red</font>',
    "closing tag": "</font> after",
    "emphasis": "**bold** __under__ *it* ~~gone~~",
    "code": "`code` and ```fence```",
    "heading": "# heading",
    "quote": "> quoted",
    "list": "- item",
    "ordered list": "1. item",
    "rule": "---",
    "table": "| a | b |",
    "mobile mention": "@13800000000 @all",
    "entities": "&#60;at id=all&#62;&#60;/at&#62; &lt;b&gt;",
    "backslashes": "C:\\dw\\ \\*x\\*",
    "multi-line": "第一行\n# heading\n- item\n> quoted\n[x](http://evil.example)",
}
MARKUPS: dict[str, Markup] = {
    "dingtalk": dingtalk.MARKUP,
    "lark": lark.MARKUP,
    "wecom": wecom.MARKUP,
    "webhook": webhook.MARKUP,
}


def hostile_context(channel_type: str, value: str) -> MessageContext:
    """A failed run whose stage name, stage message, run description and creator are all `value`."""
    bad = stage(name=value, message=f"检查未通过: {value}")
    run: Run = make_run(FAIL, (bad,), description=value, creator=value, message=value)
    return context(run, (event("stage.failed", FAIL, on=bad), event("run.failed", FAIL)), channel_type)


# --- sending to each service ------------------------------------------------------------------------


Send = Callable[[Message], dict[str, Any]]


@pytest.fixture
def send_dingtalk(http: httpx.Client) -> Iterator[Send]:
    with DingTalkEmulator({"robot": None}) as robot:
        robot.set_time(NOW)
        settings = ChannelSettings(
            "chat", "dingtalk", Secret(f"{robot.base_url}/robot/send?access_token=robot")
        )

        def send(message: Message) -> dict[str, Any]:
            build_channel(settings, http, 5.0, lambda: NOW).send(message)
            [body] = robot.messages("robot")
            return {"text": body["markdown"]["text"], "at": body["at"]}

        yield send


@pytest.fixture
def send_lark(http: httpx.Client) -> Iterator[Send]:
    with LarkEmulator({"bot": None}) as bot:
        bot.set_time(NOW)
        settings = ChannelSettings("chat", "lark", Secret(f"{bot.base_url}/open-apis/bot/v2/hook/bot"))

        def send(message: Message) -> dict[str, Any]:
            build_channel(settings, http, 5.0, lambda: NOW).send(message)
            [body] = bot.messages("bot")
            card = body["card"]
            return {"text": card["elements"][0]["content"], "mentions": bot.mentions("bot"), "card": card}

        yield send


@pytest.fixture
def send_wecom(http: httpx.Client) -> Iterator[Send]:
    with WeComEmulator({"key"}) as robot:
        robot.set_time(NOW)
        url = Secret(f"{robot.base_url}/cgi-bin/webhook/send?key=key")
        settings = ChannelSettings("chat", "wecom", url, at_user_ids=("ops-lead",))

        def send(message: Message) -> dict[str, Any]:
            build_channel(settings, http, 5.0, lambda: NOW).send(message)
            [body] = robot.messages("key")
            return {"text": body["markdown"]["content"], "mentions": robot.mentions("key")}

        yield send


@pytest.fixture
def send_webhook(http: httpx.Client) -> Iterator[Send]:
    with GenericWebhookEmulator({"/hook": None}) as hooks:
        hooks.set_time(NOW)
        settings = ChannelSettings("chat", "webhook", Secret(f"{hooks.base_url}/hook"))

        def send(message: Message) -> dict[str, Any]:
            build_channel(settings, http, 5.0, lambda: NOW).send(message)
            [body] = hooks.messages("/hook")
            return {"text": body["text"], "title": body["title"]}

        yield send


# --- what each service would read as markup ---------------------------------------------------------

_MD_LINK = re.compile(r"(?<!\\)!?\[((?:[^\]\\]|\\.)*)\]\(([^)\s]*)\)")  # [text](url), ![alt](src)
_TAG = re.compile(r"<[A-Za-z/!?@]")  # HTML, autolinks, Slack/WeCom mentions
# A block that starts a line: a heading, a quote, a list item, a rule, a table row, a code fence.
_MD_BLOCK_MARK = re.compile(r"[ \t]{0,3}(?:#|>|[-+*](?:[ \t]|$)|\d{1,9}[.)](?:[ \t]|$)|---|\||```)")


def markdown_findings(text: str, hostile: str) -> list[str]:
    """Links, tags, emphasis or block marks in `text` that did not come from the template itself."""
    found = [f"link {m.group(0)!r}" for m in _MD_LINK.finditer(text) if m.group(2) != CONSOLE]
    found += [f"tag at {m.start()}: {text[m.start() : m.start() + 20]!r}" for m in _TAG.finditer(text)]
    for raw in ("**bold**", "__under__", "*it*", "~~gone~~", "`code`"):
        if raw in hostile and raw in text:
            found.append(f"emphasis or code {raw!r}")
    for index, line in enumerate(text.splitlines()):
        if index == 0 and line.startswith("### "):
            continue  # the template's heading
        rest = line[2:] if line.startswith(("- ", "> ")) else line  # inside the template's list or quote
        if _MD_BLOCK_MARK.match(rest):
            found.append(f"block mark {line!r}")
    return found


# --- the tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["default", "failure"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_dingtalk_values_stay_text(send_dingtalk: Send, name: str, template: str) -> None:
    rendered = Renderer(None).render("dingtalk", template, hostile_context("dingtalk", HOSTILE[name]))
    sent = send_dingtalk(Message(rendered.title, rendered.text))
    assert markdown_findings(sent["text"], HOSTILE[name]) == []
    # A markdown @mention needs the mobile in at.atMobiles too: values never put one there.
    assert sent["at"] == {"atMobiles": [], "atUserIds": [], "isAtAll": False}


@pytest.mark.parametrize("template", ["default", "failure"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_webhook_values_stay_text(send_webhook: Send, name: str, template: str) -> None:
    rendered = Renderer(None).render("webhook", template, hostile_context("webhook", HOSTILE[name]))
    sent = send_webhook(Message(rendered.title, rendered.text))
    assert markdown_findings(sent["text"], HOSTILE[name]) == []


_LARK_BLOCK_MARK = re.compile(r"(?m)^[ \t]*(?:#|[-+*][ \t]|\d{1,9}[.)][ \t]| ?---|```)")


@pytest.mark.parametrize("template", ["default", "failure"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_lark_values_stay_text(send_lark: Send, name: str, template: str) -> None:
    rendered = Renderer(None).render("lark", template, hostile_context("lark", HOSTILE[name]))
    sent = send_lark(Message(rendered.title, rendered.text))
    text, value = sent["text"], HOSTILE[name]
    assert sent["mentions"] == []  # before: a stage named <at id=all></at> mentioned everyone
    assert "<" not in text and "](http://evil" not in text  # no tag (<at>, <a>, <font>), no link
    for raw in ("**bold**", "__under__", "*it*", "~~gone~~", "`code`"):
        assert raw not in text or raw not in value
    ours = ("- 工作空间", "- 运行", "- 发起人", "- 说明", "- 耗时", "- ✅", "- ❌", "- ⏳")
    marks = [line for line in text.splitlines() if _LARK_BLOCK_MARK.match(line) and not line.startswith(ours)]
    assert marks == []
    assert "<" not in sent["card"]["header"]["title"]["content"] or value in rendered.title  # plain text


@pytest.mark.parametrize("template", ["default", "failure"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_wecom_values_stay_text(send_wecom: Send, name: str, template: str) -> None:
    rendered = Renderer(None).render("wecom", template, hostile_context("wecom", HOSTILE[name]))
    sent = send_wecom(Message(rendered.title, rendered.text))
    text = sent["text"]
    assert sent["mentions"] == ["ops-lead"]  # the configured one only; before: also U0123ABCD
    template_tags = re.findall(r"<font color=\"\w+\">|</font>", rendered.text.replace(HOSTILE[name], ""))
    assert len(re.findall(r"</?font\b", text)) == len(template_tags)  # a value opens or closes none
    assert "](http" not in text.replace(f"]({CONSOLE})", "")  # the console link is the only link
    assert "**bold**" not in text
    for line in text.splitlines()[1:]:  # after the template's heading, a value opens no heading or quote
        rest = line[2:] if line.startswith("> ") else line  # inside the template's quote
        assert not re.match(r"[ \t]*[#>]", rest), line


@pytest.mark.parametrize("channel_type", sorted(MARKUPS))
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_escaped_values_read_as_they_came(channel_type: str, name: str) -> None:
    """What a reader sees is the value DataWorks sent, character for character."""
    markup = MARKUPS[channel_type]
    assert markup.plain(markup.escape(HOSTILE[name])) == HOSTILE[name]


@pytest.mark.parametrize("channel_type", sorted(MARKUPS))
def test_ordinary_values_are_left_alone(channel_type: str) -> None:
    escape = MARKUPS[channel_type].escape
    for value in (
        "ods_user_daily",
        "节点 dwd_trade_order_di 依赖检查未通过",
        "a7ef0634-20ec-4a7c",
        "3m 12s",
        "R&D",
    ):
        assert escape(value) == value


@pytest.mark.parametrize("channel_type", sorted(MARKUPS))
def test_the_title_is_plain_text(tmp_path: Path, channel_type: str) -> None:
    write(tmp_path, f"{channel_type}/t.md.j2", "### {{ run.description }}\n\nbody\n")
    ctx = hostile_context(channel_type, "*x* [y](z) <at id=all></at> # 1.")
    message = Renderer(tmp_path).render(channel_type, "t", ctx)
    assert message.title == "*x* [y](z) <at id=all></at> # 1."  # a notification shows no markup
    assert message.text.splitlines()[0] != f"### {message.title}"  # the text has it escaped
