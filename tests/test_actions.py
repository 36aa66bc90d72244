"""The pure core of acting from chat (`dwnotify.actions`): what a run offers, what a click names, who may
act, and when the run as read now refuses a click."""

from __future__ import annotations

import pytest

from dwnotify.actions import (
    ABOLISH,
    ADVANCE,
    Click,
    approvers,
    click_of,
    current_stage,
    gate,
    not_allowed,
    offers,
    refusal,
)
from dwnotify.model import CANCELED, FAIL, INIT, RUNNING, SUCCESS, Run, Stage
from dwnotify.settings import ActionsSettings, PersonSettings, RuleSettings

ON = ActionsSettings(enabled=True, approvers=("alice",))


def stages(*statuses: str) -> tuple[Stage, ...]:
    names = ("Build", "Check", "Deploy to prod", "Verify")
    return tuple(
        Stage(f"S{i}", i, "Deploy", names[i - 1], "", status, "") for i, status in enumerate(statuses, 1)
    )


def run(status: str, *stage_statuses: str) -> Run:
    return Run(id="r1", project_id=10000, status=status, creator="1379", stages=stages(*stage_statuses))


def click(action: str = ADVANCE, stage: str = "S3") -> Click:
    return Click(action, 10000, "r1", stage, "U1", "C1", "1.000001", "https://hooks.slack.com/actions/x")


def test_a_running_run_waits_at_the_first_init_stage_after_successes() -> None:
    waiting = run(RUNNING, SUCCESS, SUCCESS, INIT, INIT)
    assert gate(waiting) == waiting.stages[2]
    assert gate(run(RUNNING, SUCCESS, RUNNING, INIT, INIT)) is None  # a stage still runs
    assert gate(run(RUNNING, SUCCESS, FAIL, INIT, INIT)) is None  # a stage failed
    assert gate(run(INIT, SUCCESS, SUCCESS, INIT, INIT)) is None  # the run is not running
    assert gate(run(RUNNING, SUCCESS, SUCCESS, SUCCESS, SUCCESS)) is None
    assert current_stage(run(RUNNING, SUCCESS, RUNNING, INIT, INIT)).code == "S2"  # type: ignore[union-attr]


def test_the_stages_are_taken_in_step_order_whatever_order_they_come_in() -> None:
    waiting = run(RUNNING, SUCCESS, SUCCESS, INIT, INIT)
    shuffled = Run(id="r1", project_id=10000, status=RUNNING, stages=tuple(reversed(waiting.stages)))
    assert gate(shuffled) == waiting.stages[2]


def test_a_waiting_run_offers_advance_to_its_gate_and_abolish() -> None:
    found = offers(run(RUNNING, SUCCESS, SUCCESS, INIT, INIT), ON)
    assert [(o.action, o.stage, o.label) for o in found] == [
        (ADVANCE, "S3", "Advance to Deploy to prod"),
        (ABOLISH, "S3", "Abolish run"),
    ]
    assert found[0].action_id == "dwnotify:advance" and found[1].action_id == "dwnotify:abolish"
    assert found[0].value == {"project": 10000, "run": "r1", "stage": "S3"}


def test_a_moving_run_offers_only_abolish_and_an_ended_one_nothing() -> None:
    assert [o.action for o in offers(run(RUNNING, SUCCESS, RUNNING, INIT, INIT), ON)] == [ABOLISH]
    assert offers(run(FAIL, SUCCESS, FAIL, INIT, INIT), ON) == ()
    assert offers(run(CANCELED, SUCCESS, CANCELED, INIT, INIT), ON) == ()


def test_only_what_is_enabled_and_allowed_is_offered() -> None:
    waiting = run(RUNNING, SUCCESS, SUCCESS, INIT, INIT)
    assert offers(waiting, ActionsSettings(enabled=False, approvers=("alice",))) == ()
    only_advance = ActionsSettings(enabled=True, approvers=("alice",), allow=(ADVANCE,))
    assert [o.action for o in offers(waiting, only_advance)] == [ADVANCE]
    only_abolish = ActionsSettings(enabled=True, approvers=("alice",), allow=(ABOLISH,))
    assert [o.action for o in offers(waiting, only_abolish)] == [ABOLISH]


def test_a_stage_without_a_name_is_offered_by_its_code() -> None:
    nameless = Run(
        id="r1", project_id=10000, status=RUNNING, stages=(Stage("DEPLOY", 1, "Deploy", "", "", INIT, ""),)
    )
    assert offers(nameless, ON)[0].label == "Advance to DEPLOY"


@pytest.mark.parametrize(
    ("action_id", "value"),
    [
        ("other:advance", {"project": 1, "run": "r", "stage": "S"}),
        ("dwnotify:deploy", {"project": 1, "run": "r", "stage": "S"}),
        ("dwnotify:advance", {"project": "1", "run": "r", "stage": "S"}),
        ("dwnotify:advance", {"project": True, "run": "r", "stage": "S"}),
        ("dwnotify:advance", {"project": 1, "run": "", "stage": "S"}),
        ("dwnotify:advance", {"project": 1, "run": "r", "stage": 3}),
        ("dwnotify:advance", {"project": 1, "stage": "S"}),
    ],
)
def test_a_button_that_is_not_dwnotifys_names_no_click(action_id: str, value: dict[str, object]) -> None:
    assert click_of(action_id, value, **_where()) is None


def test_a_dwnotify_button_names_its_click_and_its_decision() -> None:
    found = click_of("dwnotify:abolish", {"project": 10000, "run": "r1", "stage": "S2"}, **_where())
    assert found == Click(ABOLISH, 10000, "r1", "S2", "U1", "C1", "1.0", "https://x")
    assert found.key == "10000/r1/S2/abolish"


def _where() -> dict[str, str]:
    return {"user_id": "U1", "channel_id": "C1", "message_ts": "1.0", "response_url": "https://x"}


def test_the_approvers_are_those_of_every_rule_sending_the_workspace_to_the_channel() -> None:
    settings = ActionsSettings(
        enabled=True, approvers=("alice",), rule_approvers=(("prod", ("bob",)), ("other", ("carol",)))
    )
    rules = [
        RuleSettings("prod", ("run.*",), ("slack",), projects=(10000,)),
        RuleSettings("all", ("*",), ("slack",)),
        RuleSettings("other", ("*",), ("ding",)),  # another channel
        RuleSettings("elsewhere", ("*",), ("slack",), projects=(20000,)),  # another workspace
    ]
    assert approvers(settings, rules, "slack", 10000) == {"alice", "bob"}
    assert approvers(settings, rules[:1], "slack", 10000) == {"bob"}  # the rule's own replace the top's
    assert approvers(settings, rules, "ding", 10000) == {"carol"}
    assert approvers(settings, rules, "slack", 30000) == {"alice"}


def test_only_a_listed_approver_may_act_whoever_created_the_run() -> None:
    alice, creator = PersonSettings("alice", slack_user_id="U1"), PersonSettings("1379", slack_user_id="U9")
    assert not_allowed(click(), ON, alice, {"alice"}) is None
    assert "not an approver" in (not_allowed(click(), ON, creator, {"alice"}) or "")
    assert "people list" in (not_allowed(click(), ON, None, {"alice"}) or "")
    advance_only = ActionsSettings(enabled=True, approvers=("alice",), allow=(ADVANCE,))
    assert "actions.allow" in (not_allowed(click(ABOLISH), advance_only, alice, {"alice"}) or "")


def test_a_click_is_refused_once_its_stage_has_moved_or_the_run_has_ended() -> None:
    assert refusal(click(), run(RUNNING, SUCCESS, SUCCESS, INIT, INIT)) is None
    moved = refusal(click(), run(RUNNING, SUCCESS, SUCCESS, RUNNING, INIT))
    assert moved == "stage S3 is no longer waiting to be advanced (it is running)."
    assert "no such stage" in (refusal(click(stage="S9"), run(RUNNING, SUCCESS, SUCCESS, INIT, INIT)) or "")
    assert "already ended (fail)" in (refusal(click(), run(FAIL, SUCCESS, FAIL, INIT, INIT)) or "")
    assert "no longer known" in (refusal(click(), None) or "")
    # Abolish holds while the run moves, whichever stage it is at now.
    assert refusal(click(ABOLISH, "S2"), run(RUNNING, SUCCESS, SUCCESS, RUNNING, INIT)) is None
    assert "already ended" in (refusal(click(ABOLISH, "S2"), run(SUCCESS, *[SUCCESS] * 4)) or "")
