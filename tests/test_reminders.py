"""Reminders (`stage.waiting`, `stage.stuck`): the pure rules, then whole ticks on a controllable clock,
on SQLite and on Tablestore: once per threshold, again every `repeat`, cleared when the stage moves,
counted from what the state store remembers across restarts, and found without extra API calls."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from dwnotify.diff import diff
from dwnotify.model import Run, Stage
from dwnotify.reminders import STUCK, WAITING, remind
from tests.conftest import World
from tests.helpers import STAGES, use_slack_app

MIN = 60.0
HOUR = 3600.0


def stage(code: str, step: int, status: str) -> Stage:
    return Stage(code, step, "T", f"stage {code}", "", status, "")


def run(status: str, *statuses: str) -> Run:
    codes = ("BUILD", "CHECK", "DEPLOY")
    return Run(
        "r1",
        10000,
        status,
        stages=tuple(stage(c, i, s) for i, (c, s) in enumerate(zip(codes, statuses, strict=True), 1)),
    )


def seen(*snapshots: tuple[float, Run]) -> Any:
    """The state after dwnotify saw these snapshots at these times."""
    state = None
    for at, snapshot in snapshots:
        _, state = diff(state, snapshot, at)
    return state


WAIT, STICK, AGAIN = timedelta(minutes=30), timedelta(hours=1), timedelta(hours=2)


# -- the pure rules ----------------------------------------------------------------------------------
def test_a_gate_waits_from_when_its_predecessor_succeeded() -> None:
    gate = run("running", "success", "init", "init")
    state = seen((0.0, run("running", "running", "init", "init")), (10 * MIN, gate))
    assert remind(state, gate, WAIT, None, None, 39 * MIN).events == ()  # 29 minutes since BUILD succeeded
    due = remind(state, gate, WAIT, None, None, 40 * MIN)
    [event] = due.events
    assert (event.type, event.stage and event.stage.code, event.status, event.previous) == (
        WAITING,
        "CHECK",
        "init",
        "init",
    )
    assert event.waited == timedelta(minutes=30) and due.next_at is None
    assert remind(due.state, gate, WAIT, None, None, 5 * HOUR).events == ()  # once, without repeat


def test_the_next_reminder_time_is_what_the_cursor_keeps() -> None:
    gate = run("running", "success", "init", "init")
    state = seen((0.0, gate))
    assert remind(state, gate, WAIT, None, None, 1 * MIN).next_at == 30 * MIN
    assert remind(state, gate, WAIT, STICK, AGAIN, 1 * MIN).next_at == 30 * MIN


def test_the_first_stage_waits_from_when_it_was_first_seen() -> None:
    waiting = run("running", "init", "init", "init")
    state = seen((100.0, waiting))
    [event] = remind(state, waiting, WAIT, None, None, 100.0 + 30 * MIN).events
    assert event.stage is not None and event.stage.code == "BUILD"


@pytest.mark.parametrize(
    "snapshot",
    [
        run("running", "fail", "init", "init"),  # an earlier stage did not succeed: no gate
        run("init", "success", "init", "init"),  # the run is not running
        run("success", "success", "success", "success"),
    ],
)
def test_no_gate_without_a_running_run_whose_earlier_stages_all_succeeded(snapshot: Run) -> None:
    state = seen((0.0, snapshot))
    assert remind(state, snapshot, WAIT, STICK, None, 10 * HOUR).events == ()


def test_a_stuck_stage_repeats_on_schedule() -> None:
    stuck = run("running", "running", "init", "init")
    state = seen((0.0, stuck))
    fired = []
    for minute in range(0, 6 * 60 + 1, 5):
        due = remind(state, stuck, None, STICK, AGAIN, minute * MIN)
        state = due.state
        fired += [(minute, event.type) for event in due.events]
    assert fired == [(60, STUCK), (180, STUCK), (300, STUCK)]  # at 1h, then every 2h


def test_a_stage_that_moves_clears_its_reminder_and_the_next_gate_counts_afresh() -> None:
    stuck = run("running", "running", "init", "init")
    state = seen((0.0, stuck))
    due = remind(state, stuck, WAIT, STICK, None, 2 * HOUR)
    assert [e.type for e in due.events] == [STUCK]
    moved = run("running", "success", "init", "init")
    _, state = diff(due.state, moved, 2 * HOUR + MIN)
    after = remind(state, moved, WAIT, STICK, None, 2 * HOUR + 2 * MIN)
    assert after.events == () and not any("stage.stuck" in key for key in after.state.announced)
    [gate] = remind(after.state, moved, WAIT, STICK, None, 2 * HOUR + 31 * MIN).events
    assert gate.type == WAITING and gate.stage is not None and gate.stage.code == "CHECK"


def test_a_stage_stuck_again_later_is_a_new_sighting() -> None:
    first = run("running", "running", "init", "init")
    state = seen((0.0, first))
    state = remind(state, first, None, STICK, None, HOUR).state
    _, state = diff(state, run("running", "init", "init", "init"), HOUR + MIN)  # back to pending
    again = run("running", "running", "init", "init")
    _, state = diff(state, again, HOUR + 2 * MIN)
    [event] = remind(state, again, None, STICK, None, 2 * HOUR + 2 * MIN).events
    assert event.type == STUCK


def test_reminder_keys_never_collide_with_status_keys() -> None:
    stuck = run("running", "running", "init", "init")
    due = remind(seen((0.0, stuck)), stuck, None, STICK, None, HOUR)
    [event] = due.events
    assert event.key != "stage:BUILD:running" and event.key in due.state.announced


# -- whole ticks ----------------------------------------------------------------------------------------
@pytest.fixture
def reminding(world: World) -> World:
    world.config_overrides["reminders"] = {"waiting_after": "30m", "stuck_after": "1h", "repeat": "2h"}
    world.config_overrides["rules"] = [{"name": "everything", "events": ["*"], "channels": ["team"]}]
    return world


def slack_titles(world: World) -> list[str]:
    return [message["text"] for message in world.slack_messages()]


def test_a_gate_waiting_is_announced_once_without_extra_api_calls(reminding: World) -> None:
    world = reminding
    run_id = world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}
    )
    world.tick()
    world.dataworks.set_run_status(run_id, stages={"BUILD": "Success"})  # CHECK is next, pending
    world.tick()
    sent = len(world.slack_messages())
    quiet = world.tick(advance=20 * MIN)
    assert quiet.events == 0 and len(world.slack_messages()) == sent
    due = world.tick(advance=11 * MIN)  # 32 minutes since BUILD was seen succeeded
    assert due.events == 1 and due.api_calls == quiet.api_calls == 2  # one list per workspace, as ever
    assert "等待人工推进 · Waiting for a person" in slack_titles(world)[-1]
    assert "发布检查" in str(world.slack_messages()[-1]["blocks"])
    for _ in range(3):
        assert world.tick(advance=10 * MIN).events == 0  # once: the next is at 30m + 2h


def test_a_stuck_stage_repeats_every_repeat_and_survives_a_restart(reminding: World) -> None:
    world = reminding
    world.dataworks.add_run(10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"})
    world.tick()
    fired: list[int] = []
    for minute in range(10, 5 * 60 + 1, 10):
        if minute == 150:  # a new FC instance: the times come from the state store
            assert world.app is not None
            world.app.close()
            world.app = None
        summary = world.tick(advance=10 * MIN)
        fired += [minute] * summary.events
    assert fired == [60, 180, 300]
    assert all("阶段运行过久" in title for title in slack_titles(world)[-3:])


def test_a_stage_that_moves_is_not_reminded_again(reminding: World) -> None:
    world = reminding
    run_id = world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}
    )
    world.tick()
    assert world.tick(advance=61 * MIN).events == 1  # stuck
    world.dataworks.set_run_status(run_id, stages={"BUILD": "Success", "CHECK": "Running"})
    assert world.tick().events == 2  # the moves themselves
    counts = [world.tick(advance=10 * MIN).events for _ in range(5)]
    assert counts == [0, 0, 0, 0, 0]  # CHECK runs 50 minutes: under its own hour


def test_a_reminder_edits_the_living_message_and_replies_in_its_thread(reminding: World) -> None:
    world = reminding
    use_slack_app(world)
    world.dataworks.add_run(10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"})
    world.tick()
    world.tick(advance=61 * MIN)
    [message] = world.slack.posted("C0123456")
    assert len(message["edits"]) == 1
    [reply] = world.slack.replies("C0123456", message["ts"])
    assert "阶段运行过久" in reply["text"] and "发布包构建" in reply["text"]
