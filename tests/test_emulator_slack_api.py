"""The Slack emulator's Web API, judged by the official slack_sdk WebClient over 127.0.0.1."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import URLError

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from emulators.slack import DEFAULT_BOT_TOKEN, SlackChannel, SlackEmulator, SlackToken

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_795_680_000.0
CHANNEL = "C0123456"
SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "*发布成功*"}}
META = {"event_type": "dwnotify_run", "event_payload": {"run_id": "r-1", "status": "Success"}}
TS = re.compile(r"^\d{10}\.\d{6}$")

OTHER_BOT = SlackToken(bot_user_id="U0000OTHER", bot_id="B0000OTHER", app_id="A0000OTHER")
TOKENS = {
    DEFAULT_BOT_TOKEN: SlackToken(),
    "xoxb-other": OTHER_BOT,
    "xoxb-public": SlackToken(scopes=frozenset({"chat:write", "chat:write.public", "channels:history"})),
    "xoxb-write-only": SlackToken(scopes=frozenset({"chat:write"})),
}
CHANNELS = [
    SlackChannel(CHANNEL, "deploys"),
    SlackChannel("C0OUTSIDE", "elsewhere", members=frozenset()),
    SlackChannel("G0PRIVATE", "secret", private=True, members=frozenset({"U0000BOT"})),
    SlackChannel("G0HIDDEN", "hidden", private=True, members=frozenset()),
]


def make(**kwargs: Any) -> SlackEmulator:
    emulator = SlackEmulator(tokens=TOKENS, channels=CHANNELS, **kwargs)
    emulator.set_time(NOW)
    return emulator


@pytest.fixture
def slack() -> Iterator[SlackEmulator]:
    """Rate limits off: every behaviour but the limits themselves."""
    with make(api_rates={}) as emulator:
        yield emulator


@pytest.fixture
def limited() -> Iterator[SlackEmulator]:
    """Slack's default rates."""
    with make() as emulator:
        yield emulator


def client(emulator: SlackEmulator, token: str | None = DEFAULT_BOT_TOKEN, **kwargs: Any) -> WebClient:
    return WebClient(token=token, base_url=f"{emulator.base_url}/api/", **kwargs)


def error_of(call: Any, **kwargs: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        call(**kwargs)
    return caught.value


# -- authentication and scopes ---------------------------------------------------------------
def test_auth_test_names_the_token(slack: SlackEmulator) -> None:
    answer = client(slack).auth_test()
    assert answer.data == {
        "ok": True,
        "url": "https://dwnotify-demo.slack.com/",
        "team": "dwnotify demo",
        "user": "dwnotify",
        "team_id": "T0000DEMO",
        "user_id": "U0000BOT",
        "bot_id": "B0000BOT",
        "is_enterprise_install": False,
    }
    assert client(slack, "xoxb-other").auth_test()["bot_id"] == "B0000OTHER"


def test_no_token_is_not_authed_and_an_unknown_one_invalid_auth(slack: SlackEmulator) -> None:
    assert error_of(client(slack, None).auth_test).response["error"] == "not_authed"
    assert error_of(client(slack, "xoxb-nope").auth_test).response["error"] == "invalid_auth"
    posted = error_of(client(slack, "xoxb-nope").chat_postMessage, channel=CHANNEL, text="x")
    assert posted.response.status_code == 200 and posted.response["error"] == "invalid_auth"
    assert slack.posted(CHANNEL) == []


def test_token_as_a_form_or_query_parameter_but_not_in_a_json_body(slack: SlackEmulator) -> None:
    url = f"{slack.base_url}/api/auth.test"
    assert httpx.post(url, data={"token": DEFAULT_BOT_TOKEN}).json()["user_id"] == "U0000BOT"
    assert httpx.get(url, params={"token": DEFAULT_BOT_TOKEN}).json()["ok"] is True
    in_json = httpx.post(
        f"{slack.base_url}/api/chat.postMessage",
        json={"token": DEFAULT_BOT_TOKEN, "channel": CHANNEL, "text": "x"},
    )
    assert in_json.json()["error"] == "not_authed"
    assert slack.api_calls[-1].params == {"channel": CHANNEL, "text": "x"}  # the token is never recorded


def test_a_scope_not_granted_is_missing_scope_with_needed_and_provided(slack: SlackEmulator) -> None:
    web = client(slack, "xoxb-write-only")
    refused = error_of(web.conversations_history, channel=CHANNEL)
    assert refused.response.data == {
        "ok": False,
        "error": "missing_scope",
        "needed": "channels:history",
        "provided": "chat:write",
    }
    private = error_of(client(slack, "xoxb-public").conversations_history, channel="G0PRIVATE")
    assert private.response["error"] == "missing_scope" and private.response["needed"] == "groups:history"
    assert client(slack).conversations_history(channel="G0PRIVATE")["ok"] is True


# -- chat.postMessage ----------------------------------------------------------------------------
def test_post_by_name_or_id_answers_the_channel_id_and_slack_timestamps(slack: SlackEmulator) -> None:
    web = client(slack)
    answers = [
        web.chat_postMessage(channel=c, text=f"m{i}") for i, c in enumerate(["deploys", "#deploys", CHANNEL])
    ]
    assert [a["channel"] for a in answers] == [CHANNEL] * 3
    stamps = [a["ts"] for a in answers]
    assert all(TS.match(ts) for ts in stamps)
    assert stamps == ["1795680000.000000", "1795680000.000001", "1795680000.000002"]  # same instant, unique
    slack.advance(2.5)
    assert web.chat_postMessage(channel=CHANNEL, text="later")["ts"] == "1795680002.500000"
    message = answers[0]["message"]
    assert message["text"] == "m0" and message["ts"] == stamps[0] and message["type"] == "message"
    assert (
        message["user"] == "U0000BOT" and message["bot_id"] == "B0000BOT" and message["app_id"] == "A0000APP"
    )
    assert [m["text"] for m in slack.posted("deploys")] == ["m0", "m1", "m2", "later"]


def test_post_keeps_blocks_metadata_and_options(slack: SlackEmulator) -> None:
    answer = client(slack).chat_postMessage(
        channel=CHANNEL,
        text="fallback",
        blocks=[SECTION],
        metadata=META,
        unfurl_links=False,
        unfurl_media=False,
    )
    assert answer["message"]["blocks"] == [SECTION] and answer["message"]["metadata"] == META
    [record] = slack.posted(CHANNEL)
    assert record["blocks"] == [SECTION] and record["metadata"] == META
    assert record["options"] == {"unfurl_links": False, "unfurl_media": False}
    assert record["edits"] == [] and record["deleted"] is False
    assert slack.message(CHANNEL, answer["ts"]) == record


def test_unknown_channels_and_channels_the_bot_is_not_in(slack: SlackEmulator) -> None:
    web = client(slack)
    for channel in ("C9NOPE", "nope", "G0HIDDEN", ""):  # a private channel the bot is not in is invisible
        assert (
            error_of(web.chat_postMessage, channel=channel, text="x").response["error"] == "channel_not_found"
        )
    assert error_of(web.chat_postMessage, channel="C0OUTSIDE", text="x").response["error"] == "not_in_channel"
    # chat:write.public lets a bot post in a public channel it has not joined
    assert (
        client(slack, "xoxb-public").chat_postMessage(channel="elsewhere", text="x")["channel"] == "C0OUTSIDE"
    )
    assert web.chat_postMessage(channel="secret", text="x")["channel"] == "G0PRIVATE"
    assert [c.result for c in slack.api_calls] == ["channel_not_found"] * 4 + ["not_in_channel", "ok", "ok"]


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_neither_text_nor_blocks_is_no_text(slack: SlackEmulator) -> None:
    web = client(slack)
    assert error_of(web.chat_postMessage, channel=CHANNEL).response["error"] == "no_text"
    assert error_of(web.chat_postMessage, channel=CHANNEL, text="", blocks=[]).response["error"] == "no_text"
    assert web.chat_postMessage(channel=CHANNEL, blocks=[SECTION])["ok"] is True  # blocks alone will do
    assert len(slack.posted(CHANNEL)) == 1


@pytest.mark.parametrize(
    ("block", "why"),
    [
        (
            {"type": "header", "text": {"type": "mrkdwn", "text": "x"}},
            "text must be a plain_text text object",
        ),
        ({"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}, "1 to 3000 characters"),
        ({"type": "sectionn"}, "unknown block type"),
        ({"type": "image", "image_url": "https://x/i.png", "alt_text": "a" * 2001}, "slack_sdk"),
    ],
)
def test_blocks_are_judged_like_the_webhook_does(
    slack: SlackEmulator, block: dict[str, Any], why: str
) -> None:
    refused = error_of(client(slack).chat_postMessage, channel=CHANNEL, text="t", blocks=[SECTION, block])
    assert refused.response["error"] == "invalid_blocks"
    assert why in refused.response["errors"][0] and refused.response["errors"][0].startswith("blocks[1]")
    assert refused.response["response_metadata"]["messages"][0].startswith("[ERROR] blocks[1]")
    assert slack.posted(CHANNEL) == []
    [reason] = slack.refused  # as the webhook's refusals, for the test World to fail on
    assert reason.startswith("invalid_blocks: chat.postMessage blocks[1]") and why in reason


def test_blocks_that_are_not_an_array_are_invalid_blocks_format(slack: SlackEmulator) -> None:
    web = client(slack)
    refused = error_of(web.chat_postMessage, channel=CHANNEL, text="t", blocks={"blocks": [SECTION]})
    assert refused.response["error"] == "invalid_blocks_format"
    form = error_of(
        web.api_call, api_method="chat.postMessage", params={"channel": CHANNEL, "blocks": "[{no"}
    )
    assert form.response["error"] == "invalid_blocks_format"
    assert slack.posted(CHANNEL) == []


def test_form_bodies_carry_blocks_and_metadata_as_json_strings(slack: SlackEmulator) -> None:
    web = client(slack)
    params = {"channel": CHANNEL, "text": "t", "blocks": json.dumps([SECTION]), "metadata": json.dumps(META)}
    answer = web.api_call("chat.postMessage", params=params)  # params: a form body, as slack_sdk sends it
    assert answer["message"]["blocks"] == [SECTION] and answer["message"]["metadata"] == META
    assert "warning" not in answer.data
    bad = error_of(web.api_call, api_method="chat.postMessage", params={**params, "metadata": "{x"})
    assert bad.response["error"] == "invalid_metadata_format"
    no_payload = error_of(
        web.chat_postMessage, channel=CHANNEL, text="t", metadata={"event_type": "x"}
    )  # event_payload is required
    assert no_payload.response["error"] == "invalid_metadata_format"
    assert len(slack.posted(CHANNEL)) == 1


def test_json_bodies_are_objects_with_a_charset(slack: SlackEmulator) -> None:
    url = f"{slack.base_url}/api/chat.postMessage"
    auth = {"Authorization": f"Bearer {DEFAULT_BOT_TOKEN}"}
    plain = httpx.post(url, content=json.dumps({"channel": CHANNEL, "text": "x"}), headers={
        **auth, "Content-Type": "application/json"})  # fmt: skip
    assert plain.json()["ok"] is True and plain.json()["response_metadata"]["warnings"] == ["missing_charset"]
    listed = httpx.post(
        url, content=b'["x"]', headers={**auth, "Content-Type": "application/json; charset=utf-8"}
    )
    assert listed.status_code == 200 and listed.json() == {"ok": False, "error": "json_not_object"}
    form = httpx.post(url, content=b"channel=C0123456&text=y", headers={
        **auth, "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})  # fmt: skip
    assert form.json()["warning"] == "superfluous_charset"


def test_text_over_40000_characters_is_truncated_with_a_warning(slack: SlackEmulator) -> None:
    answer = client(slack).chat_postMessage(channel=CHANNEL, text="字" * 40_001)
    assert answer["ok"] is True and answer["warning"] == "message_truncated"
    assert answer["response_metadata"]["warnings"] == ["message_truncated"]
    assert len(answer["message"]["text"]) == 40_000 == len(slack.posted(CHANNEL)[0]["text"])


def test_thread_replies_stay_out_of_the_history_and_mark_their_parent(slack: SlackEmulator) -> None:
    web = client(slack)
    parent = web.chat_postMessage(channel=CHANNEL, text="run r-1 started")["ts"]
    first = web.chat_postMessage(channel=CHANNEL, text="stage 1 ok", thread_ts=parent)
    slack.add_message(CHANNEL, "looking", thread_ts=parent)
    assert first["message"]["thread_ts"] == parent and first["message"]["parent_user_id"] == "U0000BOT"
    [shown] = web.conversations_history(channel=CHANNEL)["messages"]
    assert shown["ts"] == parent and shown["thread_ts"] == parent and shown["reply_count"] == 2
    assert shown["reply_users"] == ["U0000BOT", "U0PERSON1"] and shown["reply_users_count"] == 2
    assert shown["latest_reply"] == slack.replies(CHANNEL, parent)[-1]["ts"]
    assert [r["text"] for r in slack.replies("deploys", parent)] == ["stage 1 ok", "looking"]
    assert [m["text"] for m in slack.posted(CHANNEL)] == ["run r-1 started"]


def test_a_thread_ts_naming_no_message_is_taken_and_seen_nowhere(slack: SlackEmulator) -> None:
    web = client(slack)
    answer = web.chat_postMessage(channel=CHANNEL, text="lost", thread_ts="1700000000.000100")
    assert answer["ok"] is True and answer["message"]["thread_ts"] == "1700000000.000100"
    assert web.conversations_history(channel=CHANNEL)["messages"] == [] and slack.posted(CHANNEL) == []
    assert [r["text"] for r in slack.replies(CHANNEL, "1700000000.000100")] == ["lost"]
    malformed = error_of(web.chat_postMessage, channel=CHANNEL, text="x", thread_ts="0")
    assert malformed.response["error"] == "invalid_thread_ts"


# -- chat.update ---------------------------------------------------------------------------------
def test_update_edits_in_place_and_keeps_the_history(slack: SlackEmulator) -> None:
    web = client(slack)
    ts = web.chat_postMessage(channel=CHANNEL, text="running", blocks=[SECTION], metadata=META)["ts"]
    slack.advance(60)
    answer = web.chat_update(channel=CHANNEL, ts=ts, text="succeeded")
    assert answer["channel"] == CHANNEL and answer["ts"] == ts and answer["text"] == "succeeded"
    assert answer["message"]["blocks"] == [SECTION]  # omitted blocks and metadata are kept
    assert answer["message"]["metadata"] == META
    assert answer["message"]["edited"] == {"user": "U0000BOT", "ts": "1795680060.000000"}
    new_meta = {"event_type": "dwnotify_run", "event_payload": {"run_id": "r-1", "status": "Fail"}}
    web.chat_update(channel=CHANNEL, ts=ts, text="failed", blocks=[], metadata=new_meta)  # [] removes blocks
    [record] = slack.posted(CHANNEL)
    assert record["text"] == "failed" and record["blocks"] is None and record["metadata"] == new_meta
    assert [(e["text"], e["replaced_at"]) for e in record["edits"]] == [
        ("running", "1795680060.000000"),
        ("succeeded", "1795680060.000000"),
    ]
    assert record["edits"][0]["blocks"] == [SECTION] and record["edits"][0]["metadata"] == META
    web.chat_update(channel=CHANNEL, ts=ts, text="failed", metadata={})  # {} removes metadata
    assert slack.posted(CHANNEL)[0]["metadata"] is None


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_update_needs_the_channel_id_a_live_message_and_its_own_bot(slack: SlackEmulator) -> None:
    web = client(slack)
    ts = web.chat_postMessage(channel=CHANNEL, text="mine")["ts"]
    person = slack.add_message(CHANNEL, "a person's")
    assert (
        error_of(web.chat_update, channel="deploys", ts=ts, text="x").response["error"] == "channel_not_found"
    )
    assert error_of(web.chat_update, channel=CHANNEL, ts="1.000001", text="x").response["error"] == (
        "message_not_found"
    )
    other = client(slack, "xoxb-other")
    assert (
        error_of(other.chat_update, channel=CHANNEL, ts=ts, text="x").response["error"]
        == "cant_update_message"
    )
    assert error_of(web.chat_update, channel=CHANNEL, ts=person, text="x").response["error"] == (
        "cant_update_message"
    )
    assert error_of(web.chat_update, channel=CHANNEL, ts=ts).response["error"] == "no_text"
    assert [m["text"] for m in slack.posted(CHANNEL)] == ["mine", "a person's"]
    assert all(m["edits"] == [] for m in slack.posted(CHANNEL))


def test_a_deleted_message_is_message_not_found_and_leaves_the_history(slack: SlackEmulator) -> None:
    web = client(slack)
    ts = web.chat_postMessage(channel=CHANNEL, text="soon gone")["ts"]
    kept = web.chat_postMessage(channel=CHANNEL, text="kept")["ts"]
    slack.delete_message("deploys", ts)
    assert (
        error_of(web.chat_update, channel=CHANNEL, ts=ts, text="x").response["error"] == "message_not_found"
    )
    assert [m["ts"] for m in web.conversations_history(channel=CHANNEL)["messages"]] == [kept]
    assert [m["deleted"] for m in slack.posted(CHANNEL)] == [True, False]
    with pytest.raises(KeyError):
        slack.delete_message(CHANNEL, "1.000000")


# -- conversations.history -----------------------------------------------------------------------
def test_history_is_newest_first_and_pages_by_cursor(slack: SlackEmulator) -> None:
    web = client(slack)
    stamps = []
    for i in range(7):
        stamps.append(web.chat_postMessage(channel=CHANNEL, text=f"m{i}")["ts"])
        slack.advance(1)
    first = web.conversations_history(channel=CHANNEL, limit=3)
    assert [m["text"] for m in first["messages"]] == ["m6", "m5", "m4"] and first["has_more"] is True
    cursor = first["response_metadata"]["next_cursor"]
    assert base64.b64decode(cursor).decode() == f"next_ts:{stamps[3]}"  # Slack's own cursor shape
    second = web.conversations_history(channel=CHANNEL, limit=3, cursor=cursor)
    assert [m["text"] for m in second["messages"]] == ["m3", "m2", "m1"]
    # slack_sdk's own pagination follows next_cursor until it is gone
    pages = [
        [m["text"] for m in page["messages"]] for page in web.conversations_history(channel=CHANNEL, limit=3)
    ]
    assert pages == [["m6", "m5", "m4"], ["m3", "m2", "m1"], ["m0"]]
    last = web.conversations_history(
        channel=CHANNEL, limit=3, cursor=second["response_metadata"]["next_cursor"]
    )
    assert last["has_more"] is False and "response_metadata" not in last.data
    assert error_of(web.conversations_history, channel=CHANNEL, cursor="bm9wZQ==").response["error"] == (
        "invalid_cursor"
    )


def test_history_bounds_oldest_latest_and_inclusive(slack: SlackEmulator) -> None:
    web = client(slack)
    stamps = []
    for i in range(5):
        stamps.append(web.chat_postMessage(channel=CHANNEL, text=f"m{i}")["ts"])
        slack.advance(10)
    between = web.conversations_history(channel=CHANNEL, oldest=stamps[1], latest=stamps[3])
    assert [m["text"] for m in between["messages"]] == ["m2"] and between["latest"] == stamps[3]
    inclusive = web.conversations_history(channel=CHANNEL, oldest=stamps[1], latest=stamps[3], inclusive=True)
    assert [m["text"] for m in inclusive["messages"]] == ["m3", "m2", "m1"]
    assert [
        m["text"] for m in web.conversations_history(channel=CHANNEL, oldest=str(NOW + 25))["messages"]
    ] == [
        "m4",
        "m3",
    ]
    assert error_of(web.conversations_history, channel=CHANNEL, latest="soon").response["error"] == (
        "invalid_ts_latest"
    )
    assert (
        error_of(web.conversations_history, channel=CHANNEL, oldest="x").response["error"]
        == "invalid_ts_oldest"
    )


def test_history_limit_defaults_to_100_and_stops_at_999(slack: SlackEmulator) -> None:
    for i in range(1001):
        slack.add_message(CHANNEL, f"p{i}")
    web = client(slack)
    assert len(web.conversations_history(channel=CHANNEL)["messages"]) == 100
    page = web.conversations_history(channel=CHANNEL, limit=5000)
    assert len(page["messages"]) == 999 and page["has_more"] is True


def test_history_metadata_only_with_include_all_metadata(slack: SlackEmulator) -> None:
    web = client(slack)
    web.chat_postMessage(channel=CHANNEL, text="tagged", metadata=META)
    assert "metadata" not in web.conversations_history(channel=CHANNEL)["messages"][0]
    plain = web.conversations_history(channel=CHANNEL, include_all_metadata=False)["messages"][0]
    assert "metadata" not in plain
    tagged = web.conversations_history(channel=CHANNEL, include_all_metadata=True)["messages"][0]
    assert tagged["metadata"] == META
    assert slack.api_calls[-1].params["include_all_metadata"] == "1"  # slack_sdk's form boolean


def test_history_by_query_string_and_its_channel_rules(slack: SlackEmulator) -> None:
    client(slack).chat_postMessage(channel=CHANNEL, text="hello")
    url = f"{slack.base_url}/api/conversations.history"
    query = httpx.get(
        url,
        params={"channel": CHANNEL, "limit": "1", "include_all_metadata": "true"},
        headers={"Authorization": f"Bearer {DEFAULT_BOT_TOKEN}"},
    )
    assert [m["text"] for m in query.json()["messages"]] == ["hello"]
    web = client(slack)
    assert error_of(web.conversations_history, channel="deploys").response["error"] == "channel_not_found"
    assert error_of(web.conversations_history, channel="C0OUTSIDE").response["error"] == "not_in_channel"
    assert error_of(web.conversations_history, channel="G0HIDDEN").response["error"] == "channel_not_found"


# -- rate limits ---------------------------------------------------------------------------------
def test_posting_is_limited_per_channel_with_retry_after(limited: SlackEmulator) -> None:
    web = client(limited)
    for i in range(3):  # a burst of three
        web.chat_postMessage(channel=CHANNEL, text=f"m{i}")
    refused = error_of(web.chat_postMessage, channel=CHANNEL, text="m3")
    assert refused.response.status_code == 429 and refused.response["error"] == "ratelimited"
    assert refused.response.headers["Retry-After"] == "1" == refused.response.headers["retry-after"]
    assert web.chat_postMessage(channel="secret", text="another channel")["ok"] is True
    limited.advance(1)
    assert web.chat_postMessage(channel=CHANNEL, text="m4")["ok"] is True
    assert [m["text"] for m in limited.posted(CHANNEL)] == ["m0", "m1", "m2", "m4"]
    assert [c.result for c in limited.api_calls].count("ratelimited") == 1


def test_update_and_history_are_tier_3_and_rates_are_configurable(limited: SlackEmulator) -> None:
    web = client(limited)
    ts = web.chat_postMessage(channel=CHANNEL, text="x")["ts"]
    for _ in range(10):
        web.chat_update(channel=CHANNEL, ts=ts, text="y")
        web.conversations_history(channel=CHANNEL)
    update = error_of(web.chat_update, channel=CHANNEL, ts=ts, text="z")
    history = error_of(web.conversations_history, channel=CHANNEL)
    assert update.response.status_code == history.response.status_code == 429
    assert update.response.headers["Retry-After"] == "2"  # 50 a minute: the next token in 1.2 s
    assert limited.posted(CHANNEL)[0]["text"] == "y"
    with make(api_rates={"chat.postMessage": (1 / 60, 1)}) as tight:
        tight_web = client(tight)
        tight_web.chat_postMessage(channel=CHANNEL, text="one a minute")
        assert (
            error_of(tight_web.chat_postMessage, channel=CHANNEL, text="x").response.headers["Retry-After"]
            == "60"
        )
        for _ in range(20):
            tight_web.conversations_history(channel=CHANNEL)  # not limited any more


# -- faults --------------------------------------------------------------------------------------
@pytest.mark.parametrize("word", ["internal_error", "fatal_error", "message_not_found"])
def test_fail_next_answers_the_error_without_effect(slack: SlackEmulator, word: str) -> None:
    web = client(slack)
    ts = web.chat_postMessage(channel=CHANNEL, text="x")["ts"]
    slack.fail_next("chat.update", word, times=2)
    for _ in range(2):
        failed = error_of(web.chat_update, channel=CHANNEL, ts=ts, text="y")
        assert failed.response.status_code == 200 and failed.response["error"] == word
    assert slack.posted(CHANNEL)[0]["text"] == "x"
    assert web.chat_update(channel=CHANNEL, ts=ts, text="y")["ok"] is True
    assert [c.result for c in slack.api_calls] == ["ok", word, word, "ok"]


def test_fail_next_ratelimited_with_429_and_retry_after(slack: SlackEmulator) -> None:
    slack.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=30)
    refused = error_of(client(slack).chat_postMessage, channel=CHANNEL, text="x")
    assert refused.response.status_code == 429 and refused.response.headers["Retry-After"] == "30"
    assert refused.response.data == {"ok": False, "error": "ratelimited"}
    assert slack.posted(CHANNEL) == []
    assert client(slack).auth_test()["ok"] is True  # other methods are not touched


def test_lose_answer_posts_but_the_client_gets_a_500(slack: SlackEmulator) -> None:
    web = client(slack)
    slack.lose_answer("chat.postMessage")
    lost = error_of(web.chat_postMessage, channel=CHANNEL, text="landed")
    assert lost.response.status_code == 500
    assert [m["text"] for m in slack.posted(CHANNEL)] == ["landed"]  # it took effect
    ts = slack.posted(CHANNEL)[0]["ts"]
    slack.lose_answer("chat.update")
    assert error_of(web.chat_update, channel=CHANNEL, ts=ts, text="edited").response.status_code == 500
    assert slack.posted(CHANNEL)[0]["text"] == "edited"
    assert web.chat_postMessage(channel=CHANNEL, text="next")["ok"] is True


def test_lose_answer_by_a_dropped_connection(slack: SlackEmulator) -> None:
    slack.lose_answer("chat.postMessage", drop=True)
    with pytest.raises((URLError, ConnectionError)):  # without retries the client sees the connection go
        client(slack, retry_handlers=[]).chat_postMessage(channel=CHANNEL, text="once")
    assert [m["text"] for m in slack.posted(CHANNEL)] == ["once"]
    # slack_sdk's default handler retries a connection error once: the post lands twice
    slack.lose_answer("chat.postMessage", drop=True)
    assert client(slack).chat_postMessage(channel=CHANNEL, text="twice")["ok"] is True
    assert [m["text"] for m in slack.posted(CHANNEL)] == ["once", "twice", "twice"]


def test_inject_and_drops_still_work_on_web_api_paths(slack: SlackEmulator) -> None:
    slack.inject(status=503, body={"ok": False, "error": "service_unavailable"})
    refused = error_of(client(slack).chat_postMessage, channel=CHANNEL, text="x")
    assert refused.response.status_code == 503 and refused.response["error"] == "service_unavailable"
    slack.drop_connections(1)
    with pytest.raises((URLError, ConnectionError)):
        client(slack, retry_handlers=[]).auth_test()
    assert slack.posted(CHANNEL) == [] and [c.result for c in slack.api_calls] == ["injected"]


def test_unknown_methods_and_the_control_api(slack: SlackEmulator) -> None:
    unknown = error_of(client(slack).api_call, api_method="chat.shout")
    assert unknown.response.status_code == 404 and unknown.response["error"] == "unknown_method"
    httpx.post(f"{slack.base_url}/_emulator/fail_next", json={"method": "auth.test", "error": "fatal_error"})
    assert error_of(client(slack).auth_test).response["error"] == "fatal_error"
    client(slack).chat_postMessage(channel=CHANNEL, text="seen", metadata=META)
    state = httpx.get(f"{slack.base_url}/_emulator").json()
    assert [m["text"] for m in state["api"]["messages"]] == ["seen"]
    assert [c["result"] for c in state["api"]["calls"]] == ["unknown_method", "fatal_error", "ok"]
    assert state["api"]["calls"][-1]["params"]["metadata"] == META


def test_webhooks_and_the_web_api_share_the_server(slack: SlackEmulator) -> None:
    hook = httpx.post(f"{slack.base_url}/services/T000/B000/demo", json={"text": "via hook"})
    assert hook.status_code == 200 and hook.text == "ok"
    client(slack).chat_postMessage(channel=CHANNEL, text="via api")
    assert slack.received == [{"text": "via hook"}] and [m["text"] for m in slack.posted(CHANNEL)] == [
        "via api"
    ]


def test_cli_defaults_serve_the_web_api() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulators", "slack"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        web = WebClient(token=DEFAULT_BOT_TOKEN, base_url=f"{url}/api/")
        assert web.auth_test()["user_id"] == "U0000BOT"
        assert web.chat_postMessage(channel="deploys", text="hi")["channel"] == CHANNEL
        assert httpx.post(f"{url}/services/T000/B000/demo", json={"text": "hi"}).text == "ok"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
