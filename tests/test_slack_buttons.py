"""The Slack app channel's buttons: an actions block appended to a run's message, the message edited
after a click, and the ephemeral answer through the click's response_url.

slack_sdk's Block Kit models judge every block built here, and the Slack stand-in (which judges
with them too, and with Block Kit's documented limits) takes what the channel sends.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, ConfirmObject

from dwnotify.actions import Offer
from dwnotify.channels.slack import ELLIPSIS, MAX_BLOCKS, build_payload, fit_blocks, sections
from dwnotify.channels.slack_app import (
    ACTIONS_BLOCK_ID,
    MAX_BUTTON_TEXT_CHARS,
    MAX_BUTTON_VALUE_CHARS,
    MAX_CONFIRM_TEXT_CHARS,
    SlackAppChannel,
    requested_blocks,
    with_offers,
)
from dwnotify.credentials import Secret
from dwnotify.errors import DeliveryError
from dwnotify.living import MessageGone, Posted
from dwnotify.message import Message
from dwnotify.settings import ChannelSettings
from dwnotify.text import TRIM_MARKER
from emulators.slack import DEFAULT_BOT_TOKEN, SlackEmulator

NOW = 1_795_680_000.0
CHANNEL = "C0123456"
RUN = "r-7f3a"
ADVANCE = Offer("advance", 10000, RUN, "CHECK", "Advance to 发布检查", "发布检查")
ABOLISH = Offer("abolish", 10000, RUN, "CHECK", "Abolish run")
MESSAGE = Message(
    "⏸ 等待发布检查 · Waiting", "*⏸ 等待发布检查*\n运行 Run: `r-7f3a`\n<https://x.example/run|Open>"
)
HOSTILE = "<!channel> *bold* & _it_ `code` <https://evil.example|click> :fire:"


def advance_to(name: str, run: str = RUN) -> Offer:
    return Offer("advance", 10000, run, "CHECK", f"Advance to {name}", name)


def actions_of(message: Message) -> dict[str, Any]:
    assert message.blocks is not None
    return message.blocks[-1]


def buttons(message: Message) -> list[dict[str, Any]]:
    return list(actions_of(message)["elements"])


def judged(blocks: Any) -> None:
    """Every block passes slack_sdk's Block Kit models, and the message keeps to 50 blocks."""
    assert len(blocks) <= MAX_BLOCKS
    for block in blocks:
        parsed = Block.parse(block)
        assert parsed is not None, block
        parsed.validate_json()


def text_objects(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if value.get("type") in ("plain_text", "mrkdwn") and isinstance(value.get("text"), str):
            yield value
        for item in value.values():
            yield from text_objects(item)
    elif isinstance(value, list):
        for item in value:
            yield from text_objects(item)


# --- with_offers -------------------------------------------------------------------------------------


def test_without_offers_the_message_is_returned_as_it_is() -> None:
    assert with_offers(MESSAGE, ()) is MESSAGE
    blocks = Message("t", "x", blocks=({"type": "divider"},))
    assert with_offers(blocks, []) is blocks


def test_the_buttons_pass_slack_sdks_models_with_exact_ids_values_and_styles() -> None:
    message = with_offers(MESSAGE, [ADVANCE, ABOLISH])
    assert message.blocks is not None
    judged(message.blocks)
    actions = actions_of(message)
    assert actions["type"] == "actions" and actions["block_id"] == ACTIONS_BLOCK_ID == "dwnotify_actions"
    ActionsBlock(block_id=actions["block_id"], elements=actions["elements"]).validate_json()
    advance, abolish = buttons(message)
    for element in (advance, abolish):
        ButtonElement(**{k: v for k, v in element.items() if k != "type"}).validate_json()
        ConfirmObject.parse(element["confirm"]).validate_json()  # type: ignore[union-attr]
    assert (advance["action_id"], abolish["action_id"]) == ("dwnotify:advance", "dwnotify:abolish")
    assert advance["value"] == json.dumps(ADVANCE.value) and abolish["value"] == json.dumps(ABOLISH.value)
    assert json.loads(advance["value"]) == {"project": 10000, "run": RUN, "stage": "CHECK"}
    assert (advance["style"], abolish["style"]) == ("primary", "danger")
    assert advance["text"]["text"] == "Advance to 发布检查" and abolish["text"]["text"] == "Abolish run"


def test_each_button_asks_first_saying_exactly_what_happens() -> None:
    advance, abolish = buttons(with_offers(MESSAGE, [ADVANCE, ABOLISH]))
    assert advance["confirm"]["text"]["text"] == f"Advance run {RUN} to 发布检查?"
    assert abolish["confirm"]["text"]["text"] == f"Abolish run {RUN}? Its remaining stages will not run."
    assert advance["confirm"]["title"]["text"] == "Advance this run?"
    assert abolish["confirm"]["title"]["text"] == "Abolish this run?"
    assert (advance["confirm"]["confirm"]["text"], advance["confirm"]["deny"]["text"]) == (
        "Advance",
        "Cancel",
    )
    assert (abolish["confirm"]["confirm"]["text"], abolish["confirm"]["deny"]["text"]) == (
        "Abolish",
        "Cancel",
    )
    assert (advance["confirm"]["style"], abolish["confirm"]["style"]) == ("primary", "danger")
    # A label that does not name the stage: the dialog names it by its code.
    [odd] = buttons(with_offers(MESSAGE, [Offer("advance", 1, RUN, "CHECK", "Go on")]))
    assert odd["confirm"]["text"]["text"] == f"Advance run {RUN} to CHECK?"


def test_a_dataworks_name_stays_inert_plain_text_in_buttons_and_dialogs() -> None:
    advance, abolish = buttons(with_offers(MESSAGE, [advance_to(HOSTILE), ABOLISH]))
    for element in (advance, abolish):
        objects = list(text_objects(element))
        assert len(objects) == 5  # the button's text and the dialog's title, text, confirm and deny
        assert all(o["type"] == "plain_text" and o["emoji"] is False for o in objects)
    # plain_text shows the name as typed: no mention, link or bold, and nothing escaped to show.
    assert advance["text"]["text"].startswith("Advance to <!channel> *bold* & _it_")
    assert len(advance["text"]["text"]) <= MAX_BUTTON_TEXT_CHARS
    assert advance["confirm"]["text"]["text"] == f"Advance run {RUN} to {HOSTILE}?"
    assert "&amp;" not in json.dumps(advance) and "&lt;" not in json.dumps(advance)


@pytest.mark.parametrize(
    ("size", "whole"), [(MAX_BUTTON_TEXT_CHARS, True), (MAX_BUTTON_TEXT_CHARS + 1, False)]
)
def test_a_button_text_is_cut_to_slacks_75_characters(size: int, whole: bool) -> None:
    label = ("x" * (size - 10)) + " stage end"
    [button] = buttons(with_offers(MESSAGE, [Offer("advance", 1, RUN, "S", label)]))
    text = button["text"]["text"]
    assert len(text) <= MAX_BUTTON_TEXT_CHARS
    assert (text == label) is whole and text.endswith(ELLIPSIS) is not whole


def test_a_200_character_stage_name_is_trimmed_everywhere_and_slack_takes_it() -> None:
    name = "阶段" + "y" * 198
    [button] = buttons(with_offers(MESSAGE, [advance_to(name)]))
    assert len(button["text"]["text"]) <= MAX_BUTTON_TEXT_CHARS and button["text"]["text"].endswith(ELLIPSIS)
    assert button["confirm"]["text"]["text"] == f"Advance run {RUN} to {name}?"  # 220 characters fit
    ConfirmObject.parse(button["confirm"]).validate_json()  # type: ignore[union-attr]


@pytest.mark.parametrize(("extra", "whole"), [(0, True), (1, False)])
def test_a_confirm_text_is_cut_to_slacks_300_characters(extra: int, whole: bool) -> None:
    room = MAX_CONFIRM_TEXT_CHARS - len(f"Advance run {RUN} to ?")
    name = "z" * (room + extra)
    [button] = buttons(with_offers(MESSAGE, [advance_to(name)]))
    text = button["confirm"]["text"]["text"]
    assert len(text) <= MAX_CONFIRM_TEXT_CHARS
    assert (text == f"Advance run {RUN} to {name}?") is whole
    ConfirmObject.parse(button["confirm"]).validate_json()  # type: ignore[union-attr]


@pytest.mark.parametrize(("extra", "kept"), [(0, True), (1, False)])
def test_a_button_whose_value_is_over_2000_characters_is_left_out(extra: int, kept: bool) -> None:
    room = MAX_BUTTON_VALUE_CHARS - len(json.dumps(Offer("abolish", 1, "", "S", "x").value))
    long_run = Offer("abolish", 1, "r" * (room + extra), "S", "Abolish run")
    message = with_offers(MESSAGE, [long_run, ADVANCE])
    values = [button["value"] for button in buttons(message)]
    assert (json.dumps(long_run.value) in values) is kept and json.dumps(ADVANCE.value) in values
    assert all(len(value) <= MAX_BUTTON_VALUE_CHARS for value in values)
    assert with_offers(MESSAGE, [Offer("abolish", 1, "r" * (room + 1), "S", "x")]) is MESSAGE


def test_a_message_of_text_gets_its_mrkdwn_layout_and_the_buttons_after_it() -> None:
    message = with_offers(MESSAGE, [ABOLISH])
    assert message.blocks is not None
    assert list(message.blocks[:-1]) == sections(MESSAGE.text)
    assert (message.title, message.text) == (MESSAGE.title, MESSAGE.text)


def test_a_message_of_template_blocks_keeps_them_fitted_and_the_buttons_after_them() -> None:
    own = (
        {"type": "header", "text": {"type": "plain_text", "text": "等待 " + "h" * 200}},
        {"type": "section", "text": {"type": "mrkdwn", "text": ""}},  # empty: Slack refuses it
        {"type": "section", "text": {"type": "mrkdwn", "text": "*run* r-7f3a"}},
    )
    message = with_offers(Message("t", "fallback text", blocks=own), [ADVANCE])
    assert message.blocks is not None
    assert list(message.blocks[:-1]) == fit_blocks(own).blocks
    judged(message.blocks)
    # Blocks no cut can repair: the mrkdwn layout of the text, still with its buttons.
    broken = with_offers(Message("t", "fallback text", blocks=({"type": "header", "text": "x"},)), [ADVANCE])
    assert broken.blocks is not None
    assert list(broken.blocks[:-1]) == sections("fallback text") and broken.blocks[-1]["type"] == "actions"


def numbered(count: int) -> tuple[dict[str, Any], ...]:
    return tuple({"type": "section", "text": {"type": "mrkdwn", "text": f"block {n}"}} for n in range(count))


@pytest.mark.parametrize("count", [48, 49, 50, 60])
def test_a_long_message_keeps_its_buttons_and_its_last_block_within_50(count: int) -> None:
    own = numbered(count)
    message = with_offers(Message("t", "x", blocks=own), [ADVANCE, ABOLISH])
    assert message.blocks is not None
    judged(message.blocks)
    assert message.blocks[-1]["block_id"] == ACTIONS_BLOCK_ID
    assert message.blocks[-2] == own[-1]  # the last block (the console link) stays
    if count < MAX_BLOCKS:
        assert list(message.blocks[:-1]) == list(own)
    else:
        assert len(message.blocks) == MAX_BLOCKS
        assert message.blocks[-3]["elements"][0]["text"] == TRIM_MARKER
        assert list(message.blocks[: MAX_BLOCKS - 3]) == list(own[: MAX_BLOCKS - 3])
    # What goes out (the channel's payload) is the same: the buttons are never the block Slack's
    # 50 cut.
    sent = build_payload(message)["blocks"]
    assert sent == list(message.blocks)


def test_a_text_of_fifty_sections_keeps_its_buttons() -> None:
    text = "\n".join(["行" * 2_900] * 60)
    assert len(sections(text)) == MAX_BLOCKS
    message = with_offers(Message("t", text), [ABOLISH])
    assert message.blocks is not None
    judged(message.blocks)
    assert len(message.blocks) == MAX_BLOCKS and message.blocks[-1]["block_id"] == ACTIONS_BLOCK_ID


# --- requested_blocks --------------------------------------------------------------------------------

# Blocks as Slack sends them back in a block_actions payload: block_ids and flags filled in.
RETURNED = [
    {"type": "section", "block_id": "Ab1c", "text": {"type": "mrkdwn", "text": "*等待*", "verbatim": True}},
    {"type": "context", "block_id": "dwnotify_actions_note", "elements": [{"type": "mrkdwn", "text": "x"}]},
    {"type": "divider"},
    {
        "type": "actions",
        "block_id": ACTIONS_BLOCK_ID,
        "elements": [
            {"type": "button", "action_id": "dwnotify:advance", "text": {"type": "plain_text", "text": "Go"}}
        ],
    },
    {"type": "section", "block_id": "zZ9", "text": {"type": "mrkdwn", "text": "<https://x|Open>"}},
    {  # a template's own buttons (a link) are not dwnotify's: they stay
        "type": "actions",
        "block_id": "console",
        "elements": [
            {
                "type": "button",
                "action_id": "open",
                "text": {"type": "plain_text", "text": "Open"},
                "url": "https://x.example",
            }
        ],
    },
]
KEPT = [RETURNED[0], RETURNED[1], RETURNED[2], RETURNED[4], RETURNED[5]]
NOTE = "advance requested by <@U0123ABCD> at 14:05"


def test_after_a_click_only_the_buttons_go_and_a_note_says_who_asked() -> None:
    before = json.dumps(RETURNED)
    edited = requested_blocks(RETURNED, NOTE)
    assert json.dumps(RETURNED) == before  # the payload's blocks are not changed in place
    assert edited[:-1] == KEPT
    assert edited[-1] == {"type": "context", "elements": [{"type": "mrkdwn", "text": NOTE}]}
    judged(edited)


def test_a_blank_note_only_takes_the_buttons_away() -> None:
    assert requested_blocks(RETURNED, "  ") == KEPT


def test_the_note_keeps_the_edit_within_block_kits_limits() -> None:
    full = [*numbered(MAX_BLOCKS - 1), RETURNED[3]]
    edited = requested_blocks(full, NOTE)
    assert len(edited) == MAX_BLOCKS and edited[-2] == full[-2] and edited[-1]["type"] == "context"
    crowded = requested_blocks(list(numbered(MAX_BLOCKS)), "n" * 5_000)
    judged(crowded)
    assert crowded[-2] == numbered(MAX_BLOCKS)[-1] and len(crowded[-1]["elements"][0]["text"]) <= 3_000


# --- the channel against the Slack stand-in -------------------------------------------------------------


@pytest.fixture
def slack() -> Iterator[SlackEmulator]:
    with SlackEmulator(api_rates={}) as emulator:
        emulator.set_time(NOW)
        yield emulator
        assert not emulator.refused, emulator.refused


def app_channel(slack: SlackEmulator, client: httpx.Client) -> SlackAppChannel:
    options = {
        "token": Secret(DEFAULT_BOT_TOKEN),
        "channel": CHANNEL,
        "api_url": Secret(f"{slack.base_url}/api"),
    }
    return SlackAppChannel(
        ChannelSettings("deploys", "slack-app", None, options=options), client, clock=slack.now
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def response_url(slack: SlackEmulator, posted: Posted, user: str = "U0123ABCD") -> str:
    """A click's response_url (the app itself is down here: the payload carries the URL all the same)."""
    [attempt] = slack.click(
        f"http://127.0.0.1:{closed_port()}/slack/actions",
        user_id=user,
        channel_id=posted.channel_id,
        message_ts=posted.ts,
        action_id="dwnotify:abolish",
        signing_secret="s",
        retries=0,
    )
    return slack.response_url_of(attempt)


def test_slack_takes_the_buttons_with_a_hostile_name_and_a_click_edits_them_away(
    slack: SlackEmulator,
) -> None:
    with httpx.Client() as client:
        chat = app_channel(slack, client)
        posted = chat.post(with_offers(MESSAGE, [advance_to(HOSTILE + "w" * 200), ABOLISH]), "10000/r-7f3a")
        stored = slack.message(CHANNEL, posted.ts)
        assert stored is not None and stored["blocks"][-1]["block_id"] == ACTIONS_BLOCK_ID
        chat.edit_blocks(
            posted.channel_id, posted.ts, stored["text"], requested_blocks(stored["blocks"], NOTE)
        )
        edited = slack.message(CHANNEL, posted.ts)
        assert edited is not None and len(edited["edits"]) == 1
        assert [b.get("block_id") for b in edited["blocks"]].count(ACTIONS_BLOCK_ID) == 0
        assert edited["blocks"][-1]["elements"][0]["text"] == NOTE and edited["text"] == stored["text"]


def test_edit_blocks_fails_as_call_fails(slack: SlackEmulator) -> None:
    with httpx.Client() as client:
        chat = app_channel(slack, client)
        posted = chat.post(with_offers(MESSAGE, [ABOLISH]), "10000/r-7f3a")
        slack.delete_message(CHANNEL, posted.ts)
        with pytest.raises(MessageGone):
            chat.edit_blocks(posted.channel_id, posted.ts, "t", RETURNED[:1])


def test_an_ephemerals_text_from_dataworks_stays_inert(slack: SlackEmulator) -> None:
    with httpx.Client() as client:
        chat = app_channel(slack, client)
        posted = chat.post(with_offers(MESSAGE, [ABOLISH]), "10000/r-7f3a")
        chat.respond(response_url(slack, posted), "stage S3 is <!channel> & <http://evil|x>")
    [response] = slack.responses()
    assert response["body"]["text"] == "stage S3 is &lt;!channel&gt; &amp; &lt;http://evil|x&gt;"


def test_respond_posts_exactly_an_ephemeral_to_the_clicks_response_url(slack: SlackEmulator) -> None:
    with httpx.Client() as client:
        chat = app_channel(slack, client)
        posted = chat.post(with_offers(MESSAGE, [ABOLISH]), "10000/r-7f3a")
        url = response_url(slack, posted)
        chat.respond(url, "abolish requested: run r-7f3a will stop.")
    [response] = slack.responses()
    assert response["body"] == {
        "response_type": "ephemeral",
        "replace_original": False,
        "text": "abolish requested: run r-7f3a will stop.",
    }
    assert [e["text"] for e in slack.ephemerals("U0123ABCD")] == ["abolish requested: run r-7f3a will stop."]
    assert slack.ephemerals("U0OTHER") == []
    assert len(slack.posted(CHANNEL)) == 1 and not slack.posted(CHANNEL)[0]["edits"]  # nothing else changed


def test_respond_fails_for_good_once_the_url_is_used_up(slack: SlackEmulator) -> None:
    with httpx.Client() as client:
        chat = app_channel(slack, client)
        url = response_url(slack, chat.post(with_offers(MESSAGE, [ABOLISH]), "10000/r-7f3a"))
        for n in range(5):
            chat.respond(url, f"answer {n}")
        with pytest.raises(DeliveryError) as caught:
            chat.respond(url, "one too many")
    assert caught.value.retryable is False and "404 used_url" in str(caught.value)
    assert len(slack.ephemerals()) == 5


@pytest.mark.parametrize(
    ("status", "retryable", "wait"), [(500, True, None), (429, True, 7.0), (410, False, None)]
)
def test_respond_says_which_failures_are_worth_trying_again(
    slack: SlackEmulator, status: int, retryable: bool, wait: float | None
) -> None:
    with httpx.Client() as client:
        chat = app_channel(slack, client)
        url = response_url(slack, chat.post(with_offers(MESSAGE, [ABOLISH]), "10000/r-7f3a"))
        slack.inject(status=status, headers={"Retry-After": "7"} if wait else None)
        with pytest.raises(DeliveryError) as caught:
            chat.respond(url, "answer")
    assert caught.value.retryable is retryable and caught.value.retry_after == wait
    assert caught.value.channel == "deploys" and url not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/actions/T1/1/abc",
        "http://hooks.slack.com/actions/T1/1/abc",
        "ftp://127.0.0.1/actions/T1/1/abc",
        "http://100.100.100.200/actions/T1/1/abc",
        "https://169.254.169.254/actions",
        "not a url",
    ],
)
def test_respond_refuses_a_url_it_may_not_send_to_and_sends_nothing(url: str) -> None:
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, text="ok")

    with httpx.Client(transport=httpx.MockTransport(record)) as client:
        options = {"token": Secret(DEFAULT_BOT_TOKEN), "channel": CHANNEL}
        chat = SlackAppChannel(ChannelSettings("deploys", "slack-app", None, options=options), client)
        with pytest.raises(DeliveryError) as caught:
            chat.respond(url, "answer")
        assert caught.value.retryable is False and sent == []
        chat.respond("https://hooks.slack.com/actions/T1/1/abc", "answer")  # https goes anywhere allowed
        chat.respond("http://localhost:8123/actions/T1/1/abc", "answer")  # plain http only to loopback
    assert [str(request.url.host) for request in sent] == ["hooks.slack.com", "localhost"]
    assert all("Authorization" not in request.headers for request in sent)  # the URL needs no token
