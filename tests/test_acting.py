"""The actor (`dwnotify.acting`) on a real SQLite store with DataWorks and Slack stood in by recorders:
one effect per decision whatever repeats it, only approvers act, a moved stage is refused with its
reason, and every click ends in one audit line."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dwnotify import config
from dwnotify.acting import Actor
from dwnotify.errors import DataWorksError
from dwnotify.model import INIT, RUNNING, SUCCESS, Run, Stage
from dwnotify.settings import ChannelSettings, ProjectSettings, Settings
from dwnotify.slack_verify import Interaction
from dwnotify.state.sqlite import SqliteStateStore
from tests.helpers import at_once

CHANNEL = "C0DEPLOYS"
NOW = 1_767_000_000.0  # 2025-12-29 09:20 UTC: 17:20 in Asia/Shanghai
RESPONSE_URL = "https://hooks.slack.com/actions/T1/2/abc"
BLOCKS = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "*Deploying* run r1"}},
    {"type": "actions", "block_id": "dwnotify_actions", "elements": []},
]


def waiting_run(stage_status: str = INIT, status: str = RUNNING) -> Run:
    stages = (
        Stage("BUILD", 1, "Build", "Build", "", SUCCESS, ""),
        Stage("DEPLOY", 2, "Deploy", "Deploy to prod", "", stage_status, ""),
    )
    return Run(id="r1", project_id=10000, status=status, creator="1379", stages=stages)


class Source:
    """DataWorks as the actor sees it: the run it reads, and every call made."""

    def __init__(self, run: Run | None) -> None:
        self.run = run
        self.calls: list[str] = []
        self.fail: DataWorksError | None = None

    def get_run(self, project: ProjectSettings, run_id: str, *, deadline: float | None = None) -> Run | None:
        self.calls.append(f"GetPipelineRun {run_id}")
        return self.run

    def exec_stage(
        self, project: ProjectSettings, run_id: str, code: str, *, deadline: float | None = None
    ) -> str:
        self.calls.append(f"ExecPipelineRunStage {run_id} {code}")
        if self.fail is not None:
            raise self.fail
        return "REQ-EXEC"

    def abolish_run(self, project: ProjectSettings, run_id: str, *, deadline: float | None = None) -> str:
        self.calls.append(f"AbolishPipelineRun {run_id}")
        return "REQ-ABOLISH"


class Chat:
    """Slack as the actor sees it: the edits and the ephemeral answers."""

    def __init__(self) -> None:
        self.edits: list[tuple[str, str, str, Any]] = []
        self.answers: list[tuple[str, str]] = []

    def edit_blocks(self, channel_id: str, ts: str, text: str, blocks: Any) -> None:
        self.edits.append((channel_id, ts, text, blocks))

    def respond(self, response_url: str, text: str) -> None:
        self.answers.append((response_url, text))


def settings_for(tmp_path: Path, **actions: Any) -> Settings:
    data = {
        "dataworks": {"region": "cn-shanghai", "projects": [10000]},
        "channels": {
            "deploys": {
                "type": "slack-app",
                "token": "xoxb-1-abc",
                "channel": CHANNEL,
                "signing_secret": "s" * 32,
            }
        },
        "people": {
            "alice": {"slack_user_id": "U0ALICE01"},
            "1379": {"slack_user_id": "U0CREATOR"},  # the run's creator, not an approver
        },
        "rules": [{"name": "all", "events": ["*"], "channels": ["deploys"]}],
        "actions": {"enabled": True, "approvers": ["alice"], **actions},
    }
    return config.parse(data, tmp_path, {})


class Rig:
    """An actor on a real store; `defer` keeps what it defers when `deferring`, else it runs at once."""

    def __init__(self, tmp_path: Path, run: Run | None, *, deferring: bool = False, **actions: Any) -> None:
        self.settings = settings_for(tmp_path, **actions)
        self.store = SqliteStateStore(tmp_path / "state.db", 30 * 86400)
        self.source, self.chat = Source(run), Chat()
        self.deferred: list[str] = []
        self.actor = self.make(self.store, deferring)

    def make(self, store: SqliteStateStore, deferring: bool = False) -> Actor:
        def chat(channel: ChannelSettings) -> Chat:
            assert channel.name == "deploys"
            return self.chat

        return Actor(
            self.settings,
            store,
            self.source,
            chat,
            clock=lambda: NOW,
            defer=self.deferred.append if deferring else None,
        )


def interaction(
    user: str = "U0ALICE01", action: str = "advance", stage: str = "DEPLOY", url: str = RESPONSE_URL
) -> Interaction:
    return Interaction(
        type="block_actions",
        user_id=user,
        channel_id=CHANNEL,
        message_ts="1767000000.000100",
        action_id=f"dwnotify:{action}",
        value={"project": 10000, "run": "r1", "stage": stage},
        response_url=url,
        message_blocks=tuple(BLOCKS),
        message_text="Deploying run r1",
    )


def audits(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        json.loads(record.getMessage().removeprefix("audit "))
        for record in caplog.records
        if record.name == "dwnotify.audit"
    ]


def test_an_approvers_click_advances_the_stage_once_and_edits_the_message_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path, waiting_run())
    with caplog.at_level(logging.INFO, logger="dwnotify.audit"):
        assert rig.actor.take(interaction()) == "claimed"
    assert rig.source.calls == ["GetPipelineRun r1", "ExecPipelineRunStage r1 DEPLOY"]
    [(channel_id, ts, _, blocks)] = rig.chat.edits
    assert (channel_id, ts) == (CHANNEL, "1767000000.000100")
    texts = json.dumps(blocks)
    assert "advance requested by <@U0ALICE01> at 17:20" in texts  # Asia/Shanghai, the default
    assert "dwnotify_actions" not in texts  # the buttons are gone
    record = rig.store.load_action("10000/r1/DEPLOY/advance")
    assert record is not None and (record.result, record.request_id, record.person) == (
        "done",
        "REQ-EXEC",
        "alice",
    )
    assert [(a["result"], a["request_id"]) for a in audits(caplog)] == [
        ("claimed", None),
        ("done", "REQ-EXEC"),
    ]
    done = audits(caplog)[1]
    assert (done["who"], done["person"], done["action"], done["run"], done["stage"]) == (
        "U0ALICE01",
        "alice",
        "advance",
        "r1",
        "DEPLOY",
    )
    assert rig.chat.answers == []


def test_the_note_is_shown_in_the_configured_timezone(tmp_path: Path) -> None:
    rig = Rig(tmp_path, waiting_run(), timezone="Europe/Berlin")
    rig.actor.take(interaction())
    assert "at 10:20" in json.dumps(rig.chat.edits[0][3])


@pytest.mark.parametrize("again", ["a second click", "a Slack retry", "a replayed body"])
def test_whatever_repeats_a_click_finds_its_decision_and_does_nothing(
    tmp_path: Path, again: str, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path, waiting_run())
    rig.actor.take(interaction())
    calls, edits = list(rig.source.calls), list(rig.chat.edits)
    caplog.clear()  # the first click's lines are captured too once another test set INFO on dwnotify
    with caplog.at_level(logging.INFO, logger="dwnotify.audit"):
        retry = 1 if again == "a Slack retry" else 0
        assert rig.actor.take(interaction(user="U0ALICE01"), retry) == "duplicate"
    assert (rig.source.calls, rig.chat.edits) == (calls, edits)
    assert [(a["result"], a["retry"]) for a in audits(caplog)] == [("duplicate", retry)]


def test_two_clicks_at_once_on_two_instances_advance_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path, waiting_run())
    other = rig.make(SqliteStateStore(tmp_path / "state.db", 30 * 86400))
    results = at_once([lambda: rig.actor.take(interaction()), lambda: other.take(interaction())])
    assert sorted(results) == ["claimed", "duplicate"]
    assert rig.source.calls.count("ExecPipelineRunStage r1 DEPLOY") == 1


def test_a_deferred_decision_carried_out_twice_acts_once(tmp_path: Path) -> None:
    """FC retries an async invocation that failed: the second finds the decision already called."""
    rig = Rig(tmp_path, waiting_run(), deferring=True)
    assert rig.actor.take(interaction()) == "claimed"
    assert rig.source.calls == []  # nothing before Slack has its answer
    [key] = rig.deferred
    assert rig.actor.carry_out(key) == "done"
    assert rig.actor.carry_out(key) == "duplicate"
    assert rig.source.calls.count("ExecPipelineRunStage r1 DEPLOY") == 1


@pytest.mark.parametrize(
    ("user", "why"),
    [
        ("U0STRANGER", "not in this notifier's people list"),
        ("U0CREATOR", "not an approver of this run"),  # the run's creator is not listed
    ],
)
def test_anyone_not_listed_gets_an_ephemeral_and_nothing_happens(
    tmp_path: Path, user: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path, waiting_run())
    with caplog.at_level(logging.INFO, logger="dwnotify.audit"):
        assert rig.actor.take(interaction(user=user)) == "not allowed"
    assert rig.source.calls == [] and rig.chat.edits == []
    [(url, text)] = rig.chat.answers
    assert url == RESPONSE_URL and why in text
    assert rig.store.load_action("10000/r1/DEPLOY/advance") is None  # an approver may still act
    assert [a["result"] for a in audits(caplog)] == ["not allowed"]


def test_an_action_not_allowed_is_refused_even_to_an_approver(tmp_path: Path) -> None:
    rig = Rig(tmp_path, waiting_run(), allow=["advance"])
    assert rig.actor.take(interaction(action="abolish")) == "not allowed"
    assert rig.source.calls == [] and "actions.allow" in rig.chat.answers[0][1]


def test_an_ephemeral_goes_only_to_a_listed_host(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(tmp_path, waiting_run())
    rig.actor.take(interaction(user="U0STRANGER", url="https://evil.example.com/actions/1"))
    assert rig.chat.answers == []
    assert "not in actions.response_hosts" in caplog.text


def test_a_stage_that_has_moved_is_refused_with_the_reason(tmp_path: Path) -> None:
    rig = Rig(tmp_path, waiting_run(stage_status=RUNNING))
    rig.actor.take(interaction())
    assert rig.source.calls == ["GetPipelineRun r1"]  # read, and not called
    [(_, text)] = rig.chat.answers
    assert text == "stage DEPLOY is no longer waiting to be advanced (it is running)."
    assert rig.chat.edits == []
    record = rig.store.load_action("10000/r1/DEPLOY/advance")
    assert record is not None and record.result == "refused"


def test_abolish_abolishes_the_run_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path, waiting_run())
    rig.actor.take(interaction(action="abolish"))
    rig.actor.take(interaction(action="abolish"))
    assert rig.source.calls == ["GetPipelineRun r1", "AbolishPipelineRun r1"]
    assert "abolish requested by <@U0ALICE01>" in json.dumps(rig.chat.edits[0][3])


def test_a_refusal_by_dataworks_may_be_clicked_again(tmp_path: Path) -> None:
    """DataWorks said no (here, throttled past the retries): nothing happened, so a new click tries."""
    rig = Rig(tmp_path, waiting_run())
    rig.source.fail = DataWorksError("throttled", code="Throttling.User", http_status=400, request_id="REQ-T")
    rig.actor.take(interaction())
    assert "Throttling.User" in rig.chat.answers[0][1] and rig.chat.edits == []
    failed = rig.store.load_action("10000/r1/DEPLOY/advance")
    assert failed is not None and (failed.result, failed.request_id) == ("failed", "REQ-T")
    rig.source.fail = None
    assert rig.actor.take(interaction()) == "claimed"
    assert rig.source.calls.count("ExecPipelineRunStage r1 DEPLOY") == 2
    done = rig.store.load_action("10000/r1/DEPLOY/advance")
    assert done is not None and done.result == "done"


def test_a_lost_answer_is_never_tried_again(tmp_path: Path) -> None:
    """No answer: the stage may have moved, so the decision stands as unknown and the message says
    it was requested; the next poll shows what came of it."""
    rig = Rig(tmp_path, waiting_run())
    rig.source.fail = DataWorksError("no answer", code="SDK.NoAnswer", retryable=True)
    rig.actor.take(interaction())
    record = rig.store.load_action("10000/r1/DEPLOY/advance")
    assert record is not None and record.result == "unknown"
    assert len(rig.chat.edits) == 1
    assert rig.actor.take(interaction()) == "duplicate"
    assert rig.source.calls.count("ExecPipelineRunStage r1 DEPLOY") == 1


def test_a_button_that_is_not_dwnotifys_is_ignored(tmp_path: Path) -> None:
    rig = Rig(tmp_path, waiting_run())
    other = replace(interaction(), action_id="approve_expense")
    assert rig.actor.take(other) == "ignored"
    assert rig.source.calls == [] and rig.chat.answers == []


def test_the_response_url_and_the_blocks_never_reach_the_audit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path, waiting_run())
    with caplog.at_level(logging.DEBUG, logger="dwnotify"):
        rig.actor.take(interaction())
        rig.actor.take(interaction(user="U0STRANGER"))
    assert RESPONSE_URL not in caplog.text and "*Deploying*" not in caplog.text


def test_a_read_that_fails_writes_nothing_so_the_click_may_be_tried_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path, waiting_run())

    def unreadable(project: ProjectSettings, run_id: str, *, deadline: float | None = None) -> Run | None:
        raise DataWorksError("no answer", code="SDK.NoAnswer", retryable=True)

    rig.source.get_run = unreadable  # type: ignore[method-assign]
    rig.actor.take(interaction())
    record = rig.store.load_action("10000/r1/DEPLOY/advance")
    assert record is not None and record.result == "failed"
    assert "could not be read" in rig.chat.answers[0][1]
    assert not any(call.startswith("ExecPipelineRunStage") for call in rig.source.calls)


def test_what_a_click_costs_before_and_after_slacks_answer(tmp_path: Path) -> None:
    """Before the 200: one read and one conditional write, no DataWorks call. After it: one read and
    two writes of the record, two DataWorks calls (the run, the action) and one edit."""
    rig = Rig(tmp_path, waiting_run(), deferring=True)
    trips, writes = rig.store.round_trips, rig.store.write_round_trips
    rig.actor.take(interaction())
    assert (rig.store.round_trips - trips, rig.store.write_round_trips - writes) == (2, 1)
    assert rig.source.calls == [] and rig.chat.edits == []
    trips, writes = rig.store.round_trips, rig.store.write_round_trips
    rig.actor.carry_out(rig.deferred[0])
    assert (rig.store.round_trips - trips, rig.store.write_round_trips - writes) == (3, 2)
    assert len(rig.source.calls) == 2 and len(rig.chat.edits) == 1
