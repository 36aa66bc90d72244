"""The living-message steps (`dwnotify.living`) against a scripted channel and a real SQLite store:
which call is made when, what is recorded before and after, and what a lost answer leaves."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from dwnotify.errors import DeliveryError
from dwnotify.living import LivingSteps, MessageGone, Posted, by_run, reply_template, wants_reply
from dwnotify.message import Message
from dwnotify.model import Event, Stage
from dwnotify.state.base import LivingMessage, OutboxMessage
from dwnotify.state.sqlite import SqliteStateStore

RUN = "10000/r1"
NOW = 1_700_000_000.0


@dataclass
class ScriptedChannel:
    """A LivingChannel that records its calls and fails when told to."""

    name: str = "team"
    deadline: float | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)
    failures: dict[str, list[DeliveryError]] = field(default_factory=dict)
    history: dict[str, Posted] = field(default_factory=dict)  # what `find` finds, by run
    lose_post_answer: bool = False
    posts: int = 0

    def _maybe_fail(self, call: str) -> None:
        waiting = self.failures.get(call)
        if waiting:
            raise waiting.pop(0)

    def post(self, message: Message, run_key: str) -> Posted:
        self.calls.append(("post", message.text))
        self._maybe_fail("post")
        self.posts += 1
        posted = Posted("C1", f"{1000 + self.posts}.000100")
        self.history[run_key] = posted
        if self.lose_post_answer:
            raise DeliveryError("no answer within 10s", channel=self.name, retryable=True)
        return posted

    def update(self, posted: Posted, message: Message) -> None:
        self.calls.append(("update", f"{posted.ts}:{message.text}"))
        self._maybe_fail("update")

    def reply(self, posted: Posted, text: str) -> None:
        self.calls.append(("reply", f"{posted.ts}:{text}"))
        self._maybe_fail("reply")

    def find(self, run_key: str, since: float) -> Posted | None:
        self.calls.append(("find", run_key))
        self._maybe_fail("find")
        return self.history.get(run_key)


@pytest.fixture
def store(tmp_path: Path) -> SqliteStateStore:
    return SqliteStateStore(tmp_path / "state.db")


def steps(store: SqliteStateStore, channel: ScriptedChannel, room: list[bool] | None = None) -> LivingSteps:
    budget = iter(room) if room is not None else None
    return LivingSteps(
        store, channel, lambda: NOW, (lambda: next(budget, False)) if budget else (lambda: True)
    )


def test_a_first_post_is_recorded_before_it_is_sent_and_its_ts_after(store: SqliteStateStore) -> None:
    channel = ScriptedChannel()
    shown = steps(store, channel).show(LivingMessage("team", RUN), Message("t", "v1"))
    assert shown is not None and shown.ts == "1001.000100" and shown.channel_id == "C1"
    assert shown.posting_since is None and shown.version == 2  # the intent, then the ts
    assert store.load_living("team", [RUN]) == {RUN: shown}
    assert channel.calls == [("post", "v1")]


def test_a_posted_message_is_edited_not_posted_again(store: SqliteStateStore) -> None:
    channel = ScriptedChannel()
    first = steps(store, channel).show(LivingMessage("team", RUN), Message("t", "v1"))
    assert first is not None
    again = steps(store, channel).show(first, Message("t", "v2"))
    assert again == first  # nothing to store: the message is where it was
    assert channel.calls[-1] == ("update", "1001.000100:v2") and channel.posts == 1


def test_a_lost_answer_is_found_in_the_history_instead_of_posted_twice(store: SqliteStateStore) -> None:
    channel = ScriptedChannel(lose_post_answer=True)
    with pytest.raises(DeliveryError):
        steps(store, channel).show(LivingMessage("team", RUN), Message("t", "v1"))
    [record] = store.load_living("team", [RUN]).values()
    assert record.posting_since == NOW and not record.posted  # the post may have landed
    channel.lose_post_answer = False
    shown = steps(store, channel).show(record, Message("t", "v2"))
    assert shown is not None and shown.ts == "1001.000100" and channel.posts == 1
    assert [call for call, _ in channel.calls] == ["post", "find", "update"]


def test_a_post_that_never_landed_is_made_after_the_search_finds_nothing(store: SqliteStateStore) -> None:
    channel = ScriptedChannel()
    channel.failures["post"] = [DeliveryError("HTTP 503", channel="team", retryable=True)]
    with pytest.raises(DeliveryError):
        steps(store, channel).show(LivingMessage("team", RUN), Message("t", "v1"))
    [record] = store.load_living("team", [RUN]).values()
    shown = steps(store, channel).show(record, Message("t", "v1"))
    assert shown is not None and shown.posted
    assert [call for call, _ in channel.calls] == ["post", "find", "post"] and channel.posts == 1


def test_a_search_that_cannot_be_made_posts_with_a_warning(
    store: SqliteStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    channel = ScriptedChannel()
    channel.failures["find"] = [DeliveryError("missing_scope", channel="team", retryable=False)]
    record = store.store_living(LivingMessage("team", RUN, posting_since=NOW - 30), NOW)
    shown = steps(store, channel).show(record, Message("t", "v1"))
    assert shown is not None and shown.posted and channel.posts == 1
    assert "may show the run twice" in caplog.text


def test_a_search_that_fails_for_now_posts_nothing(store: SqliteStateStore) -> None:
    channel = ScriptedChannel()
    channel.failures["find"] = [DeliveryError("ratelimited", channel="team", retryable=True, retry_after=3)]
    record = store.store_living(LivingMessage("team", RUN, posting_since=NOW - 30), NOW)
    with pytest.raises(DeliveryError):
        steps(store, channel).show(record, Message("t", "v1"))
    assert channel.posts == 0


def test_a_message_deleted_in_the_chat_is_posted_anew(store: SqliteStateStore) -> None:
    channel = ScriptedChannel()
    first = steps(store, channel).show(LivingMessage("team", RUN), Message("t", "v1"))
    assert first is not None
    channel.failures["update"] = [
        MessageGone("chat.update: message_not_found", channel="team", retryable=False)
    ]
    again = steps(store, channel).show(first, Message("t", "v2"))
    assert again is not None and again.ts == "1002.000100" and again.version == first.version + 2
    assert [call for call, _ in channel.calls] == ["post", "update", "post"]


def test_no_room_in_the_rate_budget_changes_nothing(store: SqliteStateStore) -> None:
    channel = ScriptedChannel()
    assert steps(store, channel, room=[]).show(LivingMessage("team", RUN), Message("t", "v1")) is None
    assert channel.calls == [] and store.load_living("team", [RUN]) == {}


def test_replies_go_to_the_message_thread(store: SqliteStateStore) -> None:
    channel = ScriptedChannel()
    living = steps(store, channel)
    shown = living.show(LivingMessage("team", RUN), Message("t", "v1"))
    assert shown is not None and living.reply(shown, "failed!")
    assert channel.calls[-1] == ("reply", "1001.000100:failed!")


# -- the pure rules ----------------------------------------------------------------------------------
def _stage_event(status: str) -> Event:
    return Event(f"stage.{status}", RUN, status, "running", Stage("B", 1, "T", "B", "", status, ""))


@pytest.mark.parametrize(
    ("events", "replies"),
    [
        ([Event("run.started", RUN, "running", "init")], False),
        ([_stage_event("success")], False),
        ([_stage_event("running")], False),
        ([_stage_event("fail")], True),
        ([_stage_event("terminated")], True),
        ([Event("run.succeeded", RUN, "success", "running")], True),
        ([Event("run.canceled", RUN, "canceled", "running")], True),
        ([Event("run.changed", RUN, "paused", "running")], False),
    ],
)
def test_failures_and_the_end_of_a_run_reply_in_its_thread(events: list[Event], replies: bool) -> None:
    assert wants_reply(events) is replies


def test_messages_are_grouped_by_run_in_order() -> None:
    def message(mid: str, run: str) -> OutboxMessage:
        return OutboxMessage(mid, "team", run, "r", int(mid), "t", mid, NOW)

    groups = by_run([message("1", "a"), message("2", "b"), message("3", "a")])
    assert [[m.id for m in group] for group in groups] == [["1", "3"], ["2"]]


def test_a_rule_template_without_its_own_reply_uses_the_default_reply() -> None:
    assert reply_template("failure", {"failure-reply"}.__contains__) == "failure-reply"
    assert reply_template("mine", {"failure-reply"}.__contains__) == "default-reply"


def test_a_record_that_conflicts_is_not_overwritten(store: SqliteStateStore) -> None:
    channel = ScriptedChannel()
    stale = LivingMessage("team", RUN)
    steps(store, channel).show(stale, Message("t", "v1"))
    from dwnotify.errors import ConflictError

    with pytest.raises(ConflictError):  # another sender's record: never a second post over it
        steps(store, channel).show(replace(stale), Message("t", "v1"))
    assert channel.posts == 1
