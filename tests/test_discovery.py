"""Discovery finds every new run and change whatever the list order, with as few calls as it can."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.conftest import World
from tests.helpers import slack_text

STAGES = [{"code": "BUILD", "step": 1, "type": "Build", "name": "Build package"}]


def add_history(world: World, project: int, count: int) -> None:
    for index in range(count):
        world.dataworks.add_run(
            project, status="Success", stages=STAGES, stage_statuses={"BUILD": "Success"},
            created=-86400 - index * 60,
        )  # fmt: skip


@pytest.mark.parametrize("order", ["newest", "oldest", "shuffled"])
def test_new_runs_are_found_on_any_page_whatever_the_order(world: World, order: str) -> None:
    world.dataworks.scenario.list_order = order
    add_history(world, 10000, 250)
    first = world.tick()
    assert first.events == 0  # history is older than lookback: recorded silently, nothing announced
    # A first sight reads every page (3 of 10000, 1 of 10001), unless page 1 shows a newest-first
    # order that already reaches past the lookback window.
    assert first.api_calls == (1 + 1 if order == "newest" else 3 + 1)

    new_ids = {
        world.dataworks.add_run(10000, status="Success", stages=STAGES, stage_statuses={"BUILD": "Success"})
        for _ in range(3)
    }
    second = world.tick()
    assert second.events == 3 * 2
    texts = [slack_text(message) for message in world.slack_messages()]
    assert len(texts) == 3
    assert all(sum(run_id in text for text in texts) == 1 for run_id in new_ids)
    if order == "newest":
        assert second.api_calls == 2  # page 1 held all three: one call per workspace


def test_steady_state_reads_one_page_even_with_deep_history(world: World) -> None:
    add_history(world, 10000, 250)
    world.tick()
    for _ in range(3):
        assert world.tick().api_calls == 2


def test_a_moving_run_pushed_off_page_one_is_fetched_by_id(world: World) -> None:
    slow = world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}
    )
    world.tick()
    for _ in range(100):  # 100 newer runs push it to page 2 (newest-first)
        world.dataworks.add_run(10000, status="Success", stages=STAGES, stage_statuses={"BUILD": "Success"})
    world.tick()
    world.dataworks.set_run_status(
        slow, status="Fail", stages={"BUILD": {"status": "Fail", "message": "boom"}}
    )
    gets_before = world.dataworks.call_count("GetPipelineRun")
    summary = world.tick()
    assert world.dataworks.call_count("GetPipelineRun") == gets_before + 1
    assert summary.events == 2  # stage.failed, run.failed
    assert any("boom" in m["markdown"]["text"] for m in world.ding())


@pytest.mark.parametrize(("order", "pages"), [("oldest", 2), ("newest", 1)])
def test_deleted_runs_trigger_one_full_scan_unless_the_order_shows(
    world: World, order: str, pages: int
) -> None:
    world.dataworks.scenario.list_order = order
    add_history(world, 10000, 150)
    world.tick()
    removed = world.dataworks.scenario.runs.pop()
    assert removed is not None
    summary = world.tick()
    assert summary.api_calls == pages + 1  # the count went down: every page of 10000, one of 10001


def test_configured_runs_are_polled_until_final(world: World) -> None:
    run_id = world.dataworks.add_run(
        10002, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}
    )
    world.config_overrides["dataworks.runs"] = [{"project": 10002, "id": run_id}]
    first = world.tick()
    assert first.events == 2 and world.dataworks.call_count("GetPipelineRun") == 1
    world.dataworks.set_run_status(run_id, status="Success", stages={"BUILD": "Success"})
    assert world.tick().events == 2
    world.tick()
    assert world.dataworks.call_count("GetPipelineRun") == 2  # final: no longer polled


def test_a_failing_workspace_does_not_stop_the_others(world: World) -> None:
    for project in (10000, 10001):
        world.dataworks.add_run(project, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"})
    world.config_overrides["dataworks.max_attempts"] = 1
    # Workspaces are read at once: whichever asks first is refused, the other is announced.
    world.dataworks.inject("ListPipelineRuns", "Forbidden.Access", 403, times=1)
    summary = world.tick()
    assert summary.events == 2
    assert len(summary.errors) == 1 and "Forbidden.Access" in summary.errors[0]
    assert world.tick().events == 2  # the refused one, next tick


def test_workspaces_past_the_deadline_are_left_for_the_next_tick(world: World) -> None:
    world.dataworks.add_run(10001, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"})
    world.clock.advance(60)
    world.app = world.build()
    summary = world.app.notifier.tick(deadline=world.clock.now)  # FC's timeout is upon us
    assert [error.split(":")[0] for error in summary.errors] == ["workspace 10000", "workspace 10001"]
    assert (summary.events, summary.api_calls) == (0, 0)
    assert world.tick().events == 2  # the next tick picks 10001 up


def test_each_stored_run_is_looked_up_once_per_tick(world: World) -> None:
    world.dataworks.scenario.list_order = "oldest"  # no order to lean on: the first tick reads every page
    add_history(world, 10000, 250)
    world.tick()
    assert world.app is not None
    before = world.app.store.round_trips  # type: ignore[attr-defined]
    world.dataworks.scenario.runs.pop()  # a deleted run: the next tick reads every page again
    world.tick()
    trips = world.app.store.round_trips - before  # type: ignore[attr-defined]
    assert trips <= 3 + 8  # one lookup per page of 10000 (3) and the tick's fixed costs


def _announced(world: World, run_ids: list[str]) -> dict[str, int]:
    texts = [slack_text(message) for message in world.slack_messages()]
    return {run_id: sum(run_id in text for text in texts) for run_id in run_ids}


@pytest.mark.parametrize("order", ["oldest", "shuffled"])
def test_runs_created_as_others_are_deleted_are_all_announced(world: World, order: str) -> None:
    world.dataworks.scenario.list_order = order
    add_history(world, 10000, 100)
    world.tick()
    del world.dataworks.scenario.runs[:2]  # two deleted, four created: the count moves by two
    new = [
        world.dataworks.add_run(
            10000, f"new-run-{i}", status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}
        )
        for i in range(4)
    ]
    world.tick()
    assert _announced(world, new) == dict.fromkeys(new, 1)


def test_a_run_created_while_the_pages_are_read_is_announced(world: World) -> None:
    world.dataworks.scenario.list_order = "oldest"
    add_history(world, 10000, 198)
    world.tick()
    assert world.app is not None
    real_list = world.app.client.list_runs
    created: list[str] = []

    def list_runs(project: Any, page: int, **options: Any) -> Any:
        answer = real_list(project, page, **options)
        if project.id == 10000 and page == 1 and not created:
            created.append(
                world.dataworks.add_run(
                    10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}
                )
            )
        return answer

    world.app.client.list_runs = list_runs  # type: ignore[method-assign]
    before = [
        world.dataworks.add_run(10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"})
        for _ in range(2)
    ]
    for _ in range(3):
        world.tick()
    assert _announced(world, [*before, *created]) == dict.fromkeys([*before, *created], 1)


def test_a_short_lookback_never_announces_history_later(world: World) -> None:
    world.config_overrides["dataworks.lookback"] = "1m"
    world.dataworks.add_run(
        10000, status="Success", stages=STAGES, stage_statuses={"BUILD": "Success"}, created=-300
    )
    assert world.tick(advance=0).events == 0
    assert world.tick().events == 0 and world.tick(advance=600).events == 0


def test_a_configured_run_that_is_old_and_finished_is_fetched_once(world: World) -> None:
    run_id = world.dataworks.add_run(
        10002, status="Fail", stages=STAGES, stage_statuses={"BUILD": "Fail"}, created=-5 * 3600
    )
    world.config_overrides["dataworks.runs"] = [{"project": 10002, "id": run_id}]
    first = world.tick()
    assert first.events == 2  # named in the config: announced whatever its age
    for _ in range(3):
        world.tick()
    assert world.dataworks.call_count("GetPipelineRun") == 1


def test_a_moving_run_that_vanishes_is_no_longer_listed_as_moving(world: World) -> None:
    run_id = world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}
    )
    world.tick()
    assert world.app is not None
    assert [state.run_id for state in world.app.store.report().runs] == [run_id]
    world.dataworks.scenario.runs[:] = [r for r in world.dataworks.scenario.runs if r.id != run_id]
    world.tick()
    assert world.app.store.report().runs == ()
    gets = world.dataworks.call_count("GetPipelineRun")
    world.tick()
    assert world.dataworks.call_count("GetPipelineRun") == gets  # not looked for again


def test_workspaces_are_read_at_the_same_time(world: World) -> None:
    world.app = world.build()
    client = world.app.client
    both_inside = threading.Barrier(2, timeout=10)  # a sequential scan never gets both in: it fails
    real_list_runs = client.list_runs

    def list_runs(project: Any, page: int, **options: Any) -> Any:
        if page == 1:
            both_inside.wait()
        return real_list_runs(project, page, **options)

    client.list_runs = list_runs  # type: ignore[method-assign]
    for project in (10000, 10001):
        world.dataworks.add_run(project, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"})
    summary = world.tick()
    assert (summary.errors, summary.events) == ([], 4)
