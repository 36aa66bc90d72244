"""A realistic sample message context, for `dwnotify check` to render one message per rule and channel."""

from __future__ import annotations

from datetime import datetime, timedelta

from dwnotify.model import FAIL, INIT, RUNNING, SUCCESS, Event, Run, Stage, run_key
from dwnotify.render import MessageContext
from dwnotify.settings import DEFAULT_CONSOLE_URL, ProjectSettings

SAMPLE_RUN_ID = "a7ef0634-20ec-4a7c-a214-54020f91c3d2"


def sample_run(project_id: int, now: datetime) -> Run:
    """A run that failed at its check stage a few seconds before `now`, after building its package."""
    build = Stage(
        code="PACKAGE_BUILD",
        step=1,
        type="Build",
        name="发布包构建",
        description="构建发布包",
        status=SUCCESS,
        message="",
    )
    check = Stage(
        code="PROD_CHECK",
        step=2,
        type="Check",
        name="生产发布检查",
        description="发布前检查下游依赖与节点状态",
        status=FAIL,
        message="节点 dwd_trade_order_di 的下游依赖检查未通过: ads_order_summary_d 仍依赖已下线的输出表",
        detail={
            "checkerList": [
                {"code": "BuildPackageChecker", "name": "Build_Package_Checker", "status": "Success"},
                {"code": "NodeParentDependency", "name": "Downstream_Dependency_Checker", "status": "Fail"},
            ]
        },
    )
    deploy = Stage(
        code="PROD",
        step=3,
        type="Deploy",
        name="发布到生产环境",
        description="",
        status=INIT,
        message="",
    )
    return Run(
        id=SAMPLE_RUN_ID + "\n",  # the API's own example ends the Id with a newline
        project_id=project_id,
        status=FAIL,
        creator="1379463177661024",
        description="订单宽表 dwd_trade_order_di 上线",
        message="发布检查未通过 (Check failed)",
        create_time=now - timedelta(minutes=4, seconds=27),
        modify_time=now - timedelta(seconds=5),
        stages=(build, check, deploy),
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
    """A failed run's message: its build stage succeeded, its check stage failed, then the run failed.

    `console_url` is the configured link pattern (`{region}`, `{project_id}`, `{run_id}`).
    """
    run = sample_run(project.id, now)
    build, check, _ = run.stages
    key = run_key(run.project_id, run.id.strip())
    events = (
        Event(type="stage.succeeded", run_key=key, status=SUCCESS, previous=INIT, stage=build),
        Event(type="stage.failed", run_key=key, status=FAIL, previous=RUNNING, stage=check),
        Event(type="run.failed", run_key=key, status=FAIL, previous=RUNNING),
    )
    return MessageContext(
        run=run,
        events=events,
        project=project,
        rule_name=rule_name,
        channel_name=channel_name,
        channel_type=channel_type,
        console_url=console_url.format(region=project.region, project_id=project.id, run_id=SAMPLE_RUN_ID),
        now=now,
    )
