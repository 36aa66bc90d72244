"""Poison data and hostile servers through the wire: one bad run or page never silences the others.

The DataWorks emulator serves the defects (fields overridden in one run, raw answers, a lying
TotalCount, an ignored PageSize); the real SDK, SQLite and the chat emulators do the rest.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.conftest import World
from tests.helpers import slack_text

STAGES = [{"code": "BUILD", "step": 1, "type": "Build", "name": "Build package"}]
HUGE = 10**20


def failed_run(world: World, project: int) -> str:
    return world.dataworks.add_run(
        project, status="Fail", message="boom", stages=STAGES, stage_statuses={"BUILD": "Fail"}
    )


@pytest.mark.parametrize(
    "poison",
    [
        {"Stages": 7},
        {"Stages": [7, "x", None]},
        {"Stages": [{"Code": {"a": 1}, "Step": "one", "Status": ["Fail"]}]},
        {"CreateTime": HUGE},
        {"ModifyTime": -HUGE},
        {"CreateTime": "2023-13-45T99:00:00Z"},
        {"ProjectId": HUGE},
        {"ProjectId": "ten thousand"},
        {"Status": {"nested": True}},
        {"Id": ["not", "a", "string"]},
        {"Message": "x" * 200_000},
        {"Stages": [{"Code": "BUILD", "Step": 1, "Status": "Fail", "Detail": "[" * 50_000 + "]" * 50_000}]},
    ],
)
def test_a_poison_run_is_skipped_and_every_other_run_is_announced(
    world: World, poison: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    bad = failed_run(world, 10000)
    good_same_page = failed_run(world, 10000)
    good_elsewhere = failed_run(world, 10001)
    world.dataworks.run_overrides[bad] = poison
    with caplog.at_level(logging.WARNING):
        summary = world.tick()
    texts = "\n".join(message["markdown"]["text"] for message in world.ding())
    assert good_same_page in texts and good_elsewhere in texts
    # Skipped: a WARNING names it (if it has a readable Id) and it is tried next tick. A finished run
    # without a usable CreateTime is history instead (not news, nothing to warn about).
    if bad not in texts and "CreateTime" not in poison:
        named = "(without an Id)" if "Id" in poison else bad
        warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
        assert any(named in message for message in warnings), warnings
    assert summary.messages_failed == 0
    world.dataworks.run_overrides.clear()
    world.tick()
    texts = [message["markdown"]["text"] for message in world.ding()]
    for run_id in (bad, good_same_page, good_elsewhere):  # never lost, never twice
        assert sum(run_id in text for text in texts) == 1, run_id


@pytest.mark.parametrize(
    "answer",
    [
        {"RequestId": "x", "PagingInfo": [1, 2]},
        {"RequestId": "x", "PagingInfo": "page"},
        {"RequestId": "x", "PagingInfo": {"PipelineRuns": 5, "TotalCount": 1}},
        {"RequestId": "x", "PagingInfo": {"PipelineRuns": {"Id": "r"}, "TotalCount": 1}},
        {"RequestId": "x", "Code": "InternalError", "Message": "an error in a 200 answer"},
        "[" * 50_000 + "]" * 50_000,
        "not json at all",
        [],
    ],
)
def test_a_malformed_page_fails_its_workspace_only_and_the_outbox_still_goes_out(
    world: World, answer: Any
) -> None:
    waiting = failed_run(world, 10001)
    world.dingtalk.inject(status=500, times=1)  # the first send fails: the message waits in the outbox
    world.tick()
    assert world.ding() == []
    failed_run(world, 10001)
    world.dataworks.inject_answer("ListPipelineRuns", answer, times=20)  # every workspace, this tick
    summary = world.tick()
    assert any("workspace" in error for error in summary.errors), summary.errors
    texts = "\n".join(message["markdown"]["text"] for message in world.ding())
    assert waiting in texts  # delivered although discovery found nothing it could read


def test_a_malformed_page_in_one_workspace_leaves_the_others_alone(world: World) -> None:
    runs = {project: failed_run(world, project) for project in (10000, 10001)}
    answers: list[Any] = [{"RequestId": "x", "PagingInfo": "page"}]
    world.dataworks.inject_answer("ListPipelineRuns", answers[0], times=1)  # whichever listing is first
    summary = world.tick()
    assert len(summary.errors) == 1 and "without a PagingInfo" in summary.errors[0], summary.errors
    broken = int(summary.errors[0].split(":")[0].removeprefix("workspace "))
    good = runs[20001 - broken]
    texts = "\n".join(message["markdown"]["text"] for message in world.ding())
    assert good in texts and runs[broken] not in texts


def test_a_lying_total_count_costs_two_calls(world: World) -> None:
    world.dataworks.claim_total = 1_000_000
    failed_run(world, 10000)
    summary = world.tick()
    assert summary.events == 2
    assert world.dataworks.call_count("ListPipelineRuns") <= 2 + 2  # two workspaces, two pages at most


def test_a_server_that_ignores_page_size_loses_no_run(world: World) -> None:
    world.tick()  # both workspaces seen once, empty
    world.dataworks.serve_page_size = 10
    ids = {failed_run(world, 10000) for _ in range(35)}
    summary = world.tick()
    assert summary.events == 35 * 2
    texts = "\n".join(message["markdown"]["text"] for message in world.ding())
    assert all(run_id in texts for run_id in ids)


@pytest.mark.parametrize("create_time", [None, "2023-05-01T08:00:00Z", "yesterday"])
def test_finished_history_without_a_usable_create_time_is_not_news(world: World, create_time: object) -> None:
    for _ in range(40):
        run_id = world.dataworks.add_run(
            10000, status="Success", stages=STAGES, stage_statuses={"BUILD": "Success"}
        )
        world.dataworks.run_overrides[run_id] = {"CreateTime": create_time, "ModifyTime": create_time}
    moving = world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}
    )
    world.dataworks.run_overrides[moving] = {"CreateTime": None}
    summary = world.tick()
    assert summary.events == 2  # only the moving run: run.started, stage.started
    assert any(moving in str(message) for message in world.slack_messages())


def test_an_empty_state_store_is_said_out_loud_and_announces_only_what_still_moves(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # The report: the SQLite file deleted, a run finished 20 minutes ago was announced again.
    world.primed = False
    finished = world.dataworks.add_run(
        10000, status="Success", stages=STAGES, stage_statuses={"BUILD": "Success"},
        created=world.dataworks.scenario_offset() - 25 * 60,
    )  # fmt: skip
    moving = world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}
    )
    with caplog.at_level(logging.WARNING):
        world.tick()
        first = [
            record.getMessage() for record in caplog.records if "knows no workspace" in record.getMessage()
        ]
        caplog.clear()
        world.tick()
        second = [
            record.getMessage() for record in caplog.records if "knows no workspace" in record.getMessage()
        ]
    assert len(first) == 1 and "its state was lost" in first[0] and "history" in first[0]
    assert second == []
    texts = "\n".join(slack_text(message) for message in world.slack_messages())
    assert moving in texts and finished not in texts  # on neither tick: it was recorded, not dropped
    assert len(world.slack_messages()) == 1


def test_two_stages_sharing_a_code_both_give_their_events(world: World) -> None:
    def twins(first: str, second: str) -> list[dict[str, Any]]:
        return [
            {"Code": "CHECK", "Step": 1, "Type": "Check", "Name": "Check one", "Status": first},
            {"Code": "CHECK", "Step": 2, "Type": "Check", "Name": "Check two", "Status": second},
        ]

    run_id = world.dataworks.add_run(10000, status="Running", stages=STAGES, stage_statuses={})
    world.dataworks.run_overrides[run_id] = {"Stages": twins("Running", "Init")}
    world.tick()
    world.dataworks.set_run_status(run_id, status="Success")
    world.dataworks.run_overrides[run_id] = {"Stages": twins("Success", "Success")}
    summary = world.tick()
    assert summary.events == 3  # stage.succeeded for each of the two, then run.succeeded
    text = slack_text(world.slack_messages()[-1])
    assert "Check one" in text and "Check two" in text
