"""The domain objects: statuses, finality, event names and the identities runs, stages and events go by."""

from __future__ import annotations

import pytest

from dwnotify.model import (
    CANCELED,
    EVENT_TYPES,
    FAIL,
    FINAL_EVENT_NAMES,
    FINAL_STATUSES,
    GONE,
    INIT,
    RUNNING,
    SUCCESS,
    TERMINATED,
    Event,
    Run,
    RunState,
    Stage,
    is_final,
    normalize_status,
    run_key,
)


@pytest.mark.parametrize(
    ("status", "final"),
    [
        (SUCCESS, True),
        (FAIL, True),
        (TERMINATED, True),
        (CANCELED, True),
        (GONE, True),  # a run DataWorks no longer knows is not polled again
        (INIT, False),
        (RUNNING, False),
        ("Paused", False),  # an unknown status may still move
        ("", False),
        ("Success", False),  # only normal forms are final: the parser normalizes first
    ],
)
def test_is_final(status: str, final: bool) -> None:
    assert is_final(status) is final
    assert Run(id="r1", project_id=1, status=status).final is final
    assert RunState(1, "r1", status, {}, frozenset()).final is final


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (0, "0"),  # not a string: kept as its text, never dropped
        (" \t ", INIT),
        ("\tCancelled\n", CANCELED),
        ("TERMINATED", TERMINATED),
        ("wait_approval", "wait_approval"),
        (" Odd Case ", "Odd Case"),
    ],
)
def test_normalize_status_beyond_the_spellings(raw: object, normal: str) -> None:
    assert normalize_status(raw) == normal


def test_every_final_status_has_an_event_name_for_runs_and_stages() -> None:
    assert set(FINAL_EVENT_NAMES) == set(FINAL_STATUSES)
    for subject in ("run", "stage"):
        for name in FINAL_EVENT_NAMES.values():
            assert f"{subject}.{name}" in EVENT_TYPES
        assert f"{subject}.started" in EVENT_TYPES
        assert f"{subject}.changed" in EVENT_TYPES
    reminders = ("stage.waiting", "stage.stuck")
    assert all(kind in EVENT_TYPES for kind in reminders)
    assert len(set(EVENT_TYPES)) == len(EVENT_TYPES) == 2 * (len(FINAL_EVENT_NAMES) + 2) + len(reminders)


def _stage(code: str, step: int, ident: str = "") -> Stage:
    return Stage(code, step, "Deploy", "deploy", "", RUNNING, "", ident=ident)


@pytest.mark.parametrize(
    ("stage", "key"),
    [
        (_stage("DEPLOY", 3), "DEPLOY"),
        (_stage("", 3), "step-3"),  # no Code: the Step, unique within the run
        (_stage("DEPLOY", 3, ident="DEPLOY#3"), "DEPLOY#3"),  # a repeated Code gets its own identity
        (_stage("", 0), "step-0"),
    ],
)
def test_stage_key(stage: Stage, key: str) -> None:
    assert stage.key == key


def test_run_keys_name_the_workspace_and_the_run() -> None:
    assert run_key(10000, "r1") == "10000/r1"
    assert Run(id="r1", project_id=10000, status=RUNNING).key == "10000/r1"
    assert RunState(10000, "r1", RUNNING, {}, frozenset()).key == "10000/r1"
    assert run_key(10001, "r1") != run_key(10000, "r1")  # the same run id in another workspace


@pytest.mark.parametrize(
    ("event", "key"),
    [
        (Event("run.started", "1/r", RUNNING, INIT), "run:running"),
        (Event("run.failed", "1/r", FAIL, RUNNING), "run:fail"),
        (Event("stage.failed", "1/r", FAIL, RUNNING, _stage("B", 2)), "stage:B:fail"),
        (Event("stage.changed", "1/r", "Waiting", RUNNING, _stage("", 4)), "stage:step-4:Waiting"),
    ],
)
def test_event_key_is_subject_and_new_status(event: Event, key: str) -> None:
    assert event.key == key


def test_event_key_ignores_where_the_status_came_from() -> None:
    # What was announced is the status reached, so a flap back to it is not announced again.
    assert Event("run.failed", "1/r", FAIL, RUNNING).key == Event("run.failed", "1/r", FAIL, INIT).key


def test_a_stage_detail_is_not_part_of_its_identity() -> None:
    first = Stage("A", 1, "Deploy", "deploy", "", RUNNING, "", detail={"x": 1})
    second = Stage("A", 1, "Deploy", "deploy", "", RUNNING, "", detail={"x": 2})
    assert first == second
    assert hash(first) == hash(second)
