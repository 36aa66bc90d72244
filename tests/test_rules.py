"""matches(pattern, type) and route(events, project_id, rules): which events go where, table-driven."""

from __future__ import annotations

import pytest

from dwnotify.model import EVENT_TYPES, Event, Stage
from dwnotify.rules import Route, matches, route
from dwnotify.settings import RuleSettings

RUN_EVENTS = {"run.started", "run.succeeded", "run.failed", "run.terminated", "run.canceled", "run.changed"}
STAGE_EVENTS = {
    "stage.started",
    "stage.succeeded",
    "stage.failed",
    "stage.terminated",
    "stage.canceled",
    "stage.changed",
    "stage.waiting",
    "stage.stuck",
}

# Every pattern a rule may hold (what config accepts) and the event types it selects.
SELECTS: dict[str, set[str]] = {
    "*": RUN_EVENTS | STAGE_EVENTS,
    "run.*": RUN_EVENTS,
    "stage.*": STAGE_EVENTS,
    **{event_type: {event_type} for event_type in EVENT_TYPES},
}


def test_the_tables_cover_every_event_type() -> None:
    assert set(EVENT_TYPES) == RUN_EVENTS | STAGE_EVENTS


@pytest.mark.parametrize(("pattern", "selected"), SELECTS.items(), ids=list(SELECTS))
def test_each_pattern_selects_its_event_types(pattern: str, selected: set[str]) -> None:
    assert {event_type for event_type in EVENT_TYPES if matches(pattern, event_type)} == selected


@pytest.mark.parametrize(
    ("pattern", "event_type"),
    [
        ("run.*", "runner.started"),  # a family is the prefix up to and with its dot, not a word prefix
        ("stage.*", "stages.failed"),
        ("stage.*", "stage"),
        ("run.*", "stage.started"),
        ("run.failed", "run.failed.again"),
        ("run.failed", "run.fail"),
    ],
)
def test_a_pattern_does_not_match_a_near_miss(pattern: str, event_type: str) -> None:
    assert not matches(pattern, event_type)


PROJECT = 10000
RUN_KEY = f"{PROJECT}/r1"


def _stage(code: str, step: int, status: str) -> Stage:
    return Stage(code, step, "Deploy", f"stage {code}", "", status, "")


# One run's events as diff() produces them: started, two stage moves, then the run's final event.
EVENTS = (
    Event("run.started", RUN_KEY, "running", "init"),
    Event("stage.started", RUN_KEY, "running", "init", _stage("A", 1, "running")),
    Event("stage.failed", RUN_KEY, "fail", "running", _stage("B", 2, "fail")),
    Event("run.failed", RUN_KEY, "fail", "running"),
)
ALL = ["run.started", "stage.started", "stage.failed", "run.failed"]


def rule(
    name: str,
    events: tuple[str, ...],
    channels: tuple[str, ...] = ("ops",),
    projects: tuple[int, ...] | None = None,
    template: str = "default",
) -> RuleSettings:
    return RuleSettings(name=name, events=events, channels=channels, projects=projects, template=template)


def summary(routes: list[Route]) -> list[tuple[str, str, str, list[str]]]:
    """Each route as (rule, template, channel, event types)."""
    return [(r.rule.name, r.rule.template, r.channel, [e.type for e in r.events]) for r in routes]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        pytest.param([rule("all", ("*",))], [("all", "default", "ops", ALL)], id="star"),
        pytest.param(
            [rule("failed", ("run.failed",))], [("failed", "default", "ops", ["run.failed"])], id="exact-type"
        ),
        pytest.param(
            [rule("stages", ("stage.*",))],
            [("stages", "default", "ops", ["stage.started", "stage.failed"])],
            id="stage-family",
        ),
        pytest.param(
            [rule("runs", ("run.*",))],
            [("runs", "default", "ops", ["run.started", "run.failed"])],
            id="run-family",
        ),
        pytest.param(
            # Several patterns in one rule: the run's events in their own order, each once.
            [rule("mixed", ("run.failed", "stage.*", "stage.failed"))],
            [("mixed", "default", "ops", ["stage.started", "stage.failed", "run.failed"])],
            id="patterns-keep-event-order",
        ),
        pytest.param([rule("quiet", ("run.succeeded", "stage.canceled"))], [], id="nothing-wanted"),
        pytest.param(
            [rule("fanout", ("run.*",), channels=("ops", "team", "pager"))],
            [
                ("fanout", "default", "ops", ["run.started", "run.failed"]),
                ("fanout", "default", "team", ["run.started", "run.failed"]),
                ("fanout", "default", "pager", ["run.started", "run.failed"]),
            ],
            id="one-route-per-channel",
        ),
        pytest.param(
            # Several rules want the same event: each sends its own message, in rule order, with its
            # own template, even to the same channel.
            [
                rule("all", ("*",), template="compact"),
                rule("failures", ("run.failed", "stage.failed"), channels=("team",), template="alert"),
                rule("stages", ("stage.*",)),
            ],
            [
                ("all", "compact", "ops", ALL),
                ("failures", "alert", "team", ["stage.failed", "run.failed"]),
                ("stages", "default", "ops", ["stage.started", "stage.failed"]),
            ],
            id="several-rules-one-event",
        ),
        pytest.param([], [], id="no-rules"),
    ],
)
def test_route(rules: list[RuleSettings], expected: list[tuple[str, str, str, list[str]]]) -> None:
    assert summary(route(EVENTS, PROJECT, rules)) == expected


@pytest.mark.parametrize(
    ("projects", "routed"),
    [
        pytest.param(None, True, id="no-filter-matches-every-workspace"),
        pytest.param((PROJECT,), True, id="listed"),
        pytest.param((20000, PROJECT, 30000), True, id="listed-among-others"),
        pytest.param((20000,), False, id="not-listed"),
        pytest.param((20000, 30000), False, id="none-of-several"),
    ],
)
def test_the_projects_filter(projects: tuple[int, ...] | None, routed: bool) -> None:
    rules = [rule("watch", ("*",), projects=projects)]
    expected = [("watch", "default", "ops", ALL)] if routed else []
    assert summary(route(EVENTS, PROJECT, rules)) == expected


def test_a_rule_filtered_out_by_workspace_does_not_stop_the_rules_after_it() -> None:
    rules = [
        rule("theirs", ("*",), projects=(20000,)),
        rule("ours", ("run.*",), channels=("team",), projects=(PROJECT,)),
        rule("everyone", ("stage.failed",)),
    ]
    assert summary(route(EVENTS, PROJECT, rules)) == [
        ("ours", "default", "team", ["run.started", "run.failed"]),
        ("everyone", "default", "ops", ["stage.failed"]),
    ]


def test_the_same_rules_route_another_workspace_differently() -> None:
    rules = [rule("ours", ("*",), projects=(PROJECT,)), rule("theirs", ("*",), projects=(20000,))]
    assert [r.rule.name for r in route(EVENTS, PROJECT, rules)] == ["ours"]
    assert [r.rule.name for r in route(EVENTS, 20000, rules)] == ["theirs"]
    assert route(EVENTS, 30000, rules) == []


def test_a_route_carries_its_rule_and_the_events_themselves() -> None:
    chosen = rule("failures", ("stage.failed", "run.failed"), channels=("team",), template="alert")
    assert route(EVENTS, PROJECT, [chosen]) == [Route(chosen, "team", (EVENTS[2], EVENTS[3]))]
    (only,) = route(EVENTS, PROJECT, [chosen])
    assert only.rule is chosen  # the template the message is rendered with is this rule's


def test_no_events_make_no_route() -> None:
    assert route((), PROJECT, [rule("all", ("*",), channels=("ops", "team"))]) == []
