"""diff(previous, current): table-driven cases and properties over any sequence of snapshots."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dwnotify.diff import diff
from dwnotify.model import FINAL_EVENT_NAMES, FINAL_STATUSES, GONE, Run, RunState, Stage, normalize_status


def stage(code: str, step: int, status: str, message: str = "") -> Stage:
    return Stage(code, step, "Deploy", f"stage {code}", "", status, message)


def run(status: str, *stages: Stage, run_id: str = "r1") -> Run:
    return Run(id=run_id, project_id=10000, status=status, stages=tuple(stages))


def types(events: list) -> list[str]:  # type: ignore[type-arg]
    return [event.type for event in events]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (None, run("running", stage("A", 1, "running")), ["run.started", "stage.started"]),
        (None, run("running", stage("A", 1, "success")), ["run.started", "stage.succeeded"]),
        (
            None,
            run("success", stage("A", 1, "success"), stage("B", 2, "success")),
            ["stage.succeeded", "stage.succeeded", "run.succeeded"],
        ),
        (None, run("init", stage("A", 1, "init")), []),
        (run("running", stage("A", 1, "running")), run("running", stage("A", 1, "running")), []),
        (
            run("running", stage("A", 1, "running"), stage("B", 2, "init")),
            run("fail", stage("A", 1, "success"), stage("B", 2, "fail")),
            ["stage.succeeded", "stage.failed", "run.failed"],
        ),
        (run("running"), run("terminated"), ["run.terminated"]),
        (run("running"), run("canceled"), ["run.canceled"]),
        (
            run("running", stage("A", 1, "running")),
            run("running", stage("A", 1, "terminated")),
            ["stage.terminated"],
        ),
        (
            run("running", stage("A", 1, "running")),
            run("running", stage("A", 1, "canceled")),
            ["stage.canceled"],
        ),
        (run("running"), run("Paused"), ["run.changed"]),
        (
            run("running", stage("A", 1, "running")),
            run("running", stage("A", 1, "Waiting")),
            ["stage.changed"],
        ),
        (run("running", stage("A", 1, "running")), run("running", stage("A", 1, "init")), ["stage.changed"]),
    ],
)
def test_event_types(before: Run | None, after: Run, expected: list[str]) -> None:
    previous = diff(None, before)[1] if before is not None else None
    events, _ = diff(previous, after)
    assert types(events) == expected


def test_stage_events_follow_step_order_not_list_order() -> None:
    current = run(
        "success", stage("LATE", 3, "success"), stage("EARLY", 1, "success"), stage("MID", 2, "fail")
    )
    events, _ = diff(None, current)
    assert [event.stage.code for event in events if event.stage] == ["EARLY", "MID", "LATE"]
    assert events[-1].type == "run.succeeded"


def test_flapping_status_is_announced_once() -> None:
    first, state = diff(None, run("running", stage("A", 1, "success")))
    assert types(first) == ["run.started", "stage.succeeded"]
    # A stale read shows the stage running again, then succeeded again.
    _, state = diff(state, run("running", stage("A", 1, "running")))
    again, state = diff(state, run("running", stage("A", 1, "success")))
    assert again == []


def test_unknown_status_is_carried_through() -> None:
    events, state = diff(
        None, run(normalize_status("Suspended"), stage("A", 1, normalize_status("WAIT_APPROVAL")))
    )
    assert [(e.type, e.status) for e in events] == [
        ("stage.changed", "WAIT_APPROVAL"),
        ("run.changed", "Suspended"),
    ]
    assert state.stage_statuses == {"A": "WAIT_APPROVAL"}


def test_previous_status_is_reported() -> None:
    _, state = diff(None, run("running", stage("A", 1, "running")))
    events, _ = diff(state, run("fail", stage("A", 1, "fail", "boom")))
    assert [(e.type, e.previous) for e in events] == [("stage.failed", "running"), ("run.failed", "running")]
    assert events[0].stage is not None and events[0].stage.message == "boom"


@pytest.mark.parametrize(
    ("before", "listed_again", "expected"),
    [
        (run("init", stage("A", 1, "init")), run("init", stage("A", 1, "init")), []),  # not run.changed
        (run("running", stage("A", 1, "running")), run("running", stage("A", 1, "running")), []),
        (
            run("running", stage("A", 1, "running")),
            run("success", stage("A", 1, "success")),
            ["stage.succeeded", "run.succeeded"],
        ),
    ],
)
def test_a_run_stored_as_gone_and_listed_again_announces_only_what_moved(
    before: Run, listed_again: Run, expected: list[str]
) -> None:
    _, state = diff(None, before)
    events, _ = diff(replace(state, status=GONE), listed_again)
    assert types(events) == expected


def test_state_keeps_the_stored_version() -> None:
    _, state = diff(None, run("running"))
    stored = replace(state, version=7)
    _, new_state = diff(stored, run("success"))
    assert new_state.version == 7


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Init", "init"),
        ("INIT", "init"),
        ("Running", "running"),
        ("RUNNING", "running"),
        ("Success", "success"),
        ("SUCCESS", "success"),
        ("Fail", "fail"),
        ("FAIL", "fail"),
        ("Terminated", "terminated"),
        ("Termination", "terminated"),
        ("TERMINATION", "terminated"),
        ("Canceled", "canceled"),
        ("Cancel", "canceled"),
        ("CANCEL", "canceled"),
        ("Cancelled", "canceled"),
        (" running ", "running"),
        (None, "init"),
        ("", "init"),
        ("SomethingNew", "SomethingNew"),
    ],
)
def test_every_status_spelling(raw: str | None, normal: str) -> None:
    assert normalize_status(raw) == normal


EXAMPLES = 5000 if os.environ.get("DWNOTIFY_SOAK") else 300  # `make soak` digs deeper
STATUSES = ["init", "running", "success", "fail", "terminated", "canceled", "Paused"]
snapshot = st.tuples(
    st.sampled_from(STATUSES),
    st.lists(st.sampled_from(STATUSES), min_size=3, max_size=3),
)


def _run_of(snap: tuple[str, list[str]]) -> Run:
    status, stage_statuses = snap
    return run(status, *(stage(f"S{i}", i, s) for i, s in enumerate(stage_statuses, start=1)))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(snapshot, min_size=1, max_size=12))
def test_no_event_twice_and_every_final_status_announced(snapshots: list[tuple[str, list[str]]]) -> None:
    state: RunState | None = None
    seen: list[tuple[str, str | None, str]] = []
    for snap in snapshots:
        current = _run_of(snap)
        events, state = diff(state, current)
        for event in events:
            subject = event.stage.key if event.stage else None
            identity = (event.type, subject, event.status)
            assert identity not in seen, f"{identity} announced twice"
            seen.append(identity)
        # Every final status the run or a stage is in has had its final event by now.
        if current.status in FINAL_STATUSES:
            assert (f"run.{FINAL_EVENT_NAMES[current.status]}", None, current.status) in seen
        for item in current.stages:
            if item.status in FINAL_STATUSES:
                assert (f"stage.{FINAL_EVENT_NAMES[item.status]}", item.key, item.status) in seen


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(snapshot, min_size=1, max_size=8))
def test_repeating_a_snapshot_announces_nothing_new(snapshots: list[tuple[str, list[str]]]) -> None:
    state: RunState | None = None
    for snap in snapshots:
        _, state = diff(state, _run_of(snap))
        again, state = diff(state, _run_of(snap))
        assert again == []


# What each event and the stored state carry, field by field (found by `make mutate`: the tests above
# only compared event types, so an event without its run key or a state without its run id passed).
from datetime import datetime, timezone  # noqa: E402

from dwnotify.model import Event  # noqa: E402


def test_events_carry_the_run_key_the_status_reached_and_the_one_left() -> None:
    started = stage("A", 1, "running")
    events, state = diff(None, run("running", started))
    assert events == [
        Event("run.started", "10000/r1", "running", "init"),
        Event("stage.started", "10000/r1", "running", "init", started),
    ]
    failed = stage("A", 1, "fail", "boom")
    events, _ = diff(state, run("fail", failed))
    assert events == [
        Event("stage.failed", "10000/r1", "fail", "running", failed),
        Event("run.failed", "10000/r1", "fail", "running"),
    ]


def test_the_state_of_a_run_seen_for_the_first_time() -> None:
    created = datetime(2024, 5, 18, 8, 30, 15, 123000, tzinfo=timezone.utc)
    current = Run(
        id="r9",
        project_id=20000,
        status="running",
        create_time=created,
        stages=(stage("A", 1, "success"), stage("B", 2, "init")),
    )
    _, state = diff(None, current)
    assert state == RunState(
        project_id=20000,
        run_id="r9",
        status="running",
        stage_statuses={"A": "success", "B": "init"},
        announced=frozenset({"run:running", "stage:A:success"}),
        create_time_ms=1716021015123,  # epoch milliseconds
        version=0,  # never stored: the store's compare-and-set expects 0 for a new run
    )
    assert state.key == "20000/r9"


def test_a_run_without_a_create_time_is_stored_without_one() -> None:
    _, state = diff(None, run("running"))
    assert state.create_time_ms is None


def test_a_status_spelled_like_the_gone_marker_is_an_unknown_status_not_a_crash() -> None:
    events, _ = diff(None, run(GONE, stage("A", 1, GONE)))
    assert types(events) == ["stage.changed", "run.changed"]


# -- stage times: when dwnotify first saw each stage in its status (the API gives none) --------------
def test_stage_times_are_set_when_a_status_changes_and_carried_otherwise() -> None:
    _, first = diff(None, run("running", stage("A", 1, "running"), stage("B", 2, "init")), now=100.0)
    assert first.stage_since == {"A": 100.0, "B": 100.0} and first.stage_started == {"A": 100.0}
    _, same = diff(first, run("running", stage("A", 1, "running"), stage("B", 2, "init")), now=160.0)
    assert same.stage_since == first.stage_since and same.stage_started == first.stage_started
    _, moved = diff(same, run("running", stage("A", 1, "success"), stage("B", 2, "running")), now=220.0)
    assert moved.stage_since == {"A": 220.0, "B": 220.0}
    assert moved.stage_started == {"A": 100.0, "B": 220.0}  # A started when first seen running


def test_without_a_time_the_stored_times_are_only_carried() -> None:
    _, first = diff(None, run("running", stage("A", 1, "running")), now=100.0)
    _, later = diff(first, run("running", stage("A", 1, "success")))
    assert later.stage_since == {"A": 100.0} and later.stage_started == {"A": 100.0}


def test_a_state_stored_before_stage_times_gains_them_only_as_stages_move() -> None:
    legacy = RunState(10000, "r1", "running", {"A": "running", "B": "init"}, frozenset({"run:running"}))
    _, state = diff(legacy, run("running", stage("A", 1, "running"), stage("B", 2, "running")), now=50.0)
    assert state.stage_since == {"B": 50.0} and state.stage_started == {"B": 50.0}
