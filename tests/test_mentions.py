"""People and mentions: a failure mentions the person who started the run on every chat type, each in
its own way, through the real tick against each service's stand-in; an unknown creator is shown by id;
text from DataWorks never mentions anyone; and the pieces (each type's mention, DingTalk's `at` lists,
Slack's notification text, the stand-ins' reading of mentions) one by one."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from dingtalkchatbot.chatbot import DingtalkChatbot

from dwnotify.channels import CHANNEL_TYPES
from dwnotify.channels.dingtalk import build_payload as dingtalk_payload
from dwnotify.channels.slack import build_payload as slack_payload
from dwnotify.channels.slack import slack_mention
from dwnotify.credentials import Secret
from dwnotify.message import Message
from dwnotify.model import EVENT_TYPES
from dwnotify.render import Renderer
from dwnotify.samples import SAMPLE_PERSON, rule_samples
from dwnotify.settings import ChannelSettings, PersonSettings
from emulators.dingtalk import DingTalkEmulator
from emulators.lark import LarkEmulator
from emulators.webhook import GenericWebhookEmulator
from emulators.wecom import WeComEmulator
from tests.conftest import DING_TOKEN, World
from tests.helpers import HOOK, LARK_TOKEN, PROJECT, WECOM_KEY, lark_url, slack_text, wecom_url
from tests.helpers import NOW as SAMPLED_AT

CREATOR = "1379463177661024"
PERSON = {
    "name": "张三 Zhang San",
    "dingtalk_mobile": 13800000000,  # as YAML would read it: a number
    "slack_user_id": "U0123ABCD",
    "lark_open_id": "ou_7d8a6e6df7621556ce0d21922b676706",
    "wecom_user_id": "zhangsan",
}
# What DataWorks may send as a creator id (or a stage name): every service's mention syntax, and more.
HOSTILE = '<@U0999ZZZZ> <at user_id="ou_x"></at> <at id=all></at> <!channel> <!here> @13900000000 <@lisi>'
LIVE = re.compile(r"<@|<!|<at\b")  # what Slack, WeCom and Lark read as a mention


def failing(world: World, creator: str, stage: str = "发布到生产环境") -> str:
    return world.dataworks.add_run(
        10000,
        status="Fail",
        message="部署失败",
        creator=creator,
        stages=[
            {"code": "BUILD", "step": 1, "type": "Build", "name": "发布包构建"},
            {"code": "DEPLOY", "step": 2, "type": "Deploy", "name": stage},
        ],
        stage_statuses={"BUILD": "Success", "DEPLOY": {"status": "Fail", "message": "节点依赖缺失"}},
    )


def mentioning(world: World, people: dict[str, Any] | None = None, mention: bool = True) -> None:
    """The World's two rules (failures to DingTalk, everything to Slack), asking for the creator."""
    world.config_overrides["people"] = {CREATOR: PERSON} if people is None else people
    extra = {"mention": "creator"} if mention else {}
    world.config_overrides["rules"] = [
        {"name": "failures", "events": ["run.failed"], "channels": ["ops"], "template": "failure", **extra},
        {"name": "everything", "events": ["*"], "channels": ["team"], **extra},
    ]


# --- end to end: DingTalk and Slack -------------------------------------------------------------------


def test_a_failure_mentions_its_creator_on_dingtalk_and_slack(world: World) -> None:
    mentioning(world)
    failing(world, CREATOR)
    summary = world.tick()
    assert summary.messages_sent == 2 and summary.messages_failed == 0
    [ding] = world.ding()
    assert ding["at"] == {"atMobiles": ["13800000000"], "atUserIds": [], "isAtAll": False}
    assert "@13800000000 请查看并处理" in ding["markdown"]["text"]  # the @ text markdown needs
    assert "张三 Zhang San" in ding["markdown"]["text"]  # named, not by id
    assert world.dingtalk.mentions(DING_TOKEN) == ["13800000000"]  # listed and written: highlighted
    [posted] = world.slack_messages()
    assert "<@U0123ABCD> 请查看并处理" in slack_text(posted)  # in the blocks people read
    assert posted["text"].endswith(" <@U0123ABCD>")  # and in the notification
    assert "张三 Zhang San" in slack_text(posted) and CREATOR not in slack_text(posted)


def test_a_creator_known_by_dingtalk_userid_only_is_mentioned_by_it(world: World) -> None:
    mentioning(world, {CREATOR: {"dingtalk_user_id": "zhangsan"}})
    failing(world, CREATOR)
    world.tick()
    [ding] = world.ding()
    assert ding["at"] == {"atMobiles": [], "atUserIds": ["zhangsan"], "isAtAll": False}
    assert world.dingtalk.mentions(DING_TOKEN) == ["zhangsan"]
    [posted] = world.slack_messages()  # no Slack id: named, not mentioned
    assert not LIVE.search(slack_text(posted)) and CREATOR in slack_text(posted)


def test_an_unknown_creator_is_shown_by_id_and_mentioned_nowhere(world: World) -> None:
    mentioning(world)
    failing(world, "204888")
    summary = world.tick()
    assert summary.messages_sent == 2 and summary.messages_failed == 0
    [ding] = world.ding()
    assert "204888" in ding["markdown"]["text"] and "请查看并处理" not in ding["markdown"]["text"]
    assert ding["at"] == {"atMobiles": [], "atUserIds": [], "isAtAll": False}
    [posted] = world.slack_messages()
    assert "204888" in slack_text(posted) and not LIVE.search(slack_text(posted) + posted["text"])


def test_without_mention_a_known_creator_is_named_but_not_mentioned(world: World) -> None:
    mentioning(world, mention=False)
    failing(world, CREATOR)
    world.tick()
    [ding] = world.ding()
    assert "张三 Zhang San" in ding["markdown"]["text"] and "@13800000000" not in ding["markdown"]["text"]
    assert ding["at"]["atMobiles"] == [] and world.dingtalk.mentions(DING_TOKEN) == []
    [posted] = world.slack_messages()
    assert "张三 Zhang San" in slack_text(posted) and "<@" not in slack_text(posted) + posted["text"]


def test_a_success_mentions_the_creator_beside_their_name(world: World) -> None:
    mentioning(world)
    world.dataworks.add_run(10000, status="Success", creator=CREATOR)
    world.tick()
    [posted] = world.slack_messages()
    assert "张三 Zhang San <@U0123ABCD>" in slack_text(posted)  # no "please take a look" on a success
    assert "请查看并处理" not in slack_text(posted)


def test_dataworks_text_mentions_no_one_on_dingtalk_and_slack(world: World) -> None:
    mentioning(world, {CREATOR: {**PERSON, "name": HOSTILE}})  # a name can be anything, too
    failing(world, CREATOR, stage=HOSTILE)
    failing(world, HOSTILE, stage=HOSTILE)  # an unknown creator whose id is the hostile text
    world.tick()
    assert world.dingtalk.mentions(DING_TOKEN) == ["13800000000"]  # only the product's own
    for ding in world.ding():
        assert "13900000000" not in ding["at"]["atMobiles"] and ding["at"]["atUserIds"] == []
    texts = [slack_text(m) + "\n" + m["text"] for m in world.slack_messages()]
    assert len(texts) == 2
    assert sorted(m.group(0) + t[m.end() : m.end() + 10] for t in texts for m in LIVE.finditer(t)) == [
        "<@U0123ABCD>",
        "<@U0123ABCD>",  # in the blocks and in the notification of the known creator's message
    ]


# --- end to end: Lark, WeCom and the generic webhook ---------------------------------------------------


@dataclass
class Chats:
    lark: LarkEmulator
    wecom: WeComEmulator
    hooks: GenericWebhookEmulator


@pytest.fixture
def chats(world: World) -> Iterator[Chats]:
    lark = LarkEmulator({LARK_TOKEN: None}, clock=world.clock)
    wecom = WeComEmulator({WECOM_KEY}, clock=world.clock)
    hooks = GenericWebhookEmulator({HOOK: None}, clock=world.clock)
    with lark, wecom, hooks:
        world.config_overrides["channels"] = {
            "feishu": {"type": "lark", "url": lark_url(lark)},
            "qywx": {"type": "wecom", "url": wecom_url(wecom)},
            "hook": {"type": "webhook", "url": hooks.base_url + HOOK},
        }
        world.config_overrides["rules"] = [
            {
                "name": "failures",
                "events": ["run.failed"],
                "channels": ["feishu", "qywx", "hook"],
                "template": "failure",
                "mention": "creator",
            },
            {"name": "all", "events": ["*"], "channels": ["feishu", "qywx", "hook"], "mention": "creator"},
        ]
        yield Chats(lark, wecom, hooks)


def test_a_failure_mentions_its_creator_on_lark_wecom_and_a_webhook(world: World, chats: Chats) -> None:
    world.config_overrides["people"] = {CREATOR: PERSON}
    failing(world, CREATOR)
    summary = world.tick()
    assert summary.messages_sent == 6 and summary.messages_failed == 0
    assert chats.lark.mentions(LARK_TOKEN) == [PERSON["lark_open_id"]] * 2  # the card's <at id=...>
    card = chats.lark.messages(LARK_TOKEN)[0]["card"]["elements"][0]["content"]
    assert f"<at id={PERSON['lark_open_id']}></at> 请查看并处理" in card and "张三 Zhang San" in card
    assert chats.wecom.mentions(WECOM_KEY) == ["zhangsan", "zhangsan"]  # <@zhangsan> in the markdown
    for posted in chats.hooks.messages(HOOK):
        assert posted["mentions"] == [{"id": CREATOR, "name": "张三 Zhang San"}]
        assert "@张三 Zhang San 请查看并处理" in posted["text"]


def test_an_unknown_creator_on_lark_wecom_and_a_webhook(world: World, chats: Chats) -> None:
    world.config_overrides["people"] = {CREATOR: PERSON}
    failing(world, "204888")
    assert world.tick().messages_failed == 0
    assert chats.lark.mentions(LARK_TOKEN) == [] and chats.wecom.mentions(WECOM_KEY) == []
    for posted in chats.hooks.messages(HOOK):
        assert "mentions" not in posted and "204888" in posted["text"]


def test_dataworks_text_mentions_no_one_on_lark_wecom_and_a_webhook(world: World, chats: Chats) -> None:
    world.config_overrides["people"] = {CREATOR: {**PERSON, "name": HOSTILE}}
    failing(world, CREATOR, stage=HOSTILE)
    failing(world, HOSTILE, stage=HOSTILE)
    assert world.tick().messages_failed == 0
    assert chats.lark.mentions(LARK_TOKEN) == [PERSON["lark_open_id"]] * 2  # no `all`, no ou_x
    assert chats.wecom.mentions(WECOM_KEY) == ["zhangsan", "zhangsan"]  # no U0999ZZZZ, no lisi
    for posted in chats.hooks.messages(HOOK):
        assert "<" not in posted["text"]  # every value's `<` is an entity in the webhook's markdown


# --- each type's mention, and what a sender adds -------------------------------------------------------

KNOWN = PersonSettings(
    CREATOR, "张三", "13800000000", "zhangsan", "U0123ABCD", "ou_7d8a6e6df7621556ce0d21922b676706", "zs"
)


@pytest.mark.parametrize(
    ("channel_type", "mention"),
    [
        ("dingtalk", "@13800000000"),
        ("slack", "<@U0123ABCD>"),
        ("lark", "<at id=ou_7d8a6e6df7621556ce0d21922b676706></at>"),
        ("wecom", "<@zs>"),
        ("webhook", "@张三"),
    ],
)
def test_each_type_mentions_a_person_its_own_way(channel_type: str, mention: str) -> None:
    kind = CHANNEL_TYPES[channel_type]
    assert kind.mention(KNOWN) == mention
    nobody = PersonSettings(CREATOR)  # no id this service knows
    assert kind.mention(nobody) == ("@1379463177661024" if channel_type == "webhook" else "")


def test_dingtalk_mentions_by_userid_without_a_mobile_and_the_webhook_escapes_a_name() -> None:
    assert CHANNEL_TYPES["dingtalk"].mention(PersonSettings(CREATOR, dingtalk_user_id="zs")) == "@zs"
    assert CHANNEL_TYPES["webhook"].mention(PersonSettings(CREATOR, name="[x](http://evil)")) == (
        "@\\[x\\]\\(http://evil)"
    )
    assert slack_mention(KNOWN) == "<@U0123ABCD>"  # the name the Slack app channel imports


def ops(**options: Any) -> ChannelSettings:
    return ChannelSettings("ops", "dingtalk", Secret("https://x/robot/send?access_token=t"), **options)


def test_dingtalk_merges_the_mentioned_with_the_configured_at_lists_once_each() -> None:
    lisi = PersonSettings("2", dingtalk_user_id="lisi")  # no mobile: by userid
    message = Message("t", "### t\n\n@13800000000 @lisi 请查看", mentions=(KNOWN, lisi))
    channel = ops(at_mobiles=("13900000000", "13800000000"), at_user_ids=("lisi", "u9"), at_all=True)
    payload = dingtalk_payload(channel, message)
    assert payload["at"] == {
        "atMobiles": ["13900000000", "13800000000"],
        "atUserIds": ["lisi", "u9"],
        "isAtAll": True,
    }
    alone = dingtalk_payload(ops(), Message("t", "### t", mentions=(KNOWN,)))
    assert alone["at"] == {"atMobiles": ["13800000000"], "atUserIds": [], "isAtAll": False}  # not both ids


def test_dingtalk_writes_the_at_text_a_template_left_out() -> None:
    payload = dingtalk_payload(ops(), Message("t", "### t\n\nbody", mentions=(KNOWN,)))
    assert payload["markdown"]["text"] == "### t\n\nbody\n\n@13800000000"
    written = dingtalk_payload(ops(), Message("t", "### t\n\n@13800000000 请查看", mentions=(KNOWN,)))
    assert written["markdown"]["text"] == "### t\n\n@13800000000 请查看"  # not twice
    nobody = dingtalk_payload(ops(), Message("t", "### t", mentions=(PersonSettings("9"),)))
    assert nobody["at"]["atMobiles"] == [] and nobody["markdown"]["text"] == "### t"


def test_slack_puts_mentions_in_the_notification_text_too() -> None:
    assert (
        slack_payload(Message("❌ 发布失败", "*x*", mentions=(KNOWN,)))["text"] == "❌ 发布失败 <@U0123ABCD>"
    )
    assert slack_payload(Message("❌ 发布失败", "*x*"))["text"] == "❌ 发布失败"
    assert slack_payload(Message("❌", "*x*", mentions=(PersonSettings("9"),)))["text"] == "❌"


def test_check_renders_a_sample_with_the_creator_known_and_mentioned() -> None:
    renderer = Renderer(None)
    for channel_type in ("dingtalk", "slack", "lark", "wecom", "webhook"):
        first, *others = rule_samples(EVENT_TYPES, "ops", channel_type, "all", PROJECT, SAMPLED_AT)
        mention = CHANNEL_TYPES[channel_type].mention(SAMPLE_PERSON)
        assert first.person == SAMPLE_PERSON and first.mention == mention and mention
        assert all(ctx.person is None and ctx.mention == "" for ctx in others)
        for name in ("default", "failure"):
            assert mention in renderer.render(channel_type, name, first).text
            assert "请查看并处理" not in renderer.render(channel_type, name, others[0]).text


# --- the stand-ins read mentions as the services do ------------------------------------------------------


@pytest.fixture
def robot() -> Iterator[DingTalkEmulator]:
    with DingTalkEmulator({"judged": None}) as emulator:
        yield emulator


def test_the_dingtalk_judge_at_payload_is_taken_and_highlights(robot: DingTalkEmulator) -> None:
    # DingtalkChatbot, a client no one here wrote, builds `at` as DingTalk documents it; with
    # is_auto_at it appends `@<mobile>` to the markdown, a userid's `@` is ours to write.
    judge = DingtalkChatbot(f"{robot.base_url}/robot/send?access_token=judged")
    answer = judge.send_markdown(
        "❌ 发布失败",
        "### ❌ 发布失败\n\n@zhangsan 请查看",
        at_mobiles=["13800000000"],
        at_dingtalk_ids=["zhangsan"],
    )
    assert answer == {"errcode": 0, "errmsg": "ok"}
    judge.send_markdown("t", "### t", at_dingtalk_ids=["lisi"])  # listed, not written: no highlight
    assert robot.mentions("judged") == ["13800000000", "zhangsan"]
    [theirs, _] = robot.messages("judged")
    ours = dingtalk_payload(ops(), Message("❌ 发布失败", "### ❌ 发布失败", mentions=(KNOWN,)))
    judged = {key: type(value) for key, value in theirs["at"].items()}
    assert judged == {"atMobiles": list, "atUserIds": list}  # the same keys and JSON types as ours
    assert judged.items() <= {key: type(value) for key, value in ours["at"].items()}.items()
    assert theirs["markdown"]["text"].endswith("\n@13800000000") and ours["markdown"]["text"].endswith(
        "@13800000000"
    )


@pytest.mark.parametrize(
    "at",
    [
        "13800000000",
        {"atMobiles": "13800000000"},
        {"atMobiles": [13800000000]},
        {"atUserIds": [""]},
        {"isAtAll": "yes"},
    ],
)
def test_the_dingtalk_stand_in_refuses_a_malformed_at(robot: DingTalkEmulator, at: Any) -> None:
    body = {"msgtype": "markdown", "markdown": {"title": "t", "text": "@13800000000"}, "at": at}
    answer = httpx.post(f"{robot.base_url}/robot/send?access_token=judged", json=body).json()
    assert answer["errcode"] == 40035 and robot.messages("judged") == []


def test_the_lark_stand_in_reads_a_card_mention_only_in_the_card_form() -> None:
    with LarkEmulator({"bot": None}) as lark:
        url = f"{lark.base_url}/open-apis/bot/v2/hook/bot"

        def card(markdown: str) -> dict[str, Any]:
            elements = [{"tag": "markdown", "content": markdown}]
            return {"msg_type": "interactive", "card": {"header": {}, "elements": elements}}

        httpx.post(url, json=card('<at user_id="ou_text"></at> <at id=ou_card></at> <at id=12345></at>'))
        httpx.post(url, json=card("<at ids=ou_a,ou_b></at> <at id=all></at>"))
        text = {"msg_type": "text", "content": {"text": '<at user_id="ou_t">T</at> <at id=ou_no></at>'}}
        httpx.post(url, json=text)
        header = card("x")
        header["card"]["header"] = {"title": {"tag": "plain_text", "content": "<at id=ou_head></at>"}}
        httpx.post(url, json=header)
        assert lark.mentions("bot") == ["ou_card", "ou_a", "ou_b", "all", "ou_t"]


def test_the_wecom_stand_in_reads_each_message_type_its_own_way() -> None:
    with WeComEmulator({"key"}) as wecom:
        url = f"{wecom.base_url}/cgi-bin/webhook/send?key=key"
        markdown = {"content": "<@zs> <\u200b@lisi>", "mentioned_list": ["nobody"]}
        httpx.post(url, json={"msgtype": "markdown", "markdown": markdown})
        httpx.post(url, json={"msgtype": "text", "text": {"content": "<@no>", "mentioned_list": ["ww"]}})
        assert wecom.mentions("key") == ["zs", "ww"]
