"""What a tick costs in state round trips and writes, counted (never timed), on both backends.

A round trip is one SDK call on Tablestore, one transaction (or a statement outside one) on SQLite.
"""

from __future__ import annotations

from typing import Any

from dwnotify.state.base import ProjectCursor

from .conftest import World
from .test_discovery import add_history

STAGES = [
    {"code": "BUILD", "step": 1, "name": "构建"},
    {"code": "CHECK", "step": 2, "name": "检查"},
    {"code": "DEPLOY", "step": 3, "name": "发布"},
]
WORKSPACES = list(range(10000, 10010))
RUNS_PER_WORKSPACE = 30


def _watch_ten_workspaces(world: World) -> list[str]:
    """Ten workspaces of 30 running runs each, announced only on failure (so no chat traffic)."""
    world.config_overrides["dataworks.projects"] = WORKSPACES
    world.config_overrides["rules"] = [
        {"name": "failures", "events": ["run.failed", "stage.failed"], "channels": ["ops"]}
    ]
    return [
        world.dataworks.add_run(project, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"})
        for project in WORKSPACES
        for _ in range(RUNS_PER_WORKSPACE)
    ]


def _cost(world: World) -> dict[str, Any]:
    assert world.app is not None
    store: Any = world.app.store
    trips, writes = store.round_trips, store.write_round_trips
    summary = world.tick()
    return {
        "calls": summary.api_calls,
        "round_trips": store.round_trips - trips,
        "writes": store.write_round_trips - writes,
        "events": summary.events,
    }


def test_an_unchanged_tick_reads_in_two_round_trips_and_writes_nothing(world: World) -> None:
    _watch_ten_workspaces(world)
    world.tick()  # first sight: every run stored
    add_history(world, 10000, 50)  # finished history on page 1 costs no read either
    world.tick()
    for _ in range(3):
        # One list call per workspace; the cursors with the tick lease, then the outbox's pending
        # channels: no run row is read, no lease taken, nothing written.
        assert _cost(world) == {"calls": 10, "round_trips": 2, "writes": 0, "events": 0}


def test_a_tick_with_a_hundred_changed_runs_reads_only_those_and_writes_in_a_few_batches(
    world: World,
) -> None:
    run_ids = _watch_ten_workspaces(world)
    world.tick()
    for run_id in run_ids[::3]:  # 100 runs of 300, spread over every workspace
        world.dataworks.set_run_status(run_id, stages={"BUILD": "Success", "CHECK": "Running"})
    cost = _cost(world)
    assert (cost["calls"], cost["events"]) == (10, 200)  # stage.succeeded, stage.started: no rule sends them
    assert world.app is not None
    if world.tablestore is None:
        # the cursors; the 100 runs' rows (one SELECT); lease, commit, release; the outbox.
        assert (cost["round_trips"], cost["writes"]) == (6, 3)
    else:
        # Writes: the lease taken, the intent, its runs and cursors, the intent deleted, the lease given back.
        assert cost["writes"] <= 6
    stored = world.app.store.load_runs([f"{WORKSPACES[0]}/{run_ids[0]}"])
    assert next(iter(stored.values())).stage_statuses["CHECK"] == "running"
    assert _cost(world) == {"calls": 10, "round_trips": 2, "writes": 0, "events": 0}


def test_a_changed_run_is_diffed_and_announced_and_its_neighbours_are_not_read(world: World) -> None:
    run_ids = _watch_ten_workspaces(world)
    world.tick()
    world.dataworks.set_run_status(run_ids[5], stages={"BUILD": "Fail"}, status="Fail")
    assert world.app is not None
    store: Any = world.app.store
    looked_up: list[int] = []
    load_runs = store.load_runs
    store.load_runs = lambda keys: looked_up.append(len(keys)) or load_runs(keys)
    summary = world.tick()
    assert summary.events == 2 and len(world.ding()) == 1  # stage.failed, run.failed in one message
    assert looked_up == [1]  # the one run whose fingerprint moved


def test_a_cursor_from_before_fingerprints_reads_every_listed_run_once_then_no_more(world: World) -> None:
    _watch_ten_workspaces(world)
    world.tick()
    assert world.app is not None
    store: Any = world.app.store
    old = store.load_cursors(WORKSPACES)
    # As an older dwnotify stored them: no fingerprints.
    legacy = [ProjectCursor(c.project_id, c.total_count, c.listed_at, c.active_run_ids, c.watched_since,
                            None, c.version) for c in old.values()]  # fmt: skip
    lease = store.acquire_lease("tick", "upgrade", 90.0, world.clock.now)
    store.commit(lease, [], legacy, [], world.clock.now)
    store.release_lease(lease)
    first = _cost(world)
    assert first["events"] == 0 and first["writes"] > 0  # every run read, the fingerprints written
    assert _cost(world)["round_trips"] == 2
