"""Realistic sample message contexts, for `dwnotify check` to render before anything is sent.

`sample_context` is the typical message (a run that failed at its check stage). `rule_samples` is
what `check` renders per rule and channel: every event type the rule matches in one message, then
each of them alone, on a run in the state that event leaves it in (a `run.*` event has no stage, a
running run has no duration), so a template that only works for some events fails `check`, not a tick.
The first of them has its creator listed in `people` and mentioned (as a rule with `mention: creator`
has it), the others an unknown creator, so a template's mention branch is rendered too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from dwnotify.channels import CHANNEL_TYPES
from dwnotify.model import (
    CANCELED,
    EVENT_TYPES,
    FAIL,
    INIT,
    RUNNING,
    SUCCESS,
    TERMINATED,
    Event,
    Run,
    RunItem,
    Stage,
    run_key,
)
from dwnotify.render import MessageContext
from dwnotify.settings import DEFAULT_CONSOLE_URL, PersonSettings, ProjectSettings

SAMPLE_RUN_ID = "a7ef0634-20ec-4a7c-a214-54020f91c3d2"
# A status outside the contract's list, as a `*.changed` event reports it (kept as it came).
UNKNOWN_STATUS = "Paused"
_STATUS_OF_VERB = {
    "started": RUNNING,
    "succeeded": SUCCESS,
    "failed": FAIL,
    "terminated": TERMINATED,
    "canceled": CANCELED,
    "changed": UNKNOWN_STATUS,
    "waiting": INIT,  # a reminder: the stage waits at a gate
    "stuck": RUNNING,  # a reminder: the stage runs long
}
_SAMPLE_WAIT = timedelta(minutes=45)  # how long a sample reminder's stage has waited or run


def _event(event_type: str, key: str, status: str, stage: Stage | None = None) -> Event:
    """A sample event: a reminder has its stage's status as both status and previous, and a wait."""
    if event_type in ("stage.waiting", "stage.stuck"):
        return Event(
            event_type, key, status, status, stage, reminder=f"sample:{event_type}", waited=_SAMPLE_WAIT
        )
    return Event(event_type, key, status, INIT if status == RUNNING else RUNNING, stage)


_CHECK_FAILURE = "节点 dwd_trade_order_di 的下游依赖检查未通过: ads_order_summary_d 仍依赖已下线的输出表"
_BUILD = Stage(
    code="PACKAGE_BUILD",
    step=1,
    type="Build",
    name="发布包构建",
    description="构建发布包",
    status=SUCCESS,
    message="",
)
_CHECK = Stage(
    code="PROD_CHECK",
    step=2,
    type="Check",
    name="生产发布检查",
    description="发布前检查下游依赖与节点状态",
    status=FAIL,
    message=_CHECK_FAILURE,
    detail={
        "checkerList": [
            {"code": "BuildPackageChecker", "name": "Build_Package_Checker", "status": "Success"},
            {"code": "NodeParentDependency", "name": "Downstream_Dependency_Checker", "status": "Fail"},
        ]
    },
)
_DEPLOY = Stage(
    code="PROD",
    step=3,
    type="Deploy",
    name="发布到生产环境",
    description="",
    status=INIT,
    message="",
)


SAMPLE_CREATOR = "1379463177661024"
# The sample run's creator as a `people` entry would list them: an id for every chat service.
SAMPLE_PERSON = PersonSettings(
    id=SAMPLE_CREATOR,
    name="张三 Zhang San",
    dingtalk_mobile="13800000000",
    dingtalk_user_id="zhangsan",
    slack_user_id="U0123ABCD",
    lark_open_id="ou_7d8a6e6df7621556ce0d21922b676706",
    wecom_user_id="zhangsan",
)


def _run(project_id: int, now: datetime, status: str, stage_statuses: tuple[str, str, str]) -> Run:
    """The sample run in `status`, its build, check and deploy stages in `stage_statuses`."""
    stages = tuple(
        replace(stage, status=value, message=stage.message if value == FAIL else "")
        for stage, value in zip((_BUILD, _CHECK, _DEPLOY), stage_statuses, strict=True)
    )
    return Run(
        id=SAMPLE_RUN_ID + "\n",  # the API's own example ends the Id with a newline
        project_id=project_id,
        status=status,
        creator=SAMPLE_CREATOR,
        description="订单宽表 dwd_trade_order_di 上线",
        message="发布检查未通过 (Check failed)" if status == FAIL else "",
        create_time=now - timedelta(minutes=4, seconds=27),
        modify_time=now - timedelta(seconds=5),
        stages=stages,
    )


def sample_run(project_id: int, now: datetime) -> Run:
    """A run that failed at its check stage a few seconds before `now`, after building its package."""
    return _run(project_id, now, FAIL, (SUCCESS, FAIL, INIT))


def single_event_sample(event_type: str, project_id: int, now: datetime) -> tuple[Run, Event]:
    """A run in the state `event_type` leaves it in, and that event (a stage event: the check stage's)."""
    subject, _, verb = event_type.partition(".")
    status = _STATUS_OF_VERB[verb]
    if subject == "run":
        stage_statuses = {RUNNING: (RUNNING, INIT, INIT), SUCCESS: (SUCCESS, SUCCESS, SUCCESS)}.get(
            status, (SUCCESS, status, INIT)
        )
        run = _run(project_id, now, status, stage_statuses)
        previous = INIT if status == RUNNING else RUNNING
        return run, Event(event_type, run_key(project_id, SAMPLE_RUN_ID), status, previous)
    run = _run(project_id, now, RUNNING, (SUCCESS, status, INIT))
    return run, _event(event_type, run_key(project_id, SAMPLE_RUN_ID), status, run.stages[1])


def story_events(event_types: Sequence[str], run: Run) -> tuple[Event, ...]:
    """One event of each of `event_types` on `run`, in a tick's order (run.started, stages, the end)."""
    key = run_key(run.project_id, run.id.strip())
    build, check, deploy = run.stages
    # Which stage each kind of stage event happens to in the story, so stage events come by Step.
    on = {"succeeded": build, "failed": check}
    events: list[tuple[int, Event]] = []
    for event_type in event_types:
        subject, _, verb = event_type.partition(".")
        status = _STATUS_OF_VERB[verb]
        previous = INIT if status == RUNNING else RUNNING
        if subject == "run":
            order = 0 if status == RUNNING else 9
            events.append((order, Event(event_type, key, status, previous)))
        else:
            stage = replace(on.get(verb, deploy), status=status)
            events.append((stage.step, _event(event_type, key, status, stage)))
    return tuple(event for _, event in sorted(events, key=lambda pair: pair[0]))


# What the sample run deploys: one item failed with its reason, the others as a deployment lists them.
SAMPLE_ITEMS = (
    RunItem("ods_trade_order_di", "Node", 12, SUCCESS, owner="137946317766XXXX", id="700004534201"),
    RunItem("dwd_trade_order_di", "Node", 8, FAIL, _CHECK_FAILURE, "137946317766XXXX", "700004534202"),
    RunItem("wf_trade_daily", "WorkflowDefinition", 3, INIT, id="700004534203"),
    RunItem("udf_parse_sku.jar", "Resource", 1, INIT, id="700004534204"),
)


def _context(
    run: Run,
    events: tuple[Event, ...],
    channel: tuple[str, str],
    rule_name: str,
    project: ProjectSettings,
    now: datetime,
    console_url: str,
    items: tuple[RunItem, ...] = (),
) -> MessageContext:
    return MessageContext(
        run=run,
        events=events,
        project=project,
        rule_name=rule_name,
        channel_name=channel[0],
        channel_type=channel[1],
        console_url=project.console_url(console_url, SAMPLE_RUN_ID),
        now=now,
        items=items,
    )


def sample_context(
    channel_name: str,
    channel_type: str,
    rule_name: str,
    project: ProjectSettings,
    now: datetime,
    *,
    console_url: str = DEFAULT_CONSOLE_URL,
) -> MessageContext:
    """A failed run's message: its build stage succeeded, its check stage failed, then the run failed
    (with its items, as a first failure's message has them).

    `console_url` is the configured link pattern (`{region}`, `{project_id}`, `{run_id}`).
    """
    run = sample_run(project.id, now)
    events = story_events(("stage.succeeded", "stage.failed", "run.failed"), run)
    channel = (channel_name, channel_type)
    return _context(run, events, channel, rule_name, project, now, console_url, SAMPLE_ITEMS)


def rule_samples(
    event_types: Sequence[str],
    channel_name: str,
    channel_type: str,
    rule_name: str,
    project: ProjectSettings,
    now: datetime,
    *,
    console_url: str = DEFAULT_CONSOLE_URL,
) -> list[MessageContext]:
    """The messages `check` renders for a rule and channel: all `event_types` at once, then each alone.

    The message with all of them is the failed sample run's; it is left out for a single type, whose
    message alone (on a run in the state it leaves it in) says more. The first message's creator is
    known (`SAMPLE_PERSON`) and mentioned in the channel type's markup, as a rule with `mention:
    creator` has it; the others' creator is not in `people`.
    """
    wanted = [event_type for event_type in EVENT_TYPES if event_type in event_types]
    channel = (channel_name, channel_type)
    contexts = []
    if len(wanted) > 1:
        run = sample_run(project.id, now)
        events = story_events(wanted, run)
        contexts.append(_context(run, events, channel, rule_name, project, now, console_url, SAMPLE_ITEMS))
    for event_type in wanted:
        alone, event = single_event_sample(event_type, project.id, now)
        contexts.append(_context(alone, (event,), channel, rule_name, project, now, console_url))
    if contexts:  # the first one's creator is known and mentioned; the others' creator is unknown
        mention = CHANNEL_TYPES[channel_type].mention(SAMPLE_PERSON)
        contexts[0] = replace(contexts[0], person=SAMPLE_PERSON, mention=mention)
    return contexts
