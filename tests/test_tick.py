"""Whole ticks: the real SDK, httpx, SQLite and templates against the emulators on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import World
from tests.helpers import STAGES, slack_text


def test_a_failing_run_is_announced_once_to_each_channel(world: World) -> None:
    run_id = world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}
    )
    first = world.tick()
    assert first.events == 2  # run.started, stage.started
    assert first.messages_sent == 1  # only Slack wants started events
    assert world.ding() == []

    world.dataworks.set_run_status(
        run_id,
        status="Fail",
        message="部署失败",
        stages={"BUILD": "Success", "CHECK": {"status": "Fail", "message": "节点 ods_user 依赖缺失"}},
    )
    second = world.tick()
    assert second.events == 3  # stage.succeeded, stage.failed, run.failed
    assert second.messages_sent == 2
    [ding] = world.ding()
    text = ding["markdown"]["text"]
    assert run_id in text and "Finance DW" in text
    assert "发布检查" in text and "节点 ods_user 依赖缺失" in text
    assert "defaultProjectId=10000" in text
    assert len(world.slack_messages()) == 2

    third = world.tick()
    assert (third.events, third.messages_sent) == (0, 0)
    assert len(world.ding()) == 1 and len(world.slack_messages()) == 2


def test_a_run_born_and_finished_between_ticks_gives_stage_and_final_events(world: World) -> None:
    world.tick()  # the workspaces are seen once, empty
    world.dataworks.add_run(
        10001,
        status="Success",
        stages=STAGES,
        stage_statuses={"BUILD": "Success", "CHECK": "Success", "DEPLOY": "Success"},
    )
    summary = world.tick()
    assert summary.events == 4  # three stage.succeeded, then run.succeeded; no started events
    [message] = world.slack_messages()
    assert "发布到生产环境" in slack_text(message)


def test_runs_older_than_lookback_are_recorded_silently(world: World) -> None:
    old = world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}, created=-3 * 3600
    )
    world.dataworks.add_run(10000, status="Success", stages=STAGES, created=-5 * 3600)
    first = world.tick()
    assert first.events == 0 and world.slack_messages() == []
    world.dataworks.set_run_status(old, stages={"BUILD": "Success", "CHECK": "Running"})
    second = world.tick()
    assert second.events == 2  # stage.succeeded, stage.started: later news of an old run is announced
    assert len(world.slack_messages()) == 1


def test_steady_state_costs_one_list_call_per_workspace(world: World) -> None:
    for _ in range(3):
        world.dataworks.add_run(10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"})
    world.tick()
    before = world.dataworks.call_count()
    summary = world.tick()
    assert summary.api_calls == 2 == world.dataworks.call_count() - before
    assert world.dataworks.call_count("GetPipelineRun") == 0


def test_a_template_that_breaks_on_some_events_falls_back_and_blocks_nothing(
    world: World, tmp_path: Path
) -> None:
    templates = tmp_path / "my-templates" / "dingtalk"
    templates.mkdir(parents=True)
    (templates / "broken.md.j2").write_text("# {{ events[0].stage.name }} failed\n", encoding="utf-8")
    world.config_overrides["templates"] = str(tmp_path / "my-templates")
    world.config_overrides["rules"] = [
        {"name": "runs", "events": ["run.failed"], "channels": ["ops"], "template": "broken"},
        {"name": "everything", "events": ["*"], "channels": ["team"]},
    ]
    run_id = world.dataworks.add_run(10000, status="Fail", stages=STAGES, stage_statuses={"BUILD": "Fail"})
    summary = world.tick()
    assert summary.messages_sent == 2 and summary.messages_pending == 0
    assert any("broken" in error for error in summary.errors)
    [ding] = world.ding()
    assert run_id in ding["markdown"]["text"]  # the built-in default took over
    other = world.dataworks.add_run(
        10001, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}
    )
    world.tick()
    assert any(other in slack_text(m) for m in world.slack_messages())


def test_a_dry_run_stores_and_sends_nothing(world: World) -> None:
    world.dataworks.add_run(10000, status="Fail", stages=STAGES, stage_statuses={"BUILD": "Fail"})
    world.clock.advance(60)
    world.app = world.build()
    dry = world.app.notifier.tick(dry_run=True)
    assert (dry.events, dry.messages_queued, dry.messages_sent) == (2, 2, 0)
    assert world.ding() == [] and world.slack_messages() == []
    real = world.tick()
    assert (real.events, real.messages_sent) == (2, 2)  # the dry run left no trace
